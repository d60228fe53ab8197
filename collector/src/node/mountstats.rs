//! `mountstats`: per-mount NFS client statistics (bytes, events, per-operation counts and
//! times, RPC transports) from `<procfs>/<pid>/mountstats`, parsed as procfs'
//! `parseMountStats`, with the server address (`addr` super option) from the same process's
//! mountinfo. On EKS these are the Amazon EFS mounts (NFSv4.1) of the node and its pods.
//!
//! As node_exporter: `<pid>` is the process `<procfs>/self` points to, resolved once at start
//! (procfs' `FS.Self`); mountstats and mountinfo list the same mounts in the same order, so a
//! mount's address is taken from the mountinfo line at its position (procfs reads at most
//! 1 MiB of mountinfo). A mount is reported under its transports' protocol, once per (export,
//! protocol, address): another mount of the same export (the same EFS file system in several
//! pods, or several file systems behind the EFS TLS tunnel's `127.0.0.1:/`) adds only its
//! `mountpoint_info` series, and a mount without a transport line is not reported at all. A
//! mount with statistics that is not NFS, or a transport line of an unknown `statvers`, fails
//! the whole file, as in procfs.
//!
//! Where node_exporter would panic (an RDMA transport line of more than 31 values, a label
//! value that is not UTF-8) this collector reports an error instead.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use super::nfs::{GoLines, check_procfs, parse_uints};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "mountstats",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// One `device` entry of mountstats.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub device: String,
    /// As the kernel prints it (spaces escaped as `\040`), not unescaped, as in procfs.
    pub mount_point: String,
    pub fs_type: String,
    /// Only NFS mounts have statistics.
    pub stats: Option<NfsStats>,
}

/// The statistics of one NFS mount.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NfsStats {
    /// From `statvers=`; it decides the length of the transport lines.
    pub stat_version: String,
    /// Age of the mount, in nanoseconds (procfs parses it as a Go `time.Duration`).
    pub age: i64,
    /// The `bytes:` line: read, write, direct read, direct write, server read, server write,
    /// read pages, write pages.
    pub bytes: [u64; 8],
    /// The `events:` line, in the kernel's order (all but congestion wait are reported).
    pub events: [u64; 27],
    pub operations: Vec<Operation>,
    pub transports: Vec<Transport>,
}

/// One line of the per-operation statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Without its trailing colon.
    pub name: String,
    /// Requests, transmissions, major timeouts, bytes sent, bytes received, then the
    /// cumulative queue, response and total times in milliseconds, then errors (0 where the
    /// kernel does not print them).
    pub counters: [u64; 9],
}

/// One `xprt:` line, with its values in procfs' common layout whatever the protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct Transport {
    pub protocol: String,
    /// Port, bind count, connect count, connect idle time, idle time (s), sends, receives,
    /// bad transaction IDs, cumulative active requests, cumulative backlog, maximum RPC slots
    /// used, cumulative sending queue, cumulative pending queue. UDP has no connect and idle
    /// fields and version 1.0 none of the last three: those are 0.
    pub counters: [u64; 13],
}

/// Parses mountstats as procfs' `parseMountStats`: `device` lines, each followed, for an NFS
/// mount with `statvers=`, by its statistics up to a blank line.
pub fn parse_mountstats(data: &[u8]) -> anyhow::Result<Vec<Mount>> {
    let mut lines = GoLines::new(data);
    let mut mounts = Vec::new();
    while let Some((number, line)) = lines.next_line()? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"device") {
            continue;
        }
        let mut mount = parse_mount(&fields).with_context(|| format!("line {number}"))?;
        if fields.len() > 8 {
            if mount.fs_type != "nfs" && mount.fs_type != "nfs4" {
                anyhow::bail!(
                    "line {number}: cannot parse MountStats for {:?}",
                    mount.fs_type
                );
            }
            let version = fields[8].strip_prefix("statvers=").unwrap_or(fields[8]);
            mount.stats = Some(parse_nfs_stats(&mut lines, version)?);
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// `device <device> mounted on <mount point> with fstype <type> ...`
fn parse_mount(fields: &[&str]) -> anyhow::Result<Mount> {
    let expected = [
        (0, "device"),
        (2, "mounted"),
        (3, "on"),
        (5, "with"),
        (6, "fstype"),
    ];
    if fields.len() < 8 || expected.iter().any(|&(i, word)| fields[i] != word) {
        anyhow::bail!("invalid device {fields:?}");
    }
    Ok(Mount {
        device: fields[1].to_owned(),
        mount_point: fields[4].to_owned(),
        fs_type: fields[7].to_owned(),
        stats: None,
    })
}

/// procfs' `parseMountStatsNFS`: the keyed lines up to `per-op statistics` (or a blank line),
/// then the operations up to a blank line. Unknown keys (`caps:`, `sec:`, `nfsv4:`...) are
/// skipped.
fn parse_nfs_stats(lines: &mut GoLines<'_>, version: &str) -> anyhow::Result<NfsStats> {
    let mut stats = NfsStats {
        stat_version: version.to_owned(),
        ..NfsStats::default()
    };
    while let Some((number, line)) = lines.next_line()? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(&key) = fields.first() else {
            break;
        };
        let at = || format!("line {number}");
        let incomplete = || anyhow::anyhow!("{}: incomplete NFS statistics {fields:?}", at());
        match key {
            "opts:" if fields.len() < 2 => return Err(incomplete()),
            "age:" => {
                let age = fields.get(1).ok_or_else(incomplete)?;
                // Whole seconds from the kernel; procfs reads them as a Go duration.
                stats.age = go_parse_duration(&format!("{age}s"))
                    .with_context(|| format!("{}: invalid duration {age:?}s", at()))?;
            }
            "bytes:" => {
                if fields.len() < 2 {
                    return Err(incomplete());
                }
                stats.bytes = exactly(&fields[1..], "bytes").with_context(at)?;
            }
            "events:" => {
                if fields.len() < 2 {
                    return Err(incomplete());
                }
                stats.events = exactly(&fields[1..], "events").with_context(at)?;
            }
            "xprt:" => {
                if fields.len() < 3 {
                    return Err(incomplete());
                }
                let transport = parse_transport(&fields[1..], version).with_context(at)?;
                stats.transports.push(transport);
            }
            "per-op" => break,
            _ => {}
        }
    }
    stats.operations = parse_operations(lines)?;
    Ok(stats)
}

