//! `nfsd`: NFS server RPC statistics from /proc/net/rpc/nfsd, parsed as procfs'
//! `nfs.ParseServerRPCStats`. Every family is reported whatever lines the kernel prints: an
//! absent line (the read-ahead cache "ra", gone since Linux 5.9; "proc2" without NFSv2) leaves
//! zeros, as procfs' zero-valued structs do; an unknown line fails the file.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::nfs::{
    GoLines, Procedures, V2_PROCEDURES, V3_PROCEDURES, check_procfs, counted, parse_network,
    parse_uints, parse_v2, parse_v3, read_stats_file,
};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "nfsd",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// The NFSv4 operations node_exporter reports, with their index in a "proc4ops" line (procfs'
/// `V4Ops`; the unused operations 0-2 and PUTPUBFH/PUTROOTFH are not reported). Index 40,
/// RELEASE_LOCKOWNER, is 0 on a kernel that prints only 39 operations.
const V4_OPERATIONS: [(&str, usize); 35] = [
    ("Access", 4),
    ("Close", 5),
    ("Commit", 6),
    ("Create", 7),
    ("DelegPurge", 8),
    ("DelegReturn", 9),
    ("GetAttr", 10),
    ("GetFH", 11),
    ("Link", 12),
    ("Lock", 13),
    ("Lockt", 14),
    ("Locku", 15),
    ("Lookup", 16),
    ("LookupRoot", 17),
    ("Nverify", 18),
    ("Open", 19),
    ("OpenAttr", 20),
    ("OpenConfirm", 21),
    ("OpenDgrd", 22),
    ("PutFH", 23),
    ("Read", 26),
    ("ReadDir", 27),
    ("ReadLink", 28),
    ("Remove", 29),
    ("Rename", 30),
    ("Renew", 31),
    ("RestoreFH", 32),
    ("SaveFH", 33),
    ("SecInfo", 34),
    ("SetAttr", 35),
    ("SetClientID", 36),
    ("SetClientIDConfirm", 37),
    ("Verify", 38),
    ("Write", 39),
    ("RelLockOwner", 40),
];

/// /proc/net/rpc/nfsd as node_exporter reads it; absent lines leave zeros.
#[derive(Debug, PartialEq)]
pub struct ServerRpcStats {
    /// Reply cache hits, misses, no-cache.
    pub reply_cache: [u64; 3],
    /// Stale, total lookups, anonymous lookups, dir not cached, non-dir not cached.
    pub file_handles: [u64; 5],
    /// Bytes read, bytes written.
    pub io: [u64; 2],
    /// Threads, "full" count (the first two fields; the rest of "th" is not read).
    pub threads: [u64; 2],
    /// Cache size, 10 histogram buckets, not found.
    pub read_ahead: [u64; 12],
    /// net count, UDP count, TCP count, TCP connections.
    pub network: [u64; 4],
    /// RPC count, bad count, bad format, bad auth, bad client.
    pub rpc: [u64; 5],
    /// "proc2" and "proc3" from their count on (`[0]`).
    pub v2: [u64; 19],
    pub v3: [u64; 23],
    /// "proc4": count, NULL, COMPOUND.
    pub v4: [u64; 3],
    /// "proc4ops" from its count on, up to RELEASE_LOCKOWNER (index 40).
    pub v4_ops: [u64; 41],
    pub wdeleg_getattr: u64,
}

impl Default for ServerRpcStats {
    fn default() -> Self {
        Self {
            reply_cache: [0; 3],
            file_handles: [0; 5],
            io: [0; 2],
            threads: [0; 2],
            read_ahead: [0; 12],
            network: [0; 4],
            rpc: [0; 5],
            v2: [0; 19],
            v3: [0; 23],
            v4: [0; 3],
            v4_ops: [0; 41],
            wdeleg_getattr: 0,
        }
    }
}

