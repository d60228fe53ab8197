//! `ipvs`: IP Virtual Server totals from /proc/net/ip_vs_stats and per-backend connections and
//! weights from /proc/net/ip_vs, as node_exporter's ipvs collector (kube-proxy in IPVS mode
//! programs these). No ip_vs_stats means IPVS is not loaded: no data. Backends are summed per
//! label set of `--collector.ipvs.backend-labels` (keyed, as upstream keys them, by the label
//! values joined with `-`). The parsing follows procfs: a backend line belongs to the last
//! TCP/UDP/FWM service line above it (a service of another protocol, SCTP, is not one, so its
//! backends are counted under the service before it, as upstream counts them), and the file is
//! read line by line as a `bufio.Scanner` reads it, stopping quietly at a line over 64 KiB.
use std::{collections::HashMap, net::Ipv6Addr, path::Path, sync::Arc};

use anyhow::Context as _;

use super::netlink_dump::go_ip_string;
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    metrics::MetricFamily,
    read::KeptFile,
};

const LABELS: &str = "collector.ipvs.backend-labels";

/// Every backend label, in upstream's order (also the order of the label values' join key).
const FULL_LABELS: [&str; 6] = [
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ipvs",
    default_enabled: true,
    flags: &[FlagSpec::value(
        LABELS,
        Some("local_address,local_port,remote_address,remote_port,proto,local_mark"),
        "Comma separated list for IPVS backend stats labels.",
    )],
    kernel: None,
    build,
};

/// bufio.Scanner's largest line (its 64 KiB buffer holds the line and its newline).
const MAX_LINE: usize = 64 * 1024 - 1;

struct IpvsCollector {
    stats: KeptFile,
    backends: KeptFile,
    labels: Vec<&'static str>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(IpvsCollector {
        stats: KeptFile::new(context.proc_path("net/ip_vs_stats")),
        backends: KeptFile::new(context.proc_path("net/ip_vs")),
        labels: parse_labels(context.flags.string(LABELS).unwrap_or_default())?,
    }))
}

/// Upstream's `parseIpvsLabels`: a set of known labels, put in the full list's order; unknown
/// ones are an error listing them sorted.
fn parse_labels(text: &str) -> anyhow::Result<Vec<&'static str>> {
    let mut given: Vec<&str> = text.split(',').filter(|l| !l.is_empty()).collect();
    let labels: Vec<&'static str> = FULL_LABELS
        .into_iter()
        .filter(|label| given.contains(label))
        .collect();
    given.retain(|label| !FULL_LABELS.contains(label));
    if !given.is_empty() {
        given.sort_unstable();
        given.dedup();
        anyhow::bail!("unknown IPVS backend labels: {:?}", given.join(", "));
    }
    Ok(labels)
}

/// /proc/net/ip_vs_stats' totals.
#[derive(Debug, PartialEq)]
struct Stats {
    connections: u64,
    incoming_packets: u64,
    outgoing_packets: u64,
    incoming_bytes: u64,
    outgoing_bytes: u64,
}

/// procfs' `parseIPVSStats`: the third line holds the five totals, in hexadecimal.
fn parse_stats(text: &str, path: &Path) -> anyhow::Result<Stats> {
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    let [_, _, totals, _] = lines[..] else {
        anyhow::bail!("{}: ip_vs_stats corrupt: too short", path.display());
    };
    let fields: Vec<&str> = totals.split_whitespace().collect();
    let [
        connections,
        incoming_packets,
        outgoing_packets,
        incoming_bytes,
        outgoing_bytes,
    ] = fields[..]
    else {
        anyhow::bail!(
            "{}: ip_vs_stats corrupt: unexpected number of fields",
            path.display()
        );
    };
    let hex = |value: &str, field: &str| {
        u64::from_str_radix(value, 16)
            .ok()
            // from_str_radix takes a leading sign, Go's ParseUint does not.
            .filter(|_| !value.starts_with('+'))
            .with_context(|| format!("{}: {field}: bad hexadecimal {value:?}", path.display()))
    };
    Ok(Stats {
        connections: hex(connections, "connections")?,
        incoming_packets: hex(incoming_packets, "incoming packets")?,
        outgoing_packets: hex(outgoing_packets, "outgoing packets")?,
        incoming_bytes: hex(incoming_bytes, "incoming bytes")?,
        outgoing_bytes: hex(outgoing_bytes, "outgoing bytes")?,
    })
}

