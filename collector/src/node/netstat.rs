//! `netstat`: protocol counters from /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6, as
//! node_exporter's netstat collector: untyped `node_netstat_<Proto>_<Field>` for the fields
//! matching `--collector.netstat.fields`.
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
};

use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    metrics::{MetricFamily, MetricType},
    read,
};

const FIELDS: &str = "collector.netstat.fields";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "netstat",
    default_enabled: true,
    flags: &[FlagSpec::value(
        FIELDS,
        Some(
            "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$",
        ),
        "Regexp of fields to return for netstat collector.",
    )],
    kernel: None,
    build,
};

struct NetstatCollector {
    netstat: read::KeptFile,
    snmp: read::KeptFile,
    snmp6: read::KeptFile,
    fields: Option<Regex>,
    /// Whether `fields` matches a key, for every key seen so far.
    selected: Mutex<HashMap<String, bool>>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(NetstatCollector {
        netstat: read::KeptFile::new(context.proc_path("net/netstat")),
        snmp: read::KeptFile::new(context.proc_path("net/snmp")),
        snmp6: read::KeptFile::new(context.proc_path("net/snmp6")),
        fields: context.flags.regex(FIELDS)?,
        selected: Mutex::default(),
    }))
}

/// protocol -> field -> value text, borrowed from the files' text.
type Stats<'a> = BTreeMap<&'a str, BTreeMap<&'a str, &'a str>>;

/// /proc/net/netstat and /proc/net/snmp: pairs of lines, `Proto: names...` then
/// `Proto: values...`, split on single spaces as upstream splits them.
fn parse_pairs<'a>(text: &'a str, path: &Path) -> anyhow::Result<Stats<'a>> {
    let mut stats = Stats::new();
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next().unwrap_or("");
        let protocol = names.split(' ').next().unwrap_or_default();
        let protocol = protocol
            .strip_suffix(':')
            .unwrap_or(&protocol[..protocol.len().saturating_sub(1)]);
        let (name_count, value_count) = (names.split(' ').count(), values.split(' ').count());
        if name_count != value_count {
            anyhow::bail!(
                "{}: field count mismatch for {protocol}: {name_count} names, {value_count} values",
                path.display(),
            );
        }
        let fields = stats.entry(protocol).or_default();
        fields.clear();
        fields.extend(names.split(' ').zip(values.split(' ')).skip(1));
    }
    Ok(stats)
}

/// /proc/net/snmp6: `<Proto>6<Field> value` lines; lines without a `6` are skipped.
fn parse_snmp6(text: &str) -> Stats<'_> {
    let mut stats = Stats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Some(six) = key.find('6') {
            let (protocol, name) = key.split_at(six + 1);
            stats.entry(protocol).or_default().insert(name, value);
        }
    }
    stats
}

impl Collector for NetstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let netstat = self.netstat.to_string()?;
        let snmp = self.snmp.to_string()?;
        // IPv6 may be disabled: no snmp6 then.
        let snmp6 = self.snmp6.optional()?.unwrap_or_default();
        let mut stats = parse_pairs(&netstat, self.netstat.path())?;
        // Later files replace a protocol as a whole, as upstream merges them.
        stats.extend(parse_pairs(&snmp, self.snmp.path())?);
        stats.extend(parse_snmp6(&snmp6));

        let mut families = Vec::new();
        let mut key = String::new();
        let mut selected = self.selected.lock().unwrap();
        for (protocol, fields) in &stats {
            for (name, value) in fields {
                key.clear();
                key.push_str(protocol);
                key.push('_');
                key.push_str(name);
                // Every value must parse, selected or not, as upstream checks before filtering.
                let value: f64 = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid value {value:?} in netstats ({key})"))?;
                // The same few hundred keys come back every scrape: match each once.
                let keep = match selected.get(key.as_str()) {
                    Some(keep) => *keep,
                    None => {
                        let keep = self.fields.as_ref().is_none_or(|re| re.is_match(&key));
                        selected.insert(key.clone(), keep);
                        keep
                    }
                };
                if !keep {
                    continue;
                }
                families.push(
                    MetricFamily::new(
                        format!("node_netstat_{key}"),
                        format!("Statistic {protocol}{name}."),
                        MetricType::Untyped,
                    )
                    .with_value(value),
                );
            }
        }
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_lines() {
        let stats = parse_pairs(
            "Tcp: RtoAlgorithm CurrEstab\nTcp: 1 -3\nUdp: InDatagrams\nUdp: 7\n",
            Path::new("/proc/net/snmp"),
        )
        .unwrap();
        assert_eq!(stats["Tcp"]["CurrEstab"], "-3");
        assert_eq!(stats["Udp"]["InDatagrams"], "7");
    }

    #[test]
    fn mismatched_or_truncated_pairs_are_errors_naming_the_file() {
        for text in ["Tcp: A B\nTcp: 1\n", "Tcp: A B\n"] {
            let error = parse_pairs(text, Path::new("/x/net/snmp")).unwrap_err();
            assert!(error.to_string().contains("/x/net/snmp"), "{error}");
        }
    }

    #[test]
    fn snmp6_splits_at_the_first_six() {
        let stats = parse_snmp6("Ip6InReceives 10\nUdpLite6InErrors 2\nnosix 3\nIcmp6OutMsgs\n");
        assert_eq!(stats["Ip6"]["InReceives"], "10");
        assert_eq!(stats["UdpLite6"]["InErrors"], "2");
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn bad_values_fail_the_scrape() {
        let dir = std::env::temp_dir().join(format!("netstat-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("netstat"), "TcpExt: A\nTcpExt: x1\n").unwrap();
        std::fs::write(dir.join("snmp"), "Tcp: B\nTcp: 2\n").unwrap();
        let collector = NetstatCollector {
            netstat: read::KeptFile::new(dir.join("netstat")),
            snmp: read::KeptFile::new(dir.join("snmp")),
            snmp6: read::KeptFile::new(dir.join("snmp6")),
            fields: None,
            selected: Mutex::default(),
        };
        let mut out = Vec::new();
        let result = collector.update(&mut out);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(result.is_err());
        assert!(out.is_empty());
    }
}
