//! `netclass`: network device properties from /sys/class/net/<iface>/*, as node_exporter's
//! netclass collector (most of them, with the same values, from one rtnetlink link dump when
//! that is the kernel's sysfs: the `link_dump` module); with `--collector.netclass.netlink`, from
//! rtnetlink and ethtool netlink instead (the `rtnl` module, upstream's netclass_rtnl_linux.go).
use std::{
    collections::BTreeMap,
    ffi::{CStr, OsStr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

const IGNORED_DEVICES: &str = "collector.netclass.ignored-devices";
const IGNORE_INVALID_SPEED: &str = "collector.netclass.ignore-invalid-speed";
const NETLINK: &str = "collector.netclass.netlink";
const RTNL_WITH_STATS: &str = "collector.netclass_rtnl.with-stats";

mod link_dump;
mod rtnl;

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "netclass",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            IGNORED_DEVICES,
            Some("^$"),
            "Regexp of net devices to ignore for netclass collector.",
        ),
        FlagSpec::bool(
            IGNORE_INVALID_SPEED,
            false,
            "Ignore devices where the speed is invalid. This will be the default behavior in 2.x.",
        ),
        FlagSpec::bool(
            NETLINK,
            false,
            "Use netlink to gather stats instead of /proc/net/dev.",
        ),
        FlagSpec::bool(
            RTNL_WITH_STATS,
            false,
            "Expose the statistics for each network device, replacing netdev collector.",
        ),
    ],
    kernel: None,
    build,
};

struct NetclassCollector {
    class_net: PathBuf,
    ignored: Option<Regex>,
    ignore_invalid_speed: bool,
    /// `--collector.netclass.netlink`'s mode, which then replaces the sysfs one.
    netlink: Option<rtnl::Rtnl>,
    /// The sysfs mode's source of most attributes, when `class_net` is the kernel's sysfs.
    link_dump: Option<link_dump::LinkDump>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let class_net = context.sys_path("class/net");
    // Go's empty regular expression matches every name (the flags' `regex` takes "" for none).
    let ignored = match context.flags.string(IGNORED_DEVICES) {
        Some("") => Some(Regex::new("")?),
        _ => context.flags.regex(IGNORED_DEVICES)?,
    };
    let netlink = context.flags.bool(NETLINK).then(|| {
        let with_stats = context.flags.bool(RTNL_WITH_STATS);
        // netdev's counters and these gauges of the same names would collide (upstream's
        // registry keeps whichever family it gathers first): netdev's stay.
        let left_out: Vec<&'static str> = if with_stats && context.is_enabled("netdev") {
            super::netdev::served_keys(&context.flags)
                .into_iter()
                .filter(|key| super::netdev::LINK_STATS.contains(key))
                .collect()
        } else {
            Vec::new()
        };
        if !left_out.is_empty() {
            tracing::warn!(
                families = left_out
                    .iter()
                    .map(|key| format!("node_network_{key}_total"))
                    .collect::<Vec<_>>()
                    .join(","),
                "--{RTNL_WITH_STATS}: netdev serves these as counters, so netclass leaves them out; disable netdev (--no-collector.netdev) to have netclass serve them"
            );
        }
        rtnl::Rtnl {
            class_net: class_net.clone(),
            ignored: ignored.clone(),
            with_stats,
            left_out,
        }
    });
    let link_dump =
        (netlink.is_none() && link_dump::is_sysfs(&class_net)).then(link_dump::LinkDump::new);
    Ok(Arc::new(NetclassCollector {
        class_net,
        ignored,
        ignore_invalid_speed: context.flags.bool(IGNORE_INVALID_SPEED),
        netlink,
        link_dump,
    }))
}

/// The attributes of one interface that upstream's procfs reads and the metrics use, as read.
#[derive(Default, Debug)]
struct Interface {
    strings: BTreeMap<&'static CStr, String>,
    numbers: BTreeMap<&'static CStr, i64>,
}

const STRING_ATTRIBUTES: &[&CStr] = &[
    c"address",
    c"broadcast",
    c"duplex",
    c"ifalias",
    c"operstate",
];
const NUMBER_ATTRIBUTES: &[&CStr] = &[
    c"addr_assign_type",
    c"carrier",
    c"carrier_changes",
    c"carrier_up_count",
    c"carrier_down_count",
    c"dev_id",
    c"dormant",
    c"flags",
    c"ifindex",
    c"iflink",
    c"link_mode",
    c"mtu",
    c"name_assign_type",
    c"netdev_group",
    c"speed",
    c"tx_queue_len",
    c"type",
];