/// procfs' `ParseServerRPCStats`: every line `<key> <numbers>...` of a known key, or an error.
pub fn parse_server_rpc_stats(data: &[u8]) -> anyhow::Result<ServerRpcStats> {
    let mut stats = ServerRpcStats::default();
    let mut lines = GoLines::new(data);
    while let Some((number, line)) = lines.next_line()? {
        let at = || format!("line {number}");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 2 {
            anyhow::bail!("{}: invalid NFSd metric line {line:?}", at());
        }
        let label = parts[0];
        let values = if label == "th" {
            // The busy-thread histogram after the first two fields is not numbers kept.
            if parts.len() < 3 {
                anyhow::bail!("{}: invalid NFSd th metric line {line:?}", at());
            }
            parse_uints(&parts[1..3])
        } else {
            parse_uints(&parts[1..])
        }
        .with_context(|| format!("{}: error parsing NFSd metric line", at()))?;
        let exact = |what: &str, out: &mut [u64]| {
            if values.len() != out.len() {
                anyhow::bail!("invalid {what} line {values:?}");
            }
            out.copy_from_slice(&values);
            Ok(())
        };
        let parsed = match label {
            "rc" => exact("ReplyCache", &mut stats.reply_cache),
            "fh" => exact("FileHandles", &mut stats.file_handles),
            "io" => exact("InputOutput", &mut stats.io),
            "th" => exact("Threads", &mut stats.threads),
            "ra" => exact("ReadAheadCache", &mut stats.read_ahead),
            "net" => parse_network(&values).map(|v| stats.network = v),
            "rpc" => exact("RPC", &mut stats.rpc),
            "proc2" => parse_v2(&values).map(|v| stats.v2 = v),
            "proc3" => parse_v3(&values).map(|v| stats.v3 = v),
            "proc4" => match counted(&values, "V4Stats") {
                Ok(2) => exact("V4Stats", &mut stats.v4),
                Ok(_) => Err(anyhow::anyhow!("invalid V4Stats line {values:?}")),
                Err(e) => Err(e),
            },
            "proc4ops" => parse_v4_ops(&values).map(|v| stats.v4_ops = v),
            "wdeleg_getattr" => {
                stats.wdeleg_getattr = values[0];
                Ok(())
            }
            key => anyhow::bail!("{}: unknown NFSd metric line {key:?}", at()),
        };
        parsed.with_context(|| format!("{}: errors parsing NFSd metric line", at()))?;
    }
    Ok(stats)
}

/// procfs' `parseV4Ops`: the count, then at least 39 operations; RELEASE_LOCKOWNER (the 40th)
/// only where the kernel prints it.
fn parse_v4_ops(v: &[u64]) -> anyhow::Result<[u64; 41]> {
    let count = counted(v, "V4Ops")?;
    if count < 39 {
        anyhow::bail!("invalid V4Ops line {v:?}");
    }
    let mut out = [0; 41];
    let n = v.len().min(41);
    out[..n].copy_from_slice(&v[..n]);
    Ok(out)
}

struct NfsdCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    check_procfs(&context.procfs)?;
    Ok(Arc::new(NfsdCollector {
        path: context.proc_path("net/rpc/nfsd"),
    }))
}

impl Collector for NfsdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let Some(data) = read_stats_file(&self.path).context("failed to retrieve nfsd stats")?
        else {
            return Err(NoData(format!(
                "Not collecting NFSd metrics: {} does not exist",
                self.path.display()
            ))
            .into());
        };
        let stats = parse_server_rpc_stats(&data)
            .with_context(|| format!("failed to retrieve nfsd stats: {}", self.path.display()))?;
        out.extend(families(&stats));
        Ok(())
    }
}

fn counter(name: &str, help: &str) -> MetricFamily {
    MetricFamily::counter(format!("node_nfsd_{name}"), help)
}

