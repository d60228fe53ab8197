//! `arp`: IPv4 neighbour (ARP) entries per device, as node_exporter's arp collector. By default
//! (`--collector.arp.netlink`) from an rtnetlink neighbour dump of the AF_INET table, leaving
//! out NUD_NOARP entries as the kernel leaves them out of /proc/net/arp; the interface name is
//! looked up per index, and entries of an interface gone meanwhile are skipped, as upstream's
//! `rtnl` skips them. With `--no-collector.arp.netlink`, /proc/net/arp parsed as procfs'
//! `GatherARPEntries`: every row counts (incomplete ones too), and one malformed row fails the
//! scrape. Both device flags may be given together (upstream does not enforce the "mutually
//! exclusive" of their help).
use std::{collections::BTreeMap, path::Path, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourHeader, NeighbourMessage},
};

use super::netlink_dump;
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    metrics::MetricFamily,
};

const INCLUDE: &str = "collector.arp.device-include";
const EXCLUDE: &str = "collector.arp.device-exclude";
const NETLINK: &str = "collector.arp.netlink";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "arp",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            INCLUDE,
            None,
            "Regexp of arp devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            EXCLUDE,
            None,
            "Regexp of arp devices to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::bool(
            NETLINK,
            true,
            "Use netlink to gather stats instead of /proc/net/arp.",
        ),
    ],
    kernel: None,
    build,
};

struct ArpCollector {
    arp: PathBuf,
    filter: DeviceFilter,
    netlink: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    Ok(Arc::new(ArpCollector {
        arp: context.proc_path("net/arp"),
        filter: DeviceFilter::new(flags.regex(EXCLUDE)?, flags.regex(INCLUDE)?),
        netlink: flags.bool(NETLINK),
    }))
}

impl Collector for ArpCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let entries = if self.netlink {
            netlink_entries()
        } else {
            proc_entries(&self.arp)
        }
        .context("could not get ARP entries")?;
        let mut family = MetricFamily::gauge("node_arp_entries", "ARP entries by device");
        for (device, count) in entries {
            if !self.filter.ignored(&device) {
                family.push([("device", device)], count as f64);
            }
        }
        out.push(family);
        Ok(())
    }
}

/// Entries per device in /proc/net/arp.
fn proc_entries(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("error reading arp {}", path.display()))?;
    // Device names are bytes to the kernel; a label must be UTF-8.
    parse_arp(&String::from_utf8_lossy(&bytes), path)
}

/// procfs' `parseARPEntries`, counted per device: rows of 9 fields (the header) and empty ones
/// are skipped, rows of 6 fields must have a valid MAC address and 8-bit flags, any other row
/// is an error.
fn parse_arp(text: &str, path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut entries = BTreeMap::new();
    for line in text.split('\n') {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] | [_, _, _, _, _, _, _, _, _] => {}
            [_, _, flags, mac, _, device] => {
                if !is_go_mac(mac) {
                    anyhow::bail!(
                        "{}: invalid MAC address {mac:?} in {line:?}",
                        path.display()
                    );
                }
                if crate::goparse::parse_uint(flags, 0, 8).is_none() {
                    anyhow::bail!("{}: invalid flags {flags:?} in {line:?}", path.display());
                }
                *entries.entry(device.to_owned()).or_default() += 1;
            }
            _ => anyhow::bail!(
                "{}: {} columns found, but expected 6: {line:?}",
                path.display(),
                fields.len()
            ),
        }
    }
    Ok(entries)
}

/// Whether Go's `net.ParseMAC` accepts `s`: 6, 8 or 20 bytes as two hex digits each, separated
/// by `:` or `-` (`00:1a:2b:...`), or four hex digits per group separated by `.`
/// (`001a.2b3c.4d5e`).
fn is_go_mac(s: &str) -> bool {
    let s = s.as_bytes();
    let hex_pair = |pair: &[u8]| pair.len() == 2 && pair.iter().all(u8::is_ascii_hexdigit);
    if s.len() < 14 {
        return false;
    }
    if s[2] == b':' || s[2] == b'-' {
        let separator = s[2];
        if !(s.len() + 1).is_multiple_of(3) || ![6, 8, 20].contains(&((s.len() + 1) / 3)) {
            return false;
        }
        s.chunks(3).all(|group| {
            hex_pair(&group[..2.min(group.len())]) && group.get(2).is_none_or(|&c| c == separator)
        })
    } else if s[4] == b'.' {
        if !(s.len() + 1).is_multiple_of(5) || ![6, 8, 20].contains(&(2 * (s.len() + 1) / 5)) {
            return false;
        }
        s.chunks(5).all(|group| {
            group.len() >= 4
                && hex_pair(&group[..2])
                && hex_pair(&group[2..4])
                && group.get(4).is_none_or(|&c| c == b'.')
        })
    } else {
        false
    }
}

