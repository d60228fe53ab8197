//! `nfs`: NFS client RPC statistics from /proc/net/rpc/nfs, parsed as procfs'
//! `nfs.ParseClientRPCStats` (the "net", "rpc", "proc2", "proc3" and "proc4" lines).
//!
//! node_exporter lists the procedures of each NFS version by reflecting over procfs' structs,
//! so every procedure of every version is reported (0 when its line is absent, as "proc2" is
//! on kernels built without NFSv2), named as the struct fields are: the tables below keep
//! that order and those names. The line and number helpers here are shared with `nfsd` and
//! `mountstats`, which parse the same way.
use std::{borrow::Cow, path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "nfs",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// The numbered lines of a file as Go's `bufio.Scanner` yields them ([`goparse::Lines`]), invalid
/// UTF-8 replaced (whitespace and ASCII keys are found exactly where Go finds them); a line too
/// long for the scanner is an error naming its number.
pub(crate) struct GoLines<'a> {
    lines: goparse::Lines<'a>,
    number: usize,
}

impl<'a> GoLines<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            lines: goparse::lines(data),
            number: 0,
        }
    }

    /// The next line and its number (from 1); `None` at the end.
    pub(crate) fn next_line(&mut self) -> anyhow::Result<Option<(usize, Cow<'a, str>)>> {
        let Some(line) = self.lines.next() else {
            return Ok(None);
        };
        self.number += 1;
        let line = line.map_err(|error| anyhow::anyhow!("line {}: {error}", self.number))?;
        Ok(Some((self.number, String::from_utf8_lossy(line))))
    }
}

/// procfs' `util.ParseUint64s`: every field a decimal `u64`, as Go's `ParseUint(s, 10, 64)`
/// takes it.
pub(crate) fn parse_uints(fields: &[&str]) -> anyhow::Result<Vec<u64>> {
    fields
        .iter()
        .map(|field| {
            goparse::parse_uint(field, 10, 64)
                .with_context(|| format!("strconv.ParseUint: parsing {field:?}"))
        })
        .collect()
}

/// A "procN" line's values after procfs' count check: `v[0]` is the number of values that
/// follow and must match them.
pub(crate) fn counted(v: &[u64], what: &str) -> anyhow::Result<u64> {
    let count = v.first().copied().unwrap_or_default();
    if (v.len() as u64).saturating_sub(1) != count || v.is_empty() {
        anyhow::bail!("invalid {what} line {v:?}");
    }
    Ok(count)
}

/// procfs' `parseV2Stats`: the count, then at least 18 procedures (`Null` first).
pub(crate) fn parse_v2(v: &[u64]) -> anyhow::Result<[u64; 19]> {
    if counted(v, "V2Stats")? < 18 {
        anyhow::bail!("invalid V2Stats line {v:?}");
    }
    let mut out = [0; 19];
    out.copy_from_slice(&v[..19]);
    Ok(out)
}

/// procfs' `parseV3Stats`: the count, then at least 22 procedures (`Null` first).
pub(crate) fn parse_v3(v: &[u64]) -> anyhow::Result<[u64; 23]> {
    if counted(v, "V3Stats")? < 22 {
        anyhow::bail!("invalid V3Stats line {v:?}");
    }
    let mut out = [0; 23];
    out.copy_from_slice(&v[..23]);
    Ok(out)
}

/// procfs' `parseNetwork`: net count, UDP count, TCP count, TCP connections.
pub(crate) fn parse_network(v: &[u64]) -> anyhow::Result<[u64; 4]> {
    v.try_into()
        .map_err(|_| anyhow::anyhow!("invalid Network line {v:?}"))
}

/// Procedure names with their index in a "procN" line.
pub(crate) type Procedures = &'static [(&'static str, usize)];

/// procfs' `V2Stats` fields in declaration order, with their index in a "proc2" line.
pub(crate) const V2_PROCEDURES: [(&str, usize); 18] = [
    ("Null", 1),
    ("GetAttr", 2),
    ("SetAttr", 3),
    ("Root", 4),
    ("Lookup", 5),
    ("ReadLink", 6),
    ("Read", 7),
    ("WrCache", 8),
    ("Write", 9),
    ("Create", 10),
    ("Remove", 11),
    ("Rename", 12),
    ("Link", 13),
    ("SymLink", 14),
    ("MkDir", 15),
    ("RmDir", 16),
    ("ReadDir", 17),
    ("FsStat", 18),
];