/// A line of exactly `N` numbers.
fn exactly<const N: usize>(fields: &[&str], what: &str) -> anyhow::Result<[u64; N]> {
    if fields.len() != N {
        anyhow::bail!("invalid NFS {what} stats: {} values, not {N}", fields.len());
    }
    let values = parse_uints(fields)?;
    let mut out = [0; N];
    out.copy_from_slice(&values);
    Ok(out)
}

/// procfs' `parseNFSOperationStats`: `NAME: <at least 8 numbers>` lines up to a blank line.
fn parse_operations(lines: &mut GoLines<'_>) -> anyhow::Result<Vec<Operation>> {
    let mut operations = Vec::new();
    while let Some((number, line)) = lines.next_line()? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            break;
        }
        if fields.len() < 9 {
            anyhow::bail!("line {number}: invalid NFS per-operations stats: {fields:?}");
        }
        let values = parse_uints(&fields[1..]).with_context(|| format!("line {number}"))?;
        let mut counters = [0; 9];
        let n = values.len().min(9);
        counters[..n].copy_from_slice(&values[..n]);
        operations.push(Operation {
            name: fields[0].strip_suffix(':').unwrap_or(fields[0]).to_owned(),
            counters,
        });
    }
    Ok(operations)
}

/// procfs' `parseNFSTransportStats`: the protocol, then as many values as the statistics
/// version and protocol have (at least 20 for RDMA).
fn parse_transport(fields: &[&str], version: &str) -> anyhow::Result<Transport> {
    let protocol = fields[0];
    let values = &fields[1..];
    let length_ok = match (version, protocol) {
        ("1.0", "tcp") => values.len() == 10,
        ("1.0", "udp") => values.len() == 7,
        ("1.1", "tcp") => values.len() == 13,
        ("1.1", "udp") => values.len() == 10,
        ("1.1", "rdma") => values.len() >= 20,
        ("1.0" | "1.1", _) => {
            anyhow::bail!("invalid NFS protocol {protocol:?} in stats {version} statement")
        }
        _ => anyhow::bail!(
            "unrecognized NFS transport stats version {version:?}, protocol {protocol:?}"
        ),
    };
    if !length_ok {
        anyhow::bail!(
            "invalid NFS transport stats {version} statement: {} values for {protocol}",
            values.len()
        );
    }
    // procfs parses into 31 slots: a longer RDMA line panics node_exporter.
    let mut ns = [0u64; 31];
    if values.len() > ns.len() {
        anyhow::bail!(
            "invalid NFS transport stats: {} values for {protocol}",
            values.len()
        );
    }
    for (slot, value) in ns.iter_mut().zip(values) {
        *slot = goparse::parse_uint(value, 10, 64)
            .with_context(|| format!("strconv.ParseUint: parsing {value:?}"))?;
    }
    let counters = match protocol {
        // No connect count, connect idle time or idle time over UDP.
        "udp" => [
            ns[0], ns[1], 0, 0, 0, ns[2], ns[3], ns[4], ns[5], ns[6], ns[7], ns[8], ns[9],
        ],
        // RDMA's own counters follow the first ten; the 1.1 queue counters stay 0.
        "rdma" => [
            ns[0], ns[1], ns[2], ns[3], ns[4], ns[5], ns[6], ns[7], ns[8], ns[9], 0, 0, 0,
        ],
        _ => {
            let mut counters = [0; 13];
            counters.copy_from_slice(&ns[..13]);
            counters
        }
    };
    Ok(Transport {
        protocol: protocol.to_owned(),
        counters,
    })
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with the
/// units ns, us (µs, μs), ms, s, m and h, overflow checked as Go checks it.
fn go_parse_duration(text: &str) -> Option<i64> {
    const LIMIT: u64 = 1 << 63;
    let mut s = text.as_bytes();
    let mut negative = false;
    if let Some(&sign @ (b'-' | b'+')) = s.first() {
        negative = sign == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return None;
        }
        // The integer part.
        let before = s.len();
        let mut whole: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = s.first() {
            if whole > LIMIT / 10 {
                return None;
            }
            whole = whole * 10 + u64::from(c - b'0');
            if whole > LIMIT {
                return None;
            }
            s = &s[1..];
        }
        let pre = before != s.len();
        // The fraction: precision stops accumulating where it would overflow.
        let (mut fraction, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let mut overflow = false;
            while let Some(&c @ b'0'..=b'9') = s.first() {
                s = &s[1..];
                if overflow {
                    continue;
                }
                if fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            post = before != s.len();
        }
        if !pre && !post {
            return None;
        }
        let unit_len = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return None;
        }
        let unit: u64 = match &s[..unit_len] {
            b"ns" => 1,
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        s = &s[unit_len..];
        if whole > LIMIT / unit {
            return None;
        }
        let mut value = whole * unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return None;
            }
        }
        // Go's unsigned sum wraps; the check after it is Go's.
        total = total.wrapping_add(value);
        if total > LIMIT {
            return None;
        }
    }
    if negative {
        return Some((total as i64).wrapping_neg());
    }
    i64::try_from(total).ok()
}

