//! `wifi`: WiFi interfaces, the BSS they are associated with and their stations, as
//! node_exporter's wifi collector (mdlayher/wifi): nl80211 generic netlink dumps
//! (`NL80211_CMD_GET_INTERFACE`, then per interface `GET_SCAN` and `GET_STATION`), or, with
//! `--collector.wifi.fixtures=<dir>`, JSON files for end-to-end tests: `<dir>/interfaces.json`
//! (`[]*wifi.Interface`), `<dir>/<name>/bss.json` (`wifi.BSS`) and
//! `<dir>/<name>/stationinfo.json` (`[]*wifi.StationInfo`).
//!
//! No nl80211 family in the kernel (no wireless driver loaded, so no wiphy), or a permission
//! error opening it, is "no data" (upstream's ErrNoData); a kernel with nl80211 but no wireless
//! interface reports nothing, successfully, as upstream. Interfaces without a name (P2P
//! devices) are skipped. A missing BSS (no associated one) or station list (`ENOENT`, or a
//! missing fixture file) is skipped for that interface; any other error fails the scrape,
//! after the families already filled are served. As mdlayher/wifi, a station message without
//! `NL80211_ATTR_STA_INFO` makes the interface's whole station list missing; an attribute too
//! short for its integer (where the Go library panics), and a `null` interface or station in
//! the fixtures (a nil pointer upstream dereferences), are errors here.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use super::{
    go_json::{self, Field, Go, Kind},
    netlink_raw::{
        self, GenericFamily, attributes, nl_string, push_attribute, u16_at, u32_at, u64_at,
    },
};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    metrics::MetricFamily,
};

const FIXTURES: &str = "collector.wifi.fixtures";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "wifi",
    default_enabled: false,
    flags: &[FlagSpec::value(
        FIXTURES,
        Some(""),
        "test fixtures to use for wifi collector metrics",
    )],
    kernel: None,
    build,
};

struct WifiCollector {
    /// `--collector.wifi.fixtures`, when given (not empty).
    fixtures: Option<PathBuf>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(WifiCollector {
        fixtures: context
            .flags
            .string(FIXTURES)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from),
    }))
}

/// mdlayher/wifi's `Interface`, the fields used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Interface {
    index: u32,
    name: String,
    /// `None` when nl80211 sent no address (Go's nil `HardwareAddr`).
    hardware_addr: Option<Vec<u8>>,
    kind: i64,
    /// MHz.
    frequency: i64,
}

/// mdlayher/wifi's `BSS`, the fields used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bss {
    ssid: String,
    bssid: Vec<u8>,
    status: i64,
}

/// mdlayher/wifi's `StationInfo`, the fields used; durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Station {
    hardware_addr: Vec<u8>,
    connected: i64,
    inactive: i64,
    received_bytes: i64,
    transmitted_bytes: i64,
    received_packets: i64,
    transmitted_packets: i64,
    receive_bitrate: i64,
    transmit_bitrate: i64,
    signal: i64,
    transmit_retries: i64,
    transmit_failed: i64,
    beacon_loss: i64,
}

/// Where the data comes from (upstream's `wifiStater`).
enum Source<'a> {
    Fixtures(&'a Path),
    Nl80211(GenericFamily),
}

/// The 14 families, in the order upstream declares them.
struct Families {
    frequency: MetricFamily,
    info: MetricFamily,
    connected: MetricFamily,
    inactive: MetricFamily,
    receive_bitrate: MetricFamily,
    transmit_bitrate: MetricFamily,
    received_bytes: MetricFamily,
    transmitted_bytes: MetricFamily,
    signal: MetricFamily,
    retries: MetricFamily,
    failed: MetricFamily,
    beacon_loss: MetricFamily,
    transmitted_packets: MetricFamily,
    received_packets: MetricFamily,
}

impl Families {
    fn new() -> Self {
        let gauge = MetricFamily::gauge;
        let counter = MetricFamily::counter;
        Self {
            frequency: gauge(
                "node_wifi_interface_frequency_hertz",
                "The current frequency a WiFi interface is operating at, in hertz.",
            ),
            info: gauge(
                "node_wifi_station_info",
                "Labeled WiFi interface station information as provided by the operating system.",
            ),
            connected: counter(
                "node_wifi_station_connected_seconds_total",
                "The total number of seconds a station has been connected to an access point.",
            ),
            inactive: gauge(
                "node_wifi_station_inactive_seconds",
                "The number of seconds since any wireless activity has occurred on a station.",
            ),
            receive_bitrate: gauge(
                "node_wifi_station_receive_bits_per_second",
                "The current WiFi receive bitrate of a station, in bits per second.",
            ),
            transmit_bitrate: gauge(
                "node_wifi_station_transmit_bits_per_second",
                "The current WiFi transmit bitrate of a station, in bits per second.",
            ),
            received_bytes: counter(
                "node_wifi_station_receive_bytes_total",
                "The total number of bytes received by a WiFi station.",
            ),
            transmitted_bytes: counter(
                "node_wifi_station_transmit_bytes_total",
                "The total number of bytes transmitted by a WiFi station.",
            ),
            signal: gauge(
                "node_wifi_station_signal_dbm",
                "The current WiFi signal strength, in decibel-milliwatts (dBm).",
            ),
            retries: counter(
                "node_wifi_station_transmit_retries_total",
                "The total number of times a station has had to retry while sending a packet.",
            ),
            failed: counter(
                "node_wifi_station_transmit_failed_total",
                "The total number of times a station has failed to send a packet.",
            ),
            beacon_loss: counter(
                "node_wifi_station_beacon_loss_total",
                "The total number of times a station has detected a beacon loss.",
            ),
            transmitted_packets: counter(
                "node_wifi_station_transmitted_packets_total",
                "The total number of packets transmitted by a station.",
            ),
            received_packets: counter(
                "node_wifi_station_received_packets_total",
                "The total number of packets received by a station.",
            ),
        }
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        vec![
            self.frequency,
            self.info,
            self.connected,
            self.inactive,
            self.receive_bitrate,
            self.transmit_bitrate,
            self.received_bytes,
            self.transmitted_bytes,
            self.signal,
            self.retries,
            self.failed,
            self.beacon_loss,
            self.transmitted_packets,
            self.received_packets,
        ]
    }

