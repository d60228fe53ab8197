//! netclass' netlink mode (`--collector.netclass.netlink`), as upstream's
//! netclass_rtnl_linux.go: one rtnetlink link dump (jsimonetti/rtnetlink's `Link.List`) for most
//! attributes, three sysfs attributes that netlink lacks (`addr_assign_type`, `dev_id`,
//! `name_assign_type`, which take a per-device lock, not RTNL), and one ethtool generic-netlink
//! `LINKMODES_GET` dump (mdlayher/ethtool's `LinkModes`) for speed and duplex. Both dumps go
//! through `netlink_dump`'s deadline and fixed buffer.
//!
//! Upstream's quirks kept: `node_network_info` has no `adminstate` label and another HELP;
//! `duplex` is the ethtool library's `Half`/`Full`/`Unknown`; `node_network_dormant` reports the
//! link mode (upstream passes `LinkMode` for both); `flags` are the kernel's `ifi_flags`
//! (with `IFF_RUNNING`/`IFF_LOWER_UP`, unlike sysfs' `flags`); `iface_link` is the interface's
//! own index when `IFLA_LINK` is absent or 0; a speed the driver does not know (`SPEED_UNKNOWN`,
//! 0xffffffff) is converted as the unsigned number it is (536870911875000 bytes) and
//! `--collector.netclass.ignore-invalid-speed` does not apply; the with-stats families are
//! gauges. No ethtool netlink family (or an `ENOENT` from its dump) is an info log and no
//! speed or duplex; any other failure of either dump fails the scrape, the speeds gathered
//! before a failed link dump being still served.
//!
//! Where upstream's attribute decoder stops silently at a malformed attribute or one of the wrong
//! size (and keeps 0 for it), this fails the scrape instead, never serving a wrong number. The
//! sizes upstream checks are checked (`IFLA_ADDRESS`/`IFLA_BROADCAST` 4 to 32 bytes,
//! `IFLA_STATS` 92 or 96, `IFLA_STATS64` 184, 192 or 200). The ethtool link-mode bitsets are
//! checked as upstream's decoder checks them but not looked up (upstream panics on a mode bit
//! its table lacks). The sysfs attributes are read under `--path.sysfs` (upstream: /sys).
use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use regex::Regex;

use super::super::{
    netdev::{self, Counters},
    netlink_dump,
    netlink_raw::{self, RawRequest},
};
use crate::{
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

/// `NLA_TYPE_MASK`: mdlayher's `AttributeDecoder.Type()` drops the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

/// `struct ifinfomsg`, before the attributes of an RTM_NEWLINK message.
const IFINFOMSG_LEN: usize = 16;

// linux/if_link.h.
const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_STATS: u16 = 7;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_IFALIAS: u16 = 20;
const IFLA_STATS64: u16 = 23;
const IFLA_GROUP: u16 = 27;
const IFLA_CARRIER: u16 = 33;
const IFLA_CARRIER_CHANGES: u16 = 35;
const IFLA_CARRIER_UP_COUNT: u16 = 47;
const IFLA_CARRIER_DOWN_COUNT: u16 = 48;
const IFLA_PROP_LIST: u16 = 52;
const IFLA_ALT_IFNAME: u16 = 53;

// linux/ethtool_netlink.h.
const ETHTOOL_GENL_NAME: &str = "ethtool";
const ETHTOOL_MSG_LINKMODES_GET: u8 = 4;
const ETHTOOL_A_HEADER_DEV_INDEX: u16 = 1;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_HEADER_FLAGS: u16 = 3;
const ETHTOOL_FLAG_COMPACT_BITSETS: u32 = 1;
const ETHTOOL_A_LINKMODES_HEADER: u16 = 1;
const ETHTOOL_A_LINKMODES_AUTONEG: u16 = 2;
const ETHTOOL_A_LINKMODES_OURS: u16 = 3;
const ETHTOOL_A_LINKMODES_PEER: u16 = 4;
const ETHTOOL_A_LINKMODES_SPEED: u16 = 5;
const ETHTOOL_A_LINKMODES_DUPLEX: u16 = 6;
const ETHTOOL_A_BITSET_NOMASK: u16 = 1;
const ETHTOOL_A_BITSET_SIZE: u16 = 2;
const ETHTOOL_A_BITSET_VALUE: u16 = 4;
const ETHTOOL_A_BITSET_MASK: u16 = 5;

/// `IF_OPER_UP`.
const OPER_UP: u8 = 6;
/// upstream's `operstateStr`, indexed by `IF_OPER_*`: the kernel's own names, as sysfs'
/// `operstate` shows them.
pub(super) const OPERSTATES: [&str; 7] = [
    "unknown",
    "notpresent",
    "down",
    "lowerlayerdown",
    "testing",
    "dormant",
    "up",
];

/// The sysfs attributes read for each link, as upstream's `getSysfsAttributes`, with their
/// metrics.
const SYSFS_ATTRIBUTES: [(&str, &str); 3] = [
    ("addr_assign_type", "address_assign_type"),
    ("dev_id", "device_id"),
    ("name_assign_type", "name_assign_type"),
];

/// The netlink mode's settings.
pub(super) struct Rtnl {
    pub(super) class_net: PathBuf,
    pub(super) ignored: Option<Regex>,
    pub(super) with_stats: bool,
    /// The with-stats keys left out because the netdev collector serves counters of those
    /// names (upstream's registry then keeps whichever family comes first).
    pub(super) left_out: Vec<&'static str>,
}

/// One link of the dump: what upstream's `LinkMessage` decodes and the metrics use (the sysfs
/// mode takes its attributes from it too: `link_dump`).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Link {
    /// `ifi_type` (ARPHRD_*).
    pub(super) kind: u16,
    pub(super) index: u32,
    pub(super) flags: u32,
    /// As the kernel sent it (for the sysfs path); labels get it as valid UTF-8.
    pub(super) name: Vec<u8>,
    pub(super) address: Vec<u8>,
    pub(super) broadcast: Vec<u8>,
    /// As the kernel sent it, trailing NULs dropped: each mode decodes it as its source would.
    pub(super) alias: Option<Vec<u8>>,
    pub(super) altnames: Vec<Vec<u8>>,
    pub(super) carrier: Option<u8>,
    pub(super) carrier_changes: Option<u32>,
    pub(super) carrier_up_count: Option<u32>,
    pub(super) carrier_down_count: Option<u32>,
    pub(super) link_mode: Option<u8>,
    pub(super) mtu: u32,
    pub(super) group: Option<u32>,
    pub(super) operstate: u8,
    pub(super) tx_queue_len: Option<u32>,
    /// `IFLA_LINK`: the kernel leaves it out where it is the interface's own index.
    pub(super) iflink: Option<u32>,
    pub(super) stats64: Option<Counters>,
}