/// One backend line of /proc/net/ip_vs, with the service it belongs to.
#[derive(Debug, Default, PartialEq)]
struct Backend {
    /// `None` for a firewall-mark service (Go's nil IP).
    local_address: Option<Vec<u8>>,
    local_port: u16,
    local_mark: String,
    proto: String,
    remote_address: Vec<u8>,
    remote_port: u16,
    weight: u64,
    active: u64,
    inactive: u64,
}

/// procfs' `parseIPVSBackendStatus`.
fn parse_backends(text: &str, path: &Path) -> anyhow::Result<Vec<Backend>> {
    let mut backends = Vec::new();
    let mut proto = String::new();
    let mut local_mark = String::new();
    let mut local_address: Option<Vec<u8>> = None;
    let mut local_port = 0;
    for line in text.lines() {
        if line.len() > MAX_LINE {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(&first) = fields.first() else {
            continue;
        };
        // Upstream reads the second field of any line not starting with these two, and so
        // panics on a line of one field: an error here.
        let Some(&second) = fields
            .get(1)
            .or((first == "IP" || first == "Prot").then_some(&""))
        else {
            anyhow::bail!("{}: line of one field: {line:?}", path.display());
        };
        match first {
            "IP" | "Prot" => {}
            _ if second == "RemoteAddress:Port" => {}
            "TCP" | "UDP" => {
                first.clone_into(&mut proto);
                local_mark.clear();
                let (address, port) = parse_ip_port(second)
                    .with_context(|| format!("{}: service {line:?}", path.display()))?;
                local_address = Some(address);
                local_port = port;
            }
            "FWM" => {
                first.clone_into(&mut proto);
                second.clone_into(&mut local_mark);
                local_address = None;
                local_port = 0;
            }
            "->" if fields.len() >= 6 => {
                let (remote_address, remote_port) = parse_ip_port(second)
                    .with_context(|| format!("{}: backend {line:?}", path.display()))?;
                let number = |value: &str, field: &str| {
                    crate::read::parse_number::<u64>(value, field, path)
                        .with_context(|| format!("backend {line:?}"))
                };
                backends.push(Backend {
                    local_address: local_address.clone(),
                    local_port,
                    local_mark: local_mark.clone(),
                    proto: proto.clone(),
                    remote_address,
                    remote_port,
                    weight: number(fields[3], "weight")?,
                    active: number(fields[4], "active connections")?,
                    inactive: number(fields[5], "inactive connections")?,
                });
            }
            _ => {}
        }
    }
    Ok(backends)
}

/// procfs' `parseIPPort`: `C0A80016:0CEA` (IPv4, hexadecimal) or
/// `[2620:0000:0000:0000:0000:0000:0000:0001]:0050` (IPv6), both with a hexadecimal port.
fn parse_ip_port(text: &str) -> anyhow::Result<(Vec<u8>, u16)> {
    let address = match text.len() {
        13 => {
            let hex = text
                .get(..8)
                .context("bad IPv4 address")?
                .as_bytes()
                .chunks(2)
                .map(|pair| {
                    std::str::from_utf8(pair)
                        .ok()
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                        .filter(|_| pair[0] != b'+')
                })
                .collect::<Option<Vec<u8>>>();
            hex.with_context(|| format!("bad IPv4 address in {text:?}"))?
        }
        46 => text
            .get(1..40)
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .with_context(|| format!("Invalid IPv6 addr in {text:?}"))?
            .octets()
            .to_vec(),
        _ => anyhow::bail!("Unexpected IP:Port {text:?}"),
    };
    let port = text
        .get(text.len() - 4..)
        .and_then(|port| {
            u16::from_str_radix(port, 16)
                .ok()
                .filter(|_| !port.starts_with('+'))
        })
        .with_context(|| format!("bad port in {text:?}"))?;
    Ok((address, port))
}

/// A label set's summed backends.
#[derive(Default)]
struct Sum {
    labels: Vec<String>,
    active: u64,
    inactive: u64,
    weight: u64,
}

impl IpvsCollector {
    /// The value of `label` for `backend`, as upstream prints it.
    fn label_value(label: &str, backend: &Backend) -> String {
        match label {
            "local_address" => backend
                .local_address
                .as_deref()
                .map(go_ip_string)
                .unwrap_or_default(),
            "local_port" => backend.local_port.to_string(),
            "remote_address" => go_ip_string(&backend.remote_address),
            "remote_port" => backend.remote_port.to_string(),
            "proto" => backend.proto.clone(),
            "local_mark" => backend.local_mark.clone(),
            _ => String::new(),
        }
    }
}

impl Collector for IpvsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = self.stats.path();
        let Some(text) = self.stats.optional().context("could not get IPVS stats")? else {
            return Err(NoData(format!(
                "ipvs collector metrics are not available for this system: {} does not exist",
                path.display()
            ))
            .into());
        };
        let stats = parse_stats(&text, path).context("could not get IPVS stats")?;
        for (name, help, value) in [
            (
                "node_ipvs_connections_total",
                "The total number of connections made.",
                stats.connections,
            ),
            (
                "node_ipvs_incoming_packets_total",
                "The total number of incoming packets.",
                stats.incoming_packets,
            ),
            (
                "node_ipvs_outgoing_packets_total",
                "The total number of outgoing packets.",
                stats.outgoing_packets,
            ),
            (
                "node_ipvs_incoming_bytes_total",
                "The total amount of incoming data.",
                stats.incoming_bytes,
            ),
            (
                "node_ipvs_outgoing_bytes_total",
                "The total amount of outgoing data.",
                stats.outgoing_bytes,
            ),
        ] {
            out.push(MetricFamily::counter(name, help).with_value(value as f64));
        }

        let text = self
            .backends
            .to_string()
            .context("could not get backend status")?;
        let backends =
            parse_backends(&text, self.backends.path()).context("could not get backend status")?;
        let mut sums: HashMap<String, Sum> = HashMap::new();
        for backend in &backends {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|label| Self::label_value(label, backend))
                .collect();
            let sum = sums.entry(labels.join("-")).or_default();
            sum.active = sum.active.wrapping_add(backend.active);
            sum.inactive = sum.inactive.wrapping_add(backend.inactive);
            sum.weight = sum.weight.wrapping_add(backend.weight);
            // The last label set of a key names its sum, as upstream's map keeps the last.
            sum.labels = labels;
        }
        let mut active = MetricFamily::gauge(
            "node_ipvs_backend_connections_active",
            "The current active connections by local and remote address.",
        );
        let mut inactive = MetricFamily::gauge(
            "node_ipvs_backend_connections_inactive",
            "The current inactive connections by local and remote address.",
        );
        let mut weight = MetricFamily::gauge(
            "node_ipvs_backend_weight",
            "The current backend weight by local and remote address.",
        );
        for sum in sums.values() {
            let labels = || self.labels.iter().copied().zip(sum.labels.iter().cloned());
            active.push(labels(), sum.active as f64);
            inactive.push(labels(), sum.inactive as f64);
            weight.push(labels(), sum.weight as f64);
        }
        out.extend([active, inactive, weight]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n  1A2B3C  FFFFFFFF        0     FFFFFFFFFFFFFFFF                0\n\n Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n       4    1FB3C        0          1282A8F                0\n";

    fn path() -> &'static Path {
        Path::new("/proc/net/ip_vs")
    }

    #[test]
    fn stats() {
        assert_eq!(
            parse_stats(STATS, path()).unwrap(),
            Stats {
                connections: 0x1A2B3C,
                incoming_packets: 0xFFFF_FFFF,
                outgoing_packets: 0,
                incoming_bytes: u64::MAX,
                outgoing_bytes: 0,
            }
        );
        // Three newlines are enough; the fourth part may be empty.
        assert!(parse_stats("a\nb\n1 2 3 4 5\n", path()).is_ok());
        assert!(parse_stats("a\nb\n1 2 3 4 5", path()).is_err(), "too short");
        assert!(parse_stats("a\nb\n1 2 3 4\n", path()).is_err());
        assert!(parse_stats("a\nb\n1 2 3 4 5 6\n", path()).is_err());
        assert!(parse_stats("a\nb\n1 2 3 4 0x5\n", path()).is_err());
        assert!(parse_stats("a\nb\n1 2 3 4 +5\n", path()).is_err());
        assert!(parse_stats("a\nb\n1 2 3 4 10000000000000000\n", path()).is_err());
    }

    #[test]
    fn backends_belong_to_the_service_above() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
  -> 0A000001:0050      Masq    1      0          0\n\
