//! `netdev`: per-device network counters, as node_exporter's netdev collector. By default
//! (`--collector.netdev.netlink`, as upstream 1.12) from one rtnetlink link dump: each link's
//! `IFLA_STATS64` (or the 32-bit `IFLA_STATS` where a driver gives only that), which is what the
//! kernel prints in /proc/net/dev too, but with the detailed error counters and `rx_nohandler`,
//! and without parsing text per device. With `--no-collector.netdev.netlink`, /proc/net/dev
//! under `--path.procfs`. Unless `--collector.netdev.enable-detailed-metrics`, the detailed
//! counters are folded into /proc/net/dev's names exactly as upstream's `legacy()` folds them.
//! The netlink dump reads the collector's own network namespace (the host's under
//! `hostNetwork`), as upstream's does, not one under `--path.procfs`.
use std::{
    collections::BTreeMap,
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use netlink_packet_core::NlasIterator;
use netlink_packet_route::{RouteNetlinkMessage, link::LinkMessage};

use super::netlink_dump;
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    metrics::MetricFamily,
    read,
};

const INCLUDE: &str = "collector.netdev.device-include";
const EXCLUDE: &str = "collector.netdev.device-exclude";
const OLD_INCLUDE: &str = "collector.netdev.device-whitelist";
const OLD_EXCLUDE: &str = "collector.netdev.device-blacklist";
const ADDRESS_INFO: &str = "collector.netdev.address-info";
const DETAILED: &str = "collector.netdev.enable-detailed-metrics";
const NETLINK: &str = "collector.netdev.netlink";
const IFALIAS: &str = "collector.netdev.label-ifalias";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "netdev",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            INCLUDE,
            None,
            "Regexp of net devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            OLD_INCLUDE,
            None,
            "DEPRECATED: Use collector.netdev.device-include",
        )
        .hidden(),
        FlagSpec::value(
            EXCLUDE,
            None,
            "Regexp of net devices to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::value(
            OLD_EXCLUDE,
            None,
            "DEPRECATED: Use collector.netdev.device-exclude",
        )
        .hidden(),
        FlagSpec::bool(ADDRESS_INFO, false, "Collect address-info for every device"),
        FlagSpec::bool(
            DETAILED,
            false,
            "Use (incompatible) metric names that provide more detailed stats on Linux",
        ),
        FlagSpec::bool(
            NETLINK,
            true,
            "Use netlink to gather stats instead of /proc/net/dev.",
        ),
        FlagSpec::bool(IFALIAS, false, "Add ifAlias label"),
    ],
    kernel: None,
    build,
};

