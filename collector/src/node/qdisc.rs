//! `qdisc`: statistics of each network device's root queueing discipline, as node_exporter's
//! qdisc collector (ema/qdisc): an rtnetlink `RTM_GETQDISC` dump of every qdisc, or, with
//! `--collector.qdisc.fixtures=<dir>`, `<dir>/results.json` (a JSON array of ema/qdisc's
//! `QdiscInfo`) for end-to-end tests.
//!
//! As ema/qdisc: a qdisc's counters are those of its `TCA_STATS2` attribute (basic and queue
//! statistics), then overwritten by the legacy `TCA_STATS` one when present (the kernel sends it
//! after, with the same values; requeues exist only in the first); a parent of `TC_H_ROOT`
//! counts as 0, and only qdiscs of parent 0 are reported (so not `ingress`/`clsact`, nor the
//! children of `mq`). The device name is looked up by index (empty for an interface gone
//! meanwhile). Any malformed message fails the scrape; a statistics attribute too short for its
//! struct, where ema/qdisc panics, is an error. (ema/qdisc also sets `NETLINK_GET_STRICT_CHK`,
//! which changes nothing for this dump: the kernel parses a qdisc dump request leniently
//! either way.)
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use super::{
    go_json::{self, Field, Kind},
    netlink_dump,
    netlink_raw::{self, RawRequest},
};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{CollectorFlags, DeviceFilter, FlagSpec},
    metrics::MetricFamily,
};

const FIXTURES: &str = "collector.qdisc.fixtures";
const INCLUDE: &str = "collector.qdisc.device-include";
const OLD_INCLUDE: &str = "collector.qdisk.device-include";
const EXCLUDE: &str = "collector.qdisc.device-exclude";
const OLD_EXCLUDE: &str = "collector.qdisk.device-exclude";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "qdisc",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            FIXTURES,
            Some(""),
            "test fixtures to use for qdisc collector end-to-end testing",
        ),
        FlagSpec::value(
            INCLUDE,
            None,
            "Regexp of qdisc devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            OLD_INCLUDE,
            None,
            "DEPRECATED: Use collector.qdisc.device-include",
        )
        .hidden(),
        FlagSpec::value(
            EXCLUDE,
            None,
            "Regexp of qdisc devices to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::value(
            OLD_EXCLUDE,
            None,
            "DEPRECATED: Use collector.qdisc.device-exclude",
        )
        .hidden(),
    ],
    kernel: None,
    build,
};

struct QdiscCollector {
    /// `--collector.qdisc.fixtures`, when given (not empty).
    fixtures: Option<PathBuf>,
    filter: DeviceFilter,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    Ok(Arc::new(QdiscCollector {
        fixtures: flags
            .string(FIXTURES)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from),
        filter: device_filter(flags)?,
    }))
}

/// The device filter, with upstream's own checks in its order (not `DeviceFilter::from_flags`'):
/// a deprecated `qdisk` flag stands in for its unset `qdisc` spelling, both set is an error, and
/// so is an include beside an exclude.
fn device_filter(flags: &CollectorFlags) -> anyhow::Result<DeviceFilter> {
    let value = |name: &str| flags.string(name).unwrap_or_default().to_owned();
    let (mut include, mut exclude) = (value(INCLUDE), value(EXCLUDE));
    for (old, new, current) in [
        (OLD_INCLUDE, INCLUDE, &mut include),
        (OLD_EXCLUDE, EXCLUDE, &mut exclude),
    ] {
        let old_value = value(old);
        if old_value.is_empty() {
            continue;
        }
        if !current.is_empty() {
            anyhow::bail!("--{old} and --{new} are mutually exclusive");
        }
        tracing::warn!("--{old} is DEPRECATED and will be removed in 2.0.0, use --{new}");
        *current = old_value;
    }
    if !include.is_empty() && !exclude.is_empty() {
        anyhow::bail!(
            "collector.qdisc.device-include and collector.qdisc.device-exclude are mutaly exclusive"
        );
    }
    let regex = |pattern: &str, name: &str| {
        (!pattern.is_empty())
            .then(|| {
                regex::Regex::new(pattern)
                    .with_context(|| format!("--{name}: bad regular expression"))
            })
            .transpose()
    };
    Ok(DeviceFilter::new(
        regex(&exclude, EXCLUDE)?,
        regex(&include, INCLUDE)?,
    ))
}

/// ema/qdisc's `QdiscInfo`, the fields the collector reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct QdiscInfo {
    iface_name: String,
    parent: u32,
    kind: String,
    bytes: u64,
    packets: u32,
    drops: u32,
    requeues: u32,
    overlimits: u32,
    qlen: u32,
    backlog: u32,
}