    fn push_station(&mut self, device: &str, station: &Station) {
        let mac = mac_string(&station.hardware_addr);
        let labels = [("device", device), ("mac_address", mac.as_str())];
        for (family, value) in [
            (&mut self.connected, duration_seconds(station.connected)),
            (&mut self.inactive, duration_seconds(station.inactive)),
            (&mut self.receive_bitrate, station.receive_bitrate as f64),
            (&mut self.transmit_bitrate, station.transmit_bitrate as f64),
            (&mut self.received_bytes, station.received_bytes as f64),
            (
                &mut self.transmitted_bytes,
                station.transmitted_bytes as f64,
            ),
            (&mut self.signal, station.signal as f64),
            (&mut self.retries, station.transmit_retries as f64),
            (&mut self.failed, station.transmit_failed as f64),
            (&mut self.beacon_loss, station.beacon_loss as f64),
            (
                &mut self.transmitted_packets,
                station.transmitted_packets as f64,
            ),
            (&mut self.received_packets, station.received_packets as f64),
        ] {
            family.push(labels, value);
        }
    }
}

impl Collector for WifiCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let source = match &self.fixtures {
            Some(dir) => Source::Fixtures(dir),
            None => Source::Nl80211(open_nl80211()?),
        };
        let mut families = Families::new();
        let result = collect(&source, &mut families);
        out.extend(families.into_vec());
        result
    }
}

/// Upstream's `wifi.New()` and its error handling: the nl80211 family, or no data.
fn open_nl80211() -> anyhow::Result<GenericFamily> {
    let no_data = || {
        tracing::debug!("wifi collector metrics are not available for this system");
        anyhow::Error::new(NoData(
            "no nl80211 generic netlink family: no wireless device driver is loaded".into(),
        ))
    };
    match netlink_raw::generic_family("nl80211") {
        Ok(Some(family)) => Ok(family),
        Ok(None) => Err(no_data()),
        Err(error) => match io_errno(&error) {
            Some(libc::ENOENT) => Err(no_data()),
            Some(libc::EPERM | libc::EACCES) => {
                tracing::debug!("wifi collector got permission denied when accessing metrics");
                Err(anyhow::Error::new(NoData(format!(
                    "permission denied opening nl80211: {error:#}"
                ))))
            }
            _ => Err(error.context("failed to access wifi data")),
        },
    }
}

/// The errno of the first I/O error in `error`'s chain.
fn io_errno(error: &anyhow::Error) -> Option<i32> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

/// Upstream's `Update` loop over the interfaces.
fn collect(source: &Source, families: &mut Families) -> anyhow::Result<()> {
    let interfaces = match source {
        Source::Fixtures(dir) => fixture_interfaces(dir),
        Source::Nl80211(family) => nl80211_interfaces(*family),
    }
    .context("failed to retrieve wifi interfaces")?;
    for interface in &interfaces {
        // Some virtual devices have no "name" and should be skipped.
        if interface.name.is_empty() {
            continue;
        }
        tracing::debug!(wifi = %interface.name, iftype = interface.kind, "probing wifi device with type");
        families.frequency.push(
            [("device", interface.name.as_str())],
            interface.frequency as f64 * 1000.0 * 1000.0,
        );
        let bss = match source {
            Source::Fixtures(dir) => fixture_bss(dir, &interface.name),
            Source::Nl80211(family) => nl80211_bss(*family, interface),
        }
        .with_context(|| format!("failed to retrieve BSS for device {}", interface.name))?;
        match bss {
            Some(bss) => families.info.push(
                [
                    ("device", interface.name.as_str()),
                    ("bssid", mac_string(&bss.bssid).as_str()),
                    ("ssid", bss.ssid.as_str()),
                    ("mode", status_mode(bss.status)),
                ],
                1.0,
            ),
            None => {
                tracing::debug!(name = %interface.name, "BSS information not found for wifi device")
            }
        }
        let stations = match source {
            Source::Fixtures(dir) => fixture_stations(dir, &interface.name),
            Source::Nl80211(family) => nl80211_stations(*family, interface),
        }
        .with_context(|| {
            format!(
                "failed to retrieve station info for device {:?}",
                interface.name
            )
        })?;
        match stations {
            Some(stations) => {
                for station in &stations {
                    families.push_station(&interface.name, station);
                }
            }
            None => {
                tracing::debug!(name = %interface.name, "station information not found for wifi device")
            }
        }
    }
    Ok(())
}

/// Upstream's `bssStatusMode`.
fn status_mode(status: i64) -> &'static str {
    match status {
        // BSSStatusAuthenticated, BSSStatusAssociated
        0 | 1 => "client",
        // BSSStatusIBSSJoined
        3 => "ad-hoc",
        _ => "unknown",
    }
}