/// `(metric, attribute, type)` in upstream's order.
const PROPERTIES: &[(&str, &CStr, MetricType)] = &[
    (
        "address_assign_type",
        c"addr_assign_type",
        MetricType::Gauge,
    ),
    ("carrier", c"carrier", MetricType::Gauge),
    (
        "carrier_changes_total",
        c"carrier_changes",
        MetricType::Counter,
    ),
    (
        "carrier_up_changes_total",
        c"carrier_up_count",
        MetricType::Counter,
    ),
    (
        "carrier_down_changes_total",
        c"carrier_down_count",
        MetricType::Counter,
    ),
    ("device_id", c"dev_id", MetricType::Gauge),
    ("dormant", c"dormant", MetricType::Gauge),
    ("flags", c"flags", MetricType::Gauge),
    ("iface_id", c"ifindex", MetricType::Gauge),
    ("iface_link", c"iflink", MetricType::Gauge),
    ("iface_link_mode", c"link_mode", MetricType::Gauge),
    ("mtu_bytes", c"mtu", MetricType::Gauge),
    ("name_assign_type", c"name_assign_type", MetricType::Gauge),
    ("net_dev_group", c"netdev_group", MetricType::Gauge),
    ("transmit_queue_length", c"tx_queue_len", MetricType::Gauge),
    ("protocol_type", c"type", MetricType::Gauge),
];

/// Reads the attributes of one interface directory as procfs' `parseNetClassIface`:
/// unreadable attributes (EINVAL for the speed of a down link...) are absent, numbers that do
/// not parse (Go's base-0 `ParseInt`) are 0, other read errors fail. Only the attributes the
/// metrics use are read (procfs also reads `addr_len` and `phys_*`, which nothing exports), each
/// opened by name in the interface's directory; those this scrape's link dump carries (`links`)
/// are taken from it instead.
fn read_interface(
    path: &Path,
    name: &OsStr,
    links: Option<&mut link_dump::Links>,
) -> anyhow::Result<Interface> {
    let dir = read::SysDir::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut interface = Interface::default();
    let from_files = links.and_then(|links| links.fill(name, &dir, &mut interface));
    let every_attribute = || {
        STRING_ATTRIBUTES
            .iter()
            .chain(NUMBER_ATTRIBUTES)
            .copied()
            .collect()
    };
    for attribute in from_files.unwrap_or_else(every_attribute) {
        let value = match dir.attribute(attribute) {
            Ok(value) => value,
            Err(error) if read::is_unavailable(&error) => continue,
            Err(error) => {
                let file = path.join(attribute.to_string_lossy().as_ref());
                return Err(error).with_context(|| format!("reading {}", file.display()));
            }
        };
        if STRING_ATTRIBUTES.contains(&attribute) {
            interface.strings.insert(attribute, value);
        } else {
            // procfs' ValueParser.PInt64 yields 0 for a number that does not parse.
            let number = goparse::parse_int(&value, 0, 64).unwrap_or(0);
            interface.numbers.insert(attribute, number);
        }
    }
    Ok(interface)
}

