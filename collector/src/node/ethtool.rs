//! `ethtool`: driver information, driver statistics and link settings of each network device
//! listed in /sys/class/net, as node_exporter's ethtool collector (safchain/ethtool): the
//! `SIOCETHTOOL` ioctls `ETHTOOL_GSET` (link modes, autonegotiation), `ETHTOOL_GDRVINFO`
//! (`node_ethtool_info`) and `ETHTOOL_GSTRINGS`/`ETHTOOL_GSTATS` (one untyped
//! `node_ethtool_<stat>` family per driver statistic, named as upstream's
//! `buildEthtoolFQName`; `rx_bytes` and six others have fixed names and help).
//!
//! Upstream's quirks kept: link modes come from the legacy 32-bit `ETHTOOL_GSET` masks, so
//! speeds of bit 32 and above are never reported; statistics whose sanitized names collide are
//! all dropped; a failing ioctl is logged (at debug level for `EOPNOTSUPP`) and the device's
//! other metrics are still reported; no device in /sys/class/net is an error, no
//! /sys/class/net is "no data". A statistic named as one of the link-setting metrics
//! (`autonegotiate`, `supported_port`, ...) is skipped with a debug log: upstream reuses that
//! metric's description for it (a panic for the multi-label ones, a clash otherwise).
//!
//! The ioctls write as many entries as the driver has at the time of each call, whatever the
//! count asked for: the string and value buffers hold upstream's maximum (32768 entries, counts
//! above it are refused as upstream refuses them) and end at a guard page, so a count that grows
//! between the calls makes the kernel fail the copy (`EFAULT`) instead of writing past them.
//! The ioctls themselves cannot be given a deadline; the scrape timeout bounds the wait.
use std::{
    collections::{BTreeMap, HashMap},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::{DeviceFilter, FlagSpec},
    metrics::{MetricFamily, MetricType},
    read,
};

const INCLUDE: &str = "collector.ethtool.device-include";
const EXCLUDE: &str = "collector.ethtool.device-exclude";
const METRICS_INCLUDE: &str = "collector.ethtool.metrics-include";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ethtool",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            INCLUDE,
            None,
            "Regexp of ethtool devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            EXCLUDE,
            None,
            "Regexp of ethtool devices to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::value(
            METRICS_INCLUDE,
            Some(".*"),
            "Regexp of ethtool stats to include.",
        ),
    ],
    kernel: None,
    build,
};

/// What the collector asks of a device (upstream's `Ethtool` interface, which its tests mock).
trait Ethtool: Send + Sync {
    fn driver_info(&self, device: &str) -> std::io::Result<DriverInfo>;
    /// Statistic names (raw bytes, as the driver gives them) and values.
    fn stats(&self, device: &str) -> std::io::Result<BTreeMap<Vec<u8>, u64>>;
    fn link_info(&self, device: &str) -> std::io::Result<LinkInfo>;
}

/// The strings of `struct ethtool_drvinfo` the collector reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DriverInfo {
    driver: String,
    version: String,
    firmware_version: String,
    bus_info: String,
    expansion_rom_version: String,
}

/// The fields of `struct ethtool_cmd` the collector reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkInfo {
    supported: u32,
    advertising: u32,
    autoneg: u8,
}

struct EthtoolCollector {
    class_net: PathBuf,
    filter: DeviceFilter,
    /// `--collector.ethtool.metrics-include`; `None` (an empty pattern) matches everything.
    metrics: Option<Regex>,
    ethtool: Box<dyn Ethtool>,
    /// node_exporter's `metricNameRegex` (`SanitizeMetricName`).
    sanitize: Regex,
    received: Regex,
    transmitted: Regex,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    for name in [INCLUDE, EXCLUDE, METRICS_INCLUDE] {
        if let Some(value) = flags.string(name).filter(|v| !v.is_empty()) {
            tracing::info!(flag = value, "Parsed flag --{name}");
        }
    }
    let ethtool = IoctlEthtool::new().context("failed to initialize ethtool library")?;
    Ok(Arc::new(EthtoolCollector::new(
        context.sys_path("class/net"),
        DeviceFilter::new(flags.regex(EXCLUDE)?, flags.regex(INCLUDE)?),
        flags.regex(METRICS_INCLUDE)?,
        Box::new(ethtool),
    )))
}