/// procfs' `V3Stats` fields in declaration order, with their index in a "proc3" line.
pub(crate) const V3_PROCEDURES: [(&str, usize); 22] = [
    ("Null", 1),
    ("GetAttr", 2),
    ("SetAttr", 3),
    ("Lookup", 4),
    ("Access", 5),
    ("ReadLink", 6),
    ("Read", 7),
    ("Write", 8),
    ("Create", 9),
    ("MkDir", 10),
    ("SymLink", 11),
    ("MkNod", 12),
    ("Remove", 13),
    ("RmDir", 14),
    ("Rename", 15),
    ("Link", 16),
    ("ReadDir", 17),
    ("ReadDirPlus", 18),
    ("FsStat", 19),
    ("FsInfo", 20),
    ("PathConf", 21),
    ("Commit", 22),
];

/// procfs' `ClientV4Stats` fields in declaration order, with their index in a "proc4" line.
/// `LayoutGet` and `GetDeviceInfo` are declared in one order and filled from the other
/// (indexes 46 and 45), as procfs does.
const V4_PROCEDURES: [(&str, usize); 59] = [
    ("Null", 1),
    ("Read", 2),
    ("Write", 3),
    ("Commit", 4),
    ("Open", 5),
    ("OpenConfirm", 6),
    ("OpenNoattr", 7),
    ("OpenDowngrade", 8),
    ("Close", 9),
    ("Setattr", 10),
    ("FsInfo", 11),
    ("Renew", 12),
    ("SetClientID", 13),
    ("SetClientIDConfirm", 14),
    ("Lock", 15),
    ("Lockt", 16),
    ("Locku", 17),
    ("Access", 18),
    ("Getattr", 19),
    ("Lookup", 20),
    ("LookupRoot", 21),
    ("Remove", 22),
    ("Rename", 23),
    ("Link", 24),
    ("Symlink", 25),
    ("Create", 26),
    ("Pathconf", 27),
    ("StatFs", 28),
    ("ReadLink", 29),
    ("ReadDir", 30),
    ("ServerCaps", 31),
    ("DelegReturn", 32),
    ("GetACL", 33),
    ("SetACL", 34),
    ("FsLocations", 35),
    ("ReleaseLockowner", 36),
    ("Secinfo", 37),
    ("FsidPresent", 38),
    ("ExchangeID", 39),
    ("CreateSession", 40),
    ("DestroySession", 41),
    ("Sequence", 42),
    ("GetLeaseTime", 43),
    ("ReclaimComplete", 44),
    ("LayoutGet", 46),
    ("GetDeviceInfo", 45),
    ("LayoutCommit", 47),
    ("LayoutReturn", 48),
    ("SecinfoNoName", 49),
    ("TestStateID", 50),
    ("FreeStateID", 51),
    ("GetDeviceList", 52),
    ("BindConnToSession", 53),
    ("DestroyClientID", 54),
    ("Seek", 55),
    ("Allocate", 56),
    ("DeAllocate", 57),
    ("LayoutStats", 58),
    ("Clone", 59),
];

/// /proc/net/rpc/nfs as node_exporter reads it; absent lines leave zeros.
#[derive(Debug, PartialEq)]
pub struct ClientRpcStats {
    /// net count, UDP count, TCP count, TCP connections.
    pub network: [u64; 4],
    /// RPC count, retransmissions, authentication refreshes.
    pub rpc: [u64; 3],
    /// The "proc2" line from its count on (`[0]`).
    pub v2: [u64; 19],
    pub v3: [u64; 23],
    /// The "proc4" line from its count on, padded with zeros as procfs pads an older kernel's.
    pub v4: [u64; 60],
}

impl Default for ClientRpcStats {
    fn default() -> Self {
        Self {
            network: [0; 4],
            rpc: [0; 3],
            v2: [0; 19],
            v3: [0; 23],
            v4: [0; 60],
        }
    }
}