/// The /proc/net/dev columns, in order, with the key upstream's procfs reader gives each.
const RECEIVE_COLUMNS: [&str; 8] = [
    "receive_bytes",
    "receive_packets",
    "receive_errors",
    "receive_dropped",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
];
const TRANSMIT_COLUMNS: [&str; 8] = [
    "transmit_bytes",
    "transmit_packets",
    "transmit_errors",
    "transmit_dropped",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

struct NetdevCollector {
    file: read::KeptFile,
    class_net: PathBuf,
    filter: DeviceFilter,
    detailed: bool,
    netlink: bool,
    ifalias: bool,
    address_info: bool,
}

/// `--collector.netdev.device-<kind>` or its deprecated alias, as upstream resolves them.
fn pattern(context: &BuildContext, new: &str, old: &str) -> anyhow::Result<Option<regex::Regex>> {
    let flags = &context.flags;
    let old_value = flags.string(old).unwrap_or_default();
    let new_value = flags.string(new).unwrap_or_default();
    if !old_value.is_empty() {
        if !new_value.is_empty() {
            anyhow::bail!("--{old} and --{new} are mutually exclusive");
        }
        tracing::warn!("--{old} is DEPRECATED and will be removed in 2.0.0, use --{new}");
        return flags.regex(old);
    }
    flags.regex(new)
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let include = pattern(context, INCLUDE, OLD_INCLUDE)?;
    let exclude = pattern(context, EXCLUDE, OLD_EXCLUDE)?;
    if include.is_some() && exclude.is_some() {
        anyhow::bail!("device-exclude & device-include are mutually exclusive");
    }
    Ok(Arc::new(NetdevCollector {
        file: read::KeptFile::new(context.proc_path("net/dev")),
        class_net: context.sys_path("class/net"),
        filter: DeviceFilter::new(exclude, include),
        detailed: context.flags.bool(DETAILED),
        netlink: context.flags.bool(NETLINK),
        ifalias: context.flags.bool(IFALIAS),
        address_info: context.flags.bool(ADDRESS_INFO),
    }))
}

/// One device's counters, keyed as upstream keys them (`receive_bytes`, `multicast`...).
pub(super) type Counters = BTreeMap<&'static str, u64>;

/// Parses /proc/net/dev as procfs' `NetDev` does: two header lines, then `name: 16 numbers`
/// (the name is what precedes the last colon).
fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<(String, Counters)>> {
    let mut devices = Vec::new();
    for line in text.lines().skip(2) {
        let (name, counters) = line
            .rsplit_once(':')
            .with_context(|| format!("{}: line without a colon: {line:?}", path.display()))?;
        let name = name.trim();
        if name.is_empty() {
            anyhow::bail!("{}: empty interface name: {line:?}", path.display());
        }
        let fields: Vec<&str> = counters.split_whitespace().collect();
        if fields.len() < 16 {
            anyhow::bail!(
                "{}: {name}: expected 16 counters, found {}",
                path.display(),
                fields.len()
            );
        }
        let mut stats = Counters::new();
        for (key, field) in RECEIVE_COLUMNS
            .iter()
            .chain(TRANSMIT_COLUMNS.iter())
            .zip(fields)
        {
            stats.insert(*key, read::parse_number::<u64>(field, key, path)?);
        }
        devices.push((name.to_owned(), stats));
    }
    Ok(devices)
}

/// `struct rtnl_link_stats64` (and the 32-bit `rtnl_link_stats`), field by field, as upstream
/// names them. Older kernels send fewer fields; the missing ones are absent, as upstream's
/// zero values are then folded in as nothing.
pub(super) const LINK_STATS: [&str; 24] = [
    "receive_packets",
    "transmit_packets",
    "receive_bytes",
    "transmit_bytes",
    "receive_errors",
    "transmit_errors",
    "receive_dropped",
    "transmit_dropped",
    "multicast",
    "collisions",
    "receive_length_errors",
    "receive_over_errors",
    "receive_crc_errors",
    "receive_frame_errors",
    "receive_fifo_errors",
    "receive_missed_errors",
    "transmit_aborted_errors",
    "transmit_carrier_errors",
    "transmit_fifo_errors",
    "transmit_heartbeat_errors",
    "transmit_window_errors",
    "receive_compressed",
    "transmit_compressed",
    "receive_nohandler",
];

const IFLA_IFNAME: u16 = libc::IFLA_IFNAME;
const IFLA_STATS: u16 = libc::IFLA_STATS;
const IFLA_STATS64: u16 = libc::IFLA_STATS64;
/// `struct ifinfomsg`, before the attributes of an RTM_NEWLINK message.
const IFINFOMSG_LEN: usize = 16;

/// Every link's name and counters from one RTM_GETLINK dump.
fn netlink_stats() -> anyhow::Result<Vec<(String, Counters)>> {
    let mut devices = Vec::new();
    netlink_dump::dump(
        netlink_dump::NETLINK_ROUTE,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        |kind, payload| {
            if kind == libc::RTM_NEWLINK
                && let Some(device) = link_counters(payload)?
            {
                devices.push(device);
            }
            Ok(())
        },
    )
    .context("couldn't get netstats: rtnetlink link dump")?;
    Ok(devices)
}

/// The name and counters of one RTM_NEWLINK payload; `None` for a link without a name or
/// statistics (upstream skips those).
fn link_counters(payload: &[u8]) -> anyhow::Result<Option<(String, Counters)>> {
    let attributes = payload
        .get(IFINFOMSG_LEN..)
        .context("malformed link message: shorter than ifinfomsg")?;
    let (mut name, mut stats64, mut stats32) = (None, None, None);
    for attribute in NlasIterator::new(attributes) {
        let attribute =
            attribute.map_err(|e| anyhow::anyhow!("malformed link message attribute: {e}"))?;
        let value = attribute.value();
        match attribute.kind() {
            IFLA_IFNAME => {
                let bytes = value.split(|b| *b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            IFLA_STATS64 => stats64 = Some(value.to_vec()),
            IFLA_STATS => stats32 = Some(value.to_vec()),
            _ => {}
        }
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let counters: Counters = match (stats64, stats32) {
        (Some(stats), _) => stats64_counters(&stats),
        (None, Some(stats)) => LINK_STATS
            .iter()
            .zip(stats.chunks_exact(4))
            .map(|(key, bytes)| {
                let value = u32::from_ne_bytes(bytes.try_into().unwrap_or_default());
                (*key, u64::from(value))
            })
            .collect(),
        (None, None) => return Ok(None),
    };
    Ok(Some((name, counters)))
}

/// The counters of an `IFLA_STATS64` value (`struct rtnl_link_stats64`), as many as it holds
/// (the netclass collector's `--collector.netclass_rtnl.with-stats` shares this).
pub(super) fn stats64_counters(stats: &[u8]) -> Counters {
    LINK_STATS
        .iter()
        .zip(stats.chunks_exact(8))
        .map(|(key, bytes)| {
            (
                *key,
                u64::from_ne_bytes(bytes.try_into().unwrap_or_default()),
            )
        })
        .collect()
}

/// The keys this collector serves as `node_network_<key>_total` counters with `flags` (the
/// netclass collector leaves its with-stats gauges of those names out, not to collide).
pub(super) fn served_keys(flags: &crate::flags::CollectorFlags) -> Vec<&'static str> {
    let mut counters: Counters = if flags.bool(NETLINK) {
        LINK_STATS.iter().map(|key| (*key, 0)).collect()
    } else {
        RECEIVE_COLUMNS
            .iter()
            .chain(&TRANSMIT_COLUMNS)
            .map(|key| (*key, 0))
            .collect()
    };
    if !flags.bool(DETAILED) {
        legacy(&mut counters);
    }
    counters.into_keys().collect()
}

/// upstream's `legacy()`: the detailed netlink counters folded into /proc/net/dev's names and
/// sums (net/core/net-procfs.c); on /proc/net/dev's own counters only the renames apply.
fn legacy(counters: &mut Counters) {
    let mut fold = |into: &'static str, from: &'static str, added: &[&'static str]| {
        if let Some(value) = counters.remove(from) {
            let extra: u64 = added.iter().filter_map(|key| counters.remove(key)).sum();
            counters.insert(into, value.wrapping_add(extra));
        }
    };
    fold("receive_errs", "receive_errors", &[]);
    fold(
        "receive_drop",
        "receive_dropped",
        &["receive_missed_errors"],
    );
    fold("receive_fifo", "receive_fifo_errors", &[]);
    fold(
        "receive_frame",
        "receive_frame_errors",
        &[
            "receive_length_errors",
            "receive_over_errors",
            "receive_crc_errors",
        ],
    );
    fold("receive_multicast", "multicast", &[]);
    fold("transmit_errs", "transmit_errors", &[]);
    fold("transmit_drop", "transmit_dropped", &[]);
    fold("transmit_fifo", "transmit_fifo_errors", &[]);
    fold("transmit_colls", "collisions", &[]);
    fold(
        "transmit_carrier",
        "transmit_carrier_errors",
        &[
            "transmit_aborted_errors",
            "transmit_heartbeat_errors",
            "transmit_window_errors",
        ],
    );
}

impl NetdevCollector {
    /// ifalias of every device in /sys/class/net, as upstream's `getNetDevLabels`.
    fn ifaliases(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut aliases = BTreeMap::new();
        let entries = std::fs::read_dir(&self.class_net)
            .with_context(|| format!("reading {}", self.class_net.display()))?;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                continue; // bonding_masters
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path().join("ifalias");
            let alias = match read::sys_attribute(&path) {
                Ok(alias) => alias,
                Err(error) if read::is_unavailable(&error) => String::new(),
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", path.display()));
                }
            };
            aliases.insert(name, alias);
        }
        Ok(aliases)
    }
}

impl Collector for NetdevCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let devices = if self.netlink {
            netlink_stats()?
        } else {
            let text = self.file.to_string()?;
            parse(&text, self.file.path())?
        };
        let aliases = if self.ifalias {
            Some(self.ifaliases()?)
        } else {
            None
        };

        let mut families: BTreeMap<&str, MetricFamily> = BTreeMap::new();
        for (device, mut counters) in devices {
            if self.filter.ignored(&device) {
                continue;
            }
            let mut labels = vec![("device", device.clone())];
            if let Some(alias) = aliases.as_ref().and_then(|a| a.get(&device)) {
                labels.push(("ifalias", alias.clone()));
            }
            if !self.detailed {
                legacy(&mut counters);
            }
            for (key, value) in counters {
                families
                    .entry(key)
                    .or_insert_with(|| {
                        MetricFamily::counter(
                            format!("node_network_{key}_total"),
                            format!("Network device statistic {key}."),
                        )
                    })
                    .push(labels.iter().cloned(), value as f64);
            }
        }
        out.extend(families.into_values());

        if self.address_info {
            let mut info = MetricFamily::gauge(
                "node_network_address_info",
                "node network address by device",
            );
            for (device, address, prefix) in interface_addresses()? {
                info.push(
                    [
                        ("device", device),
                        ("address", address.to_string()),
                        ("netmask", prefix.to_string()),
                        ("scope", scope(address).to_owned()),
                    ],
                    1.0,
                );
            }
            out.push(info);
        }
        Ok(())
    }
}