impl EthtoolCollector {
    fn new(
        class_net: PathBuf,
        filter: DeviceFilter,
        metrics: Option<Regex>,
        ethtool: Box<dyn Ethtool>,
    ) -> Self {
        let regex = |pattern: &str| Regex::new(pattern).unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            class_net,
            filter,
            metrics,
            ethtool,
            sanitize: regex("_*[^0-9A-Za-z_]+_*"),
            received: regex("(^|_)rx(_|$)"),
            transmitted: regex("(^|_)tx(_|$)"),
        }
    }

    /// node_exporter's `SanitizeMetricName`.
    fn sanitize(&self, name: &str) -> String {
        self.sanitize.replace_all(name, "_").into_owned()
    }

    /// Upstream's `buildEthtoolFQName`.
    fn fq_name(&self, metric: &str) -> String {
        let name = self.sanitize(metric).to_lowercase();
        let name = name.trim_start_matches('_');
        let name = self.received.replace_all(name, "${1}received${2}");
        let name = self.transmitted.replace_all(&name, "${1}transmitted${2}");
        build_fq_name(&["node", "ethtool", &name])
    }

    /// The devices of /sys/class/net (upstream's `NetClassDevices`: every entry that is not a
    /// regular file, such as `bonding_masters`).
    fn devices(&self) -> anyhow::Result<Vec<String>> {
        let entries = match read::read_dir_sorted(&self.class_net) {
            Ok(entries) => entries,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                tracing::debug!(err = %error, "Could not read netclass file");
                return Err(
                    NoData(format!("cannot access dir {:?}: {error}", self.class_net)).into(),
                );
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "could not get net class info: cannot access dir {:?}",
                        self.class_net
                    )
                });
            }
        };
        Ok(entries
            .into_iter()
            .filter(|entry| !entry.file_type.is_file())
            .map(|entry| entry.name.to_string_lossy().into_owned())
            .collect())
    }
}

/// Prometheus' `BuildFQName`: the non-empty parts joined by `_`.
fn build_fq_name(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("_")
}

/// Logs an ioctl failure as upstream does: `EOPNOTSUPP` (no such operation in the driver) at
/// debug level, anything else as an error.
fn log_failure(what: &str, device: &str, error: &std::io::Error) {
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            tracing::debug!(err = %error, device, errno = libc::EOPNOTSUPP, "ethtool {what} error")
        }
        Some(errno) => tracing::error!(err = %error, device, errno, "ethtool {what} error"),
        None => tracing::error!(err = %error, device, "ethtool {what} error"),
    }
}

/// Families by name, each created on first use.
#[derive(Default)]
struct Families(BTreeMap<String, MetricFamily>);

impl Families {
    fn push(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.0
            .entry(name.to_owned())
            .or_insert_with(|| MetricFamily::new(name, help, metric_type))
            .push(labels.iter().copied(), value);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, MetricType::Gauge, labels, value);
    }
}

/// The statistics with a fixed name and help (upstream's pre-populated `entries`).
const FIXED_STATS: &[(&str, &str, &str)] = &[
    (
        "rx_bytes",
        "node_ethtool_received_bytes_total",
        "Network interface bytes received",
    ),
    (
        "rx_dropped",
        "node_ethtool_received_dropped_total",
        "Number of received frames dropped",
    ),
    (
        "rx_errors",
        "node_ethtool_received_errors_total",
        "Number of received frames with errors",
    ),
    (
        "rx_packets",
        "node_ethtool_received_packets_total",
        "Network interface packets received",
    ),
    (
        "tx_bytes",
        "node_ethtool_transmitted_bytes_total",
        "Network interface bytes sent",
    ),
    (
        "tx_errors",
        "node_ethtool_transmitted_errors_total",
        "Number of sent frames with errors",
    ),
    (
        "tx_packets",
        "node_ethtool_transmitted_packets_total",
        "Network interface packets sent",
    ),
];

/// The link-setting entries of upstream's `entries`, which a statistic of the same name would
/// be reported under.
const LINK_ENTRIES: &[&str] = &[
    "supported_port",
    "supported_speed",
    "supported_autonegotiate",
    "supported_pause",
    "supported_asymmetricpause",
    "advertised_speed",
    "advertised_autonegotiate",
    "advertised_pause",
    "advertised_asymmetricpause",
    "autonegotiate",
];

// ethtool_link_mode_bit_indices (include/uapi/linux/ethtool.h).
const AUTONEG_BIT: u32 = 6;
const PAUSE_BIT: u32 = 13;
const ASYM_PAUSE_BIT: u32 = 14;

/// Port types (`supported_port_info`) by link mode bit.
const PORTS: &[(&str, u32)] = &[
    ("TP", 7),
    ("AUI", 8),
    ("MII", 9),
    ("FIBRE", 10),
    ("BNC", 11),
    ("Backplane", 16),
];