/// procfs' `ParseClientRPCStats`: every line `<key> <numbers>...` of a known key, or an error.
pub fn parse_client_rpc_stats(data: &[u8]) -> anyhow::Result<ClientRpcStats> {
    let mut stats = ClientRpcStats::default();
    let mut lines = GoLines::new(data);
    while let Some((number, line)) = lines.next_line()? {
        let at = || format!("line {number}");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 2 {
            anyhow::bail!("{}: invalid NFS metric line {line:?}", at());
        }
        let values = parse_uints(&parts[1..])
            .with_context(|| format!("{}: error parsing NFS metric line", at()))?;
        let parsed = match parts[0] {
            "net" => parse_network(&values).map(|v| stats.network = v),
            "rpc" => <[u64; 3]>::try_from(values.as_slice())
                .map(|v| stats.rpc = v)
                .map_err(|_| anyhow::anyhow!("invalid RPC line {values:?}")),
            "proc2" => parse_v2(&values).map(|v| stats.v2 = v),
            "proc3" => parse_v3(&values).map(|v| stats.v3 = v),
            "proc4" => counted(&values, "ClientV4Stats").map(|_| {
                // Fewer than 59 procedures (an older kernel): the rest stay 0; more: ignored.
                stats.v4 = [0; 60];
                let n = values.len().min(60);
                stats.v4[..n].copy_from_slice(&values[..n]);
            }),
            key => anyhow::bail!("{}: unknown NFS metric line {key:?}", at()),
        };
        parsed.with_context(|| format!("{}: errors parsing NFS metric line", at()))?;
    }
    Ok(stats)
}

/// Reads an NFS statistics file as procfs' `os.Open` then scan: `None` when it does not exist
/// (node_exporter's `ErrNoData`), bytes otherwise.
pub(crate) fn read_stats_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

/// procfs' `NewFS`, which node_exporter's NFS collectors call when they are built: the proc
/// mount point must be a directory.
pub(crate) fn check_procfs(procfs: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(procfs).with_context(|| {
        format!(
            "failed to open procfs: could not read {:?}",
            procfs.display()
        )
    })?;
    if !metadata.is_dir() {
        anyhow::bail!(
            "failed to open procfs: mount point {:?} is not a directory",
            procfs.display()
        );
    }
    Ok(())
}

struct NfsCollector {
    path: std::path::PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    check_procfs(&context.procfs)?;
    Ok(Arc::new(NfsCollector {
        path: context.proc_path("net/rpc/nfs"),
    }))
}

impl Collector for NfsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let Some(data) = read_stats_file(&self.path).context("failed to retrieve nfs stats")?
        else {
            return Err(NoData(format!(
                "Not collecting NFS metrics: {} does not exist",
                self.path.display()
            ))
            .into());
        };
        let stats = parse_client_rpc_stats(&data)
            .with_context(|| format!("failed to retrieve nfs stats: {}", self.path.display()))?;
        out.extend(families(&stats));
        Ok(())
    }
}