TCP  0A640001:01BB rr\n\
  -> 0A020305:2000      Masq    1      12         3\n\
UDP  [2600:1f18:0000:0000:0000:0000:0000:000a]:0035 rr\n\
  -> [0000:0000:0000:0000:0000:ffff:0a02:0306]:0035      Masq    2      0          7\n\
  -> 0A020307:0035      Masq    1\n\
FWM  00000010 wlc\n\
  -> 0A020308:0050      Route   100    18446744073709551615 0\n\
SCTP 0A640002:0B59 rr\n\
  -> 0A020309:0B59      Masq    1      1          1\n";
        let backends = parse_backends(text, path()).unwrap();
        let summary: Vec<String> = backends
            .iter()
            .map(|b| {
                format!(
                    "{:?} {} {:?} {:?} -> {} {} w{} a{} i{}",
                    b.local_address.as_deref().map(go_ip_string),
                    b.local_port,
                    b.local_mark,
                    b.proto,
                    go_ip_string(&b.remote_address),
                    b.remote_port,
                    b.weight,
                    b.active,
                    b.inactive,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                r#"None 0 "" "" -> 10.0.0.1 80 w1 a0 i0"#,
                r#"Some("10.100.0.1") 443 "" "TCP" -> 10.2.3.5 8192 w1 a12 i3"#,
                r#"Some("2600:1f18::a") 53 "" "UDP" -> 10.2.3.6 53 w2 a0 i7"#,
                r#"None 0 "00000010" "FWM" -> 10.2.3.8 80 w100 a18446744073709551615 i0"#,
                r#"None 0 "00000010" "FWM" -> 10.2.3.9 2905 w1 a1 i1"#,
            ]
        );
    }

    #[test]
    fn malformed_backends() {
        for bad in [
            "TCP  0A64000:01BB rr\n",
            "TCP  0A64000G:01BB rr\n",
            "TCP  +A640001:01BB rr\n",
            "TCP  0A640001:01BG rr\n",
            "  -> 0A020305:2000 Masq x 0 0\n",
            "  -> 0A020305:2000 Masq 1 -1 0\n",
            "  -> 0A020305:2000 Masq 1 0 18446744073709551616\n",
            "UDP  [2600:1f18:0000:0000:0000:0000:0000:zzzz]:0035 rr\n",
            "UDP  [2600:1f18:0000:0000:0000:0000:0000:000é]:003 rr\n",
            "lonely\n",
        ] {
            let error = parse_backends(bad, path()).unwrap_err();
            assert!(
                format!("{error:#}").contains("/proc/net/ip_vs"),
                "{error:#}"
            );
        }
        // A line too long for upstream's scanner ends the file there, without an error.
        let long = format!(
            "TCP  0A640001:01BB rr\n  -> 0A020305:2000 Masq 1 2 3\n{}\n  -> 0A020306:2000 Masq 1 2 3\n",
            "x".repeat(MAX_LINE + 1)
        );
        assert_eq!(parse_backends(&long, path()).unwrap().len(), 1);
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels("local_mark,proto,local_address,,proto").unwrap(),
            ["local_address", "proto", "local_mark"]
        );
        assert_eq!(parse_labels("").unwrap(), Vec::<&str>::new());
        assert_eq!(
            parse_labels("zone,proto,app,zone").unwrap_err().to_string(),
            "unknown IPVS backend labels: \"app, zone\""
        );
    }
}
