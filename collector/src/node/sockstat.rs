//! `sockstat`: socket counts from /proc/net/sockstat and /proc/net/sockstat6, as
//! node_exporter's sockstat collector (TCP/UDP `mem` in pages is also exported in bytes).
use std::{path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "sockstat",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct SockstatCollector {
    sockstat: KeptFile,
    sockstat6: KeptFile,
    page_size: i64,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(Arc::new(SockstatCollector {
        sockstat: KeptFile::new(context.proc_path("net/sockstat")),
        sockstat6: KeptFile::new(context.proc_path("net/sockstat6")),
        page_size: if page_size > 0 { page_size } else { 4096 },
    }))
}

/// One protocol line: its name and `key value` pairs in file order.
#[derive(Debug, PartialEq)]
struct Protocol {
    name: String,
    values: Vec<(String, i64)>,
}

#[derive(Debug, Default, PartialEq)]
struct Sockstat {
    used: Option<i64>,
    protocols: Vec<Protocol>,
}

/// Parses a sockstat file as procfs' `parseSockstat`: `Proto: key value ...` split on single
/// spaces; fewer than 3 fields, an odd number of key/value fields or a non-integer fail.
fn parse(text: &str, path: &Path) -> anyhow::Result<Sockstat> {
    let mut stat = Sockstat::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 3 {
            anyhow::bail!("{}: malformed sockstat line: {line:?}", path.display());
        }
        let pairs = &fields[1..];
        if !pairs.len().is_multiple_of(2) {
            anyhow::bail!(
                "{}: odd number of fields in key/value pairs: {line:?}",
                path.display()
            );
        }
        let mut values = Vec::new();
        for pair in pairs.chunks(2) {
            let value = goparse::parse_int(pair[1], 0, 64).with_context(|| {
                format!("{}: bad number {:?} in {line:?}", path.display(), pair[1])
            })?;
            values.push((pair[0].to_owned(), value));
        }
        let protocol = fields[0].strip_suffix(':').unwrap_or(fields[0]);
        if protocol == "sockets" {
            let used = values
                .iter()
                .rev()
                .find(|(k, _)| k == "used")
                .map_or(0, |v| v.1);
            stat.used = Some(used);
        } else {
            stat.protocols.push(Protocol {
                name: protocol.to_owned(),
                values,
            });
        }
    }
    Ok(stat)
}

/// The file, `None` if it does not exist (IPv4 or IPv6 disabled).
fn read_optional(file: &KeptFile) -> anyhow::Result<Option<Sockstat>> {
    file.optional()?
        .map(|text| parse(&text, file.path()))
        .transpose()
}

impl Collector for SockstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let stat4 = read_optional(&self.sockstat)?;
        let stat6 = read_optional(&self.sockstat6)?;
        for (stat, ipv6) in [(stat4, false), (stat6, true)] {
            let Some(stat) = stat else { continue };
            if let (false, Some(used)) = (ipv6, stat.used) {
                out.push(
                    MetricFamily::gauge(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                    )
                    .with_value(used as f64),
                );
            }
            for protocol in &stat.protocols {
                let get = |key: &str| {
                    protocol
                        .values
                        .iter()
                        .rev()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| *v)
                };
                // `inuse` is always exported (0 when absent), the others when present.
                let mut pairs = vec![("inuse", Some(get("inuse").unwrap_or(0)))];
                for key in ["orphan", "tw", "alloc", "mem", "memory"] {
                    pairs.push((key, get(key)));
                }
                pairs.push(("mem_bytes", get("mem").map(|m| m * self.page_size)));
                for (state, value) in pairs {
                    let Some(value) = value else { continue };
                    out.push(
                        MetricFamily::gauge(
                            format!("node_sockstat_{}_{state}", protocol.name),
                            format!("Number of {} sockets in state {state}.", protocol.name),
                        )
                        .with_value(value as f64),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sockets_and_protocols() {
        let stat = parse(
            "sockets: used 229\nTCP: inuse 4 orphan 0 tw 4 alloc 17 mem 1\nFRAG: inuse 0 memory 0\n",
            Path::new("/proc/net/sockstat"),
        )
        .unwrap();
        assert_eq!(stat.used, Some(229));
        assert_eq!(stat.protocols[0].name, "TCP");
        assert_eq!(stat.protocols[0].values[4], ("mem".to_owned(), 1));
        assert_eq!(stat.protocols[1].name, "FRAG");
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_file() {
        for text in [
            "TCP: inuse\n",
            "TCP: inuse 1 orphan\n",
            "TCP: inuse x\n",
            "\n",
        ] {
            let error = parse(text, Path::new("/x/net/sockstat")).unwrap_err();
            assert!(
                format!("{error:#}").contains("/x/net/sockstat"),
                "{error:#}"
            );
        }
    }

    #[test]
    fn missing_sockstat6_is_skipped() {
        assert_eq!(
            read_optional(&KeptFile::new("/nonexistent/sockstat6".into())).unwrap(),
            None
        );
    }
}