/// Go's classification of an address in upstream's `scope()`.
fn scope(address: IpAddr) -> &'static str {
    let (loopback, link_local_unicast, link_local_multicast, interface_local, multicast, other) =
        match address {
            IpAddr::V4(v4) => (
                v4.is_loopback(),
                v4.is_link_local(),
                v4.octets()[..3] == [224, 0, 0],
                false,
                v4.is_multicast(),
                v4.is_unspecified() || v4 == Ipv4Addr::BROADCAST,
            ),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                let o = v6.octets();
                (
                    v6.is_loopback(),
                    s[0] & 0xffc0 == 0xfe80,
                    o[0] == 0xff && o[1] & 0x0f == 0x02,
                    o[0] == 0xff && o[1] & 0x0f == 0x01,
                    v6.is_multicast(),
                    v6.is_unspecified(),
                )
            }
        };
    if loopback || link_local_unicast || link_local_multicast {
        "link-local"
    } else if interface_local {
        "interface-local"
    } else if !(multicast || other) {
        "global"
    } else {
        ""
    }
}

fn prefix_length(mask: &[u8]) -> u32 {
    // Go's IPMask.Size: the count of leading ones, 0 for a non-canonical mask.
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let canonical = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip_while(|bit| *bit == 1)
        .all(|bit| bit == 0);
    if canonical { ones } else { 0 }
}