/// Go's `net.HardwareAddr.String()`: lower-case hex bytes joined by colons.
fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Go's `time.Duration.Seconds()`, for a duration in nanoseconds.
fn duration_seconds(nanoseconds: i64) -> f64 {
    let seconds = nanoseconds / 1_000_000_000;
    let rest = nanoseconds % 1_000_000_000;
    seconds as f64 + rest as f64 / 1e9
}

// The fixture files: mdlayher/wifi's types as Go's JSON decoding sees them.

const INTERFACE: Kind = Kind::Struct(
    "wifi.Interface",
    &[
        Field::new("Index", Kind::Int(64)),
        Field::new("Name", Kind::String),
        Field::new("HardwareAddr", Kind::Bytes),
        Field::new("PHY", Kind::Int(64)),
        Field::new("Device", Kind::Int(64)),
        Field::new("Type", Kind::Int(64)),
        Field::new("Frequency", Kind::Int(64)),
        Field::new("ChannelWidth", Kind::Int(64)),
    ],
);

const BSS_LOAD: Kind = Kind::Struct(
    "wifi.BSSLoad",
    &[
        Field::new("Version", Kind::Int(64)),
        Field::new("StationCount", Kind::Uint(16)),
        Field::new("ChannelUtilization", Kind::Uint(8)),
        Field::new("AvailableAdmissionCapacity", Kind::Uint(16)),
    ],
);

const RSN_INFO: Kind = Kind::Struct(
    "wifi.RSNInfo",
    &[
        Field::new("Version", Kind::Uint(16)),
        Field::new("GroupCipher", Kind::Uint(32)),
        Field::new("PairwiseCiphers", Kind::Slice(&Kind::Uint(32))),
        Field::new("AKMs", Kind::Slice(&Kind::Uint(32))),
        Field::new("Capabilities", Kind::Uint(16)),
        Field::new("GroupMgmtCipher", Kind::Uint(32)),
    ],
);

const BSS: Kind = Kind::Struct(
    "wifi.BSS",
    &[
        Field::new("SSID", Kind::String),
        Field::new("BSSID", Kind::Bytes),
        Field::new("Frequency", Kind::Int(64)),
        Field::new("BeaconInterval", Kind::Int(64)),
        Field::new("LastSeen", Kind::Int(64)),
        Field::new("Status", Kind::Int(64)),
        Field::new("Signal", Kind::Int(32)),
        Field::new("SignalUnspecified", Kind::Uint(32)),
        Field::new("Load", BSS_LOAD),
        Field::new("RSN", RSN_INFO),
    ],
);

const STATION_INFO: Kind = Kind::Struct(
    "wifi.StationInfo",
    &[
        Field::new("InterfaceIndex", Kind::Int(64)),
        Field::new("HardwareAddr", Kind::Bytes),
        Field::new("Connected", Kind::Int(64)),
        Field::new("Inactive", Kind::Int(64)),
        Field::new("ReceivedBytes", Kind::Int(64)),
        Field::new("TransmittedBytes", Kind::Int(64)),
        Field::new("ReceivedPackets", Kind::Int(64)),
        Field::new("TransmittedPackets", Kind::Int(64)),
        Field::new("ReceiveBitrate", Kind::Int(64)),
        Field::new("TransmitBitrate", Kind::Int(64)),
        Field::new("Signal", Kind::Int(64)),
        Field::new("SignalAverage", Kind::Int(64)),
        Field::new("TransmitRetries", Kind::Int(64)),
        Field::new("TransmitFailed", Kind::Int(64)),
        Field::new("BeaconLoss", Kind::Int(64)),
    ],
);

/// The elements of a decoded pointer slice; a nil one is an error (upstream dereferences it).
fn pointers(value: Go, path: &Path) -> anyhow::Result<Vec<Go>> {
    let Go::PointerSlice(items) = value else {
        anyhow::bail!("{}: not a list", path.display());
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            item.with_context(|| format!("{}: entry {index} is null", path.display()))
        })
        .collect()
}

/// The mock's `Interfaces`: `<dir>/interfaces.json`.
fn fixture_interfaces(dir: &Path) -> anyhow::Result<Vec<Interface>> {
    let path = dir.join("interfaces.json");
    let items = pointers(
        go_json::unmarshal_file(&path, &Kind::PointerSlice(&INTERFACE))?,
        &path,
    )?;
    Ok(items
        .iter()
        .map(|item| Interface {
            index: item.field(0).int() as u32,
            name: item.field(1).str().to_owned(),
            hardware_addr: Some(item.field(2).bytes().to_vec()),
            kind: item.field(5).int(),
            frequency: item.field(6).int(),
        })
        .collect())
}

/// A fixture file of an interface; `None` when it does not exist (Go's `os.ErrNotExist`).
fn fixture_file(dir: &Path, device: &str, file: &str, kind: &Kind) -> anyhow::Result<Option<Go>> {
    let path = dir.join(device).join(file);
    match go_json::read_file(&path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        Ok(bytes) => go_json::unmarshal(&bytes, kind)
            .with_context(|| format!("decoding {}", path.display()))
            .map(Some),
    }
}

/// The mock's `BSS`: `<dir>/<device>/bss.json`.
fn fixture_bss(dir: &Path, device: &str) -> anyhow::Result<Option<Bss>> {
    Ok(fixture_file(dir, device, "bss.json", &BSS)?.map(|bss| Bss {
        ssid: bss.field(0).str().to_owned(),
        bssid: bss.field(1).bytes().to_vec(),
        status: bss.field(5).int(),
    }))
}