const FULL: &str = "full";
const HALF: &str = "half";

/// Upstream's speed table: link mode bit, Mb/s, duplex, PHY. Only bits below 32 can be set in
/// the legacy masks (upstream shifts a `uint32`); the others are listed as upstream lists them.
const SPEEDS: &[(u32, u32, &str, &str)] = &[
    (0, 10, HALF, "T"),
    (1, 10, FULL, "T"),
    (2, 100, HALF, "T"),
    (3, 100, FULL, "T"),
    (4, 1000, HALF, "T"),
    (5, 1000, FULL, "T"),
    (12, 10000, FULL, "T"),
    (47, 2500, FULL, "T"),
    (17, 1000, FULL, "KX"),
    (18, 10000, FULL, "KX4"),
    (19, 10000, FULL, "KR"),
    (20, 10000, FULL, "R_FEC"),
    (21, 20000, FULL, "MLD2"),
    (22, 20000, FULL, "KR2"),
    (23, 40000, FULL, "KR4"),
    (24, 40000, FULL, "CR4"),
    (25, 40000, FULL, "SR4"),
    (26, 40000, FULL, "LR4"),
    (27, 56000, FULL, "KR4"),
    (28, 56000, FULL, "CR4"),
    (29, 56000, FULL, "SR4"),
    (30, 56000, FULL, "LR4"),
    (31, 25000, FULL, "CR"),
    (32, 25000, FULL, "KR"),
    (33, 25000, FULL, "SR"),
    (34, 50000, FULL, "CR2"),
    (35, 50000, FULL, "KR2"),
    (36, 100000, FULL, "KR4"),
    (37, 100000, FULL, "SR4"),
    (38, 100000, FULL, "CR4"),
    (39, 100000, FULL, "R4_ER4"),
    (40, 50000, FULL, "SR2"),
    (41, 1000, FULL, "X"),
    (42, 10000, FULL, "CR"),
    (43, 10000, FULL, "SR"),
    (44, 10000, FULL, "LR"),
    (45, 10000, FULL, "LRM"),
    (46, 10000, FULL, "ER"),
    (48, 5000, FULL, "T"),
    (52, 50000, FULL, "KR"),
    (53, 50000, FULL, "SR"),
    (54, 50000, FULL, "CR"),
    (55, 50000, FULL, "LR_ER_FR"),
    (56, 50000, FULL, "DR"),
    (57, 100000, FULL, "KR2"),
    (58, 100000, FULL, "SR2"),
    (59, 100000, FULL, "CR2"),
    (60, 100000, FULL, "LR2_ER2_FR2"),
    (61, 100000, FULL, "DR2"),
    (62, 200000, FULL, "KR4"),
    (63, 200000, FULL, "SR4"),
    (64, 200000, FULL, "LR4_ER4_FR4"),
    (65, 200000, FULL, "DR4"),
    (66, 200000, FULL, "CR4"),
    (67, 100, FULL, "T1"),
    (68, 1000, FULL, "T1"),
    (69, 400000, FULL, "KR8"),
    (70, 400000, FULL, "SR8"),
    (71, 400000, FULL, "LR8_ER8_FR8"),
    (72, 400000, FULL, "DR8"),
    (73, 400000, FULL, "CR8"),
    (75, 100000, FULL, "KR"),
    (76, 100000, FULL, "SR"),
    (77, 100000, FULL, "LR_ER_FR"),
    (78, 100000, FULL, "CR"),
    (79, 100000, FULL, "DR"),
    (80, 200000, FULL, "KR2"),
    (81, 200000, FULL, "SR2"),
    (82, 200000, FULL, "LR2_ER2_FR2"),
    (83, 200000, FULL, "DR2"),
    (84, 200000, FULL, "CR2"),
    (85, 400000, FULL, "KR4"),
    (86, 400000, FULL, "SR4"),
    (87, 400000, FULL, "LR4_ER4_FR4"),
    (88, 400000, FULL, "DR4"),
    (89, 400000, FULL, "CR4"),
    (90, 100, HALF, "FX"),
    (91, 100, FULL, "FX"),
];

/// Whether link mode `bit` is set in a legacy 32-bit mask (`mask & (1 << bit)` on a `uint32`
/// in Go: 0 for bits of 32 and above).
fn has_mode(mask: u32, bit: u32) -> bool {
    bit < 32 && mask & (1 << bit) != 0
}