/// The `addr` super option of each mountinfo line (empty when absent), each line checked as
/// procfs' `parseMountInfoString` checks it.
pub fn parse_mountinfo_addresses(data: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut lines = GoLines::new(data);
    let mut addresses = Vec::new();
    while let Some((number, line)) = lines.next_line()? {
        let fields: Vec<&str> = line.split(' ').collect();
        let n = fields.len();
        if n < 10 {
            anyhow::bail!("line {number}: too few fields in mount string: {line:?}");
        }
        if fields[n - 4] != "-" {
            anyhow::bail!(
                "line {number}: couldn't find separator in expected field: {:?}",
                fields[n - 4]
            );
        }
        for (what, id) in [("mount ID", fields[0]), ("parent ID", fields[1])] {
            id.parse::<i64>()
                .with_context(|| format!("line {number}: {what}: {id:?}"))?;
        }
        // procfs' `mountOptionsParser`: the last `addr` wins; `addr=a=b` is "a".
        let mut address = "";
        for option in fields[n - 1].split(',') {
            let mut parts = option.split('=');
            if parts.next() == Some("addr") {
                address = parts.next().unwrap_or("");
            }
        }
        addresses.push(address.to_owned());
    }
    Ok(addresses)
}

struct MountStatsCollector {
    /// `<procfs>/<pid>` of the process `<procfs>/self` named at start.
    process: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    check_procfs(&context.procfs)?;
    Ok(Arc::new(MountStatsCollector {
        process: resolve_self(&context.procfs).context("failed to open /proc/self")?,
    }))
}

/// procfs' `FS.Self`: the link `<procfs>/self` with every occurrence of the procfs path
/// removed, as a number, whose `<procfs>/<pid>` must exist.
fn resolve_self(procfs: &Path) -> anyhow::Result<PathBuf> {
    let link_path = procfs.join("self");
    let link = std::fs::read_link(&link_path)
        .with_context(|| format!("reading link {}", link_path.display()))?;
    let link = link.to_string_lossy();
    let pid: i64 = link
        .replace(procfs.to_string_lossy().as_ref(), "")
        .parse()
        .with_context(|| format!("{}: not a pid: {link:?}", link_path.display()))?;
    let process = procfs.join(pid.to_string());
    std::fs::metadata(&process).with_context(|| format!("stat {}", process.display()))?;
    Ok(process)
}

/// A file's bytes, and whether they are UTF-8 (label values must be).
fn read_file(path: &Path, limit: u64) -> anyhow::Result<(Vec<u8>, bool)> {
    let data = read::capped(path, limit).with_context(|| format!("reading {}", path.display()))?;
    let utf8 = std::str::from_utf8(&data).is_ok();
    Ok((data, utf8))
}

impl Collector for MountStatsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = self.process.join("mountstats");
        let (data, stats_utf8) =
            read_file(&path, u64::MAX).context("failed to parse mountstats")?;
        let mounts = parse_mountstats(&data)
            .with_context(|| format!("failed to parse mountstats: {}", path.display()))?;
        // procfs reads at most 1 MiB of mountinfo.
        let path = self.process.join("mountinfo");
        let (data, info_utf8) =
            read_file(&path, read::NO_STAT_LIMIT).context("failed to parse mountinfo")?;
        let addresses = parse_mountinfo_addresses(&data)
            .with_context(|| format!("failed to parse mountinfo: {}", path.display()))?;
        let mut families = Families::new();
        let result = families.fill(&mounts, &addresses, stats_utf8 && info_utf8);
        out.extend(families.into_vec());
        result
    }
}

/// The `bytes:` values reported: (name, help, index).
const BYTES: [(&str, &str, usize); 8] = [
    (
        "read_bytes_total",
        "Number of bytes read using the read() syscall.",
        0,
    ),
    (
        "write_bytes_total",
        "Number of bytes written using the write() syscall.",
        1,
    ),
    (
        "direct_read_bytes_total",
        "Number of bytes read using the read() syscall in O_DIRECT mode.",
        2,
    ),
    (
        "direct_write_bytes_total",
        "Number of bytes written using the write() syscall in O_DIRECT mode.",
        3,
    ),
    (
        "total_read_bytes_total",
        "Number of bytes read from the NFS server, in total.",
        4,
    ),
    (
        "total_write_bytes_total",
        "Number of bytes written to the NFS server, in total.",
        5,
    ),
    (
        "read_pages_total",
        "Number of pages read directly via mmap()'d files.",
        6,
    ),
    (
        "write_pages_total",
        "Number of pages written directly via mmap()'d files.",
        7,
    ),
];

