//! `cargo xtask image`: the DaemonSet's container image, for linux/amd64 and linux/arm64, built
//! here without a container engine and without pulling anything.
//!
//! Each architecture's image is one layer holding `/bin/collector` and nothing else (FROM
//! scratch: no shell, no libc files, no CA bundle): the release binary linked statically against
//! glibc (`-C target-feature=+crt-static`), its kernel programs embedded by collector/build.rs.
//! glibc rather than musl by measurement: `cargo xtask bench --static-builds` compares them.
//! The OCI layout is assembled here (layer tar, config, manifests, an image index and the
//! layout's `index.json` and `oci-layout`), then packed into an oci-archive:
//!
//! - `target/image/oci/`: the OCI image layout (`skopeo copy --all oci:target/image/oci ...`),
//! - `target/image/ebpf-node-collector-<version>.oci.tar`: the same as an oci-archive
//!   (`podman load -i`, `ctr images import`, `skopeo copy --all oci-archive:...`).
//!
//! Reproducible where it is cheap: every timestamp is the commit's (or `SOURCE_DATE_EPOCH`),
//! tar entries are sorted with fixed owners and modes, gzip carries no name or time, and JSON
//! keys are sorted; the binaries themselves are as reproducible as cargo makes them.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::shell;

#[derive(clap::Args)]
pub struct Options {
    /// Only these architectures (repeatable; both by default).
    #[arg(long = "arch", value_enum)]
    pub arches: Vec<Arch>,
    /// The image's name, for `io.containerd.image.name` (what `ctr images import` tags it as);
    /// the tag is the workspace version. The DaemonSet's image by default.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            arches: Vec::new(),
            name: DEFAULT_NAME.into(),
        }
    }
}

const DEFAULT_NAME: &str = "public.ecr.aws/example/ebpf-node-collector";

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

pub const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

impl Arch {
    /// The OCI (Go) name of the architecture.
    pub fn oci(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-gnu",
            Self::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The C cross compiler (ring builds C and assembly) and linker; `None`: the host's.
    pub fn cross_gcc(self) -> Option<&'static str> {
        match self {
            Self::Amd64 => None,
            Self::Arm64 => Some("aarch64-linux-gnu"),
        }
    }

    /// ELF `e_machine`.
    fn elf_machine(self) -> u16 {
        match self {
            Self::Amd64 => 62,
            Self::Arm64 => 183,
        }
    }

    fn variant(self) -> Option<&'static str> {
        match self {
            Self::Amd64 => None,
            Self::Arm64 => Some("v8"),
        }
    }
}

/// Where the layout and the archive go.
pub fn image_dir(root: &Path) -> PathBuf {
    target_dir(root).join("image")
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The static release binary of `arch`, where `cargo build --target` leaves it.
pub fn binary(root: &Path, arch: Arch) -> PathBuf {
    target_dir(root)
        .join(arch.triple())
        .join("release/collector")
}

const TITLE: &str = "ebpf-node-collector";
const DESCRIPTION: &str = "eBPF-based kernel metrics collector, a drop-in for node_exporter.";
const ENTRYPOINT: &str = "/bin/collector";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Builds the binaries (after `cargo xtask setup`) and writes the layout and the archive.
pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let arches: Vec<Arch> = if options.arches.is_empty() {
        ARCHES.to_vec()
    } else {
        ARCHES
            .into_iter()
            .filter(|arch| options.arches.contains(arch))
            .collect()
    };
    // Read first: the build scripts take the revision as the builds start.
    let meta = Metadata::read(root, &options.name)?;
    let mut timings = Vec::new();
    for &arch in &arches {
        let started = Instant::now();
        build_static(arch)?;
        timings.push((arch, started.elapsed()));
    }
    let mut binaries = Vec::new();
    for &arch in &arches {
        let path = binary(root, arch);
        let binary = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        check_static_elf(&binary, arch).with_context(|| format!("{}", path.display()))?;
        binaries.push((arch, binary));
    }
    let (layout, index_digest, summary) = assemble(&meta, &binaries)?;

    let dir = image_dir(root);
    let oci = dir.join("oci");
    if oci.exists() {
        std::fs::remove_dir_all(&oci).with_context(|| format!("removing {}", oci.display()))?;
    }
    for (name, data) in &layout.files {
        let path = oci.join(name);
        std::fs::create_dir_all(path.parent().context("a file in the layout")?)?;
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    // One archive: those of other versions go.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".oci.tar") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let archive = dir.join(format!("{TITLE}-{}.oci.tar", meta.version));
    let packed = layout.archive(meta.epoch)?;
    std::fs::write(&archive, &packed).with_context(|| format!("writing {}", archive.display()))?;

    eprintln!(
        "\nimage {}:{} (revision {}, created {}), index {index_digest}",
        meta.name, meta.version, meta.revision, meta.created
    );
    for (arch, elapsed) in timings {
        eprintln!(
            "  linux/{}: built in {:.0} s",
            arch.oci(),
            elapsed.as_secs_f64()
        );
    }
    eprint!("{summary}");
    eprintln!("  layout: {}", oci.display());
    eprintln!(
        "  archive: {} ({:.1} MiB)",
        archive.display(),
        packed.len() as f64 / 1048576.0
    );
    Ok(())
}

/// The OCI layout of an image of `binaries`: its files, the image index's digest and a summary
/// of the sizes.
fn assemble(
    meta: &Metadata,
    binaries: &[(Arch, Vec<u8>)],
) -> anyhow::Result<(Layout, String, String)> {
    let mut layout = Layout::default();
    let mut manifests = Vec::new();
    let mut summary = String::new();
    for (arch, binary) in binaries {
        let (descriptor, layer_size) = image_manifest(&mut layout, meta, *arch, binary)?;
        manifests.push(descriptor);
        summary += &format!(
            "  linux/{}: binary {:.1} MiB, layer {:.1} MiB gzipped\n",
            arch.oci(),
            binary.len() as f64 / 1048576.0,
            layer_size as f64 / 1048576.0
        );
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": manifests,
        "annotations": meta.annotations(),
    });
    let mut top = layout.blob(MEDIA_INDEX, &serde_json::to_vec(&index)?);
    let index_digest = top["digest"].as_str().unwrap_or_default().to_owned();
    top["annotations"] = json!({
        "org.opencontainers.image.ref.name": meta.version,
        "io.containerd.image.name": format!("{}:{}", meta.name, meta.version),
    });
    layout.files.insert(
        "index.json".into(),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [top],
        }))?,
    );
    layout.files.insert(
        "oci-layout".into(),
        serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    );
    Ok((layout, index_digest, summary))
}