fn families(stats: &ClientRpcStats) -> Vec<MetricFamily> {
    let [_, udp, tcp, tcp_connections] = stats.network;
    let [rpcs, retransmissions, refreshes] = stats.rpc;
    let mut requests = MetricFamily::counter(
        "node_nfs_requests_total",
        "Number of NFS procedures invoked.",
    );
    let versions: [(&str, Procedures, &[u64]); 3] = [
        ("2", &V2_PROCEDURES, &stats.v2),
        ("3", &V3_PROCEDURES, &stats.v3),
        ("4", &V4_PROCEDURES, &stats.v4),
    ];
    for (proto, procedures, values) in versions {
        for &(method, index) in procedures {
            requests.push([("proto", proto), ("method", method)], values[index] as f64);
        }
    }
    vec![
        MetricFamily::counter(
            "node_nfs_packets_total",
            "Total NFSd network packets (sent+received) by protocol type.",
        )
        .with([("protocol", "udp")], udp as f64)
        .with([("protocol", "tcp")], tcp as f64),
        MetricFamily::counter(
            "node_nfs_connections_total",
            "Total number of NFSd TCP connections.",
        )
        .with_value(tcp_connections as f64),
        MetricFamily::counter("node_nfs_rpcs_total", "Total number of RPCs performed.")
            .with_value(rpcs as f64),
        MetricFamily::counter(
            "node_nfs_rpc_retransmissions_total",
            "Number of RPC transmissions performed.",
        )
        .with_value(retransmissions as f64),
        MetricFamily::counter(
            "node_nfs_rpc_authentication_refreshes_total",
            "Number of RPC authentication refreshes performed.",
        )
        .with_value(refreshes as f64),
        requests,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EKS node's client file (kernel 6.1: no "proc2", 69 NFSv4 procedures).
    const CLIENT: &str = "net 18 0 18 3
rpc 2847391 12 2847403
proc3 22 4 1183 71 2266 3517 0 99421 5120 88 7 1 0 35 3 12 0 21 402 6 2 1 301
proc4 69 7 88213 40211 3102 1893 0 0 2 1871 311 3 0 0 0 52 0 52 1204 19877 4411 2 207 18 0 3 210 1 1 0 93 6 44 0 0 0 0 0 0 2 2 1 2631 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    fn sample(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = families.iter().find(|f| f.name == name)?;
        family.metrics.iter().find_map(|m| {
            let matches = labels
                .iter()
                .all(|(k, v)| m.labels.iter().any(|(lk, lv)| lk == k && lv == v));
            match m.value {
                crate::metrics::Value::Scalar(value) if matches => Some(value),
                _ => None,
            }
        })
    }

    #[test]
    fn parses_a_client_file() {
        let stats = parse_client_rpc_stats(CLIENT.as_bytes()).unwrap();
        assert_eq!(stats.network, [18, 0, 18, 3]);
        assert_eq!(stats.rpc, [2847391, 12, 2847403]);
        assert_eq!(stats.v2, [0; 19]);
        assert_eq!(stats.v3[7], 99421);
        let families = families(&stats);
        let get = |name, labels: &[(&str, &str)]| sample(&families, name, labels).unwrap();
        assert_eq!(get("node_nfs_packets_total", &[("protocol", "tcp")]), 18.0);
        assert_eq!(get("node_nfs_packets_total", &[("protocol", "udp")]), 0.0);
        assert_eq!(get("node_nfs_connections_total", &[]), 3.0);
        assert_eq!(get("node_nfs_rpc_retransmissions_total", &[]), 12.0);
        let request = |proto, method| {
            get(
                "node_nfs_requests_total",
                &[("proto", proto), ("method", method)],
            )
        };
        assert_eq!(request("3", "Read"), 99421.0);
        assert_eq!(request("2", "Null"), 0.0);
        assert_eq!(request("4", "Read"), 88213.0);
        assert_eq!(request("4", "Sequence"), 2631.0);
        // Filled crosswise, as procfs fills them.
        assert_eq!(request("4", "GetDeviceInfo"), 1.0);
        assert_eq!(request("4", "LayoutGet"), 0.0);
        let requests = families
            .iter()
            .find(|f| f.name == "node_nfs_requests_total")
            .unwrap();
        assert_eq!(requests.metrics.len(), 18 + 22 + 59);
    }

    #[test]
    fn short_proc4_lines_are_padded() {
        let stats = parse_client_rpc_stats(b"proc4 3 1 2 3\n").unwrap();
        assert_eq!(&stats.v4[..5], &[3, 1, 2, 3, 0]);
        let stats = parse_client_rpc_stats(b"proc4 0\n").unwrap();
        assert_eq!(stats.v4, [0; 60]);
    }

    #[test]
    fn malformed_files_are_errors() {
        for bad in [
            "net 1 2 3\n",
            "rpc 1 2 3 4\n",
            "proc3 22 1 2\n",
            "proc3 2 1 2\n",
            "proc2 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            "proc4 5 1 2\n",
            "proc4 18446744073709551615 1\n",
            "net\n",
            "\n",
            "net 1 2 3 x\n",
            "net 1 2 3 +4\n",
            "net 1 2 3 -4\n",
            "net 1 2 3 18446744073709551616\n",
            "bogus 1\n",
            "net 1 2 3 \u{fffd}\n",
        ] {
            let error = parse_client_rpc_stats(bad.as_bytes()).unwrap_err();
            assert!(
                format!("{error:#}").contains("line 1"),
                "{bad:?}: {error:#}"
            );
        }
        assert!(parse_client_rpc_stats(b"net 1 2 3 \xff\n").is_err());
        let long = format!("net 1 2 3 4{}\n", " ".repeat(70000));
        assert!(parse_client_rpc_stats(long.as_bytes()).is_err());
        // Just under the scanner's limit is fine.
        let fits = format!("net 1 2 3 4{}\n", " ".repeat(65535 - 11));
        assert!(parse_client_rpc_stats(fits.as_bytes()).is_ok());
    }

    #[test]
    fn huge_values_and_line_endings() {
        let stats = parse_client_rpc_stats(b"rpc 18446744073709551615 0 1\r\nnet 0 0 0 0").unwrap();
        assert_eq!(stats.rpc[0], u64::MAX);
        assert_eq!(stats.network, [0; 4]);
        assert_eq!(
            parse_client_rpc_stats(b"").unwrap(),
            ClientRpcStats::default()
        );
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = NfsCollector {
            path: std::path::PathBuf::from("/nonexistent/net/rpc/nfs"),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        let collector = NfsCollector {
            path: std::env::temp_dir(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
    }
}