/// The `events:` values reported (all but the 19th, congestion wait): (name, help, index).
/// The help texts are node_exporter's, its copy-paste slips included.
const EVENTS: [(&str, &str, usize); 26] = [
    (
        "event_inode_revalidate_total",
        "Number of times cached inode attributes are re-validated from the server.",
        0,
    ),
    (
        "event_dnode_revalidate_total",
        "Number of times cached dentry nodes are re-validated from the server.",
        1,
    ),
    (
        "event_data_invalidate_total",
        "Number of times an inode cache is cleared.",
        2,
    ),
    (
        "event_attribute_invalidate_total",
        "Number of times cached inode attributes are invalidated.",
        3,
    ),
    (
        "event_vfs_open_total",
        "Number of times cached inode attributes are invalidated.",
        4,
    ),
    (
        "event_vfs_lookup_total",
        "Number of times a directory lookup has occurred.",
        5,
    ),
    (
        "event_vfs_access_total",
        "Number of times permissions have been checked.",
        6,
    ),
    (
        "event_vfs_update_page_total",
        "Number of updates (and potential writes) to pages.",
        7,
    ),
    (
        "event_vfs_read_page_total",
        "Number of pages read directly via mmap()'d files.",
        8,
    ),
    (
        "event_vfs_read_pages_total",
        "Number of times a group of pages have been read.",
        9,
    ),
    (
        "event_vfs_write_page_total",
        "Number of pages written directly via mmap()'d files.",
        10,
    ),
    (
        "event_vfs_write_pages_total",
        "Number of times a group of pages have been written.",
        11,
    ),
    (
        "event_vfs_getdents_total",
        "Number of times directory entries have been read with getdents().",
        12,
    ),
    (
        "event_vfs_setattr_total",
        "Number of times directory entries have been read with getdents().",
        13,
    ),
    (
        "event_vfs_flush_total",
        "Number of pending writes that have been forcefully flushed to the server.",
        14,
    ),
    (
        "event_vfs_fsync_total",
        "Number of times fsync() has been called on directories and files.",
        15,
    ),
    (
        "event_vfs_lock_total",
        "Number of times locking has been attempted on a file.",
        16,
    ),
    (
        "event_vfs_file_release_total",
        "Number of times files have been closed and released.",
        17,
    ),
    (
        "event_truncation_total",
        "Number of times files have been truncated.",
        19,
    ),
    (
        "event_write_extension_total",
        "Number of times a file has been grown due to writes beyond its existing end.",
        20,
    ),
    (
        "event_silly_rename_total",
        "Number of times a file was removed while still open by another process.",
        21,
    ),
    (
        "event_short_read_total",
        "Number of times the NFS server gave less data than expected while reading.",
        22,
    ),
    (
        "event_short_write_total",
        "Number of times the NFS server wrote less data than expected while writing.",
        23,
    ),
    (
        "event_jukebox_delay_total",
        "Number of times the NFS server indicated EJUKEBOX; retrieving data from offline storage.",
        24,
    ),
    (
        "event_pnfs_read_total",
        "Number of NFS v4.1+ pNFS reads.",
        25,
    ),
    (
        "event_pnfs_write_total",
        "Number of NFS v4.1+ pNFS writes.",
        26,
    ),
];

/// How a counter of a transport or operation becomes a sample value.
#[derive(Clone, Copy)]
enum Scale {
    Plain,
    /// node_exporter takes it modulo 2^53 (a float64's mantissa).
    Mantissa,
    /// Milliseconds modulo 2^53, as seconds.
    MantissaMillis,
}

impl Scale {
    fn apply(self, value: u64) -> f64 {
        const MANTISSA: u64 = 1 << 53;
        match self {
            Self::Plain => value as f64,
            Self::Mantissa => (value % MANTISSA) as f64,
            Self::MantissaMillis => (value % MANTISSA) as f64 / 1000.0,
        }
    }
}

/// The transport values reported: (name, help, type, index in [`Transport::counters`], scale).
const TRANSPORT: [(&str, &str, MetricType, usize, Scale); 10] = [
    (
        "transport_bind_total",
        "Number of times the client has had to establish a connection from scratch to the NFS server.",
        MetricType::Counter,
        1,
        Scale::Plain,
    ),
    (
        "transport_connect_total",
        "Number of times the client has made a TCP connection to the NFS server.",
        MetricType::Counter,
        2,
        Scale::Plain,
    ),
    (
        "transport_idle_time_seconds",
        "Duration since the NFS mount last saw any RPC traffic, in seconds.",
        MetricType::Gauge,
        4,
        Scale::Mantissa,
    ),
    (
        "transport_sends_total",
        "Number of RPC requests for this mount sent to the NFS server.",
        MetricType::Counter,
        5,
        Scale::Plain,
    ),
    (
        "transport_receives_total",
        "Number of RPC responses for this mount received from the NFS server.",
        MetricType::Counter,
        6,
        Scale::Plain,
    ),
    (
        "transport_bad_transaction_ids_total",
        "Number of times the NFS server sent a response with a transaction ID unknown to this client.",
        MetricType::Counter,
        7,
        Scale::Plain,
    ),
    (
        "transport_backlog_queue_total",
        "Total number of items added to the RPC backlog queue.",
        MetricType::Counter,
        9,
        Scale::Plain,
    ),
    (
        "transport_maximum_rpc_slots",
        "Maximum number of simultaneously active RPC requests ever used.",
        MetricType::Gauge,
        10,
        Scale::Plain,
    ),
    (
        "transport_sending_queue_total",
        "Total number of items added to the RPC transmission sending queue.",
        MetricType::Counter,
        11,
        Scale::Plain,
    ),
    (
        "transport_pending_queue_total",
        "Total number of items added to the RPC transmission pending queue.",
        MetricType::Counter,
        12,
        Scale::Plain,
    ),
];

/// The operation values reported: (name, help, index in [`Operation::counters`], scale).
const OPERATIONS: [(&str, &str, usize, Scale); 8] = [
    (
        "operations_requests_total",
        "Number of requests performed for a given operation.",
        0,
        Scale::Plain,
    ),
    (
        "operations_transmissions_total",
        "Number of times an actual RPC request has been transmitted for a given operation.",
        1,
        Scale::Plain,
    ),
    (
        "operations_major_timeouts_total",
        "Number of times a request has had a major timeout for a given operation.",
        2,
        Scale::Plain,
    ),
    (
        "operations_sent_bytes_total",
        "Number of bytes sent for a given operation, including RPC headers and payload.",
        3,
        Scale::Plain,
    ),
    (
        "operations_received_bytes_total",
        "Number of bytes received for a given operation, including RPC headers and payload.",
        4,
        Scale::Plain,
    ),
    (
        "operations_queue_time_seconds_total",
        "Duration all requests spent queued for transmission for a given operation before they were sent, in seconds.",
        5,
        Scale::MantissaMillis,
    ),
    (
        "operations_response_time_seconds_total",
        "Duration all requests took to get a reply back after a request for a given operation was transmitted, in seconds.",
        6,
        Scale::MantissaMillis,
    ),
    (
        "operations_request_time_seconds_total",
        "Duration all requests took from when a request was enqueued to when it was completely handled for a given operation, in seconds.",
        7,
        Scale::MantissaMillis,
    ),
];