/// `cargo build --release --target <arch>` with glibc linked statically; for arm64, with the
/// Debian cross compiler as C compiler and linker.
pub fn build_static(arch: Arch) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["build", "--release", "--package", "collector"]);
    static_target(&mut command, arch);
    shell::run(&mut command).with_context(|| format!("building the linux/{} binary", arch.oci()))
}

/// Makes a cargo `command` build for `arch` with glibc linked statically (`--target` and the
/// environment); for arm64, with the Debian cross compiler as C compiler and linker.
pub fn static_target(command: &mut Command, arch: Arch) {
    let triple = arch.triple();
    let upper = triple.to_uppercase().replace('-', "_");
    let lower = triple.replace('-', "_");
    command
        .arg("--target")
        .arg(triple)
        // RUSTFLAGS would take the place of the per-target flags below.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            format!("CARGO_TARGET_{upper}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        );
    if let Some(prefix) = arch.cross_gcc() {
        command
            .env(
                format!("CARGO_TARGET_{upper}_LINKER"),
                format!("{prefix}-gcc"),
            )
            .env(format!("CC_{lower}"), format!("{prefix}-gcc"))
            .env(format!("AR_{lower}"), format!("{prefix}-ar"));
    }
}

/// A static executable for `arch`: an ELF64 little-endian file of that machine with no program
/// interpreter (no dynamic loader, so no shared library can be asked for).
pub fn check_static_elf(binary: &[u8], arch: Arch) -> anyhow::Result<()> {
    let u16_at = |at: usize| -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(
            binary.get(at..at + 2).context("short ELF")?.try_into()?,
        ))
    };
    let u32_at = |at: usize| -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(
            binary.get(at..at + 4).context("short ELF")?.try_into()?,
        ))
    };
    let u64_at = |at: usize| -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            binary.get(at..at + 8).context("short ELF")?.try_into()?,
        ))
    };
    if binary.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let machine = u16_at(18)?;
    if machine != arch.elf_machine() {
        bail!("ELF machine {machine}, not {}'s", arch.oci());
    }
    let (phoff, phentsize, phnum) = (
        usize::try_from(u64_at(32)?)?,
        usize::from(u16_at(54)?),
        usize::from(u16_at(56)?),
    );
    for n in 0..phnum {
        const PT_INTERP: u32 = 3;
        if u32_at(phoff + n * phentsize)? == PT_INTERP {
            bail!(
                "dynamically linked (it has a program interpreter): not for a FROM scratch image"
            );
        }
    }
    Ok(())
}

/// What the labels and annotations say, and the timestamp of every file and history entry.
struct Metadata {
    name: String,
    version: String,
    revision: String,
    /// Seconds since the epoch: the commit's, or `SOURCE_DATE_EPOCH`.
    epoch: u64,
    /// `epoch` in RFC 3339.
    created: String,
}

impl Metadata {
    fn read(root: &Path, name: &str) -> anyhow::Result<Self> {
        let git = |args: &[&str]| shell::output(Command::new("git").args(args).current_dir(root));
        let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
            eprintln!(
                "warning: the work tree has uncommitted changes: the image says revision \
                 {revision}, and the binaries were built from more than that"
            );
        }
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number"))?,
            Err(_) => git(&["log", "-1", "--format=%ct"])
                .and_then(|seconds| seconds.parse().ok())
                .unwrap_or(0),
        };
        Ok(Self {
            name: name.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision,
            epoch,
            created: rfc3339(epoch),
        })
    }

    /// The OCI annotations (and labels) of the image, index and manifests alike.
    fn annotations(&self) -> Value {
        json!({
            "org.opencontainers.image.title": TITLE,
            "org.opencontainers.image.description": DESCRIPTION,
            "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
            "org.opencontainers.image.url": env!("CARGO_PKG_REPOSITORY"),
            "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": self.created,
        })
    }
}