impl EthtoolCollector {
    /// Upstream's `updateSpeeds`.
    fn speeds(families: &mut Families, prefix: &str, device: &str, modes: u32) {
        let (name, help) = match prefix {
            "supported" => (
                "node_network_supported_speed_bytes",
                "Combination of speeds and features supported by network device",
            ),
            _ => (
                "node_network_advertised_speed_bytes",
                "Combination of speeds and features offered by network device",
            ),
        };
        // Bytes per second, to match the speeds of netclass.
        const MBPS: f64 = 1_000_000.0 / 8.0;
        for &(bit, speed, duplex, phy) in SPEEDS {
            if has_mode(modes, bit) {
                let mode = format!("{speed}base{phy}");
                families.gauge(
                    name,
                    help,
                    &[("device", device), ("duplex", duplex), ("mode", &mode)],
                    f64::from(speed) * MBPS,
                );
            }
        }
    }

    /// Upstream's `updatePortInfo`.
    fn ports(families: &mut Families, device: &str, modes: u32) {
        for &(name, bit) in PORTS {
            if has_mode(modes, bit) {
                families.gauge(
                    "node_network_supported_port_info",
                    "Type of ports or PHYs supported by network device",
                    &[("device", device), ("type", name)],
                    1.0,
                );
            }
        }
    }

    /// Upstream's `updatePortCapabilities`.
    fn capabilities(families: &mut Families, prefix: &str, device: &str, modes: u32) {
        let flag = |bit| if has_mode(modes, bit) { 1.0 } else { 0.0 };
        let supported = prefix == "supported";
        let entries = [
            (
                "autonegotiate",
                AUTONEG_BIT,
                if supported {
                    "If this port device supports autonegotiate"
                } else {
                    "If this port device offers autonegotiate"
                },
            ),
            (
                "pause",
                PAUSE_BIT,
                if supported {
                    "If this port device supports pause frames"
                } else {
                    "If this port device offers pause capability"
                },
            ),
            (
                "asymmetricpause",
                ASYM_PAUSE_BIT,
                if supported {
                    "If this port device supports asymmetric pause frames"
                } else {
                    "If this port device offers asymmetric pause capability"
                },
            ),
        ];
        for (what, bit, help) in entries {
            let name = format!("node_network_{what}_{prefix}");
            families.gauge(&name, help, &[("device", device)], flag(bit));
        }
    }

    /// The metrics of one device, in upstream's order: link settings, driver information,
    /// statistics.
    fn device(&self, families: &mut Families, device: &str) {
        match self.ethtool.link_info(device) {
            Ok(link) => {
                Self::speeds(families, "supported", device, link.supported);
                Self::ports(families, device, link.supported);
                Self::capabilities(families, "supported", device, link.supported);
                Self::speeds(families, "advertised", device, link.advertising);
                Self::capabilities(families, "advertised", device, link.advertising);
                families.gauge(
                    "node_network_autonegotiate",
                    "If this port is using autonegotiate",
                    &[("device", device)],
                    f64::from(link.autoneg),
                );
            }
            Err(error) => log_failure("link info", device, &error),
        }

        match self.ethtool.driver_info(device) {
            Ok(info) => families.gauge(
                "node_ethtool_info",
                "A metric with a constant '1' value labeled by bus_info, device, driver, expansion_rom_version, firmware_version, version.",
                &[
                    ("bus_info", &info.bus_info),
                    ("device", device),
                    ("driver", &info.driver),
                    ("expansion_rom_version", &info.expansion_rom_version),
                    ("firmware_version", &info.firmware_version),
                    ("version", &info.version),
                ],
                1.0,
            ),
            Err(error) => log_failure("driver info", device, &error),
        }

        let stats = match self.ethtool.stats(device) {
            Ok(stats) => stats,
            Err(error) => {
                log_failure("stats", device, &error);
                return;
            }
        };
        // Sanitized names can collide: a fully-qualified name reached by two statistics is
        // dropped (`None`).
        let mut by_fq_name: HashMap<String, Option<(String, u64)>> = HashMap::new();
        for (raw, value) in stats {
            let metric = self.sanitize(&String::from_utf8_lossy(&raw));
            if self
                .metrics
                .as_ref()
                .is_some_and(|re| !re.is_match(&metric))
            {
                continue;
            }
            let fq_name = self.fq_name(&metric);
            match by_fq_name.get_mut(&fq_name) {
                Some(existing) => {
                    tracing::debug!(
                        device,
                        metricFQName = fq_name,
                        metric2 = metric,
                        "dropping duplicate metric name"
                    );
                    *existing = None;
                }
                None => {
                    by_fq_name.insert(fq_name, Some((metric, value)));
                }
            }
        }
        for (fq_name, entry) in by_fq_name {
            let Some((metric, value)) = entry else {
                continue;
            };
            if LINK_ENTRIES.contains(&metric.as_str()) {
                tracing::debug!(
                    device,
                    metric,
                    "skipping a statistic named as a link setting metric"
                );
                continue;
            }
            let (name, help) = match FIXED_STATS.iter().find(|(key, _, _)| *key == metric) {
                Some(&(_, name, help)) => (name.to_owned(), help.to_owned()),
                None => (fq_name, format!("Network interface {metric}")),
            };
            families.push(
                &name,
                &help,
                MetricType::Untyped,
                &[("device", device)],
                value as f64,
            );
        }
    }
}

