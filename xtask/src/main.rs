//! Project tasks: `cargo xtask setup | build | image | run | test | bench | kernels | upstream-e2e`.
mod bench;
mod exporter;
mod image;
mod kernels;
mod setup;
mod shell;
mod soak;
mod upstream;

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Set up, build, run, test and benchmark the collector.")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly rust-src, bpf-linker, Debian packages.
    /// Idempotent; fast when everything is present.
    Setup,
    /// Build the release daemon (kernel programs embedded).
    Build,
    /// Build the container image for linux/amd64 and linux/arm64 (static binaries, FROM
    /// scratch) as an OCI layout and an oci-archive under target/image/.
    Image(image::Options),
    /// Build and run the daemon; arguments after `--` go to the collector.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite: formatting, clippy, the image (for its tests), unit tests and
    /// the root integration tests.
    Test {
        /// Extra arguments for `cargo test` (a test-name filter, `--nocapture`...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure scrape cost against node_exporter and the cost of the kernel programs.
    Bench(bench::Options),
    /// Boot Debian's cloud kernels 5.10, 6.1 and 6.12 (and on request 6.1 for arm64) in qemu
    /// (software emulation) and check every eBPF family against each kernel's own counters
    /// (docs/kernels.md).
    Kernels(kernels::Options),
    /// Run the collector on node_exporter's end-to-end fixtures (a checkout of its latest
    /// release) and compare with its expected output, family by family.
    UpstreamE2e(upstream::Options),
}

fn main() -> anyhow::Result<()> {
    let root = shell::workspace_root()?;
    std::env::set_current_dir(&root).context("entering the workspace")?;
    match Args::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(),
        Task::Image(options) => image::run(&root, &options),
        Task::Run { args } => {
            build()?;
            if !setup::is_root() {
                eprintln!(
                    "note: not root; eBPF programs need CAP_BPF and CAP_PERFMON (or root) and will be missing"
                );
            }
            let error = Command::new(root.join("target/release/collector"))
                .args(args)
                .exec();
            Err(error).context("starting target/release/collector")
        }
        Task::Test { args } => test(&args),
        Task::UpstreamE2e(options) => {
            if options.binary.is_none() {
                build()?;
            }
            let collector = options
                .binary
                .clone()
                .unwrap_or_else(|| root.join("target/release/collector"));
            upstream::run(&collector, &options)
        }
        Task::Kernels(options) => {
            setup::run()?;
            kernels::run(&root, &options)
        }
        Task::Bench(options) => {
            if options.binary.is_none() {
                build()?;
            }
            if !setup::is_root() {
                anyhow::bail!("the benchmark loads eBPF programs: run it as root");
            }
            if options.static_builds {
                let regular = options
                    .binary
                    .clone()
                    .unwrap_or_else(|| image::target_dir(&root).join("release/collector"));
                image::build_static(image::Arch::Amd64)?;
                build_musl()?;
                let builds = [
                    ("glibc, dynamic", regular),
                    (
                        "glibc, static (image)",
                        image::binary(&root, image::Arch::Amd64),
                    ),
                    (
                        "musl, static",
                        image::target_dir(&root)
                            .join("x86_64-unknown-linux-musl/release/collector"),
                    ),
                ];
                return bench::compare_builds(&root, &builds, &options);
            }
            let collector = options
                .binary
                .clone()
                .unwrap_or_else(|| root.join("target/release/collector"));
            match options.soak_minutes {
                Some(minutes) => {
                    let report = soak::run(&collector, minutes, &root.join("target/bench"))?;
                    bench::write_report(&root, &report)
                }
                None => bench::run(&root, &collector, &options),
            }
        }
    }
}

fn build() -> anyhow::Result<()> {
    setup::run()?;
    shell::cargo(&["build", "--release", "--package", "collector"])
}

/// The release daemon for musl (static, its own allocator), for `bench --static-builds`.
fn build_musl() -> anyhow::Result<()> {
    shell::cargo(&[
        "build",
        "--release",
        "--package",
        "collector",
        "--target",
        "x86_64-unknown-linux-musl",
    ])
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    shell::cargo(&["fmt", "--all", "--", "--check"])
        .context("formatting differs: run `cargo fmt --all`")?;
    shell::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The kernel programs, linted for the target they run on.
    shell::run(Command::new("cargo").args([
        "+nightly",
        "clippy",
        "--package",
        "collector-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/bpf-clippy",
        "--",
        "-D",
        "warnings",
    ]))?;
    // collector/tests/image.rs runs it as the DaemonSet does (amd64) and under qemu (arm64).
    image::run(&shell::workspace_root()?, &image::Options::default())?;
    let mut args = vec!["test", "--workspace"];
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    shell::cargo(&args)?;
    // The kernel matrix (about 2 minutes: three guests under emulation), unless the run was
    // narrowed to some tests.
    if extra.is_empty() {
        kernels::run(&shell::workspace_root()?, &kernels::Options::default())?;
    }
    Ok(())
}
