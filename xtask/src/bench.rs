//! `cargo xtask bench` (filled in below).
use std::path::Path;

#[derive(clap::Args)]
pub struct Options {}

pub fn run(_root: &Path, _options: &Options) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
