//! `drbd`: DRBD 8 replicated block devices from /proc/drbd (traffic, pending requests, role,
//! disk and connection state per device), as node_exporter's drbd collector reads it. Off by
//! default, as upstream.
//!
//! The file is read as whitespace-separated `key:value` words: `<minor>:` starts a device
//! (`drbd<minor>`; words before the first one belong to device "unknown"), and known keys give
//! series. DRBD 9 prints no per-device lines there, so it reports nothing. As upstream, a
//! number that does not parse stops the parse with an error, the series already read being
//! served; a role or disk state without its `/remote` half is an error here, where upstream
//! crashes on an index out of range.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::{MetricFamily, MetricType},
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "drbd",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct DrbdCollector {
    /// /proc/drbd, read as bytes: Go's scanner takes any byte.
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(DrbdCollector {
        path: context.proc_path("drbd"),
    }))
}

/// Go's `bufio.Scanner` limit: a word this long or longer fails the parse.
const MAX_WORD: usize = 64 * 1024;

/// The numeric keys: key, family, HELP, counter (else gauge), multiplier (KiB to bytes).
const NUMERICAL: [(&str, &str, &str, bool, f64); 12] = [
    (
        "ns",
        "node_drbd_network_sent_bytes_total",
        "Total number of bytes sent via the network.",
        true,
        1024.0,
    ),
    (
        "nr",
        "node_drbd_network_received_bytes_total",
        "Total number of bytes received via the network.",
        true,
        1.0,
    ),
    (
        "dw",
        "node_drbd_disk_written_bytes_total",
        "Net data written on local hard disk; in bytes.",
        true,
        1024.0,
    ),
    (
        "dr",
        "node_drbd_disk_read_bytes_total",
        "Net data read from local hard disk; in bytes.",
        true,
        1024.0,
    ),
    (
        "al",
        "node_drbd_activitylog_writes_total",
        "Number of updates of the activity log area of the meta data.",
        true,
        1.0,
    ),
    (
        "bm",
        "node_drbd_bitmap_writes_total",
        "Number of updates of the bitmap area of the meta data.",
        true,
        1.0,
    ),
    (
        "lo",
        "node_drbd_local_pending",
        "Number of open requests to the local I/O sub-system.",
        false,
        1.0,
    ),
    (
        "pe",
        "node_drbd_remote_pending",
        "Number of requests sent to the peer, but that have not yet been answered by the latter.",
        false,
        1.0,
    ),
    (
        "ua",
        "node_drbd_remote_unacknowledged",
        "Number of requests received by the peer via the network connection, but that have not yet been answered.",
        false,
        1.0,
    ),
    (
        "ap",
        "node_drbd_application_pending",
        "Number of block I/O requests forwarded to DRBD, but not yet answered by DRBD.",
        false,
        1.0,
    ),
    (
        "ep",
        "node_drbd_epochs",
        "Number of Epochs currently on the fly.",
        false,
        1.0,
    ),
    (
        "oos",
        "node_drbd_out_of_sync_bytes",
        "Amount of data known to be out of sync; in bytes.",
        false,
        1024.0,
    ),
];

/// The `local/remote` keys: key, family, HELP, the value that is 1.
const STRING_PAIRS: [(&str, &str, &str, &str); 2] = [
    (
        "ro",
        "node_drbd_node_role_is_primary",
        "Whether the role of the node is in the primary state.",
        "Primary",
    ),
    (
        "ds",
        "node_drbd_disk_state_is_up_to_date",
        "Whether the disk of the node is up to date.",
        "UpToDate",
    ),
];

/// Families filled as the words are read, so that what was read before an error is kept.
/// A series read twice (a device listed twice) keeps its first value, as client_golang drops
/// the later duplicates.
#[derive(Default)]
struct Output {
    families: Vec<MetricFamily>,
    index: HashMap<&'static str, usize>,
    seen: HashSet<(&'static str, Vec<(String, String)>)>,
}

impl Output {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        metric_type: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        if !self.seen.insert((name, labels.clone())) {
            return;
        }
        let families = &mut self.families;
        let index = *self.index.entry(name).or_insert_with(|| {
            families.push(MetricFamily::new(name, help, metric_type));
            families.len() - 1
        });
        self.families[index].push(labels, value);
    }
}

/// Parses /proc/drbd into `out`, as node_exporter's `Update` loop.
fn parse(text: &str, out: &mut Output) -> anyhow::Result<()> {
    let mut device = "unknown".to_owned();
    for field in text.split_whitespace() {
        if field.len() >= MAX_WORD {
            anyhow::bail!("token too long");
        }
        let kv: Vec<&str> = field.split(':').collect();
        let [key, value] = kv[..] else {
            continue;
        };
        if value.is_empty()
            && let Some(minor) = goparse::parse_uint(key, 10, 64)
        {
            device = format!("drbd{minor}");
            continue;
        }
        if let Some((_, name, help, counter, multiplier)) =
            NUMERICAL.iter().find(|(k, ..)| *k == key)
        {
            let number = goparse::parse_float(value, 64)
                .ok_or_else(|| anyhow::anyhow!("{key}: bad number {value:?} for {device}"))?;
            let metric_type = if *counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            out.push(
                name,
                help,
                metric_type,
                &[("device", &device)],
                number * multiplier,
            );
            continue;
        }
        if let Some((_, name, help, ok)) = STRING_PAIRS.iter().find(|(k, ..)| *k == key) {
            let mut halves = value.split('/');
            let local = halves.next().unwrap_or_default();
            let remote = halves.next().ok_or_else(|| {
                anyhow::anyhow!("{key}: no local/remote pair in {value:?} for {device}")
            })?;
            for (node, state) in [("local", local), ("remote", remote)] {
                let value = if state == *ok { 1.0 } else { 0.0 };
                out.push(
                    name,
                    help,
                    MetricType::Gauge,
                    &[("device", &device), ("node", node)],
                    value,
                );
            }
            continue;
        }
        if key == "cs" {
            let connected = if value == "Connected" { 1.0 } else { 0.0 };
            out.push(
                "node_drbd_connected",
                "Whether DRBD is connected to the peer.",
                MetricType::Gauge,
                &[("device", &device)],
                connected,
            );
        }
    }
    Ok(())
}