/// The blobs and files of an OCI image layout, by path in it.
#[derive(Default)]
struct Layout {
    files: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    /// Stores `data` under its digest; its descriptor.
    fn blob(&mut self, media_type: &str, data: &[u8]) -> Value {
        let digest = format!("sha256:{}", sha256_hex(data));
        self.files.insert(
            format!("blobs/sha256/{}", &digest["sha256:".len()..]),
            data.to_vec(),
        );
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    /// The layout as an oci-archive: a tar of its directory, entries sorted.
    fn archive(&self, mtime: u64) -> anyhow::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for name in self.files.keys() {
            let mut parent = Path::new(name).parent();
            while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
                dirs.insert(format!("{}/", dir.display()));
                parent = dir.parent();
            }
        }
        let mut entries: Vec<(&str, Option<&[u8]>)> =
            dirs.iter().map(|d| (d.as_str(), None)).collect();
        entries.extend(
            self.files
                .iter()
                .map(|(n, d)| (n.as_str(), Some(d.as_slice()))),
        );
        entries.sort_by_key(|(name, _)| *name);
        for (name, data) in entries {
            append(&mut tar, name, data, 0o644, mtime)?;
        }
        Ok(tar.into_inner()?)
    }
}

/// One architecture's layer, config and manifest in `layout`; the manifest's descriptor (with
/// its platform, for the index) and the compressed layer's size.
fn image_manifest(
    layout: &mut Layout,
    meta: &Metadata,
    arch: Arch,
    binary: &[u8],
) -> anyhow::Result<(Value, usize)> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "bin/", None, 0o755, meta.epoch)?;
    append(&mut tar, "bin/collector", Some(binary), 0o755, meta.epoch)?;
    let layer_tar = tar.into_inner()?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    // No file name and a zero time in the gzip header.
    let mut gzip = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gzip.write_all(&layer_tar)?;
    let layer = gzip.finish()?;
    let layer_descriptor = layout.blob(MEDIA_LAYER, &layer);

    let mut platform = json!({"architecture": arch.oci(), "os": "linux"});
    if let Some(variant) = arch.variant() {
        platform["variant"] = json!(variant);
    }
    let mut config = json!({
        "created": meta.created,
        "architecture": arch.oci(),
        "os": "linux",
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "ExposedPorts": {"9100/tcp": {}},
            "Labels": meta.annotations(),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{
            "created": meta.created,
            "created_by": "cargo xtask image",
            "comment": format!("{ENTRYPOINT}: static (glibc) release build for {}", arch.triple()),
        }],
    });
    if let Some(variant) = arch.variant() {
        config["variant"] = json!(variant);
    }
    let config_descriptor = layout.blob(MEDIA_CONFIG, &serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor,
        "layers": [layer_descriptor],
        "annotations": meta.annotations(),
    });
    let mut descriptor = layout.blob(MEDIA_MANIFEST, &serde_json::to_vec(&manifest)?);
    descriptor["platform"] = platform;
    Ok((descriptor, layer.len()))
}

/// A tar entry owned by root: a directory when `data` is `None` (its name ends with `/`).
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    data: Option<&[u8]>,
    file_mode: u32,
    mtime: u64,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    match data {
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, name, std::io::empty())?;
        }
        Some(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(file_mode);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, name, data)?;
        }
    }
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Seconds since the epoch as RFC 3339 in UTC (civil-from-days, proleptic Gregorian).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let seconds = epoch % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same binaries and metadata give the same bytes: layout, digests and archive.
    #[test]
    fn assembly_is_reproducible() {
        let meta = Metadata {
            name: "example/collector".into(),
            version: "1.2.3".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            epoch: 1_700_000_000,
            created: rfc3339(1_700_000_000),
        };
        let binaries = [
            (Arch::Amd64, b"amd64 binary".to_vec()),
            (Arch::Arm64, b"arm64 binary".to_vec()),
        ];
        let (first, digest, _) = assemble(&meta, &binaries).unwrap();
        let (second, again, _) = assemble(&meta, &binaries).unwrap();
        assert_eq!(digest, again);
        assert_eq!(first.files, second.files);
        assert_eq!(
            first.archive(meta.epoch).unwrap(),
            second.archive(meta.epoch).unwrap()
        );
        // Blobs under their digests, index.json and oci-layout.
        assert!(
            first
                .files
                .contains_key(&format!("blobs/sha256/{}", &digest[7..]))
        );
        assert_eq!(first.files.len(), 2 * 3 + 1 + 2);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
