//! `os`: the distribution from `<rootfs>/etc/os-release`, else `<rootfs>/usr/lib/os-release`.
use std::{collections::HashMap, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "os",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

const INFO_LABELS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];

struct OsCollector {
    files: [PathBuf; 2],
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(OsCollector {
        files: [
            context.root_path("/etc/os-release"),
            context.root_path("/usr/lib/os-release"),
        ],
    }))
}

/// os-release(5): `KEY=value` lines, values optionally quoted; in double quotes `\"`, `\\`,
/// `\$` and `` \` `` are escapes. Comments and malformed lines are skipped.
fn parse_os_release(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut value = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => value.push(e),
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => value.push('\\'),
                    }
                } else {
                    value.push(c);
                }
            }
            value
        } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            raw.to_owned()
        };
        out.insert(key.trim().to_owned(), value);
    }
    out
}

/// The leading `major[.minor]` of VERSION_ID as a number (upstream's `^[0-9]+\.?[0-9]*`).
fn major_minor(version_id: &str) -> Option<f64> {
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let major = digits(version_id);
    if major == 0 {
        return None;
    }
    let mut end = major;
    if version_id[major..].starts_with('.') {
        end = major + 1 + digits(&version_id[major + 1..]);
    }
    version_id[..end].trim_end_matches('.').parse().ok()
}

/// SUPPORT_END (`YYYY-MM-DD`) as seconds since the epoch, UTC midnight.
fn support_end(date: &str) -> anyhow::Result<i64> {
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        anyhow::bail!("bad SUPPORT_END {date:?}")
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        anyhow::bail!("bad SUPPORT_END {date:?}");
    }
    let (y, m, d): (i64, i64, i64) = (y.parse()?, m.parse()?, d.parse()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        anyhow::bail!("bad SUPPORT_END {date:?}");
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

impl Collector for OsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut text = None;
        for path in &self.files {
            if let Some(found) = read::optional(path)? {
                text = Some((found, path));
                break;
            }
        }
        let Some((text, path)) = text else {
            return Err(NoData("no os-release file found".to_owned()).into());
        };
        let release = parse_os_release(&text);
        let get = |key: &str| release.get(key).cloned().unwrap_or_default();
        let version = match get("VERSION_ID") {
            v if v.is_empty() => None,
            v => major_minor(&v),
        };
        let end = match release.get("SUPPORT_END") {
            Some(date) if !date.is_empty() => {
                Some(support_end(date).with_context(|| format!("{}", path.display()))?)
            }
            _ => None,
        };
        out.push(
            MetricFamily::gauge(
                "node_os_info",
                "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            )
            .with(INFO_LABELS.map(|(label, key)| (label, get(key))), 1.0),
        );
        if let Some(version) = version.filter(|v| *v > 0.0) {
            out.push(
                MetricFamily::gauge(
                    "node_os_version",
                    "Metric containing the major.minor part of the OS version.",
                )
                .with(
                    [
                        ("id", get("ID")),
                        ("id_like", get("ID_LIKE")),
                        ("name", get("NAME")),
                    ],
                    version,
                ),
            );
        }
        if let Some(end) = end.filter(|e| *e > 0) {
            out.push(
                MetricFamily::gauge(
                    "node_os_support_end_timestamp_seconds",
                    "Metric containing the end-of-life date timestamp of the OS.",
                )
                .with_value(end as f64),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_and_escapes() {
        let release = parse_os_release(
            "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION='12 (bookworm)'\nPRETTY_NAME=\"A \\\"quoted\\\" \\$name\"\nbroken line\n",
        );
        assert_eq!(release["NAME"], "Debian GNU/Linux");
        assert_eq!(release["ID"], "debian");
        assert_eq!(release["VERSION"], "12 (bookworm)");
        assert_eq!(release["PRETTY_NAME"], "A \"quoted\" $name");
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("22.04"), Some(22.04));
        assert_eq!(major_minor("12"), Some(12.0));
        assert_eq!(major_minor("3.18.4"), Some(3.18));
        assert_eq!(major_minor("rolling"), None);
        assert_eq!(support_end("2028-06-30").unwrap(), 1_845_936_000);
        assert!(support_end("June 2028").is_err());
    }
}