/// Entries per device in the kernel's AF_INET neighbour table, without NUD_NOARP ones.
fn netlink_entries() -> anyhow::Result<BTreeMap<String, u64>> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Inet;
    let mut per_index: BTreeMap<u32, u64> = BTreeMap::new();
    netlink_dump::dump(
        netlink_dump::NETLINK_ROUTE,
        RouteNetlinkMessage::GetNeighbour(request),
        |kind, payload| {
            if kind != libc::RTM_NEWNEIGH {
                return Ok(());
            }
            let header = NeighbourHeader::parse(payload)
                .map_err(|e| anyhow::anyhow!("malformed neighbour message: {e}"))?;
            if u8::from(header.family) == libc::AF_INET as u8
                && u16::from(header.state) & libc::NUD_NOARP == 0
            {
                *per_index.entry(header.ifindex).or_default() += 1;
            }
            Ok(())
        },
    )?;
    let mut entries = BTreeMap::new();
    for (index, count) in per_index {
        if let Some(name) = netlink_dump::interface_name(index) {
            *entries.entry(name).or_default() += count;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/proc/net/arp";

    fn parse(text: &str) -> anyhow::Result<Vec<(String, u64)>> {
        parse_arp(text, Path::new(PATH)).map(|m| m.into_iter().collect())
    }

    #[test]
    fn counts_rows_per_device() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.0.1.1         0x1         0x2         0a:1b:2c:3d:4e:5f     *        ens5\n\
                    10.0.1.7         0x1         0x0         00:00:00:00:00:00     *        ens5\n\
                    169.254.1.1      0x1         0x6         ee:ee:ee:ee:ee:ee     *        eni3a1\n";
        assert_eq!(
            parse(text).unwrap(),
            [("eni3a1".to_owned(), 1), ("ens5".to_owned(), 2)]
        );
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("\n\n").unwrap(), []);
    }

    #[test]
    fn malformed_rows_fail() {
        let header =
            "IP address       HW type     Flags       HW address            Mask     Device\n";
        for bad in [
            "10.0.1.1 0x1 0x2 0a:1b:2c:3d:4e:5f * \n", // 5 fields (truncated)
            "10.0.1.1 0x1 0x2 0a:1b:2c:3d:4e:5f * ens5 extra\n", // 7 fields
            "10.0.1.1 0x1 0x2 0a:1b:2c:3d:4e * ens5\n", // short MAC
            "10.0.1.1 0x1 0x2 0a:1b:2c:3d:4e:zz * ens5\n", // not hex
            "10.0.1.1 0x1 0x2 0a:1b-2c:3d:4e:5f * ens5\n", // mixed separators
            "10.0.1.1 0x1 0x100 0a:1b:2c:3d:4e:5f * ens5\n", // flags beyond 8 bits
            "10.0.1.1 0x1 two 0a:1b:2c:3d:4e:5f * ens5\n", // flags not a number
        ] {
            let error = parse(&format!("{header}{bad}")).unwrap_err();
            assert!(error.to_string().contains(PATH), "{error:#}");
        }
        // Upstream does not parse the IP address: any text counts.
        assert_eq!(
            parse("not-an-ip 0x1 0x2 0a:1b:2c:3d:4e:5f * ens5\n").unwrap(),
            [("ens5".to_owned(), 1)]
        );
    }

    #[test]
    fn mac_addresses_as_go_parses_them() {
        for good in [
            "00:00:5e:00:53:01",
            "02:00:5E:10:00:00:00:01",
            "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
            "00-00-5e-00-53-01",
            "0000.5e00.5301",
            "0200.5e10.0000.0001",
        ] {
            assert!(is_go_mac(good), "{good}");
        }
        for bad in [
            "",
            "00:00:5e:00:53",
            "00:00:5e:00:53:01:02",
            "0:00:5e:00:53:01:",
            "00:00:5e:00:53:0g",
            "00:00:5e-00:53:01",
            "0000.5e00.530g",
            "0000.5e00:5301",
            "00005e005301abc",
            "00:00:5é:0:53:01",
        ] {
            assert!(!is_go_mac(bad), "{bad}");
        }
    }

    #[test]
    fn non_utf8_device_names_are_labelled_lossily() {
        let dir = std::env::temp_dir().join(format!("arp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("arp");
        std::fs::write(&path, b"10.0.0.1 0x1 0x2 0a:1b:2c:3d:4e:5f * et\xffh0\n").unwrap();
        let entries = proc_entries(&path).unwrap();
        assert_eq!(entries.get("et\u{fffd}h0"), Some(&1));
        std::fs::remove_dir_all(&dir).unwrap();
        let error = proc_entries(&dir.join("arp")).unwrap_err();
        assert!(
            format!("{error:#}").contains("error reading arp"),
            "{error:#}"
        );
    }
}