fn family(name: &str, help: &str, metric_type: MetricType) -> MetricFamily {
    MetricFamily::new(format!("node_mountstats_nfs_{name}"), help, metric_type)
}

/// The 54 families, filled mount by mount.
struct Families {
    info: MetricFamily,
    age: MetricFamily,
    bytes: Vec<MetricFamily>,
    events: Vec<MetricFamily>,
    transport: Vec<MetricFamily>,
    operations: Vec<MetricFamily>,
}

/// A label value, which must be UTF-8: where the file was not, the replacement character
/// stands for bytes node_exporter would have panicked on.
fn label(value: &str, utf8: bool) -> anyhow::Result<&str> {
    if !utf8 && value.contains('\u{fffd}') {
        anyhow::bail!("label value {value:?} is not valid UTF-8");
    }
    Ok(value)
}

impl Families {
    fn new() -> Self {
        Self {
            info: family(
                "mountpoint_info",
                "Info metric for an NFS mountpoint.",
                MetricType::Gauge,
            ),
            age: family(
                "age_seconds_total",
                "The age of the NFS mount in seconds.",
                MetricType::Counter,
            ),
            bytes: BYTES
                .iter()
                .map(|&(name, help, _)| family(name, help, MetricType::Counter))
                .collect(),
            events: EVENTS
                .iter()
                .map(|&(name, help, _)| family(name, help, MetricType::Counter))
                .collect(),
            transport: TRANSPORT
                .iter()
                .map(|&(name, help, metric_type, _, _)| family(name, help, metric_type))
                .collect(),
            operations: OPERATIONS
                .iter()
                .map(|&(name, help, _, _)| family(name, help, MetricType::Counter))
                .collect(),
        }
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        let mut all = vec![self.info, self.age];
        all.extend(self.bytes);
        all.extend(self.events);
        all.extend(self.transport);
        all.extend(self.operations);
        all
    }

    /// node_exporter's `Update`: for each NFS mount, for each transport, the mount point's info
    /// series once per (export, protocol, address, mount point), and the mount's statistics
    /// once per (export, protocol, address), after which its other transports are not looked at.
    fn fill(&mut self, mounts: &[Mount], addresses: &[String], utf8: bool) -> anyhow::Result<()> {
        let mut mount_points = HashSet::new();
        let mut devices = HashSet::new();
        for (index, mount) in mounts.iter().enumerate() {
            let Some(stats) = &mount.stats else {
                continue;
            };
            let address = addresses.get(index).map_or("", String::as_str);
            for transport in &stats.transports {
                let protocol = transport.protocol.as_str();
                if mount_points.insert((&mount.device, protocol, address, &mount.mount_point)) {
                    self.info.push(
                        [
                            ("export", label(&mount.device, utf8)?),
                            ("protocol", label(protocol, utf8)?),
                            ("mountaddr", label(address, utf8)?),
                            ("mountpoint", label(&mount.mount_point, utf8)?),
                        ],
                        1.0,
                    );
                }
                if !devices.insert((&mount.device, protocol, address)) {
                    break;
                }
                self.push_stats(stats, [&mount.device, protocol, address], utf8)?;
            }
        }
        Ok(())
    }

