//! `netdev`: per-device network counters from /proc/net/dev, as node_exporter's netdev
//! collector. Upstream reads rtnetlink by default (`--collector.netdev.netlink`); /proc/net/dev
//! gives the same counters for the standard families (the kernel prints them from the same
//! `rtnl_link_stats64`, folding the detailed errors exactly as upstream's `legacy()` does), and
//! in netlink mode the one extra netlink counter, `rx_nohandler`, is read from
//! /sys/class/net/<dev>/statistics.
use std::{
    collections::BTreeMap,
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

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

/// One /proc/net/dev line: the device and its 16 counters, keyed as upstream keys them.
type DeviceStats = (String, Vec<(&'static str, u64)>);

/// Parses /proc/net/dev as procfs' `NetDev` does: two header lines, then `name: 16 numbers`
/// (the name is what precedes the last colon).
fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<DeviceStats>> {
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
        let mut stats = Vec::with_capacity(16);
        for (key, field) in RECEIVE_COLUMNS
            .iter()
            .chain(TRANSMIT_COLUMNS.iter())
            .zip(fields)
        {
            stats.push((*key, read::parse_number::<u64>(field, key, path)?));
        }
        devices.push((name.to_owned(), stats));
    }
    Ok(devices)
}

/// upstream's `legacy()`: the /proc/net/dev names of the errors and drops.
fn legacy_name(key: &str) -> &str {
    match key {
        "receive_errors" => "receive_errs",
        "receive_dropped" => "receive_drop",
        "transmit_errors" => "transmit_errs",
        "transmit_dropped" => "transmit_drop",
        other => other,
    }
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
        let text = self.file.to_string()?;
        let devices = parse(&text, self.file.path())?;
        let aliases = if self.ifalias {
            Some(self.ifaliases()?)
        } else {
            None
        };

        let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for (device, stats) in devices {
            if self.filter.ignored(&device) {
                continue;
            }
            let mut labels = vec![("device", device.clone())];
            if let Some(alias) = aliases.as_ref().and_then(|a| a.get(&device)) {
                labels.push(("ifalias", alias.clone()));
            }
            let mut stats: Vec<(&str, u64)> = stats;
            if self.netlink {
                let path = self.class_net.join(&device).join("statistics/rx_nohandler");
                if let Some(value) = read::sys_attribute(&path)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    stats.push(("receive_nohandler", value));
                }
            }
            for (key, value) in stats {
                let key = if self.detailed { key } else { legacy_name(key) };
                families
                    .entry(key.to_owned())
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
        assert_eq!(devices[1].1[0], ("receive_bytes", 1));
        assert_eq!(devices[1].1[13], ("transmit_colls", 14));
        assert_eq!(devices[1].1[15], ("transmit_compressed", 16));
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
    fn netlink_mode_adds_rx_nohandler_and_ifalias_labels() {
        let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host");
        let collector = NetdevCollector {
            file: read::KeptFile::new(host.join("proc/net/dev")),
            class_net: host.join("sys/class/net"),
            filter: DeviceFilter::new(None, Some(regex::Regex::new("^(eth0|ib0)$").unwrap())),
            detailed: false,
            netlink: true,
            ifalias: true,
            address_info: false,
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let nohandler = out
            .iter()
            .find(|f| f.name == "node_network_receive_nohandler_total")
            .unwrap();
        assert_eq!(nohandler.metrics.len(), 1, "ib0 has no statistics");
        assert_eq!(
            nohandler.metrics[0].labels,
            [
                ("device".to_owned(), "eth0".to_owned()),
                ("ifalias".to_owned(), "uplink to rack switch".to_owned())
            ]
        );
        let bytes = out
            .iter()
            .find(|f| f.name == "node_network_receive_bytes_total")
            .unwrap();
        assert_eq!(bytes.metrics.len(), 2);
        assert!(
            bytes.metrics.iter().any(|m| m.labels.len() == 1),
            "ib0 has no sysfs entry"
        );
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_length(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_length(&[255, 0, 255, 0]), 0);
        assert_eq!(prefix_length(&[0; 16]), 0);
    }
}