impl Collector for NetclassCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        if let Some(netlink) = &self.netlink {
            return netlink.update(out);
        }
        let entries = match std::fs::read_dir(&self.class_net) {
            Ok(entries) => entries,
            Err(error) if read::is_unavailable(&error) => {
                return Err(NoData(format!("{}: {error}", self.class_net.display())).into());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.class_net.display()));
            }
        };
        let mut devices = Vec::new();
        for entry in entries {
            let entry = entry?;
            // Devices are symlinks or directories; bonding_masters is a regular file.
            if !entry.file_type()?.is_file() {
                devices.push(entry.file_name());
            }
        }
        let mut links = self
            .link_dump
            .as_ref()
            .and_then(|dump| dump.links(&devices));
        let mut interfaces = BTreeMap::new();
        for device in &devices {
            let name = device.to_string_lossy().into_owned();
            if self.ignored.as_ref().is_some_and(|re| re.is_match(&name)) {
                continue;
            }
            let path = self.class_net.join(device);
            match read_interface(&path, device, links.as_mut()) {
                Ok(interface) => {
                    interfaces.insert(name, interface);
                }
                // Removed while we read it (pod veths come and go all the time): skipped, as
                // if the listing had not had it.
                Err(error) if !path.exists() => {
                    tracing::debug!(
                        device = name,
                        err = format!("{error:#}"),
                        "network device removed during the scrape"
                    );
                }
                Err(error) => return Err(error),
            }
        }

        let mut up = MetricFamily::gauge(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
        );
        let mut info = MetricFamily::gauge(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
        );
        let mut properties: Vec<MetricFamily> = PROPERTIES
            .iter()
            .map(|(metric, _, kind)| {
                MetricFamily::new(
                    format!("node_network_{metric}"),
                    format!("Network device property: {metric}"),
                    *kind,
                )
            })
            .collect();
        let mut speed = MetricFamily::gauge(
            "node_network_speed_bytes",
            "Network device property: speed_bytes",
        );

        for (device, interface) in &interfaces {
            let text = |a: &CStr| interface.strings.get(a).cloned().unwrap_or_default();
            let operstate = text(c"operstate");
            up.push(
                [("device", device.as_str())],
                if operstate == "up" { 1.0 } else { 0.0 },
            );
            let adminstate = match interface.numbers.get(c"flags") {
                None => "unknown",
                Some(flags) if flags & 1 == 1 => "up",
                Some(_) => "down",
            };
            info.push(
                [
                    ("device", device.clone()),
                    ("address", text(c"address")),
                    ("broadcast", text(c"broadcast")),
                    ("duplex", text(c"duplex")),
                    ("operstate", operstate),
                    ("adminstate", adminstate.to_owned()),
                    ("ifalias", text(c"ifalias")),
                ],
                1.0,
            );
            for ((_, attribute, _), family) in PROPERTIES.iter().zip(&mut properties) {
                if let Some(value) = interface.numbers.get(attribute) {
                    family.push([("device", device.as_str())], *value as f64);
                }
            }
            if let Some(mbits) = interface.numbers.get(c"speed") {
                // Some devices report -1 when the speed is unknown.
                if *mbits >= 0 || !self.ignore_invalid_speed {
                    let bytes = mbits.wrapping_mul(1000 * 1000) / 8;
                    speed.push([("device", device.as_str())], bytes as f64);
                }
            }
        }
        out.push(up);
        out.push(info);
        out.extend(properties);
        out.push(speed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes_as_procfs_does() {
        let dir = std::env::temp_dir().join(format!("netclass-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("statistics")).unwrap();
        std::fs::write(dir.join("flags"), "0x1003\n").unwrap();
        std::fs::write(dir.join("mtu"), "1500\n").unwrap();
        std::fs::write(dir.join("speed"), "garbage\n").unwrap();
        std::fs::write(dir.join("address"), "  aa:bb:cc:dd:ee:ff \n").unwrap();
        std::fs::write(dir.join("uevent"), "INTERFACE=x\n").unwrap();
        let interface = read_interface(&dir, OsStr::new("x"), None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(interface.numbers.get(c"flags"), Some(&4099));
        assert_eq!(interface.numbers.get(c"mtu"), Some(&1500));
        assert_eq!(
            interface.numbers.get(c"speed"),
            Some(&0),
            "unparsable is 0, as procfs"
        );
        assert_eq!(interface.strings[c"address"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(interface.numbers.len() + interface.strings.len(), 4);
    }

    #[test]
    fn an_interface_removed_during_the_scrape_is_skipped_alone() {
        let root = std::env::temp_dir().join(format!("netclass-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let class_net = root.join("class/net");
        let devices = root.join("devices");
        for device in ["eth0", "veth1"] {
            std::fs::create_dir_all(devices.join(device)).unwrap();
            std::fs::write(devices.join(device).join("operstate"), "up\n").unwrap();
        }
        std::fs::create_dir_all(&class_net).unwrap();
        for device in ["eth0", "veth1"] {
            std::os::unix::fs::symlink(devices.join(device), class_net.join(device)).unwrap();
        }
        // The listing still has veth1, its device is gone.
        std::fs::remove_dir_all(devices.join("veth1")).unwrap();
        let collector = NetclassCollector {
            class_net,
            ignored: None,
            ignore_invalid_speed: false,
            netlink: None,
            link_dump: None,
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let up = out.iter().find(|f| f.name == "node_network_up").unwrap();
        let devices: Vec<_> = up.metrics.iter().map(|m| m.labels[0].1.as_str()).collect();
        assert_eq!(devices, ["eth0"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_class_net_is_no_data() {
        let collector = NetclassCollector {
            class_net: PathBuf::from("/nonexistent/class/net"),
            ignored: None,
            ignore_invalid_speed: false,
            netlink: None,
            link_dump: None,
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