    fn push_stats(
        &mut self,
        stats: &NfsStats,
        [export, protocol, address]: [&str; 3],
        utf8: bool,
    ) -> anyhow::Result<()> {
        let labels = [
            ("export", label(export, utf8)?),
            ("protocol", label(protocol, utf8)?),
            ("mountaddr", label(address, utf8)?),
        ];
        // Go's Duration.Seconds.
        let seconds = (stats.age / 1_000_000_000) as f64 + (stats.age % 1_000_000_000) as f64 / 1e9;
        self.age.push(labels, seconds);
        for (family, &(_, _, index)) in self.bytes.iter_mut().zip(&BYTES) {
            family.push(labels, stats.bytes[index] as f64);
        }
        for (number, transport) in stats.transports.iter().enumerate() {
            let number = number.to_string();
            for (family, &(_, _, _, index, scale)) in self.transport.iter_mut().zip(&TRANSPORT) {
                let mut labels = labels.to_vec();
                labels.push(("transport", number.as_str()));
                family.push(labels, scale.apply(transport.counters[index]));
            }
        }
        // A repeated operation would be a duplicate series, which client_golang drops (the
        // first one is kept).
        let mut seen = HashSet::new();
        for operation in &stats.operations {
            if !seen.insert(operation.name.as_str()) {
                continue;
            }
            let name = label(&operation.name, utf8)?;
            for (family, &(_, _, index, scale)) in self.operations.iter_mut().zip(&OPERATIONS) {
                let mut labels = labels.to_vec();
                labels.push(("operation", name));
                family.push(labels, scale.apply(operation.counters[index]));
            }
        }
        for (family, &(_, _, index)) in self.events.iter_mut().zip(&EVENTS) {
            family.push(labels, stats.events[index] as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    const EFS: &str = "device rootfs mounted on / with fstype rootfs
device /dev/nvme0n1p1 mounted on / with fstype xfs
device proc mounted on /proc with fstype proc
device fs-0a1b2c3d4e5f60789.efs.us-west-2.amazonaws.com:/ mounted on /mnt/efs with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,acregmin=3,acregmax=60,acdirmin=30,acdirmax=60,hard,noresvport,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.12.34,local_lock=none
\tage:\t86400
\timpl_id:\tname='',domain='',date='0,0'
\tcaps:\tcaps=0x3ffbf,wtmult=512,dtsize=1048576,bsize=0,namlen=255
\tnfsv4:\tbm0=0xfdffbfff,bm1=0x40f9be3e,bm2=0x803,acl=0x3,sessions,pnfs=not configured,lease_time=90,lease_expired=0
\tsec:\tflavor=1,pseudoflavor=1
\tevents:\t1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27
\tbytes:\t101 102 103 104 105 106 107 108
\tRPC iostats version: 1.1  p/v: 100003/4 (nfs)
\txprt:\ttcp 0 1 2 3 9007199254740993 5 6 7 8 9 10 11 12
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 0 0
\t        READ: 100 100 0 16800 104857600 12 3400 3500 0
\t        READ: 5 5 5 5 5 5 5 5 5
\t       WRITE: 50 50 0 52428800 8000 9007199254741001 2200 2300

device 10.0.0.5:/export mounted on /mnt/v3 with fstype nfs statvers=1.0
\tage:\t60
\txprt:\tudp 0 1 2 3 4 5 6
\tper-op statistics
\t        NULL: 0 0 0 0 0 0 0 0

";

    const MOUNTINFO: &str = "\
1 0 259:1 / / rw,noatime - xfs /dev/nvme0n1p1 rw
22 1 0:5 / / rw - rootfs rootfs rw
23 1 0:21 / /proc rw - proc proc rw
24 1 0:52 / /mnt/efs rw shared:40 - nfs4 fs-0a1b2c3d4e5f60789.efs.us-west-2.amazonaws.com:/ rw,vers=4.1,addr=10.0.8.17,addr=10.0.8.18
25 1 0:53 / /mnt/v3 rw - nfs 10.0.0.5:/export rw,vers=3,addr
";

    fn value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = families.iter().find(|f| f.name == name)?;
        family.metrics.iter().find_map(|m| {
            let matches = labels
                .iter()
                .all(|(k, v)| m.labels.iter().any(|(lk, lv)| lk == k && lv == v));
            match m.value {
                Value::Scalar(value) if matches => Some(value),
                _ => None,
            }
        })
    }

    fn collect(stats: &str, info: &str) -> anyhow::Result<Vec<MetricFamily>> {
        let mounts = parse_mountstats(stats.as_bytes())?;
        let addresses = parse_mountinfo_addresses(info.as_bytes())?;
        let mut families = Families::new();
        families.fill(&mounts, &addresses, true)?;
        Ok(families.into_vec())
    }

    #[test]
    fn parses_efs_and_v3_mounts() {
        let mounts = parse_mountstats(EFS.as_bytes()).unwrap();
        assert_eq!(mounts.len(), 5);
        assert!(mounts[..3].iter().all(|m| m.stats.is_none()));
        let efs = mounts[3].stats.as_ref().unwrap();
        assert_eq!(mounts[3].fs_type, "nfs4");
        assert_eq!(efs.stat_version, "1.1");
        assert_eq!(efs.age, 86_400_000_000_000);
        assert_eq!(efs.bytes[7], 108);
        assert_eq!(efs.events[26], 27);
        assert_eq!(efs.operations.len(), 4);
        assert_eq!(efs.operations[3].name, "WRITE");
        assert_eq!(efs.operations[3].counters[8], 0);
        assert_eq!(efs.transports[0].counters[12], 12);
        let v3 = mounts[4].stats.as_ref().unwrap();
        // UDP has no connect or idle fields; 1.0 has no queue counters.
        assert_eq!(
            v3.transports[0].counters,
            [0, 1, 0, 0, 0, 2, 3, 4, 5, 6, 0, 0, 0]
        );
        let addresses = parse_mountinfo_addresses(MOUNTINFO.as_bytes()).unwrap();
        assert_eq!(addresses, ["", "", "", "10.0.8.18", ""]);
    }

    #[test]
    fn reports_as_node_exporter() {
        let families = collect(EFS, MOUNTINFO).unwrap();
        assert_eq!(families.len(), 54);
        let efs = [
            (
                "export",
                "fs-0a1b2c3d4e5f60789.efs.us-west-2.amazonaws.com:/",
            ),
            ("protocol", "tcp"),
            ("mountaddr", "10.0.8.18"),
        ];
        let get = |name: &str, extra: &[(&str, &str)]| {
            let labels: Vec<_> = efs.iter().chain(extra).copied().collect();
            value(&families, &format!("node_mountstats_nfs_{name}"), &labels).unwrap()
        };
        assert_eq!(get("age_seconds_total", &[]), 86400.0);
        assert_eq!(get("read_bytes_total", &[]), 101.0);
        assert_eq!(get("write_pages_total", &[]), 108.0);
        assert_eq!(get("event_inode_revalidate_total", &[]), 1.0);
        assert_eq!(get("event_vfs_file_release_total", &[]), 18.0);
        // The 19th value (congestion wait) is not reported.
        assert_eq!(get("event_truncation_total", &[]), 20.0);
        assert_eq!(get("event_pnfs_write_total", &[]), 27.0);
        let transport = [("transport", "0")];
        assert_eq!(get("transport_bind_total", &transport), 1.0);
        assert_eq!(get("transport_connect_total", &transport), 2.0);
        assert_eq!(get("transport_idle_time_seconds", &transport), 1.0);
        assert_eq!(get("transport_sends_total", &transport), 5.0);
        assert_eq!(get("transport_backlog_queue_total", &transport), 9.0);
        assert_eq!(get("transport_maximum_rpc_slots", &transport), 10.0);
        assert_eq!(get("transport_pending_queue_total", &transport), 12.0);
        let read = [("operation", "READ")];
        // The first of a repeated operation is kept.
        assert_eq!(get("operations_requests_total", &read), 100.0);
        assert_eq!(get("operations_received_bytes_total", &read), 104857600.0);
        assert_eq!(get("operations_queue_time_seconds_total", &read), 0.012);
        assert_eq!(get("operations_request_time_seconds_total", &read), 3.5);
        let write = [("operation", "WRITE")];
        assert_eq!(get("operations_queue_time_seconds_total", &write), 0.009);
        let ops = families
            .iter()
            .find(|f| f.name == "node_mountstats_nfs_operations_requests_total")
            .unwrap();
        assert_eq!(ops.metrics.len(), 4);
        // The v3 mount: no address in its mountinfo line.
        let v3 = [
            ("export", "10.0.0.5:/export"),
            ("protocol", "udp"),
            ("mountaddr", ""),
        ];
        assert_eq!(
            value(&families, "node_mountstats_nfs_age_seconds_total", &v3),
            Some(60.0)
        );
    }

    #[test]
    fn duplicates_are_reported_once() {
        // The same export twice, the second with two transports (nconnect), and a mount
        // without a transport line, which reports nothing.
        let stats = "\
device 127.0.0.1:/ mounted on /a with fstype nfs4 statvers=1.1
\tage:\t10
\txprt:\ttcp 20049 0 1 0 0 5 5 0 5 0 1 1 1
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 0 0

device 127.0.0.1:/ mounted on /b with fstype nfs4 statvers=1.1
\tage:\t20
\txprt:\ttcp 20050 0 1 0 0 5 5 0 5 0 1 1 1
\txprt:\ttcp 20051 0 1 0 0 5 5 0 5 0 1 1 1
\tper-op statistics

device 127.0.0.1:/ mounted on /c with fstype nfs4 statvers=1.1
\tage:\t30
\tper-op statistics

";
        let info = "\
1 0 0:50 / /a rw - nfs4 127.0.0.1:/ rw,addr=127.0.0.1
2 0 0:51 / /b rw - nfs4 127.0.0.1:/ rw,addr=127.0.0.1
3 0 0:52 / /c rw - nfs4 127.0.0.1:/ rw,addr=127.0.0.1
";
        let families = collect(stats, info).unwrap();
        let count = |name: &str| {
            families
                .iter()
                .find(|f| f.name == format!("node_mountstats_nfs_{name}"))
                .unwrap()
                .metrics
                .len()
        };
        assert_eq!(count("mountpoint_info"), 2);
        assert_eq!(count("age_seconds_total"), 1);
        assert_eq!(count("transport_sends_total"), 1);
        assert_eq!(
            value(&families, "node_mountstats_nfs_age_seconds_total", &[]),
            Some(10.0)
        );
        // Without mountinfo lines the address is empty.
        let families = collect(stats, "").unwrap();
        assert_eq!(
            value(
                &families,
                "node_mountstats_nfs_age_seconds_total",
                &[("mountaddr", "")]
            ),
            Some(10.0)
        );
    }

    #[test]
    fn malformed_mountstats_are_errors() {
        let nfs = "device a:/ mounted on /m with fstype nfs4 statvers=1.1\n";
        let cases = [
            "device\n".to_owned(),
            "device a:/ mounted at /m with fstype nfs4\n".to_owned(),
            "device a:/ mounted on /m with fstype cifs statvers=1.1\n".to_owned(),
            format!("{nfs}\topts:\n"),
            format!("{nfs}\tage:\n"),
            format!("{nfs}\tage:\t1h\n"),
            format!("{nfs}\tage:\tx\n"),
            format!("{nfs}\tage:\t9999999999999999999\n"),
            format!("{nfs}\tbytes:\t1 2 3\n"),
            format!("{nfs}\tbytes:\n"),
            format!("{nfs}\tbytes:\t1 2 3 4 5 6 7 -8\n"),
            format!("{nfs}\tevents:\t1 2 3\n"),
            format!("{nfs}\txprt:\ttcp\n"),
            format!("{nfs}\txprt:\ttcp 1 2 3\n"),
            format!("{nfs}\txprt:\tsctp 1 2 3 4 5 6 7 8 9 10 11 12 13\n"),
            format!("{nfs}\txprt:\ttcp 1 2 3 4 5 6 7 8 9 10 11 12 x\n"),
            format!("{nfs}\txprt:\trdma{}\n", " 1".repeat(19)),
            // More RDMA values than procfs has room for: Go panics.
            format!("{nfs}\txprt:\trdma{}\n", " 1".repeat(32)),
            format!("{nfs}\tper-op statistics\n\tREAD: 1 2 3\n"),
            format!("{nfs}\tper-op statistics\n\tREAD: 1 2 3 4 5 6 7 x\n"),
            format!("{nfs}\tper-op statistics\n\tREAD: 1 2 3 4 5 6 7 18446744073709551616\n"),
            // An unknown statistics version fails at the first transport line.
            "device a:/ mounted on /m with fstype nfs4 statvers=1.2\n\txprt:\ttcp 1 2 3 4 5 6 7 8 9 10 11 12 13\n".to_owned(),
            // No per-op section: the operations are read from the next lines, as procfs does.
            format!("{nfs}\tage:\t1\n\ndevice proc mounted on /proc with fstype proc\n"),
            format!("{nfs}\tage:\t1\n{}\n", "x".repeat(65536)),
        ];
        for case in &cases {
            assert!(parse_mountstats(case.as_bytes()).is_err(), "{case:?}");
        }
    }

    #[test]
    fn edge_cases_that_parse() {
        // Statistics without a transport line (even of an unknown statvers), RDMA, a file
        // that ends without a blank line: procfs accepts them.
        let text = format!(
            "\
device a:/ mounted on /m with fstype nfs4 statvers=1.2
\tage:\t1
\tper-op statistics

device b:/ mounted on /n with fstype nfs statvers=1.1
\tage:\t1
\txprt:\trdma{}
\tper-op statistics
\t        READ: 1 2 3 4 5 6 7 8

device c:/ mounted on /o with fstype nfs4 statvers=1.1
\tage:\t-5",
            (0..28).map(|i| format!(" {i}")).collect::<String>()
        );
        let mounts = parse_mountstats(text.as_bytes()).unwrap();
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        let stats: Vec<&NfsStats> = mounts.iter().map(|m| m.stats.as_ref().unwrap()).collect();
        assert!(stats[0].transports.is_empty());
        assert_eq!(
            stats[1].transports[0].counters,
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0]
        );
        assert_eq!(stats[2].age, -5_000_000_000);
        let mut families = Families::new();
        families.fill(&mounts, &[], true).unwrap();
        let families = families.into_vec();
        let ages = &families[1];
        assert_eq!(ages.name, "node_mountstats_nfs_age_seconds_total");
        assert_eq!(ages.metrics.len(), 1, "only b has a transport");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_parse_duration("86400s"), Some(86_400_000_000_000));
        assert_eq!(go_parse_duration("0s"), Some(0));
        assert_eq!(go_parse_duration("0"), Some(0));
        assert_eq!(go_parse_duration("-5s"), Some(-5_000_000_000));
        assert_eq!(go_parse_duration("+5s"), Some(5_000_000_000));
        assert_eq!(go_parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_parse_duration(".5s"), Some(500_000_000));
        assert_eq!(go_parse_duration("5.s"), Some(5_000_000_000));
        // procfs appends "s": "1m" becomes a millisecond, "1h2m3" an hour and more.
        assert_eq!(go_parse_duration("1ms"), Some(1_000_000));
        assert_eq!(go_parse_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(go_parse_duration("1µs"), Some(1_000));
        assert_eq!(go_parse_duration("1hs"), None);
        assert_eq!(go_parse_duration("s"), None);
        assert_eq!(go_parse_duration(".s"), None);
        assert_eq!(go_parse_duration(""), None);
        assert_eq!(go_parse_duration("-"), None);
        assert_eq!(go_parse_duration("5"), None);
        assert_eq!(
            go_parse_duration("9223372036s"),
            Some(9_223_372_036_000_000_000)
        );
        assert_eq!(go_parse_duration("9223372037s"), None);
        assert_eq!(go_parse_duration("9223372036854775807ns"), Some(i64::MAX));
        assert_eq!(go_parse_duration("9223372036854775808ns"), None);
        assert_eq!(go_parse_duration("-9223372036854775808ns"), Some(i64::MIN));
        assert_eq!(go_parse_duration("99999999999999999999s"), None);
        assert_eq!(
            go_parse_duration("0.1234567890123456789012345s"),
            Some(123_456_789)
        );
    }

    #[test]
    fn mountinfo_checks() {
        for bad in [
            "1 0 0:1 / / rw - xfs\n",
            "1 0 0:1 / / rw x xfs /dev/a rw\n",
            "a 0 0:1 / / rw shared:1 - xfs /dev/a rw\n",
            "1 b 0:1 / / rw shared:1 - xfs /dev/a rw\n",
            "\n",
        ] {
            assert!(
                parse_mountinfo_addresses(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        let addresses = parse_mountinfo_addresses(
            b"1 0 0:1 / / rw shared:1 - nfs a:/ rw,addr=10.0.0.1=x\r\n+2 -1 0:1 / / rw shared:1 - nfs a:/ addr=\n",
        )
        .unwrap();
        assert_eq!(addresses, ["10.0.0.1", ""]);
    }

    #[test]
    fn invalid_utf8_labels_are_errors() {
        let stats = b"device a\xff:/ mounted on /m with fstype nfs4 statvers=1.1\n\txprt:\ttcp 1 2 3 4 5 6 7 8 9 10 11 12 13\n";
        let mounts = parse_mountstats(stats).unwrap();
        let mut families = Families::new();
        assert!(families.fill(&mounts, &[], false).is_err());
        // The same text, valid: a replacement character of its own is fine.
        let mut families = Families::new();
        assert!(families.fill(&mounts, &[], true).is_ok());
    }

    #[test]
    fn resolves_self_as_procfs_does() {
        let dir = std::env::temp_dir().join(format!("mountstats-self-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("4242")).unwrap();
        // No link yet.
        assert!(resolve_self(&dir).is_err());
        std::os::unix::fs::symlink("4242", dir.join("self")).unwrap();
        assert_eq!(resolve_self(&dir).unwrap(), dir.join("4242"));
        // A link naming the procfs path itself: the path is removed from it.
        std::fs::remove_file(dir.join("self")).unwrap();
        std::os::unix::fs::symlink(dir.join("4242"), dir.join("self")).unwrap();
        assert!(resolve_self(&dir).is_err(), "\"/4242\" is not a number");
        std::fs::remove_file(dir.join("self")).unwrap();
        std::os::unix::fs::symlink("+04242", dir.join("self")).unwrap();
        assert_eq!(resolve_self(&dir).unwrap(), dir.join("4242"));
        std::fs::remove_file(dir.join("self")).unwrap();
        std::os::unix::fs::symlink("4243", dir.join("self")).unwrap();
        assert!(resolve_self(&dir).is_err(), "no such process");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_errors() {
        let collector = MountStatsCollector {
            process: PathBuf::from("/nonexistent/1"),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("mountstats"), "{error:#}");
    }
}
