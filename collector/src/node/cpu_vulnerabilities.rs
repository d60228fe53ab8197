//! `cpu_vulnerabilities`: the kernel's view of each CPU vulnerability, one file each under
//! /sys/devices/system/cpu/vulnerabilities, as node_exporter's cpu_vulnerabilities collector
//! (procfs' `CPUVulnerabilities`). A file's text starts with its state ("Not affected",
//! "Vulnerable", "Mitigation", "Unknown", in any case); the words after the first are the
//! `mitigation` label, except for "Not affected". Text in no known form is reported whole as
//! the mitigation of an "unknown" state. No folder (an old kernel) is no series and no error,
//! as upstream's glob finds nothing; a file that cannot be read fails the scrape.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "cpu_vulnerabilities",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct CpuVulnerabilitiesCollector {
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(CpuVulnerabilitiesCollector {
        dir: context.sys_path("devices/system/cpu/vulnerabilities"),
    }))
}

/// One vulnerability: its `state` and `mitigation` labels.
#[derive(Debug, PartialEq, Eq)]
struct Vulnerability {
    state: &'static str,
    mitigation: String,
}

/// procfs' `parseVulnerability`.
fn parse(raw: &str) -> Vulnerability {
    let raw = raw.trim();
    let lower = raw.to_lowercase();
    let rest_words = || raw.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    let (state, mitigation) = if lower.starts_with("not affected") {
        ("not affected", String::new())
    } else if lower.starts_with("vulnerable") {
        ("vulnerable", rest_words())
    } else if lower.starts_with("mitigation") {
        ("mitigation", rest_words())
    } else if lower.starts_with("unknown") {
        ("unknown", rest_words())
    } else {
        ("unknown", raw.to_owned())
    };
    Vulnerability { state, mitigation }
}

impl Collector for CpuVulnerabilitiesCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // Go's `filepath.Glob(dir/*)`: every entry, dot files included; an unreadable or
        // missing folder matches nothing.
        let files = read::glob(&self.dir, |_| true).unwrap_or_else(|error| {
            tracing::debug!(dir = %self.dir.display(), %error, "no CPU vulnerabilities");
            Vec::new()
        });
        let mut family = MetricFamily::gauge(
            "node_cpu_vulnerabilities_info",
            "Details of each CPU vulnerability reported by sysfs. The value of the series is an int encoded state of the vulnerability. The same state is stored as a string in the label",
        );
        for path in files {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let raw = std::fs::read(&path).with_context(|| {
                format!("failed to get vulnerabilities: reading {}", path.display())
            })?;
            let vulnerability = parse(&String::from_utf8_lossy(&raw));
            family.push(
                [
                    ("codename", name),
                    ("state", vulnerability.state.to_owned()),
                    ("mitigation", vulnerability.mitigation),
                ],
                1.0,
            );
        }
        out.push(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(state: &'static str, mitigation: &str) -> Vulnerability {
        Vulnerability {
            state,
            mitigation: mitigation.to_owned(),
        }
    }

    #[test]
    fn parses_each_state() {
        assert_eq!(parse("Not affected\n"), v("not affected", ""));
        assert_eq!(parse("Not affected: whatever\n"), v("not affected", ""));
        assert_eq!(parse("Vulnerable\n"), v("vulnerable", ""));
        assert_eq!(
            parse(
                "Vulnerable: Clear CPU buffers attempted, no microcode; SMT Host state unknown\n"
            ),
            v(
                "vulnerable",
                "Clear CPU buffers attempted, no microcode; SMT Host state unknown"
            )
        );
        assert_eq!(
            parse("Mitigation: Enhanced / Automatic IBRS;  IBPB: conditional\n"),
            v("mitigation", "Enhanced / Automatic IBRS; IBPB: conditional")
        );
        assert_eq!(
            parse("Unknown: No mitigations\n"),
            v("unknown", "No mitigations")
        );
        assert_eq!(
            parse("KVM: Mitigation: VMX disabled\n"),
            v("unknown", "KVM: Mitigation: VMX disabled")
        );
        assert_eq!(parse(""), v("unknown", ""));
        assert_eq!(parse("  \n"), v("unknown", ""));
        assert_eq!(parse("VULNERABLE x"), v("vulnerable", "x"));
    }

    #[test]
    fn missing_folder_is_no_series_and_a_folder_entry_is_an_error() {
        let c = CpuVulnerabilitiesCollector {
            dir: "/nonexistent/vulnerabilities".into(),
        };
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert!(out[0].metrics.is_empty());

        let dir = std::env::temp_dir().join(format!("vulnerabilities-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("mds"), b"Mitigation: \xff Clear CPU buffers\n").unwrap();
        let c = CpuVulnerabilitiesCollector { dir: dir.clone() };
        assert!(c.update(&mut Vec::new()).is_err());
        std::fs::remove_dir(dir.join("sub")).unwrap();
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert_eq!(out[0].metrics[0].labels[2].1, "\u{fffd} Clear CPU buffers");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