impl Collector for QdiscCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let qdiscs = match &self.fixtures {
            Some(dir) => fixture_qdiscs(dir)?,
            None => netlink_qdiscs()?,
        };
        let mut families = [
            MetricFamily::counter("node_qdisc_bytes_total", "Number of bytes sent."),
            MetricFamily::counter("node_qdisc_packets_total", "Number of packets sent."),
            MetricFamily::counter("node_qdisc_drops_total", "Number of packets dropped."),
            MetricFamily::counter(
                "node_qdisc_requeues_total",
                "Number of packets dequeued, not transmitted, and requeued.",
            ),
            MetricFamily::counter(
                "node_qdisc_overlimits_total",
                "Number of overlimit packets.",
            ),
            MetricFamily::gauge(
                "node_qdisc_current_queue_length",
                "Number of packets currently in queue to be sent.",
            ),
            MetricFamily::gauge(
                "node_qdisc_backlog",
                "Number of bytes currently in queue to be sent.",
            ),
        ];
        for qdisc in &qdiscs {
            // Only report root qdisc information.
            if qdisc.parent != 0 || self.filter.ignored(&qdisc.iface_name) {
                continue;
            }
            let values = [
                qdisc.bytes as f64,
                f64::from(qdisc.packets),
                f64::from(qdisc.drops),
                f64::from(qdisc.requeues),
                f64::from(qdisc.overlimits),
                f64::from(qdisc.qlen),
                f64::from(qdisc.backlog),
            ];
            for (family, value) in families.iter_mut().zip(values) {
                family.push(
                    [
                        ("device", qdisc.iface_name.as_str()),
                        ("kind", qdisc.kind.as_str()),
                    ],
                    value,
                );
            }
        }
        out.extend(families);
        Ok(())
    }
}

/// ema/qdisc's `QdiscInfo`, for Go's JSON decoding of the fixture file.
const QDISC_INFO: Kind = Kind::Struct(
    "QdiscInfo",
    &[
        Field::new("IfaceName", Kind::String),
        Field::new("Parent", Kind::Uint(32)),
        Field::new("Handle", Kind::Uint(32)),
        Field::new("Kind", Kind::String),
        Field::new("Bytes", Kind::Uint(64)),
        Field::new("Packets", Kind::Uint(32)),
        Field::new("Drops", Kind::Uint(32)),
        Field::new("Requeues", Kind::Uint(32)),
        Field::new("Overlimits", Kind::Uint(32)),
        Field::new("GcFlows", Kind::Uint(64)),
        Field::new("Throttled", Kind::Uint(64)),
        Field::new("FlowsPlimit", Kind::Uint(64)),
        Field::new("Qlen", Kind::Uint(32)),
        Field::new("Backlog", Kind::Uint(32)),
    ],
);

/// Upstream's `testQdiscGet`: `<dir>/results.json` as `[]qdisc.QdiscInfo`.
fn fixture_qdiscs(dir: &Path) -> anyhow::Result<Vec<QdiscInfo>> {
    let path = dir.join("results.json");
    let go_json::Go::Slice(items) = go_json::unmarshal_file(&path, &Kind::Slice(&QDISC_INFO))?
    else {
        anyhow::bail!("{}: not a list of qdiscs", path.display());
    };
    Ok(items
        .iter()
        .map(|item| QdiscInfo {
            iface_name: item.field(0).str().to_owned(),
            parent: item.field(1).uint() as u32,
            kind: item.field(3).str().to_owned(),
            bytes: item.field(4).uint(),
            packets: item.field(5).uint() as u32,
            drops: item.field(6).uint() as u32,
            requeues: item.field(7).uint() as u32,
            overlimits: item.field(8).uint() as u32,
            qlen: item.field(12).uint() as u32,
            backlog: item.field(13).uint() as u32,
        })
        .collect())
}

/// `RTM_GETQDISC`.
const RTM_GETQDISC: u16 = 38;
/// The size of `struct tcmsg`, the header of a qdisc message.
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_STATS: u16 = 3;
const TCA_STATS2: u16 = 7;
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;

