//! Reading /proc and /sys files with errors that name the file, shared by the collectors.
use std::path::Path;

use anyhow::Context as _;

/// The whole file, as text.
pub fn to_string(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Parses `field` of `path` as a number, with an error naming both.
pub fn parse_number<T>(value: &str, field: &str, path: &Path) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{}: {field}: bad number {value:?}", path.display()))
}