impl Collector for DrbdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = &self.path;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(NoData(format!(
                    "stats file does not exist, skipping: {}",
                    path.display()
                ))
                .into());
            }
            Err(error) => {
                return Err(
                    anyhow::Error::new(error).context(format!("reading {}", path.display()))
                );
            }
        };
        let mut output = Output::default();
        let result = parse(&String::from_utf8_lossy(&bytes), &mut output);
        out.extend(output.families);
        result.map_err(|error| error.context(format!("parsing {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRBD_8_4: &str = "version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420 \n
 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----
    ns:4194304 nr:0 dw:4194304 dr:10240 al:12 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 1: cs:SyncSource ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----
    ns:0 nr:512 dw:512 dr:0 al:0 bm:3 lo:1 pe:2 ua:3 ap:4 ep:1 wo:f oos:2048
\t[=>..................] sync'ed: 12.5% (2048/2048)K
";

    fn value(out: &Output, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = out.families.iter().find(|f| f.name == name)?;
        family.metrics.iter().find_map(|m| {
            let same = m.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(n, v)| m.labels.iter().any(|(a, b)| a == n && b == v));
            match m.value {
                crate::metrics::Value::Scalar(v) if same => Some(v),
                _ => None,
            }
        })
    }

    #[test]
    fn devices_and_units() {
        let mut out = Output::default();
        parse(DRBD_8_4, &mut out).unwrap();
        let d0 = [("device", "drbd0")];
        assert_eq!(
            value(&out, "node_drbd_network_sent_bytes_total", &d0),
            Some(4294967296.0)
        );
        assert_eq!(
            value(&out, "node_drbd_disk_read_bytes_total", &d0),
            Some(10485760.0)
        );
        assert_eq!(value(&out, "node_drbd_connected", &d0), Some(1.0));
        let d1 = [("device", "drbd1")];
        assert_eq!(
            value(&out, "node_drbd_network_received_bytes_total", &d1),
            Some(512.0)
        );
        assert_eq!(
            value(&out, "node_drbd_out_of_sync_bytes", &d1),
            Some(2097152.0)
        );
        assert_eq!(value(&out, "node_drbd_connected", &d1), Some(0.0));
        assert_eq!(
            value(
                &out,
                "node_drbd_node_role_is_primary",
                &[("device", "drbd1"), ("node", "remote")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "node_drbd_disk_state_is_up_to_date",
                &[("device", "drbd1"), ("node", "local")]
            ),
            Some(0.0)
        );
        let counter = out
            .families
            .iter()
            .find(|f| f.name == "node_drbd_bitmap_writes_total")
            .unwrap();
        assert_eq!(counter.metric_type, MetricType::Counter);
        assert_eq!(out.families.len(), 15);
    }

    #[test]
    fn unknown_device_leading_zeros_and_duplicates() {
        let mut out = Output::default();
        parse("ns:1 007: ns:2 7: ns:3 x:1:2 :", &mut out).unwrap();
        assert_eq!(
            value(
                &out,
                "node_drbd_network_sent_bytes_total",
                &[("device", "unknown")]
            ),
            Some(1024.0)
        );
        // "007:" is drbd7, and the second drbd7 series is dropped.
        assert_eq!(
            value(
                &out,
                "node_drbd_network_sent_bytes_total",
                &[("device", "drbd7")]
            ),
            Some(2048.0)
        );
        assert_eq!(out.families[0].metrics.len(), 2);
        // DRBD 9: no device lines.
        let mut out = Output::default();
        parse("version: 9.2.4 (api:2/proto:86-122)\n", &mut out).unwrap();
        assert!(out.families.is_empty());
    }

    #[test]
    fn malformed_input() {
        for text in [
            "0: ns:12a",
            "0: ns:",
            "0: oos:1e400",
            "0: ns:0x10",
            "0: ns:-nan",
            "0: ro:Primary",
            "0: ds:",
        ] {
            let mut out = Output::default();
            assert!(parse(text, &mut out).is_err(), "{text:?}");
        }
        // What was read before the error is kept.
        let mut out = Output::default();
        assert!(parse("0: al:5 bm:x lo:1", &mut out).is_err());
        assert_eq!(out.families.len(), 1);
        let long = format!("0: ns:{}", "1".repeat(MAX_WORD));
        assert!(parse(&long, &mut Output::default()).is_err());
        // Bytes that are not UTF-8 do not split words.
        let mut out = Output::default();
        parse(
            &String::from_utf8_lossy(b"0: cs:Connected\xff ns:1"),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            value(&out, "node_drbd_connected", &[("device", "drbd0")]),
            Some(0.0)
        );
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = DrbdCollector {
            path: "/nonexistent/drbd".into(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