/// ema/qdisc's `Get`: every qdisc of every device in this network namespace.
fn netlink_qdiscs() -> anyhow::Result<Vec<QdiscInfo>> {
    let mut qdiscs = Vec::new();
    let mut indexes = Vec::new();
    netlink_dump::dump(
        netlink_dump::NETLINK_ROUTE,
        RawRequest {
            message_type: RTM_GETQDISC,
            payload: vec![0; TCMSG_LEN],
        },
        |_, payload| {
            let (index, qdisc) = parse_message(payload)?;
            indexes.push(index);
            qdiscs.push(qdisc);
            Ok(())
        },
    )
    .context("failed to execute request")?;
    let mut names: HashMap<u32, String> = HashMap::new();
    for (qdisc, index) in qdiscs.iter_mut().zip(indexes) {
        qdisc.iface_name = names
            .entry(index)
            .or_insert_with(|| netlink_dump::interface_name(index).unwrap_or_default())
            .clone();
    }
    Ok(qdiscs)
}

/// ema/qdisc's `parseMessage`: the interface index and the qdisc of one message (`tcmsg` and
/// its attributes).
fn parse_message(data: &[u8]) -> anyhow::Result<(u32, QdiscInfo)> {
    if data.len() < TCMSG_LEN {
        anyhow::bail!("short message, len={}", data.len());
    }
    let index = netlink_raw::u32_at(&data[4..8], "tcm_ifindex")?;
    let mut parent = netlink_raw::u32_at(&data[12..16], "tcm_parent")?;
    if parent == u32::MAX {
        parent = 0;
    }
    let mut qdisc = QdiscInfo {
        parent,
        ..QdiscInfo::default()
    };
    let attributes =
        netlink_raw::attributes(&data[TCMSG_LEN..]).context("failed to unmarshal attributes")?;
    for attribute in attributes {
        match attribute.kind {
            TCA_KIND => qdisc.kind = netlink_raw::nl_string(attribute.data),
            TCA_STATS2 => parse_stats2(attribute.data, &mut qdisc)?,
            TCA_STATS => {
                // Legacy `struct tc_stats`: bytes, packets, drops, overlimits, bps, pps, qlen,
                // backlog.
                let data = attribute.data;
                if data.len() < 36 {
                    anyhow::bail!("TCA_STATS of {} bytes, expected 36", data.len());
                }
                let at = |offset: usize| netlink_raw::u32_at(&data[offset..], "TCA_STATS");
                qdisc.bytes = netlink_raw::u64_at(data, "TCA_STATS")?;
                qdisc.packets = at(8)?;
                qdisc.drops = at(12)?;
                qdisc.overlimits = at(16)?;
                qdisc.qlen = at(28)?;
                qdisc.backlog = at(32)?;
            }
            _ => {}
        }
    }
    Ok((index, qdisc))
}