/// One reply of the ethtool link-modes dump: what upstream's `LinkMode` holds and uses.
#[derive(Debug, Default, PartialEq)]
struct LinkMode {
    name: String,
    speed: u32,
    duplex: u8,
}

/// The value of an attribute of exactly `N` bytes (mdlayher's `Uint8`/`Uint32`).
fn exact<const N: usize>(kind: u16, data: &[u8]) -> anyhow::Result<[u8; N]> {
    data.try_into()
        .map_err(|_| anyhow::anyhow!("attribute {kind} is not {N} bytes long: {}", data.len()))
}

fn exact_u8(kind: u16, data: &[u8]) -> anyhow::Result<u8> {
    exact::<1>(kind, data).map(|[byte]| byte)
}

fn exact_u32(kind: u16, data: &[u8]) -> anyhow::Result<u32> {
    exact::<4>(kind, data).map(u32::from_ne_bytes)
}

/// `nlenc.String`: trailing NULs dropped.
fn trim_nuls(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

/// An `IFLA_ADDRESS`/`IFLA_BROADCAST` value, whose length rtnetlink checks.
fn hardware_address(kind: u16, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    if !(4..=32).contains(&data.len()) {
        anyhow::bail!(
            "rtnetlink LinkMessage has a wrong attribute data length: attribute {kind}, {} bytes",
            data.len()
        );
    }
    Ok(data.to_vec())
}

/// Go's `net.HardwareAddr.String()`: lower-case hex bytes joined by colons, "" when empty.
pub(super) fn hardware_address_string(address: &[u8]) -> String {
    address
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decodes one RTM_NEWLINK payload as rtnetlink's `LinkMessage.UnmarshalBinary` does.
fn parse_link(payload: &[u8]) -> anyhow::Result<Link> {
    let (Some(header), Some(attributes)) =
        (payload.get(..IFINFOMSG_LEN), payload.get(IFINFOMSG_LEN..))
    else {
        anyhow::bail!("rtnetlink LinkMessage is invalid or too short");
    };
    let word = |at: usize| {
        u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut link = Link {
        kind: u16::from_ne_bytes([header[2], header[3]]),
        index: word(4),
        flags: word(8),
        ..Link::default()
    };
    // Upstream dereferences the attributes of every link (a nil pointer without any).
    if attributes.is_empty() {
        anyhow::bail!(
            "link message of interface {} without attributes",
            link.index
        );
    }
    for attribute in netlink_raw::attributes(attributes)? {
        let data = attribute.data;
        let kind = attribute.kind & NLA_TYPE_MASK;
        match kind {
            IFLA_ADDRESS => link.address = hardware_address(kind, data)?,
            IFLA_BROADCAST => link.broadcast = hardware_address(kind, data)?,
            IFLA_IFNAME => link.name = trim_nuls(data).to_vec(),
            IFLA_IFALIAS => link.alias = Some(trim_nuls(data).to_vec()),
            IFLA_MTU => link.mtu = exact_u32(kind, data)?,
            IFLA_LINK => link.iflink = Some(exact_u32(kind, data)?),
            IFLA_TXQLEN => link.tx_queue_len = Some(exact_u32(kind, data)?),
            IFLA_OPERSTATE => link.operstate = exact_u8(kind, data)?,
            IFLA_LINKMODE => link.link_mode = Some(exact_u8(kind, data)?),
            IFLA_GROUP => link.group = Some(exact_u32(kind, data)?),
            IFLA_CARRIER => link.carrier = Some(exact_u8(kind, data)?),
            IFLA_CARRIER_CHANGES => link.carrier_changes = Some(exact_u32(kind, data)?),
            IFLA_CARRIER_UP_COUNT => link.carrier_up_count = Some(exact_u32(kind, data)?),
            IFLA_CARRIER_DOWN_COUNT => link.carrier_down_count = Some(exact_u32(kind, data)?),
            // Decoded (and its size checked) by upstream even though only IFLA_STATS64 is used.
            IFLA_STATS if data.len() != 92 && data.len() != 96 => anyhow::bail!(
                "incorrect LinkMessage size, want: 92 or 96, got: {}",
                data.len()
            ),
            IFLA_STATS64 => {
                if ![184, 192, 200].contains(&data.len()) {
                    anyhow::bail!(
                        "IFLA_STATS64: incorrect size, want: 184 or 192 or 200, got: {}",
                        data.len()
                    );
                }
                link.stats64 = Some(netdev::stats64_counters(data));
            }
            IFLA_PROP_LIST => {
                for property in netlink_raw::attributes(data)? {
                    if property.kind & NLA_TYPE_MASK == IFLA_ALT_IFNAME {
                        link.altnames.push(trim_nuls(property.data).to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    if usize::from(link.operstate) >= OPERSTATES.len() {
        // upstream indexes its table with it (a panic).
        anyhow::bail!(
            "interface {}: unknown operational state {}",
            link.index,
            link.operstate
        );
    }
    Ok(link)
}

/// Every link of one RTM_GETLINK dump (upstream's request: an empty ifinfomsg).
pub(super) fn dump_links() -> anyhow::Result<Vec<Link>> {
    let mut links = Vec::new();
    netlink_dump::dump(
        netlink_dump::NETLINK_ROUTE,
        RawRequest {
            message_type: libc::RTM_GETLINK,
            payload: vec![0; IFINFOMSG_LEN],
        },
        |kind, payload| {
            // rtnetlink decodes these three types as links and skips the others.
            if matches!(
                kind,
                libc::RTM_NEWLINK | libc::RTM_DELLINK | libc::RTM_GETLINK
            ) {
                links.push(parse_link(payload)?);
            }
            Ok(())
        },
    )?;
    Ok(links)
}

/// Checks an ethtool compact bitset as mdlayher/ethtool's `newBitset` does: a size of exactly
/// four bytes, and values and mask of exactly as many 32-bit words as the size says (none
/// before a size).
fn check_bitset(data: &[u8]) -> anyhow::Result<()> {
    let (mut mask, mut words, mut mask_words) = (true, 0usize, 0usize);
    for attribute in netlink_raw::attributes(data)? {
        let kind = attribute.kind & NLA_TYPE_MASK;
        let length = attribute.data.len();
        match kind {
            ETHTOOL_A_BITSET_NOMASK => mask = false,
            ETHTOOL_A_BITSET_SIZE => {
                // uint32 arithmetic, as upstream's `(ad.Uint32() + 31) / 32`.
                words = (exact_u32(kind, attribute.data)?.wrapping_add(31) / 32) as usize;
                mask_words = if mask { words } else { 0 };
            }
            ETHTOOL_A_BITSET_VALUE if length / 4 != words => {
                anyhow::bail!("ethtool: cannot store {length} bytes in bitset with length {words}")
            }
            ETHTOOL_A_BITSET_MASK if length / 4 != mask_words => anyhow::bail!(
                "ethtool: cannot store {length} bytes in bitset with length {mask_words}"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one reply of the link-modes dump as mdlayher/ethtool's `parseLinkModes` does.
fn parse_link_mode(payload: &[u8]) -> anyhow::Result<LinkMode> {
    let mut mode = LinkMode::default();
    for attribute in netlink_raw::attributes(payload)? {
        let data = attribute.data;
        let kind = attribute.kind & NLA_TYPE_MASK;
        match kind {
            ETHTOOL_A_LINKMODES_HEADER => {
                for field in netlink_raw::attributes(data)? {
                    let field_kind = field.kind & NLA_TYPE_MASK;
                    match field_kind {
                        ETHTOOL_A_HEADER_DEV_INDEX => {
                            exact_u32(field_kind, field.data)?;
                        }
                        ETHTOOL_A_HEADER_DEV_NAME => {
                            mode.name = goparse::to_valid_utf8(trim_nuls(field.data));
                        }
                        _ => {}
                    }
                }
            }
            ETHTOOL_A_LINKMODES_OURS | ETHTOOL_A_LINKMODES_PEER => check_bitset(data)?,
            ETHTOOL_A_LINKMODES_SPEED => mode.speed = exact_u32(kind, data)?,
            ETHTOOL_A_LINKMODES_DUPLEX => mode.duplex = exact_u8(kind, data)?,
            ETHTOOL_A_LINKMODES_AUTONEG => {
                exact_u8(kind, data)?;
            }
            _ => {}
        }
    }
    Ok(mode)
}

/// The link modes of every device that has link settings (the kernel skips the others);
/// `None` when there is no ethtool netlink family or its dump answers `ENOENT` (what upstream
/// takes for "unavailable").
fn link_modes() -> anyhow::Result<Option<Vec<LinkMode>>> {
    let Some(family) = netlink_raw::generic_family(ETHTOOL_GENL_NAME)? else {
        return Ok(None);
    };
    // mdlayher/ethtool's request: a header asking for compact bitsets.
    let mut header = Vec::new();
    netlink_raw::push_attribute(
        &mut header,
        ETHTOOL_A_HEADER_FLAGS,
        &ETHTOOL_FLAG_COMPACT_BITSETS.to_ne_bytes(),
    );
    let mut request = Vec::new();
    netlink_raw::push_attribute(
        &mut request,
        NLA_F_NESTED | ETHTOOL_A_LINKMODES_HEADER,
        &header,
    );
    let mut modes = Vec::new();
    let dumped =
        netlink_raw::generic_dump(family, ETHTOOL_MSG_LINKMODES_GET, request, |_, payload| {
            modes.push(parse_link_mode(payload)?);
            Ok(())
        });
    match dumped {
        Ok(()) => Ok(Some(modes)),
        Err(error) if is_enoent(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether the kernel refused with `ENOENT`, the one error upstream's
/// `errors.Is(errors.Unwrap(err), fs.ErrNotExist)` takes for "unavailable" (its ethtool
/// library's own `EOPNOTSUPP`/`ENODEV` mapping is unwrapped away).
fn is_enoent(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
        == Some(libc::ENOENT)
}

/// mdlayher/ethtool's `Duplex.String()`.
fn duplex_string(duplex: u8) -> String {
    match duplex {
        0 => "Half".to_owned(),
        1 => "Full".to_owned(),
        255 => "Unknown".to_owned(),
        other => format!("Duplex({other})"),
    }
}

/// `addr_assign_type`, `dev_id` and `name_assign_type` of the device directory `dir`, as
/// procfs' `ParseNetClassAttribute`: an attribute that cannot be read for EINVAL, EOPNOTSUPP,
/// ENOENT or EACCES is absent, a number that does not parse is 0, any other error fails.
fn sysfs_attributes(dir: &Path) -> anyhow::Result<[Option<i64>; 3]> {
    let mut values = [None; 3];
    for ((attribute, _), value) in SYSFS_ATTRIBUTES.iter().zip(&mut values) {
        let path = dir.join(attribute);
        match read::sys_attribute(&path) {
            Ok(text) => *value = Some(goparse::parse_int(&text, 0, 64).unwrap_or(0)),
            Err(error) if read::is_unavailable(&error) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("failed to read file {path:?}"));
            }
        }
    }
    Ok(values)
}

/// The `node_network_<name>` families of one scrape, made as they are first used.
#[derive(Default)]
struct Properties(BTreeMap<String, MetricFamily>);

impl Properties {
    fn push(&mut self, name: &str, kind: MetricType, device: &str, value: f64) {
        self.0
            .entry(name.to_owned())
            .or_insert_with(|| {
                MetricFamily::new(
                    format!("node_network_{name}"),
                    format!("Network device property: {name}"),
                    kind,
                )
            })
            .push([("device", device)], value);
    }

    fn gauge(&mut self, name: &str, device: &str, value: Option<impl Into<f64>>) {
        if let Some(value) = value {
            self.push(name, MetricType::Gauge, device, value.into());
        }
    }

    fn counter(&mut self, name: &str, device: &str, value: Option<u32>) {
        if let Some(value) = value {
            self.push(name, MetricType::Counter, device, value.into());
        }
    }
}

impl Rtnl {
    fn ignored(&self, name: &str) -> bool {
        self.ignored.as_ref().is_some_and(|re| re.is_match(name))
    }

    pub(super) fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut speed = MetricFamily::gauge(
            "node_network_speed_bytes",
            "Network device property: speed_bytes",
        );
        let mut duplexes = HashMap::new();
        match link_modes().context("could not get link modes")? {
            None => tracing::info!(
                "ETHTOOL netlink interface unavailable, duplex and linkspeed are not scraped."
            ),
            Some(modes) => {
                for mode in modes {
                    if self.ignored(&mode.name) {
                        continue;
                    }
                    // Go's int(uint32) * 1000 * 1000 / 8: SPEED_UNKNOWN stays a large number.
                    let bytes = u64::from(mode.speed) * 1000 * 1000 / 8;
                    speed.push([("device", mode.name.as_str())], bytes as f64);
                    duplexes.insert(mode.name, duplex_string(mode.duplex));
                }
            }
        }
        // Served even when what follows fails, as upstream has sent them by then.
        out.push(speed);

        let links: Vec<(String, Link)> = dump_links()
            .context("could not get net class info")?
            .into_iter()
            .map(|link| (goparse::to_valid_utf8(&link.name), link))
            .filter(|(device, _)| !self.ignored(device))
            .collect();
        let mut sysfs = Vec::with_capacity(links.len());
        for (_, link) in &links {
            let dir = self.class_net.join(OsStr::from_bytes(&link.name));
            sysfs.push(sysfs_attributes(&dir).context("could not get sysfs device info")?);
        }

        let mut up = MetricFamily::gauge(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
        );
        let mut info = MetricFamily::gauge(
            "node_network_info",
            "Non-numeric data of <iface>, value is always 1.",
        );
        let mut altnames = MetricFamily::gauge(
            "node_network_altnames_info",
            "Non-numeric data of <iface> altname, value is always 1.",
        );
        let mut properties = Properties::default();
        for ((device, link), sysfs) in links.iter().zip(sysfs) {
            let device = device.as_str();
            up.push(
                [("device", device)],
                if link.operstate == OPER_UP { 1.0 } else { 0.0 },
            );
            info.push(
                [
                    ("device", device.to_owned()),
                    ("address", hardware_address_string(&link.address)),
                    ("broadcast", hardware_address_string(&link.broadcast)),
                    ("duplex", duplexes.get(device).cloned().unwrap_or_default()),
                    (
                        "operstate",
                        OPERSTATES[usize::from(link.operstate)].to_owned(),
                    ),
                    (
                        "ifalias",
                        link.alias
                            .as_deref()
                            .map(goparse::to_valid_utf8)
                            .unwrap_or_default(),
                    ),
                ],
                1.0,
            );
            for altname in link.altnames.iter().filter(|name| !name.is_empty()) {
                altnames.push(
                    [
                        ("altname", goparse::to_valid_utf8(altname)),
                        ("device", device.to_owned()),
                    ],
                    1.0,
                );
            }
            let [address_assign_type, device_id, name_assign_type] = sysfs;
            let as_f64 = |value: Option<i64>| value.map(|v| v as f64);
            properties.gauge(SYSFS_ATTRIBUTES[0].1, device, as_f64(address_assign_type));
            properties.gauge("carrier", device, link.carrier);
            properties.counter("carrier_changes_total", device, link.carrier_changes);
            properties.counter("carrier_up_changes_total", device, link.carrier_up_count);
            properties.counter(
                "carrier_down_changes_total",
                device,
                link.carrier_down_count,
            );
            properties.gauge(SYSFS_ATTRIBUTES[1].1, device, as_f64(device_id));
            properties.gauge("flags", device, Some(link.flags));
            properties.gauge("iface_id", device, Some(link.index));
            properties.gauge("iface_link_mode", device, link.link_mode);
            // upstream passes the link mode for dormant too.
            properties.gauge("dormant", device, link.link_mode);
            // The kernel leaves IFLA_LINK out where it is the interface's own index; upstream
            // takes 0 (a veth whose peer is gone) for the same.
            let iflink = link.iflink.filter(|&i| i > 0).unwrap_or(link.index);
            properties.gauge("iface_link", device, Some(iflink));
            properties.gauge("mtu_bytes", device, Some(link.mtu));
            properties.gauge(SYSFS_ATTRIBUTES[2].1, device, as_f64(name_assign_type));
            properties.gauge("net_dev_group", device, link.group);
            properties.gauge("transmit_queue_length", device, link.tx_queue_len);
            properties.gauge("protocol_type", device, Some(link.kind));

            let Some(stats) = link.stats64.as_ref().filter(|_| self.with_stats) else {
                continue;
            };
            for key in netdev::LINK_STATS {
                if self.left_out.contains(&key) {
                    continue;
                }
                // A shorter (older) rtnl_link_stats64 leaves upstream's fields at 0.
                let value = stats.get(key).copied().unwrap_or(0);
                properties.push(
                    &format!("{key}_total"),
                    MetricType::Gauge,
                    device,
                    value as f64,
                );
            }
        }
        out.push(up);
        out.push(info);
        out.push(altnames);
        out.extend(properties.0.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        netlink_raw::push_attribute(&mut out, kind, data);
        out
    }

    /// An RTM_NEWLINK payload: ifinfomsg (type, index, flags), then the attributes given.
    fn link_message(kind: u16, index: u32, flags: u32, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![0, 0];
        payload.extend(kind.to_ne_bytes());
        payload.extend(index.to_ne_bytes());
        payload.extend(flags.to_ne_bytes());
        payload.extend(0u32.to_ne_bytes());
        for attribute in attributes {
            payload.extend(attribute);
        }
        payload
    }

    fn u32_attribute(kind: u16, value: u32) -> Vec<u8> {
        attribute(kind, &value.to_ne_bytes())
    }

    fn string_attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut data = value.to_vec();
        data.push(0);
        attribute(kind, &data)
    }

    /// What the kernel sends for an up ENA-like interface with an alias and two altnames.
    fn ens5() -> Vec<u8> {
        let stats64: Vec<u8> = (1..=25u64).flat_map(u64::to_ne_bytes).collect();
        let mut altnames = string_attribute(IFLA_ALT_IFNAME, b"enp0s5");
        altnames.extend(string_attribute(IFLA_ALT_IFNAME, b"eth\xff\xfe0"));
        link_message(
            1,
            2,
            0x11043,
            &[
                string_attribute(IFLA_IFNAME, b"ens5"),
                u32_attribute(IFLA_TXQLEN, 1000),
                attribute(IFLA_OPERSTATE, &[6]),
                attribute(IFLA_LINKMODE, &[0]),
                u32_attribute(IFLA_MTU, 9001),
                u32_attribute(IFLA_GROUP, 0),
                attribute(IFLA_CARRIER, &[1]),
                u32_attribute(IFLA_CARRIER_CHANGES, 2),
                u32_attribute(IFLA_CARRIER_UP_COUNT, 1),
                u32_attribute(IFLA_CARRIER_DOWN_COUNT, 1),
                string_attribute(IFLA_IFALIAS, b"uplink"),
                attribute(IFLA_ADDRESS, &[0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]),
                attribute(IFLA_BROADCAST, &[0xff; 6]),
                attribute(IFLA_STATS, &[0; 96]),
                attribute(IFLA_STATS64, &stats64),
                attribute(IFLA_PROP_LIST | NLA_F_NESTED, &altnames),
                // Not used: skipped.
                string_attribute(6, b"mq"),
            ],
        )
    }

    #[test]
    fn links_decode_as_rtnetlink_decodes_them() {
        let link = parse_link(&ens5()).unwrap();
        let stats = link.stats64.clone().unwrap();
        assert_eq!(
            link,
            Link {
                kind: 1,
                index: 2,
                flags: 0x11043,
                name: b"ens5".to_vec(),
                address: vec![0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f],
                broadcast: vec![0xff; 6],
                alias: Some(b"uplink".to_vec()),
                altnames: vec![b"enp0s5".to_vec(), b"eth\xff\xfe0".to_vec()],
                carrier: Some(1),
                carrier_changes: Some(2),
                carrier_up_count: Some(1),
                carrier_down_count: Some(1),
                link_mode: Some(0),
                mtu: 9001,
                group: Some(0),
                operstate: 6,
                tx_queue_len: Some(1000),
                iflink: None,
                stats64: Some(stats.clone()),
            }
        );
        assert_eq!(stats.len(), 24, "rx_otherhost_dropped is not used");
        assert_eq!(stats["receive_bytes"], 3);
        assert_eq!(stats["receive_nohandler"], 24);

        // A minimal link: what is absent stays absent (or 0 where upstream's field is no
        // pointer); a 184-byte rtnl_link_stats64 (before 4.6) has no rx_nohandler.
        let link = parse_link(&link_message(
            772,
            1,
            0x49,
            &[
                string_attribute(IFLA_IFNAME, b"lo"),
                attribute(IFLA_STATS64, &[7; 184]),
                u32_attribute(IFLA_LINK, 0),
            ],
        ))
        .unwrap();
        assert_eq!(link.name, b"lo");
        assert_eq!(
            (link.carrier, link.link_mode, link.group),
            (None, None, None)
        );
        assert_eq!((link.mtu, link.operstate, link.iflink), (0, 0, Some(0)));
        assert!(link.address.is_empty() && link.alias.is_none());
        assert_eq!(link.stats64.unwrap().len(), 23);
    }

    #[test]
    fn malformed_links_are_errors() {
        assert!(parse_link(&[0; 15]).is_err(), "shorter than ifinfomsg");
        assert!(parse_link(&[0; 16]).is_err(), "no attributes");
        let bad = |attributes: &[Vec<u8>]| {
            let mut all = vec![string_attribute(IFLA_IFNAME, b"eth0")];
            all.extend_from_slice(attributes);
            parse_link(&link_message(1, 2, 0, &all))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&[attribute(IFLA_MTU, &[1, 2])]).contains("not 4 bytes"));
        assert!(bad(&[attribute(IFLA_CARRIER, &[1, 0, 0, 0])]).contains("not 1 bytes"));
        assert!(
            bad(&[attribute(IFLA_ADDRESS, &[1, 2, 3])]).contains("wrong attribute data length")
        );
        assert!(
            bad(&[attribute(IFLA_BROADCAST, &[0; 33])]).contains("wrong attribute data length")
        );
        assert!(bad(&[attribute(IFLA_STATS64, &[0; 208])]).contains("184 or 192 or 200"));
        assert!(bad(&[attribute(IFLA_STATS, &[0; 100])]).contains("92 or 96"));
        assert!(bad(&[attribute(IFLA_OPERSTATE, &[7])]).contains("unknown operational state 7"));
        // Framing: an attribute claiming more than there is, one nested in the property list.
        assert!(bad(&[vec![200, 0, 3, 0]]).contains("invalid attribute"));
        assert!(
            bad(&[attribute(IFLA_PROP_LIST, &[9, 0, 53, 0, b'x'])]).contains("invalid attribute")
        );
        // Truncated anywhere: an error, never a panic.
        let whole = ens5();
        for end in IFINFOMSG_LEN..whole.len() {
            let _ = parse_link(&whole[..end]);
        }
    }

    #[test]
    fn addresses_print_as_go_prints_hardware_addresses() {
        assert_eq!(hardware_address_string(&[]), "");
        assert_eq!(
            hardware_address_string(&[0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]),
            "0a:1b:2c:3d:4e:5f"
        );
        assert_eq!(
            hardware_address_string(&[0xfe, 0x80, 0, 1]),
            "fe:80:00:01",
            "a 4-byte (sit/ipip) address"
        );
    }

    fn link_mode_message(name: &[u8], speed: u32, duplex: u8, ours: &[u8]) -> Vec<u8> {
        let mut header = u32_attribute(ETHTOOL_A_HEADER_DEV_INDEX, 2);
        header.extend(string_attribute(ETHTOOL_A_HEADER_DEV_NAME, name));
        let mut payload = attribute(NLA_F_NESTED | ETHTOOL_A_LINKMODES_HEADER, &header);
        payload.extend(attribute(ETHTOOL_A_LINKMODES_AUTONEG, &[1]));
        payload.extend(attribute(NLA_F_NESTED | ETHTOOL_A_LINKMODES_OURS, ours));
        payload.extend(u32_attribute(ETHTOOL_A_LINKMODES_SPEED, speed));
        payload.extend(attribute(ETHTOOL_A_LINKMODES_DUPLEX, &[duplex]));
        payload
    }

    /// A compact bitset of `bits` bits with the given values and mask words.
    fn bitset(bits: u32, value: &[u32], mask: &[u32]) -> Vec<u8> {
        let words = |w: &[u32]| w.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>();
        let mut out = u32_attribute(ETHTOOL_A_BITSET_SIZE, bits);
        out.extend(attribute(ETHTOOL_A_BITSET_VALUE, &words(value)));
        out.extend(attribute(ETHTOOL_A_BITSET_MASK, &words(mask)));
        out
    }

    #[test]
    fn link_modes_decode_as_mdlayher_ethtool_decodes_them() {
        let ours = bitset(99, &[1, 2, 3, 4], &[5, 6, 7, 8]);
        assert_eq!(
            parse_link_mode(&link_mode_message(b"ens5", 25000, 1, &ours)).unwrap(),
            LinkMode {
                name: "ens5".to_owned(),
                speed: 25000,
                duplex: 1
            }
        );
        let unknown = parse_link_mode(&link_mode_message(b"eth1", u32::MAX, 255, &[])).unwrap();
        assert_eq!((unknown.speed, unknown.duplex), (u32::MAX, 255));
        // Nothing but a header: upstream's zero values (duplex 0 is "Half").
        assert_eq!(parse_link_mode(&[]).unwrap(), LinkMode::default());

        for (bad, why) in [
            (bitset(64, &[1], &[1, 2]), "value words"),
            (bitset(64, &[1, 2], &[1]), "mask words"),
            (
                attribute(ETHTOOL_A_BITSET_VALUE, &[0; 4]),
                "values before a size",
            ),
            (attribute(ETHTOOL_A_BITSET_SIZE, &[64, 0]), "short size"),
            (vec![8, 0, 2, 0], "truncated"),
        ] {
            let message = link_mode_message(b"ens5", 1000, 1, &bad);
            assert!(parse_link_mode(&message).is_err(), "{why}");
        }
        // Without a mask (NOMASK first), a mask attribute must be empty; a size of u32::MAX
        // wraps as upstream's uint32 arithmetic does.
        let mut nomask = attribute(ETHTOOL_A_BITSET_NOMASK, &[]);
        nomask.extend(bitset(32, &[1], &[]));
        assert!(parse_link_mode(&link_mode_message(b"x", 1, 1, &nomask)).is_ok());
        assert!(
            parse_link_mode(&link_mode_message(b"x", 1, 1, &bitset(u32::MAX, &[], &[]))).is_ok()
        );
        let short_speed = {
            let mut m = link_mode_message(b"x", 1, 1, &[]);
            m.extend(attribute(ETHTOOL_A_LINKMODES_SPEED, &[1, 2]));
            m
        };
        assert!(parse_link_mode(&short_speed).is_err());
        let whole = link_mode_message(b"ens5", 25000, 1, &ours);
        for end in 0..whole.len() {
            let _ = parse_link_mode(&whole[..end]);
        }
    }

    #[test]
    fn only_enoent_means_unavailable() {
        let refused = |code| {
            anyhow::Error::from(std::io::Error::from_raw_os_error(code))
                .context("netlink dump refused")
        };
        assert!(is_enoent(&refused(libc::ENOENT)));
        assert!(!is_enoent(&refused(libc::EOPNOTSUPP)));
        assert!(!is_enoent(&refused(libc::EPERM)));
        assert!(!is_enoent(&anyhow::anyhow!("invalid attribute")));
    }

    #[test]
    fn duplex_names_are_the_ethtool_library_s() {
        assert_eq!(duplex_string(0), "Half");
        assert_eq!(duplex_string(1), "Full");
        assert_eq!(duplex_string(255), "Unknown");
        assert_eq!(duplex_string(2), "Duplex(2)");
    }

    #[test]
    fn sysfs_attributes_as_procfs_reads_them() {
        let dir = std::env::temp_dir().join(format!("netclass-rtnl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("addr_assign_type"), "3\n").unwrap();
        std::fs::write(dir.join("dev_id"), "0x10\n").unwrap();
        // name_assign_type missing (ENOENT): absent.
        assert_eq!(sysfs_attributes(&dir).unwrap(), [Some(3), Some(16), None]);
        std::fs::write(dir.join("name_assign_type"), "garbage\n").unwrap();
        assert_eq!(
            sysfs_attributes(&dir).unwrap()[2],
            Some(0),
            "unparsable is 0"
        );
        // A directory where a file should be: EISDIR is no "unavailable" error.
        std::fs::remove_file(dir.join("dev_id")).unwrap();
        std::fs::create_dir(dir.join("dev_id")).unwrap();
        let error = sysfs_attributes(&dir).unwrap_err();
        assert!(format!("{error:#}").contains("dev_id"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            sysfs_attributes(Path::new("/nonexistent/eth0")).unwrap(),
            [None; 3]
        );
    }

    #[test]
    fn netdev_s_names_are_left_out_as_netdev_serves_them() {
        let specs = netdev::SPEC.flags;
        let flags = |args: &[&str]| {
            let command = specs.iter().fold(clap::Command::new("t"), |c, spec| {
                c.args(spec.args("netdev"))
            });
            let matches = command
                .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
                .unwrap();
            crate::flags::CollectorFlags::from_matches(&matches, specs)
        };
        let common = |keys: Vec<&'static str>| -> Vec<&'static str> {
            keys.into_iter()
                .filter(|key| netdev::LINK_STATS.contains(key))
                .collect()
        };
        assert_eq!(
            common(netdev::served_keys(&flags(&[]))),
            [
                "receive_bytes",
                "receive_compressed",
                "receive_nohandler",
                "receive_packets",
                "transmit_bytes",
                "transmit_compressed",
                "transmit_packets"
            ]
        );
        assert_eq!(
            common(netdev::served_keys(&flags(&[
                "--collector.netdev.enable-detailed-metrics"
            ])))
            .len(),
            24
        );
        assert_eq!(
            common(netdev::served_keys(&flags(&[
                "--no-collector.netdev.netlink"
            ]))),
            [
                "receive_bytes",
                "receive_compressed",
                "receive_packets",
                "transmit_bytes",
                "transmit_compressed",
                "transmit_packets"
            ]
        );
    }

    /// The live dumps of this host (or test namespace): every link is decoded, and the link
    /// modes, when the kernel has ethtool netlink, name links of the dump.
    #[test]
    fn live_dumps_decode() {
        let links = dump_links().unwrap();
        let lo = links.iter().find(|link| link.name == b"lo").unwrap();
        assert_eq!((lo.kind, lo.address.len()), (772, 6));
        assert!(lo.stats64.is_some());
        if let Some(modes) = link_modes().unwrap() {
            for mode in modes {
                assert!(
                    links.iter().any(|link| link.name == mode.name.as_bytes()),
                    "{mode:?}"
                );
            }
        }
    }
}