fn families(stats: &ServerRpcStats) -> Vec<MetricFamily> {
    let [hits, misses, no_cache] = stats.reply_cache;
    let [bytes_read, bytes_written] = stats.io;
    let [_, udp, tcp, tcp_connections] = stats.network;
    let [rpcs, _, bad_format, bad_auth, bad_client] = stats.rpc;
    let mut requests = counter(
        "requests_total",
        "Total number NFSd Requests by method and protocol.",
    );
    // NULL is not reported for NFSv2 and v3.
    let versions: [(&str, Procedures, &[u64]); 3] = [
        ("2", &V2_PROCEDURES[1..], &stats.v2),
        ("3", &V3_PROCEDURES[1..], &stats.v3),
        ("4", &V4_OPERATIONS, &stats.v4_ops),
    ];
    for (proto, methods, values) in versions {
        for &(method, index) in methods {
            requests.push([("proto", proto), ("method", method)], values[index] as f64);
        }
    }
    requests.push(
        [("proto", "4"), ("method", "WdelegGetattr")],
        stats.wdeleg_getattr as f64,
    );
    vec![
        counter(
            "reply_cache_hits_total",
            "Total number of NFSd Reply Cache hits (client lost server response).",
        )
        .with_value(hits as f64),
        counter(
            "reply_cache_misses_total",
            "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
        )
        .with_value(misses as f64),
        counter(
            "reply_cache_nocache_total",
            "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
        )
        .with_value(no_cache as f64),
        // The other file handle counters are not updated by the kernel.
        counter(
            "file_handles_stale_total",
            "Total number of NFSd stale file handles",
        )
        .with_value(stats.file_handles[0] as f64),
        counter("disk_bytes_read_total", "Total NFSd bytes read.").with_value(bytes_read as f64),
        counter("disk_bytes_written_total", "Total NFSd bytes written.")
            .with_value(bytes_written as f64),
        MetricFamily::gauge(
            "node_nfsd_server_threads",
            "Total number of NFSd kernel threads that are running.",
        )
        .with_value(stats.threads[0] as f64),
        MetricFamily::gauge(
            "node_nfsd_read_ahead_cache_size_blocks",
            "How large the read ahead cache is in blocks.",
        )
        .with_value(stats.read_ahead[0] as f64),
        counter(
            "read_ahead_cache_not_found_total",
            "Total number of NFSd read ahead cache not found.",
        )
        .with_value(stats.read_ahead[11] as f64),
        counter(
            "packets_total",
            "Total NFSd network packets (sent+received) by protocol type.",
        )
        .with([("proto", "udp")], udp as f64)
        .with([("proto", "tcp")], tcp as f64),
        counter("connections_total", "Total number of NFSd TCP connections.")
            .with_value(tcp_connections as f64),
        counter(
            "rpc_errors_total",
            "Total number of NFSd RPC errors by error type.",
        )
        .with([("error", "fmt")], bad_format as f64)
        .with([("error", "auth")], bad_auth as f64)
        .with([("error", "cInt")], bad_client as f64),
        counter("server_rpcs_total", "Total number of NFSd RPCs.").with_value(rpcs as f64),
        requests,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel 6.1 server: no "ra" or "proc2" line, 77 NFSv4 operations.
    const SERVER: &str = "rc 0 41230 98811
fh 3 0 0 0 0
io 7340032000 2147483648
th 16 0 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000
net 140045 0 140045 212
rpc 140041 4 1 3 0
proc3 22 9 5100 300 12000 9000 4 70000 33000 150 40 2 0 120 11 60 1 800 2400 90 3 2 1200
proc4 2 6 139980
proc4ops 76 0 0 0 8800 4100 1200 20 0 310 91000 2200 5 70 0 70 15000 0 0 4150 0 0 0 139000 0 350 61000 2100 3 110 45 0 9000 9000 12 1900 0 0 0 33000 66 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    fn sample(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
        let family = families.iter().find(|f| f.name == name).unwrap();
        family
            .metrics
            .iter()
            .find_map(|m| {
                let matches = labels
                    .iter()
                    .all(|(k, v)| m.labels.iter().any(|(lk, lv)| lk == k && lv == v));
                match m.value {
                    crate::metrics::Value::Scalar(value) if matches => Some(value),
                    _ => None,
                }
            })
            .unwrap()
    }

    #[test]
    fn parses_a_server_file() {
        let stats = parse_server_rpc_stats(SERVER.as_bytes()).unwrap();
        assert_eq!(stats.threads, [16, 0]);
        assert_eq!(stats.read_ahead, [0; 12]);
        assert_eq!(stats.v4, [2, 6, 139980]);
        let families = families(&stats);
        assert_eq!(families.len(), 14);
        let get = |name, labels: &[(&str, &str)]| sample(&families, name, labels);
        assert_eq!(get("node_nfsd_reply_cache_misses_total", &[]), 41230.0);
        assert_eq!(get("node_nfsd_file_handles_stale_total", &[]), 3.0);
        assert_eq!(get("node_nfsd_disk_bytes_written_total", &[]), 2147483648.0);
        assert_eq!(get("node_nfsd_server_threads", &[]), 16.0);
        assert_eq!(
            get("node_nfsd_packets_total", &[("proto", "tcp")]),
            140045.0
        );
        assert_eq!(get("node_nfsd_connections_total", &[]), 212.0);
        assert_eq!(get("node_nfsd_rpc_errors_total", &[("error", "auth")]), 3.0);
        assert_eq!(get("node_nfsd_server_rpcs_total", &[]), 140041.0);
        let request = |proto, method| {
            get(
                "node_nfsd_requests_total",
                &[("proto", proto), ("method", method)],
            )
        };
        assert_eq!(request("3", "GetAttr"), 5100.0);
        assert_eq!(request("3", "Commit"), 1200.0);
        assert_eq!(request("2", "GetAttr"), 0.0);
        assert_eq!(request("4", "Access"), 8800.0);
        assert_eq!(request("4", "PutFH"), 139000.0);
        assert_eq!(request("4", "Read"), 61000.0);
        assert_eq!(request("4", "Write"), 33000.0);
        assert_eq!(request("4", "RelLockOwner"), 66.0);
        assert_eq!(request("4", "WdelegGetattr"), 0.0);
        let requests = families.last().unwrap();
        assert_eq!(requests.metrics.len(), 17 + 21 + 35 + 1);
    }

    #[test]
    fn older_and_newer_kernels() {
        // 39 operations: no RELEASE_LOCKOWNER.
        let ops39 = format!("proc4ops 39{}\n", " 7".repeat(39));
        let stats = parse_server_rpc_stats(ops39.as_bytes()).unwrap();
        assert_eq!(stats.v4_ops[39], 7);
        assert_eq!(stats.v4_ops[40], 0);
        let stats =
            parse_server_rpc_stats(b"wdeleg_getattr 15 9\nra 32 0 0 0 0 0 0 0 0 0 0 5\n").unwrap();
        assert_eq!(stats.wdeleg_getattr, 15);
        assert_eq!(stats.read_ahead[11], 5);
        // Only the first two "th" fields are numbers read.
        let stats = parse_server_rpc_stats(b"th 8 0 x y\n").unwrap();
        assert_eq!(stats.threads, [8, 0]);
    }

    #[test]
    fn malformed_files_are_errors() {
        let ops38 = format!("proc4ops 38{}\n", " 7".repeat(38));
        for bad in [
            "th 8\n",
            "th 8 x\n",
            "rc 1 2\n",
            "fh 0 0 0 0\n",
            "io 1\n",
            "ra 32 0\n",
            "rpc 1 2 3 4\n",
            "proc4 3 1 2 3\n",
            "proc4 2 1\n",
            ops38.as_str(),
            "proc3 22 0\n",
            "wdeleg_getattr x\n",
            "unknown 1\n",
            "rc\n",
            "\n",
            "io 1 -2\n",
        ] {
            let error = parse_server_rpc_stats(bad.as_bytes()).unwrap_err();
            assert!(
                format!("{error:#}").contains("line 1"),
                "{bad:?}: {error:#}"
            );
        }
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = NfsdCollector {
            path: PathBuf::from("/nonexistent/net/rpc/nfsd"),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
    }
}