/// The `TCA_STATS2` nest: `gnet_stats_basic` (bytes, packets) and `gnet_stats_queue` (qlen,
/// backlog, drops, requeues, overlimits); what it lacks counts as 0, as in ema/qdisc.
fn parse_stats2(data: &[u8], qdisc: &mut QdiscInfo) -> anyhow::Result<()> {
    let (mut bytes, mut packets) = (0, 0);
    let mut queue = [0u32; 5];
    for attribute in netlink_raw::attributes(data).context("TCA_STATS2")? {
        let data = attribute.data;
        match attribute.kind {
            TCA_STATS_BASIC => {
                bytes = netlink_raw::u64_at(data, "TCA_STATS_BASIC")?;
                packets =
                    netlink_raw::u32_at(data.get(8..).unwrap_or_default(), "TCA_STATS_BASIC")?;
            }
            TCA_STATS_QUEUE => {
                if data.len() < 20 {
                    anyhow::bail!("TCA_STATS_QUEUE of {} bytes, expected 20", data.len());
                }
                for (i, value) in queue.iter_mut().enumerate() {
                    *value = netlink_raw::u32_at(&data[i * 4..], "TCA_STATS_QUEUE")?;
                }
            }
            _ => {}
        }
    }
    let [qlen, backlog, drops, requeues, overlimits] = queue;
    qdisc.bytes = bytes;
    qdisc.packets = packets;
    qdisc.drops = drops;
    qdisc.requeues = requeues;
    qdisc.overlimits = overlimits;
    qdisc.qlen = qlen;
    qdisc.backlog = backlog;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::netlink_raw::push_attribute;

    fn tcmsg(index: u32, handle: u32, parent: u32) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        out.extend(index.to_ne_bytes());
        out.extend(handle.to_ne_bytes());
        out.extend(parent.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out
    }

    fn stats2(bytes: u64, packets: u32, queue: [u32; 5]) -> Vec<u8> {
        let mut basic = bytes.to_ne_bytes().to_vec();
        basic.extend(packets.to_ne_bytes());
        basic.extend([0; 4]); // struct padding
        let queue: Vec<u8> = queue.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut nest = Vec::new();
        push_attribute(&mut nest, TCA_STATS_BASIC, &basic);
        push_attribute(&mut nest, 2, &[0; 8]); // rate estimator: ignored
        push_attribute(&mut nest, TCA_STATS_QUEUE, &queue);
        push_attribute(&mut nest, 4, &[1; 16]); // TCA_STATS_APP: ignored
        nest
    }

    fn legacy(bytes: u64, values: [u32; 7]) -> Vec<u8> {
        let mut out = bytes.to_ne_bytes().to_vec();
        out.extend(values.iter().flat_map(|v| v.to_ne_bytes()));
        out.extend([0; 4]);
        out
    }

    #[test]
    fn messages_parse_as_ema_qdisc_parses_them() {
        let mut message = tcmsg(3, 0x8001_0000, u32::MAX);
        push_attribute(&mut message, TCA_KIND, b"fq_codel\0");
        push_attribute(&mut message, 2, &[0; 12]); // TCA_OPTIONS: ignored
        push_attribute(
            &mut message,
            TCA_STATS2,
            &stats2(1 << 40, 9, [1, 2, 3, 4, 5]),
        );
        let (index, qdisc) = parse_message(&message).unwrap();
        assert_eq!(index, 3);
        let expected = QdiscInfo {
            iface_name: String::new(),
            parent: 0,
            kind: "fq_codel".into(),
            bytes: 1 << 40,
            packets: 9,
            qlen: 1,
            backlog: 2,
            drops: 3,
            requeues: 4,
            overlimits: 5,
        };
        assert_eq!(qdisc, expected);
        // The legacy struct, after, overwrites all but requeues.
        push_attribute(
            &mut message,
            TCA_STATS,
            &legacy(7, [8, 9, 10, 0, 0, 11, 12]),
        );
        let (_, qdisc) = parse_message(&message).unwrap();
        assert_eq!(
            qdisc,
            QdiscInfo {
                bytes: 7,
                packets: 8,
                drops: 9,
                overlimits: 10,
                qlen: 11,
                backlog: 12,
                ..expected.clone()
            }
        );
        // A child qdisc keeps its parent; a STATS2 without its parts zeroes the counters.
        let mut child = tcmsg(3, 0, 0x8001_0001);
        push_attribute(&mut child, TCA_STATS2, &[]);
        let (_, qdisc) = parse_message(&child).unwrap();
        assert_eq!(qdisc.parent, 0x8001_0001);
        assert_eq!(qdisc.bytes, 0);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            parse_message(&[0; 19]).unwrap_err().to_string(),
            "short message, len=19"
        );
        let mut bad_attribute = tcmsg(1, 0, 0);
        bad_attribute.extend([9, 0, 1, 0]);
        assert!(parse_message(&bad_attribute).is_err());
        let mut short_basic = tcmsg(1, 0, 0);
        let mut nest = Vec::new();
        push_attribute(&mut nest, TCA_STATS_BASIC, &[0; 10]);
        push_attribute(&mut short_basic, TCA_STATS2, &nest);
        assert!(parse_message(&short_basic).is_err());
        let mut short_queue = tcmsg(1, 0, 0);
        let mut nest = Vec::new();
        push_attribute(&mut nest, TCA_STATS_QUEUE, &[0; 16]);
        push_attribute(&mut short_queue, TCA_STATS2, &nest);
        assert!(parse_message(&short_queue).is_err());
        let mut bad_nest = tcmsg(1, 0, 0);
        push_attribute(&mut bad_nest, TCA_STATS2, &[5, 0, 0]);
        assert!(parse_message(&bad_nest).is_err());
        let mut short_legacy = tcmsg(1, 0, 0);
        push_attribute(&mut short_legacy, TCA_STATS, &[0; 32]);
        assert!(parse_message(&short_legacy).is_err());
        // Only the header: a qdisc without kind nor counters.
        assert_eq!(
            parse_message(&tcmsg(2, 0, 0)).unwrap().1,
            QdiscInfo::default()
        );
    }

    fn collector(fixtures: &Path, include: Option<&str>) -> QdiscCollector {
        QdiscCollector {
            fixtures: Some(fixtures.to_owned()),
            filter: DeviceFilter::new(None, include.map(|p| regex::Regex::new(p).unwrap())),
        }
    }

    fn scrape(collector: &QdiscCollector) -> (anyhow::Result<()>, Vec<MetricFamily>) {
        let mut out = Vec::new();
        let result = collector.update(&mut out);
        (result, out)
    }

    #[test]
    fn fixtures_report_root_qdiscs() {
        let dir = std::env::temp_dir().join(format!("qdisc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("results.json"),
            r#"[{"IfaceName":"ens5","Kind":"mq","Bytes":18446744073709551615,"Packets":4294967295,
                 "Qlen":3,"backlog":1500,"Unknown":"x"},
                {"IfaceName":"ens5","Parent":2147549185,"Kind":"fq_codel","Bytes":5},
                null,
                {"IfaceName":"lo","Kind":"noqueue"}]"#,
        )
        .unwrap();
        let (result, out) = scrape(&collector(&dir, Some("^(ens5|)$")));
        result.unwrap();
        assert_eq!(out.len(), 7);
        let bytes = &out[0];
        assert_eq!(bytes.name, "node_qdisc_bytes_total");
        let devices: Vec<_> = bytes.metrics.iter().map(|m| m.labels.clone()).collect();
        assert_eq!(
            devices,
            [
                vec![
                    ("device".into(), "ens5".into()),
                    ("kind".into(), "mq".into())
                ],
                vec![
                    ("device".into(), String::new()),
                    ("kind".into(), String::new())
                ],
            ],
            "root qdiscs only, lo filtered out, the null entry is a zero qdisc"
        );
        assert_eq!(
            bytes.metrics[0].value,
            crate::metrics::Value::Scalar(1.8446744073709552e19)
        );
        assert_eq!(
            out[1].metrics[0].value,
            crate::metrics::Value::Scalar(4294967295.0)
        );
        assert_eq!(out[5].name, "node_qdisc_current_queue_length");
        assert_eq!(out[5].metrics[0].value, crate::metrics::Value::Scalar(3.0));
        assert_eq!(
            out[6].metrics[0].value,
            crate::metrics::Value::Scalar(1500.0)
        );

        for bad in [
            r#"[{"Packets": 4294967296}]"#,
            r#"{"IfaceName":"x"}"#,
            "[",
            r#"[{"Parent":-1}]"#,
        ] {
            std::fs::write(dir.join("results.json"), bad).unwrap();
            let (result, out) = scrape(&collector(&dir, None));
            assert!(result.is_err(), "{bad}");
            assert!(out.is_empty());
        }
        std::fs::remove_file(dir.join("results.json")).unwrap();
        let (result, _) = scrape(&collector(&dir, None));
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("results.json"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn filter(args: &[&str]) -> anyhow::Result<DeviceFilter> {
        let matches = clap::Command::new("t")
            .args(SPEC.flags.iter().flat_map(|f| f.args("t")))
            .get_matches_from(std::iter::once("t").chain(args.iter().copied()));
        device_filter(&CollectorFlags::from_matches(&matches, SPEC.flags))
    }

    #[test]
    fn device_flags_as_upstream_checks_them() {
        let none = filter(&[]).unwrap();
        assert!(!none.ignored("ens5"));
        let old_include = filter(&["--collector.qdisk.device-include=^ens"]).unwrap();
        assert!(!old_include.ignored("ens5"));
        assert!(old_include.ignored("lo"));
        let old_exclude = filter(&["--collector.qdisk.device-exclude=^veth"]).unwrap();
        assert!(old_exclude.ignored("veth4b09a1c"));
        assert!(!old_exclude.ignored("ens5"));
        let exclude = filter(&["--collector.qdisc.device-exclude=^lo$"]).unwrap();
        assert!(exclude.ignored("lo"));
        for (args, message) in [
            (
                &[
                    "--collector.qdisk.device-include=a",
                    "--collector.qdisc.device-include=b",
                ][..],
                "--collector.qdisk.device-include and --collector.qdisc.device-include are mutually exclusive",
            ),
            (
                &[
                    "--collector.qdisk.device-exclude=a",
                    "--collector.qdisc.device-exclude=b",
                ],
                "--collector.qdisk.device-exclude and --collector.qdisc.device-exclude are mutually exclusive",
            ),
            (
                &[
                    "--collector.qdisc.device-include=a",
                    "--collector.qdisk.device-exclude=b",
                ],
                "collector.qdisc.device-include and collector.qdisc.device-exclude are mutaly exclusive",
            ),
        ] {
            assert_eq!(filter(args).unwrap_err().to_string(), message, "{args:?}");
        }
        assert!(filter(&["--collector.qdisc.device-include=("]).is_err());
    }

    #[test]
    fn live_dump_is_bounded_and_parses() {
        // Whatever this namespace has (possibly only noqueue qdiscs): the dump must parse.
        let qdiscs = netlink_qdiscs().unwrap();
        for qdisc in &qdiscs {
            assert!(!qdisc.kind.is_empty(), "{qdisc:?}");
        }
    }
}