impl Collector for EthtoolCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let devices = self.devices()?;
        if devices.is_empty() {
            anyhow::bail!("no network devices found");
        }
        let mut families = Families::default();
        for device in &devices {
            if !self.filter.ignored(device) {
                self.device(&mut families, device);
            }
        }
        out.extend(families.0.into_values());
        Ok(())
    }
}

// SIOCETHTOOL (include/uapi/linux/ethtool.h).

const ETHTOOL_GSET: u32 = 0x01;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// safchain/ethtool's `MAX_GSTRINGS`: the most statistics read.
const MAX_GSTRINGS: usize = 32768;

/// `struct ethtool_cmd`.
#[repr(C)]
#[derive(Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// safchain/ethtool's `goString`: up to the first NUL. Not UTF-8 bytes become U+FFFD (label
/// values must be UTF-8).
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The ioctls, on one `AF_INET` datagram socket (safchain/ethtool's `NewEthtool`).
struct IoctlEthtool {
    socket: OwnedFd,
}

impl IoctlEthtool {
    fn new() -> std::io::Result<Self> {
        // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { socket })
    }

    /// `SIOCETHTOOL` on `device` with the command buffer `data`, which must be large enough for
    /// everything the kernel writes for that command.
    ///
    /// # Safety
    /// `data` must point to a writable buffer the kernel's answer to its command fits in.
    unsafe fn ioctl(&self, device: &str, data: *mut u8) -> std::io::Result<()> {
        // SAFETY: ifreq is plain data (a name and a union of plain data and pointers), for
        // which all-zero bytes are valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        // The name, cut at IFNAMSIZ bytes as safchain/ethtool copies it (the kernel
        // terminates it).
        for (to, from) in request.ifr_name.iter_mut().zip(device.bytes()) {
            *to = from as libc::c_char;
        }
        request.ifr_ifru.ifru_data = data.cast();
        // SAFETY: `request` is a valid ifreq that lives across the call; its data pointer is
        // the caller's buffer, valid for the command per this function's contract.
        let result = unsafe {
            libc::ioctl(
                self.socket.as_raw_fd(),
                libc::SIOCETHTOOL as _,
                &raw mut request,
            )
        };
        if result < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn drvinfo(&self, device: &str) -> std::io::Result<EthtoolDrvinfo> {
        let mut info = EthtoolDrvinfo {
            cmd: ETHTOOL_GDRVINFO,
            driver: [0; 32],
            version: [0; 32],
            fw_version: [0; 32],
            bus_info: [0; 32],
            erom_version: [0; 32],
            reserved2: [0; 12],
            n_priv_flags: 0,
            n_stats: 0,
            testinfo_len: 0,
            eedump_len: 0,
            regdump_len: 0,
        };
        // SAFETY: the kernel writes one `struct ethtool_drvinfo` for ETHTOOL_GDRVINFO.
        unsafe { self.ioctl(device, (&raw mut info).cast())? };
        Ok(info)
    }
}

impl Ethtool for IoctlEthtool {
    fn driver_info(&self, device: &str) -> std::io::Result<DriverInfo> {
        let info = self.drvinfo(device)?;
        Ok(DriverInfo {
            driver: c_string(&info.driver),
            version: c_string(&info.version),
            firmware_version: c_string(&info.fw_version),
            bus_info: c_string(&info.bus_info),
            expansion_rom_version: c_string(&info.erom_version),
        })
    }

    /// safchain/ethtool's `Stats`: the statistics count from `ETHTOOL_GDRVINFO`, then the names
    /// and the values; empty names are skipped and a repeated name keeps its last value.
    fn stats(&self, device: &str) -> std::io::Result<BTreeMap<Vec<u8>, u64>> {
        let count = self.drvinfo(device)?.n_stats as usize;
        if count > MAX_GSTRINGS {
            return Err(std::io::Error::other(format!(
                "ethtool currently doesn't support more than {MAX_GSTRINGS} entries, received {count}"
            )));
        }
        // struct ethtool_gstrings: cmd, string_set, len, then the strings.
        let mut strings = GuardedBuffer::new(12 + MAX_GSTRINGS * ETH_GSTRING_LEN)?;
        let header: Vec<u8> = [ETHTOOL_GSTRINGS, ETH_SS_STATS, count as u32]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        strings.bytes_mut()[..12].copy_from_slice(&header);
        // SAFETY: the buffer holds MAX_GSTRINGS strings after the header and ends at a guard
        // page: the kernel's copy of more faults (EFAULT) instead of writing elsewhere.
        unsafe { self.ioctl(device, strings.as_mut_ptr())? };
        // struct ethtool_stats: cmd, n_stats, then the values.
        let mut values = GuardedBuffer::new(8 + MAX_GSTRINGS * 8)?;
        let header: Vec<u8> = [ETHTOOL_GSTATS, count as u32]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        values.bytes_mut()[..8].copy_from_slice(&header);
        // SAFETY: as above, for MAX_GSTRINGS values.
        unsafe { self.ioctl(device, values.as_mut_ptr())? };

        let names = &strings.bytes()[12..];
        let numbers = &values.bytes()[8..];
        let mut stats = BTreeMap::new();
        for i in 0..count {
            let name = &names[i * ETH_GSTRING_LEN..(i + 1) * ETH_GSTRING_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(ETH_GSTRING_LEN);
            if end == 0 {
                continue;
            }
            let mut value = [0u8; 8];
            value.copy_from_slice(&numbers[i * 8..(i + 1) * 8]);
            stats.insert(name[..end].to_vec(), u64::from_ne_bytes(value));
        }
        Ok(stats)
    }

    fn link_info(&self, device: &str) -> std::io::Result<LinkInfo> {
        let mut cmd = EthtoolCmd {
            cmd: ETHTOOL_GSET,
            ..EthtoolCmd::default()
        };
        // SAFETY: the kernel writes one `struct ethtool_cmd` for ETHTOOL_GSET.
        unsafe { self.ioctl(device, (&raw mut cmd).cast())? };
        Ok(LinkInfo {
            supported: cmd.supported,
            advertising: cmd.advertising,
            autoneg: cmd.autoneg,
        })
    }
}

/// Zeroed anonymous memory of at least `len` bytes followed by an inaccessible guard page.
struct GuardedBuffer {
    base: *mut libc::c_void,
    page: usize,
    /// The accessible part: `len` rounded up to whole pages.
    accessible: usize,
    len: usize,
}

impl GuardedBuffer {
    fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: sysconf takes no pointers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        let accessible = len.next_multiple_of(page);
        // SAFETY: a new private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                accessible + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let buffer = Self {
            base,
            page,
            accessible,
            len,
        };
        // SAFETY: the last page is inside the mapping just made.
        let guarded = unsafe {
            libc::mprotect(
                base.cast::<u8>().add(accessible).cast(),
                page,
                libc::PROT_NONE,
            )
        };
        if guarded != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(buffer)
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.base.cast()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `accessible` (>= len) bytes are mapped readable and initialized
        // (zero or written by the kernel) for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.base.cast(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, writable, and borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.base.cast(), self.len) }
    }
}

impl Drop for GuardedBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that size, unmapped once.
        unsafe {
            libc::munmap(self.base, self.accessible + self.page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    /// Answers as a driver would: per device, optional link settings, driver information and
    /// statistics; `EOPNOTSUPP` for what a device lacks.
    #[derive(Default)]
    struct FakeEthtool {
        links: HashMap<String, LinkInfo>,
        drivers: HashMap<String, DriverInfo>,
        stats: HashMap<String, Vec<(&'static [u8], u64)>>,
    }

    fn unsupported<T>() -> std::io::Result<T> {
        Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    impl Ethtool for FakeEthtool {
        fn driver_info(&self, device: &str) -> std::io::Result<DriverInfo> {
            self.drivers
                .get(device)
                .cloned()
                .map_or_else(unsupported, Ok)
        }

        fn stats(&self, device: &str) -> std::io::Result<BTreeMap<Vec<u8>, u64>> {
            match self.stats.get(device) {
                None => unsupported(),
                Some(list) => Ok(list.iter().map(|(k, v)| (k.to_vec(), *v)).collect()),
            }
        }

        fn link_info(&self, device: &str) -> std::io::Result<LinkInfo> {
            if device == "broken" {
                return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
            }
            self.links.get(device).copied().map_or_else(unsupported, Ok)
        }
    }

    fn collector(
        dir: &std::path::Path,
        metrics: Option<&str>,
        fake: FakeEthtool,
    ) -> EthtoolCollector {
        EthtoolCollector::new(
            dir.join("class/net"),
            DeviceFilter::new(Some(Regex::new("^lo$").unwrap()), None),
            metrics.map(|p| Regex::new(p).unwrap()),
            Box::new(fake),
        )
    }

    /// `name{labels} value` lines, sorted, with `# TYPE` lines.
    fn render(out: &[MetricFamily]) -> String {
        let mut lines = Vec::new();
        for family in out {
            lines.push(format!(
                "# {} {} {}",
                family.name,
                family.metric_type.as_str(),
                family.help
            ));
            for metric in &family.metrics {
                let Value::Scalar(value) = metric.value else {
                    panic!();
                };
                let labels: Vec<String> = metric
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect();
                lines.push(format!("{}{{{}}} {value}", family.name, labels.join(",")));
            }
        }
        lines.sort();
        lines.join("\n")
    }

    fn tree(devices: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ethtool-test-{}-{}",
            std::process::id(),
            devices.join("-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let class_net = dir.join("class/net");
        std::fs::create_dir_all(&class_net).unwrap();
        for device in devices {
            std::fs::create_dir(class_net.join(device)).unwrap();
        }
        std::fs::write(class_net.join("bonding_masters"), "bond0\n").unwrap();
        dir
    }

    #[test]
    fn names_as_build_ethtool_fq_name() {
        let c = collector(
            std::path::Path::new("/nonexistent"),
            None,
            FakeEthtool::default(),
        );
        for (stat, expected) in [
            ("rx_errors", "node_ethtool_received_errors"),
            (
                "port.tx_bytes_nic",
                "node_ethtool_port_transmitted_bytes_nic",
            ),
            ("Queue[3] RX Pkts", "node_ethtool_queue_3_received_pkts"),
            ("rx_rx_x", "node_ethtool_received_rx_x"),
            ("tx", "node_ethtool_transmitted"),
            ("rxtx", "node_ethtool_rxtx"),
            ("__veth_rx", "node_ethtool_veth_received"),
            ("   lpi", "node_ethtool_lpi"),
            ("___", "node_ethtool"),
            ("ÉCHEC", "node_ethtool_chec"),
        ] {
            assert_eq!(c.fq_name(&c.sanitize(stat)), expected, "{stat}");
        }
        assert_eq!(c.sanitize("a__b..c_"), "a__b_c_");
        assert_eq!(build_fq_name(&["node", "", "x"]), "node_x");
        assert!(has_mode(1 << 31, 31));
        assert!(!has_mode(u32::MAX, 32));
        assert!(!has_mode(u32::MAX, 91));
    }

    #[test]
    fn devices_report_as_upstream() {
        let dir = tree(&["ens5", "lo", "veth1a2b", "broken"]);
        let mut fake = FakeEthtool::default();
        // An ENA-like NIC: 1G/10G full duplex, TP and FIBRE, autonegotiation supported but off.
        fake.links.insert(
            "ens5".into(),
            LinkInfo {
                supported: (1 << 5)
                    | (1 << 12)
                    | (1 << 7)
                    | (1 << 10)
                    | (1 << AUTONEG_BIT)
                    | (1 << ASYM_PAUSE_BIT),
                advertising: (1 << 12) | (1 << PAUSE_BIT),
                autoneg: 0,
            },
        );
        fake.drivers.insert(
            "ens5".into(),
            DriverInfo {
                driver: "ena".into(),
                version: "2.13.0K".into(),
                firmware_version: String::new(),
                bus_info: "0000:00:05.0".into(),
                expansion_rom_version: String::new(),
            },
        );
        fake.stats.insert(
            "ens5".into(),
            vec![
                (b"tx_timeout", 0),
                (b"queue_0_tx_cnt", 184467),
                (b"queue_0_rx_cnt", 99),
                (b"rx_bytes", 1 << 53),
                (b"tx_packets", 17),
                (b"bw_in_allowance_exceeded", 3),
                (b"pps-allowance.exceeded", 1),
                (b"pps_allowance_exceeded", 2),
                (b"autonegotiate", 1),
            ],
        );
        fake.drivers.insert(
            "veth1a2b".into(),
            DriverInfo {
                driver: "veth".into(),
                version: "1.0".into(),
                ..DriverInfo::default()
            },
        );
        fake.stats.insert(
            "veth1a2b".into(),
            vec![(b"peer_ifindex", 4), (b"rx_queue_0_xdp_drops", 0)],
        );
        let c = collector(&dir, Some("^(?:[^q]|q[^u])"), fake);
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        let expected = r#"# node_ethtool_bw_in_allowance_exceeded untyped Network interface bw_in_allowance_exceeded
# node_ethtool_info gauge A metric with a constant '1' value labeled by bus_info, device, driver, expansion_rom_version, firmware_version, version.
# node_ethtool_peer_ifindex untyped Network interface peer_ifindex
# node_ethtool_received_bytes_total untyped Network interface bytes received
# node_ethtool_received_queue_0_xdp_drops untyped Network interface rx_queue_0_xdp_drops
# node_ethtool_transmitted_packets_total untyped Network interface packets sent
# node_ethtool_transmitted_timeout untyped Network interface tx_timeout
# node_network_advertised_speed_bytes gauge Combination of speeds and features offered by network device
# node_network_asymmetricpause_advertised gauge If this port device offers asymmetric pause capability
# node_network_asymmetricpause_supported gauge If this port device supports asymmetric pause frames
# node_network_autonegotiate gauge If this port is using autonegotiate
# node_network_autonegotiate_advertised gauge If this port device offers autonegotiate
# node_network_autonegotiate_supported gauge If this port device supports autonegotiate
# node_network_pause_advertised gauge If this port device offers pause capability
# node_network_pause_supported gauge If this port device supports pause frames
# node_network_supported_port_info gauge Type of ports or PHYs supported by network device
# node_network_supported_speed_bytes gauge Combination of speeds and features supported by network device
node_ethtool_bw_in_allowance_exceeded{device="ens5"} 3
node_ethtool_info{bus_info="",device="veth1a2b",driver="veth",expansion_rom_version="",firmware_version="",version="1.0"} 1
node_ethtool_info{bus_info="0000:00:05.0",device="ens5",driver="ena",expansion_rom_version="",firmware_version="",version="2.13.0K"} 1
node_ethtool_peer_ifindex{device="veth1a2b"} 4
node_ethtool_received_bytes_total{device="ens5"} 9007199254740992
node_ethtool_received_queue_0_xdp_drops{device="veth1a2b"} 0
node_ethtool_transmitted_packets_total{device="ens5"} 17
node_ethtool_transmitted_timeout{device="ens5"} 0
node_network_advertised_speed_bytes{device="ens5",duplex="full",mode="10000baseT"} 1250000000
node_network_asymmetricpause_advertised{device="ens5"} 0
node_network_asymmetricpause_supported{device="ens5"} 1
node_network_autonegotiate_advertised{device="ens5"} 0
node_network_autonegotiate_supported{device="ens5"} 1
node_network_autonegotiate{device="ens5"} 0
node_network_pause_advertised{device="ens5"} 1
node_network_pause_supported{device="ens5"} 0
node_network_supported_port_info{device="ens5",type="FIBRE"} 1
node_network_supported_port_info{device="ens5",type="TP"} 1
node_network_supported_speed_bytes{device="ens5",duplex="full",mode="10000baseT"} 1250000000
node_network_supported_speed_bytes{device="ens5",duplex="full",mode="1000baseT"} 125000000"#;
        assert_eq!(render(&out), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_devices_and_no_class_net() {
        let dir = tree(&[]);
        let c = collector(&dir, None, FakeEthtool::default());
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "no network devices found");
        let c = collector(&dir.join("missing"), None, FakeEthtool::default());
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        // Only unsupported devices: success, nothing reported.
        let dir = tree(&["dummy0"]);
        let c = collector(&dir, None, FakeEthtool::default());
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert!(out.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strings_and_buffers() {
        assert_eq!(c_string(b"veth\0\0junk"), "veth");
        assert_eq!(c_string(&[b'x'; 32]), "x".repeat(32));
        assert_eq!(c_string(b"\xff\0"), "\u{FFFD}");
        let mut buffer = GuardedBuffer::new(100).unwrap();
        assert_eq!(buffer.bytes(), [0; 100]);
        buffer.bytes_mut()[99] = 7;
        assert_eq!(buffer.bytes()[99], 7);
        assert_eq!(std::mem::size_of::<EthtoolCmd>(), 44);
        assert_eq!(std::mem::size_of::<EthtoolDrvinfo>(), 196);
    }

    #[test]
    fn live_loopback_has_no_ethtool_operations() {
        let ethtool = IoctlEthtool::new().unwrap();
        // lo implements neither driver information nor statistics.
        let error = ethtool.stats("lo").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EOPNOTSUPP), "{error}");
        let error = ethtool.driver_info("no-such-device0").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENODEV), "{error}");
        let error = ethtool
            .link_info("a-name-longer-than-ifnamsiz")
            .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENODEV), "{error}");
    }
}