/// The mock's `StationInfo`: `<dir>/<device>/stationinfo.json`.
fn fixture_stations(dir: &Path, device: &str) -> anyhow::Result<Option<Vec<Station>>> {
    let Some(value) = fixture_file(
        dir,
        device,
        "stationinfo.json",
        &Kind::PointerSlice(&STATION_INFO),
    )?
    else {
        return Ok(None);
    };
    let path = dir.join(device).join("stationinfo.json");
    let stations = pointers(value, &path)?
        .iter()
        .map(|item| Station {
            hardware_addr: item.field(1).bytes().to_vec(),
            connected: item.field(2).int(),
            inactive: item.field(3).int(),
            received_bytes: item.field(4).int(),
            transmitted_bytes: item.field(5).int(),
            received_packets: item.field(6).int(),
            transmitted_packets: item.field(7).int(),
            receive_bitrate: item.field(8).int(),
            transmit_bitrate: item.field(9).int(),
            signal: item.field(10).int(),
            transmit_retries: item.field(12).int(),
            transmit_failed: item.field(13).int(),
            beacon_loss: item.field(14).int(),
        })
        .collect();
    Ok(Some(stations))
}

// nl80211 (include/uapi/linux/nl80211.h).

const NL80211_CMD_GET_INTERFACE: u8 = 5;
const NL80211_CMD_GET_STATION: u8 = 17;
const NL80211_CMD_GET_SCAN: u8 = 32;

const NL80211_ATTR_IFINDEX: u16 = 3;
const NL80211_ATTR_IFNAME: u16 = 4;
const NL80211_ATTR_IFTYPE: u16 = 5;
const NL80211_ATTR_MAC: u16 = 6;
const NL80211_ATTR_STA_INFO: u16 = 21;
const NL80211_ATTR_WIPHY_FREQ: u16 = 38;
const NL80211_ATTR_BSS: u16 = 47;
const NL80211_ATTR_WIPHY: u16 = 1;
const NL80211_ATTR_CHANNEL_WIDTH: u16 = 159;
const NL80211_ATTR_WDEV: u16 = 153;

const NL80211_BSS_BSSID: u16 = 1;
const NL80211_BSS_FREQUENCY: u16 = 2;
const NL80211_BSS_BEACON_INTERVAL: u16 = 4;
const NL80211_BSS_INFORMATION_ELEMENTS: u16 = 6;
const NL80211_BSS_SIGNAL_MBM: u16 = 7;
const NL80211_BSS_SIGNAL_UNSPEC: u16 = 8;
const NL80211_BSS_STATUS: u16 = 9;
const NL80211_BSS_SEEN_MS_AGO: u16 = 10;

const NL80211_STA_INFO_INACTIVE_TIME: u16 = 1;
const NL80211_STA_INFO_RX_BYTES: u16 = 2;
const NL80211_STA_INFO_TX_BYTES: u16 = 3;
const NL80211_STA_INFO_SIGNAL: u16 = 7;
const NL80211_STA_INFO_TX_BITRATE: u16 = 8;
const NL80211_STA_INFO_RX_PACKETS: u16 = 9;
const NL80211_STA_INFO_TX_PACKETS: u16 = 10;
const NL80211_STA_INFO_TX_RETRIES: u16 = 11;
const NL80211_STA_INFO_TX_FAILED: u16 = 12;
const NL80211_STA_INFO_SIGNAL_AVG: u16 = 13;
const NL80211_STA_INFO_RX_BITRATE: u16 = 14;
const NL80211_STA_INFO_CONNECTED_TIME: u16 = 16;
const NL80211_STA_INFO_BEACON_LOSS: u16 = 18;
const NL80211_STA_INFO_RX_BYTES64: u16 = 23;
const NL80211_STA_INFO_TX_BYTES64: u16 = 24;

const NL80211_RATE_INFO_BITRATE: u16 = 1;
const NL80211_RATE_INFO_BITRATE32: u16 = 5;

/// The 802.11 information element of the SSID.
const IE_SSID: u8 = 0;

/// mdlayher/wifi's `Interfaces`: a dump of every wireless interface.
fn nl80211_interfaces(family: GenericFamily) -> anyhow::Result<Vec<Interface>> {
    let mut interfaces = Vec::new();
    netlink_raw::generic_dump(
        family,
        NL80211_CMD_GET_INTERFACE,
        Vec::new(),
        |_, payload| {
            interfaces.push(parse_interface(payload)?);
            Ok(())
        },
    )?;
    Ok(interfaces)
}

/// mdlayher/wifi's `Interface.parseAttributes` (the integers it reads are checked even where
/// unused, as Go would panic on them).
fn parse_interface(payload: &[u8]) -> anyhow::Result<Interface> {
    let mut interface = Interface::default();
    for attribute in attributes(payload)? {
        let data = attribute.data;
        match attribute.kind {
            NL80211_ATTR_IFINDEX => interface.index = u32_at(data, "NL80211_ATTR_IFINDEX")?,
            NL80211_ATTR_IFNAME => interface.name = nl_string(data),
            NL80211_ATTR_MAC => interface.hardware_addr = Some(data.to_vec()),
            NL80211_ATTR_WIPHY => {
                u32_at(data, "NL80211_ATTR_WIPHY")?;
            }
            NL80211_ATTR_IFTYPE => interface.kind = i64::from(u32_at(data, "NL80211_ATTR_IFTYPE")?),
            NL80211_ATTR_WDEV => {
                u64_at(data, "NL80211_ATTR_WDEV")?;
            }
            NL80211_ATTR_WIPHY_FREQ => {
                interface.frequency = i64::from(u32_at(data, "NL80211_ATTR_WIPHY_FREQ")?)
            }
            NL80211_ATTR_CHANNEL_WIDTH => {
                u32_at(data, "NL80211_ATTR_CHANNEL_WIDTH")?;
            }
            _ => {}
        }
    }
    Ok(interface)
}

