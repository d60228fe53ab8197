//! Builds the kernel programs (`collector-ebpf`) for the BPF target with aya-build and leaves the
//! object in `OUT_DIR` for `include_bytes!`.
//!
//! Without the eBPF toolchain (nightly `rust-src` and `bpf-linker`) an empty stub object is
//! written instead, so `cargo check`, clippy and rust-analyzer still work; the `ebpf_stub` cfg
//! then makes any real build stop at link time, after the warning below has named the fix.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "collector-ebpf";
const FIX: &str = "run `cargo xtask setup` (installs nightly rust-src and bpf-linker)";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(ebpf_stub)");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("collector/ has no parent"))?
        .to_path_buf();
    emit_build_info(&workspace);

    if let Some(missing) = missing_toolchain() {
        println!(
            "cargo:warning=eBPF toolchain missing ({missing}): built with an empty stub object; \
             `cargo check` and clippy work, a real build fails to link. To fix: {FIX}."
        );
        println!("cargo:rustc-cfg=ebpf_stub");
        fs::write(out_dir.join(EBPF_PACKAGE), []).context("writing the stub object")?;
        // A path that does not exist makes cargo rerun this script on every build, so the real
        // object is built as soon as the toolchain is installed.
        println!(
            "cargo:rerun-if-changed={}",
            out_dir.join("toolchain-missing").display()
        );
        return Ok(());
    }

    // aya-build watches the eBPF crate; the shared types it is built from must trigger too.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("collector-common").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    let root = workspace.join(EBPF_PACKAGE);
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .with_context(|| {
        format!("building the eBPF programs failed; if the toolchain is broken, {FIX}")
    })
}

/// `COLLECTOR_GIT_REVISION`, `COLLECTOR_GIT_BRANCH` and `COLLECTOR_RUSTC_VERSION` for the
/// build-info metrics.
fn emit_build_info(workspace: &std::path::Path) {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let revision =
        output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    // "HEAD" when detached, as Go builds of node_exporter say.
    let branch =
        output("git", &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=COLLECTOR_GIT_REVISION={revision}");
    println!("cargo:rustc-env=COLLECTOR_GIT_BRANCH={branch}");
    println!("cargo:rustc-env=COLLECTOR_RUSTC_VERSION={rustc_version}");
    // Rebuilt when HEAD moves: HEAD itself, the branch it names and packed refs, wherever git
    // keeps them (a worktree's `.git` is a file naming another directory).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(output("git", &["symbolic-ref", "--quiet", "HEAD"]));
    for name in watched {
        if let Some(path) = output("git", &["rev-parse", "--git-path", &name]) {
            let path = workspace.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// Names the first missing piece of the eBPF toolchain, if any.
fn missing_toolchain() -> Option<&'static str> {
    let ran = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !ran("bpf-linker", &["--version"]) {
        return Some("bpf-linker not found on PATH");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    match sysroot {
        None => Some("nightly toolchain not installed"),
        Some(sysroot) => {
            let core = PathBuf::from(sysroot).join("lib/rustlib/src/rust/library/core");
            (!core.exists()).then_some("nightly rust-src component not installed")
        }
    }
}