/// Every interface address on the host (getifaddrs(3)), as Go's `net.Interfaces()` + `Addrs()`
/// list them: not from --path.procfs, as upstream.
fn interface_addresses() -> anyhow::Result<Vec<(String, IpAddr, u32)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut addresses = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr/ifa_netmask point to sockaddrs of the family in sa_family.
        unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                    let prefix = if entry.ifa_netmask.is_null() {
                        32
                    } else {
                        let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in);
                        prefix_length(&mask.sin_addr.s_addr.to_ne_bytes())
                    };
                    addresses.push((name, IpAddr::V4(ip), prefix));
                }
                libc::AF_INET6 => {
                    let addr = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
                    let prefix = if entry.ifa_netmask.is_null() {
                        128
                    } else {
                        let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in6);
                        prefix_length(&mask.sin6_addr.s6_addr)
                    };
                    addresses.push((name, IpAddr::V6(ip), prefix));
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn parses_lines_and_names_before_the_last_colon() {
        let text = format!(
            "{HEADER}    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"
        );
        let devices = parse(&text, Path::new("/proc/net/dev")).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[1].0, "eth0");
        assert_eq!(devices[1].1["receive_bytes"], 1);
        assert_eq!(devices[1].1["transmit_colls"], 14);
        assert_eq!(devices[1].1["transmit_compressed"], 16);
    }

    #[test]
    fn truncated_or_bad_lines_are_errors_naming_the_file() {
        for body in [
            "  eth0: 1 2 3\n",
            "  eth0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
            "  : 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
            "  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 -16\n",
        ] {
            let error = parse(&format!("{HEADER}{body}"), Path::new("/x/net/dev")).unwrap_err();
            assert!(format!("{error:#}").contains("/x/net/dev"), "{error:#}");
        }
    }

    #[test]
    fn scopes_as_go_classifies_them() {
        let s = |a: &str| scope(a.parse().unwrap());
        assert_eq!(s("127.0.0.1"), "link-local");
        assert_eq!(s("169.254.1.1"), "link-local");
        assert_eq!(s("10.0.0.1"), "global");
        assert_eq!(s("::1"), "link-local");
        assert_eq!(s("fe80::1"), "link-local");
        assert_eq!(s("ff01::1"), "interface-local");
        assert_eq!(s("2001:db8::1"), "global");
        assert_eq!(s("224.0.1.1"), "");
    }

    #[test]
    fn ifalias_labels_where_sysfs_has_the_device() {
        let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host");
        let collector = NetdevCollector {
            file: read::KeptFile::new(host.join("proc/net/dev")),
            class_net: host.join("sys/class/net"),
            filter: DeviceFilter::new(None, Some(regex::Regex::new("^(eth0|ib0)$").unwrap())),
            detailed: false,
            netlink: false,
            ifalias: true,
            address_info: false,
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let bytes = out
            .iter()
            .find(|f| f.name == "node_network_receive_bytes_total")
            .unwrap();
        assert_eq!(bytes.metrics.len(), 2);
        assert!(bytes.metrics.iter().any(|m| m.labels
            == [
                ("device".to_owned(), "eth0".to_owned()),
                ("ifalias".to_owned(), "uplink to rack switch".to_owned())
            ]));
        assert!(
            bytes.metrics.iter().any(|m| m.labels.len() == 1),
            "ib0 has no sysfs entry"
        );
    }

    /// An RTM_NEWLINK payload: an ifinfomsg, then the attributes given.
    fn link_message(attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut payload = vec![0; IFINFOMSG_LEN];
        for (kind, value) in attributes {
            let length = 4 + value.len();
            payload.extend((length as u16).to_ne_bytes());
            payload.extend(kind.to_ne_bytes());
            payload.extend(value);
            payload.resize(payload.len().next_multiple_of(4), 0);
        }
        payload
    }

    fn name(name: &str) -> (u16, Vec<u8>) {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        (IFLA_IFNAME, value)
    }

    #[test]
    fn link_counters_from_stats64_or_the_32_bit_stats() {
        let stats64: Vec<u8> = (1..=25u64).flat_map(u64::to_ne_bytes).collect();
        let (device, counters) =
            link_counters(&link_message(&[name("ens5"), (IFLA_STATS64, stats64)]))
                .unwrap()
                .unwrap();
        assert_eq!(device, "ens5");
        assert_eq!(counters.len(), 24, "rx_otherhost_dropped is not exported");
        assert_eq!(counters["receive_packets"], 1);
        assert_eq!(counters["receive_bytes"], 3);
        assert_eq!(counters["multicast"], 9);
        assert_eq!(counters["receive_nohandler"], 24);

        // A driver without 64-bit stats, on a kernel that sends 23 fields (no rx_nohandler).
        let stats32: Vec<u8> = (1..=23u32).flat_map(u32::to_ne_bytes).collect();
        let (_, counters) = link_counters(&link_message(&[(IFLA_STATS, stats32), name("sit0")]))
            .unwrap()
            .unwrap();
        assert_eq!(counters.len(), 23);
        assert_eq!(counters["transmit_compressed"], 23);
        assert!(!counters.contains_key("receive_nohandler"));
    }

    #[test]
    fn links_without_a_name_or_stats_are_skipped_and_garbage_is_an_error() {
        assert!(
            link_counters(&link_message(&[name("x")]))
                .unwrap()
                .is_none()
        );
        let stats: Vec<u8> = vec![0; 8 * 24];
        assert!(
            link_counters(&link_message(&[(IFLA_STATS64, stats)]))
                .unwrap()
                .is_none()
        );
        assert!(link_counters(&[0; 8]).is_err(), "shorter than ifinfomsg");
        let mut truncated = link_message(&[name("eth0")]);
        truncated.extend([200, 0, 3, 0]); // an attribute claiming 200 bytes
        assert!(link_counters(&truncated).is_err());
    }

    #[test]
    fn legacy_folds_detailed_errors_as_upstream() {
        let mut counters: Counters = LINK_STATS.iter().map(|key| (*key, 1)).collect();
        legacy(&mut counters);
        let folded: Vec<(&str, u64)> = counters.into_iter().collect();
        assert_eq!(
            folded,
            [
                ("receive_bytes", 1),
                ("receive_compressed", 1),
                ("receive_drop", 2),
                ("receive_errs", 1),
                ("receive_fifo", 1),
                ("receive_frame", 4),
                ("receive_multicast", 1),
                ("receive_nohandler", 1),
                ("receive_packets", 1),
                ("transmit_bytes", 1),
                ("transmit_carrier", 4),
                ("transmit_colls", 1),
                ("transmit_compressed", 1),
                ("transmit_drop", 1),
                ("transmit_errs", 1),
                ("transmit_fifo", 1),
                ("transmit_packets", 1),
            ]
        );
    }

    /// The live dump against /proc/net/dev read just before: the same devices, and counters
    /// that only grow (the kernel prints both from the same `rtnl_link_stats64`).
    #[test]
    fn the_netlink_dump_agrees_with_proc_net_dev() {
        let text = std::fs::read_to_string("/proc/net/dev").unwrap();
        let mut before = parse(&text, Path::new("/proc/net/dev")).unwrap();
        let mut after = netlink_stats().unwrap();
        before.sort_by(|a, b| a.0.cmp(&b.0));
        after.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |devices: &[(String, Counters)]| -> Vec<String> {
            devices.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&before), names(&after));
        for ((device, mut proc), (_, mut netlink)) in before.into_iter().zip(after) {
            legacy(&mut proc);
            legacy(&mut netlink);
            for (key, value) in proc {
                assert!(
                    netlink[key] >= value,
                    "{device} {key}: {} < {value}",
                    netlink[key]
                );
            }
        }
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_length(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_length(&[255, 0, 255, 0]), 0);
        assert_eq!(prefix_length(&[0; 16]), 0);
    }
}