/// The request attributes mdlayher/wifi sends about an interface: its index, and its address
/// when it has one.
fn interface_request(interface: &Interface) -> Vec<u8> {
    let mut request = Vec::new();
    push_attribute(
        &mut request,
        NL80211_ATTR_IFINDEX,
        &interface.index.to_ne_bytes(),
    );
    if let Some(mac) = &interface.hardware_addr {
        push_attribute(&mut request, NL80211_ATTR_MAC, mac);
    }
    request
}

/// A dump about one interface, where `ENOENT` means "nothing" (`None`), as Go's
/// `errors.Is(err, os.ErrNotExist)`.
fn interface_dump(
    family: GenericFamily,
    command: u8,
    interface: &Interface,
    each: impl FnMut(u8, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Option<()>> {
    match netlink_raw::generic_dump(family, command, interface_request(interface), each) {
        Ok(()) => Ok(Some(())),
        Err(error) if io_errno(&error) == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

/// mdlayher/wifi's `BSS`: the first BSS of the scan results with a status attribute (the one
/// the interface is associated with); `None` when there is none.
fn nl80211_bss(family: GenericFamily, interface: &Interface) -> anyhow::Result<Option<Bss>> {
    let mut found = None;
    let dumped = interface_dump(family, NL80211_CMD_GET_SCAN, interface, |_, payload| {
        if found.is_none() {
            found = parse_scan_message(payload)?;
        }
        Ok(())
    })?;
    Ok(dumped.and(found))
}

/// One scan result message (mdlayher/wifi's `parseBSS` for one message): its BSS when it has
/// a status.
fn parse_scan_message(payload: &[u8]) -> anyhow::Result<Option<Bss>> {
    for attribute in attributes(payload)? {
        if attribute.kind != NL80211_ATTR_BSS {
            continue;
        }
        let nested = attributes(attribute.data)?;
        if !nested.iter().any(|a| a.kind == NL80211_BSS_STATUS) {
            continue;
        }
        return parse_bss(&nested).map(Some);
    }
    Ok(None)
}

/// mdlayher/wifi's `BSS.parseAttributes`.
fn parse_bss(attributes: &[netlink_raw::Attribute]) -> anyhow::Result<Bss> {
    let mut bss = Bss::default();
    for attribute in attributes {
        let data = attribute.data;
        match attribute.kind {
            NL80211_BSS_BSSID => bss.bssid = data.to_vec(),
            NL80211_BSS_STATUS => bss.status = i64::from(u32_at(data, "NL80211_BSS_STATUS")?),
            NL80211_BSS_FREQUENCY
            | NL80211_BSS_SEEN_MS_AGO
            | NL80211_BSS_SIGNAL_MBM
            | NL80211_BSS_SIGNAL_UNSPEC => {
                u32_at(data, "NL80211_BSS attribute")?;
            }
            NL80211_BSS_BEACON_INTERVAL => {
                u16_at(data, "NL80211_BSS_BEACON_INTERVAL")?;
            }
            NL80211_BSS_INFORMATION_ELEMENTS => {
                for (id, element) in information_elements(data)? {
                    if id == IE_SSID {
                        bss.ssid = decode_ssid(element);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(bss)
}

/// mdlayher/wifi's `parseIEs`: (id, length, data) triples; a truncated one is an error.
fn information_elements(mut data: &[u8]) -> anyhow::Result<Vec<(u8, &[u8])>> {
    let mut elements = Vec::new();
    while !data.is_empty() {
        let [id, length, rest @ ..] = data else {
            anyhow::bail!("invalid 802.11 information element");
        };
        let Some(element) = rest.get(..*length as usize) else {
            anyhow::bail!("invalid 802.11 information element");
        };
        elements.push((*id, element));
        data = &rest[*length as usize..];
    }
    Ok(elements)
}

/// mdlayher/wifi's `decodeSSID`: UTF-8 with each invalid byte as U+FFFD.
fn decode_ssid(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for _ in chunk.invalid() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    text
}

/// mdlayher/wifi's `StationInfo`: every station of the interface; `None` when the kernel has
/// none to give (`ENOENT`) or a message carries no station information.
fn nl80211_stations(
    family: GenericFamily,
    interface: &Interface,
) -> anyhow::Result<Option<Vec<Station>>> {
    let mut stations = Some(Vec::new());
    let dumped = interface_dump(family, NL80211_CMD_GET_STATION, interface, |_, payload| {
        // As Go, which parses the messages in turn: after one without station information,
        // the rest is not read.
        let Some(list) = &mut stations else {
            return Ok(());
        };
        match parse_station_message(payload)? {
            Some(station) => list.push(station),
            None => stations = None,
        }
        Ok(())
    })?;
    Ok(dumped.and(stations))
}

/// mdlayher/wifi's `ParseStationInfo`: the station's address (when it comes before its
/// statistics) and statistics; `None` without `NL80211_ATTR_STA_INFO`.
fn parse_station_message(payload: &[u8]) -> anyhow::Result<Option<Station>> {
    let mut station = Station::default();
    for attribute in attributes(payload)? {
        match attribute.kind {
            NL80211_ATTR_IFINDEX => {
                u32_at(attribute.data, "NL80211_ATTR_IFINDEX")?;
            }
            NL80211_ATTR_MAC => station.hardware_addr = attribute.data.to_vec(),
            NL80211_ATTR_STA_INFO => {
                parse_station_info(&attributes(attribute.data)?, &mut station)?;
                return Ok(Some(station));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// mdlayher/wifi's `StationInfo.parseAttributes`, Go's integer conversions included (`int` of
/// a `uint64` wraps).
fn parse_station_info(
    attributes: &[netlink_raw::Attribute],
    station: &mut Station,
) -> anyhow::Result<()> {
    const SECOND: i64 = 1_000_000_000;
    const MILLISECOND: i64 = 1_000_000;
    for attribute in attributes {
        let data = attribute.data;
        let u32_value = || u32_at(data, "NL80211_STA_INFO attribute").map(i64::from);
        let i8_value = || {
            data.first()
                .map(|&b| i64::from(b as i8))
                .context("NL80211_STA_INFO signal attribute is empty")
        };
        match attribute.kind {
            NL80211_STA_INFO_CONNECTED_TIME => station.connected = u32_value()? * SECOND,
            NL80211_STA_INFO_INACTIVE_TIME => station.inactive = u32_value()? * MILLISECOND,
            NL80211_STA_INFO_RX_BYTES64 => {
                station.received_bytes = u64_at(data, "NL80211_STA_INFO_RX_BYTES64")? as i64
            }
            NL80211_STA_INFO_TX_BYTES64 => {
                station.transmitted_bytes = u64_at(data, "NL80211_STA_INFO_TX_BYTES64")? as i64
            }
            NL80211_STA_INFO_SIGNAL => station.signal = i8_value()?,
            NL80211_STA_INFO_SIGNAL_AVG => {
                i8_value()?;
            }
            NL80211_STA_INFO_RX_PACKETS => station.received_packets = u32_value()?,
            NL80211_STA_INFO_TX_PACKETS => station.transmitted_packets = u32_value()?,
            NL80211_STA_INFO_TX_RETRIES => station.transmit_retries = u32_value()?,
            NL80211_STA_INFO_TX_FAILED => station.transmit_failed = u32_value()?,
            NL80211_STA_INFO_BEACON_LOSS => station.beacon_loss = u32_value()?,
            NL80211_STA_INFO_RX_BITRATE => station.receive_bitrate = parse_rate(data)?,
            NL80211_STA_INFO_TX_BITRATE => station.transmit_bitrate = parse_rate(data)?,
            _ => {}
        }
        // Only use 32-bit counters if the 64-bit counters are not present (yet).
        if station.received_bytes == 0 && attribute.kind == NL80211_STA_INFO_RX_BYTES {
            station.received_bytes = u32_value()?;
        }
        if station.transmitted_bytes == 0 && attribute.kind == NL80211_STA_INFO_TX_BYTES {
            station.transmitted_bytes = u32_value()?;
        }
    }
    Ok(())
}

/// mdlayher/wifi's `parseRateInfo`: the 32-bit bitrate, else the 16-bit one, in 100 kbit/s
/// units, as bits per second.
fn parse_rate(data: &[u8]) -> anyhow::Result<i64> {
    let mut bitrate: i64 = 0;
    for attribute in attributes(data)? {
        if attribute.kind == NL80211_RATE_INFO_BITRATE32 {
            bitrate = i64::from(u32_at(attribute.data, "NL80211_RATE_INFO_BITRATE32")?);
        }
        if bitrate == 0 && attribute.kind == NL80211_RATE_INFO_BITRATE {
            bitrate = i64::from(u16_at(attribute.data, "NL80211_RATE_INFO_BITRATE")?);
        }
    }
    Ok(bitrate * 100 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn attribute(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_attribute(&mut out, kind, data);
        out
    }

    #[test]
    fn go_conversions() {
        assert_eq!(mac_string(&[0xaa, 0, 0x0f]), "aa:00:0f");
        assert_eq!(mac_string(&[]), "");
        assert_eq!(duration_seconds(400_000_000), 0.4);
        assert_eq!(duration_seconds(60 * 1_000_000_000), 60.0);
        assert_eq!(duration_seconds(-1_500_000_000), -1.5);
        assert_eq!(duration_seconds(i64::MAX), 9_223_372_036.0 + 0.854_775_807);
        assert_eq!(status_mode(0), "client");
        assert_eq!(status_mode(1), "client");
        assert_eq!(status_mode(2), "unknown");
        assert_eq!(status_mode(3), "ad-hoc");
        assert_eq!(status_mode(-1), "unknown");
        assert_eq!(decode_ssid(b"caf\xc3\xa9\xff"), "café\u{FFFD}");
    }

    #[test]
    fn interfaces_and_bss_parse_as_mdlayher_wifi_parses_them() {
        let mut message = attribute(NL80211_ATTR_IFINDEX, &7u32.to_ne_bytes());
        message.extend(attribute(NL80211_ATTR_IFNAME, b"wlp2s0\0"));
        message.extend(attribute(NL80211_ATTR_MAC, &[2, 0, 0, 0, 0, 1]));
        message.extend(attribute(NL80211_ATTR_IFTYPE, &2u32.to_ne_bytes()));
        message.extend(attribute(NL80211_ATTR_WDEV, &1u64.to_ne_bytes()));
        message.extend(attribute(NL80211_ATTR_WIPHY_FREQ, &5180u32.to_ne_bytes()));
        let interface = parse_interface(&message).unwrap();
        assert_eq!(
            interface,
            Interface {
                index: 7,
                name: "wlp2s0".into(),
                hardware_addr: Some(vec![2, 0, 0, 0, 0, 1]),
                kind: 2,
                frequency: 5180,
            }
        );
        let request = interface_request(&interface);
        assert_eq!(attributes(&request).unwrap().len(), 2);
        let no_mac = Interface {
            hardware_addr: None,
            ..interface
        };
        assert_eq!(attributes(&interface_request(&no_mac)).unwrap().len(), 1);
        assert!(parse_interface(&attribute(NL80211_ATTR_WIPHY_FREQ, &[1, 2])).is_err());
        assert!(parse_interface(&attribute(NL80211_ATTR_WDEV, &[0; 4])).is_err());

        let mut bss = attribute(NL80211_BSS_BSSID, &[0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        bss.extend(attribute(NL80211_BSS_FREQUENCY, &5180u32.to_ne_bytes()));
        bss.extend(attribute(
            NL80211_BSS_BEACON_INTERVAL,
            &100u16.to_ne_bytes(),
        ));
        bss.extend(attribute(
            NL80211_BSS_INFORMATION_ELEMENTS,
            b"\x00\x04corp\x0b\x05\x01\x00\x10\x00\x00",
        ));
        let unassociated = attribute(NL80211_ATTR_BSS, &bss);
        assert_eq!(parse_scan_message(&unassociated).unwrap(), None);
        bss.extend(attribute(NL80211_BSS_STATUS, &1u32.to_ne_bytes()));
        let associated = attribute(NL80211_ATTR_BSS, &bss);
        assert_eq!(
            parse_scan_message(&associated).unwrap(),
            Some(Bss {
                ssid: "corp".into(),
                bssid: vec![0, 0x11, 0x22, 0x33, 0x44, 0x55],
                status: 1,
            })
        );
        let mut truncated_ies = bss.clone();
        truncated_ies.extend(attribute(NL80211_BSS_INFORMATION_ELEMENTS, b"\x00\x09corp"));
        assert!(parse_scan_message(&attribute(NL80211_ATTR_BSS, &truncated_ies)).is_err());
        let mut short_status = attribute(NL80211_BSS_STATUS, &[1]);
        short_status.extend(attribute(NL80211_BSS_BSSID, &[1]));
        assert!(parse_scan_message(&attribute(NL80211_ATTR_BSS, &short_status)).is_err());
        assert!(parse_scan_message(&attribute(NL80211_ATTR_BSS, &[7, 0])).is_err());
        assert_eq!(information_elements(b"").unwrap(), []);
        assert!(information_elements(b"\x00").is_err());
    }

    fn rate(bitrate16: Option<u16>, bitrate32: Option<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(value) = bitrate16 {
            push_attribute(&mut out, NL80211_RATE_INFO_BITRATE, &value.to_ne_bytes());
        }
        if let Some(value) = bitrate32 {
            push_attribute(&mut out, NL80211_RATE_INFO_BITRATE32, &value.to_ne_bytes());
        }
        out
    }

    #[test]
    fn stations_parse_as_mdlayher_wifi_parses_them() {
        let mut info = attribute(NL80211_STA_INFO_INACTIVE_TIME, &1500u32.to_ne_bytes());
        info.extend(attribute(NL80211_STA_INFO_RX_BYTES, &10u32.to_ne_bytes()));
        info.extend(attribute(
            NL80211_STA_INFO_RX_BYTES64,
            &(u64::MAX).to_ne_bytes(),
        ));
        info.extend(attribute(NL80211_STA_INFO_TX_BYTES, &20u32.to_ne_bytes()));
        info.extend(attribute(NL80211_STA_INFO_SIGNAL, &[(-61i8) as u8]));
        info.extend(attribute(
            NL80211_STA_INFO_TX_BITRATE,
            &rate(Some(65), None),
        ));
        info.extend(attribute(
            NL80211_STA_INFO_RX_BITRATE,
            &rate(Some(65), Some(8667)),
        ));
        info.extend(attribute(NL80211_STA_INFO_RX_PACKETS, &3u32.to_ne_bytes()));
        info.extend(attribute(NL80211_STA_INFO_TX_PACKETS, &4u32.to_ne_bytes()));
        info.extend(attribute(NL80211_STA_INFO_TX_RETRIES, &5u32.to_ne_bytes()));
        info.extend(attribute(NL80211_STA_INFO_TX_FAILED, &6u32.to_ne_bytes()));
        info.extend(attribute(NL80211_STA_INFO_BEACON_LOSS, &7u32.to_ne_bytes()));
        info.extend(attribute(
            NL80211_STA_INFO_CONNECTED_TIME,
            &u32::MAX.to_ne_bytes(),
        ));
        let mut message = attribute(NL80211_ATTR_IFINDEX, &7u32.to_ne_bytes());
        message.extend(attribute(NL80211_ATTR_MAC, &[0xaa, 0xbb, 0xcc, 0, 0, 1]));
        message.extend(attribute(NL80211_ATTR_STA_INFO, &info));
        message.extend(attribute(NL80211_ATTR_MAC, &[9; 6])); // after the statistics: unread
        let station = parse_station_message(&message).unwrap().unwrap();
        assert_eq!(
            station,
            Station {
                hardware_addr: vec![0xaa, 0xbb, 0xcc, 0, 0, 1],
                connected: i64::from(u32::MAX) * 1_000_000_000,
                inactive: 1_500_000_000,
                received_bytes: -1,
                transmitted_bytes: 20,
                received_packets: 3,
                transmitted_packets: 4,
                receive_bitrate: 866_700_000,
                transmit_bitrate: 6_500_000,
                signal: -61,
                transmit_retries: 5,
                transmit_failed: 6,
                beacon_loss: 7,
            }
        );
        // The 32-bit counter when it comes first and the 64-bit one is absent.
        let mut only32 = Station::default();
        let info = attribute(NL80211_STA_INFO_RX_BYTES, &10u32.to_ne_bytes());
        parse_station_info(&attributes(&info).unwrap(), &mut only32).unwrap();
        assert_eq!(only32.received_bytes, 10);
        assert_eq!(
            parse_station_message(&attribute(NL80211_ATTR_MAC, &[1; 6])).unwrap(),
            None
        );
        for bad in [
            attribute(NL80211_STA_INFO_SIGNAL, &[]),
            attribute(NL80211_STA_INFO_TX_FAILED, &[1, 2, 3]),
            attribute(NL80211_STA_INFO_RX_BITRATE, &[9, 9]),
            attribute(
                NL80211_STA_INFO_RX_BITRATE,
                &attribute(NL80211_RATE_INFO_BITRATE, &[1]),
            ),
        ] {
            let message = attribute(NL80211_ATTR_STA_INFO, &bad);
            assert!(parse_station_message(&message).is_err(), "{bad:?}");
        }
    }

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn scrape(dir: &Path) -> (anyhow::Result<()>, Vec<MetricFamily>) {
        let collector = WifiCollector {
            fixtures: Some(dir.to_owned()),
        };
        let mut out = Vec::new();
        let result = collector.update(&mut out);
        out.retain(|family| !family.metrics.is_empty());
        (result, out)
    }

    fn samples(out: &[MetricFamily], name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        out.iter()
            .filter(|family| family.name == name)
            .flat_map(|family| &family.metrics)
            .map(|metric| {
                let Value::Scalar(value) = metric.value else {
                    panic!("{name}");
                };
                (metric.labels.clone(), value)
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn fixtures_as_upstream_mock_reads_them() {
        let dir = std::env::temp_dir().join(format!("wifi-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            "interfaces.json",
            r#"[{"name":"wlp3s0","type":2,"frequency":5745},{"Name":"ap0","Type":3,"Frequency":2437},{"type":10}]"#,
        );
        write(
            &dir,
            "wlp3s0/bss.json",
            r#"{"ssid":"café","bssid":"AhEiM0RV","status":3}"#,
        );
        write(
            &dir,
            "wlp3s0/stationinfo.json",
            r#"[{"hardwareaddr":"AhEiM0RV","connected":1500000001,"inactive":-5,"signal":-70,
                 "receivebitrate":433300000,"receivedbytes":9007199254740993,"beaconloss":1}]"#,
        );
        let (result, out) = scrape(&dir);
        result.unwrap();
        assert_eq!(
            samples(&out, "node_wifi_interface_frequency_hertz"),
            [
                (labels(&[("device", "wlp3s0")]), 5.745e9),
                (labels(&[("device", "ap0")]), 2.437e9)
            ]
        );
        assert_eq!(
            samples(&out, "node_wifi_station_info"),
            [(
                labels(&[
                    ("device", "wlp3s0"),
                    ("bssid", "02:11:22:33:44:55"),
                    ("ssid", "café"),
                    ("mode", "ad-hoc")
                ]),
                1.0
            )]
        );
        let station = labels(&[("device", "wlp3s0"), ("mac_address", "02:11:22:33:44:55")]);
        assert_eq!(
            samples(&out, "node_wifi_station_connected_seconds_total"),
            [(station.clone(), 1.500000001)]
        );
        assert_eq!(
            samples(&out, "node_wifi_station_inactive_seconds"),
            [(station.clone(), -5e-9)]
        );
        assert_eq!(
            samples(&out, "node_wifi_station_receive_bytes_total"),
            [(station.clone(), 9007199254740993i64 as f64)]
        );
        assert_eq!(
            samples(&out, "node_wifi_station_signal_dbm"),
            [(station.clone(), -70.0)]
        );
        assert_eq!(
            out.len(),
            14,
            "every family, ap0 has neither BSS nor stations"
        );

        // A malformed BSS fails the scrape after the frequency of its interface.
        write(&dir, "wlp3s0/bss.json", r#"{"status":"1"}"#);
        let (result, out) = scrape(&dir);
        let error = format!("{:#}", result.unwrap_err());
        assert!(
            error.contains("failed to retrieve BSS for device wlp3s0"),
            "{error}"
        );
        assert_eq!(out.len(), 1);
        write(&dir, "wlp3s0/bss.json", "null");
        write(&dir, "wlp3s0/stationinfo.json", "[null]");
        let (result, out) = scrape(&dir);
        assert!(result.is_err());
        assert_eq!(
            samples(&out, "node_wifi_station_info"),
            [(
                labels(&[
                    ("device", "wlp3s0"),
                    ("bssid", ""),
                    ("ssid", ""),
                    ("mode", "client")
                ]),
                1.0
            )],
            "a null BSS is the zero BSS"
        );
        write(&dir, "interfaces.json", "[null]");
        assert!(scrape(&dir).0.is_err());
        write(&dir, "interfaces.json", "null");
        let (result, out) = scrape(&dir);
        result.unwrap();
        assert!(out.is_empty());
        std::fs::remove_file(dir.join("interfaces.json")).unwrap();
        let error = format!("{:#}", scrape(&dir).0.unwrap_err());
        assert!(
            error.contains("failed to retrieve wifi interfaces"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_nl80211_is_data_or_no_data() {
        let collector = WifiCollector { fixtures: None };
        let mut out = Vec::new();
        match collector.update(&mut out) {
            Ok(()) => {}
            Err(error) => assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}"),
        }
    }
}
