//! `infiniband`: InfiniBand and RDMA port state and counters from
//! /sys/class/infiniband/<device>/ports/<port>/{state,phys_state,rate,counters,counters_ext,
//! hw_counters}, as procfs' `InfiniBandClass` reads them (EFA on EC2, Mellanox ConnectX...).
//!
//! Not obvious: the device is read whole before the filter applies, so a broken device that is
//! filtered out still fails the scrape; a file missing anywhere in a device (`fw_ver`, `state`,
//! the `ports` folder) makes the whole collector "no data", as upstream's `os.ErrNotExist`
//! check sees it through the wrapped error; `port_rcv_data`/`port_xmit_data` (and their `_64`
//! forms) count 4-byte words and are multiplied by 4, wrapping as Go's `uint64` does.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::{DeviceFilter, FlagSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

const DEVICE_INCLUDE: &str = "collector.infiniband.device-include";
const DEVICE_EXCLUDE: &str = "collector.infiniband.device-exclude";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "infiniband",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            DEVICE_INCLUDE,
            None,
            "Regexp of infiniband devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            DEVICE_EXCLUDE,
            None,
            "Regexp of infiniband devices to exclude (mutually exclusive to device-include).",
        ),
    ],
    kernel: None,
    build,
};

struct InfinibandCollector {
    class: PathBuf,
    filter: DeviceFilter,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let include = context.flags.regex(DEVICE_INCLUDE)?;
    let exclude = context.flags.regex(DEVICE_EXCLUDE)?;
    // Upstream takes both when both are given (an include beside an exclude is not refused).
    for (flag, pattern) in [(DEVICE_INCLUDE, &include), (DEVICE_EXCLUDE, &exclude)] {
        if let Some(pattern) = pattern {
            tracing::info!(flag = pattern.as_str(), "Parsed flag --{flag}");
        }
    }
    Ok(Arc::new(InfinibandCollector {
        class: context.sys_path("class/infiniband"),
        filter: DeviceFilter::new(exclude, include),
    }))
}

/// `(metric, help, type)` of every per-port family, as upstream describes them.
const FAMILIES: &[(&str, &str, MetricType)] = &[
    (
        "legacy_multicast_packets_received_total",
        "Number of multicast packets received",
        MetricType::Counter,
    ),
    (
        "legacy_multicast_packets_transmitted_total",
        "Number of multicast packets transmitted",
        MetricType::Counter,
    ),
    (
        "legacy_data_received_bytes_total",
        "Number of data octets received on all links",
        MetricType::Counter,
    ),
    (
        "legacy_packets_received_total",
        "Number of data packets received on all links",
        MetricType::Counter,
    ),
    (
        "legacy_unicast_packets_received_total",
        "Number of unicast packets received",
        MetricType::Counter,
    ),
    (
        "legacy_unicast_packets_transmitted_total",
        "Number of unicast packets transmitted",
        MetricType::Counter,
    ),
    (
        "legacy_data_transmitted_bytes_total",
        "Number of data octets transmitted on all links",
        MetricType::Counter,
    ),
    (
        "legacy_packets_transmitted_total",
        "Number of data packets received on all links",
        MetricType::Counter,
    ),
    (
        "excessive_buffer_overrun_errors_total",
        "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.",
        MetricType::Counter,
    ),
    (
        "link_downed_total",
        "Number of times the link failed to recover from an error state and went down",
        MetricType::Counter,
    ),
    (
        "link_error_recovery_total",
        "Number of times the link successfully recovered from an error state",
        MetricType::Counter,
    ),
    (
        "local_link_integrity_errors_total",
        "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.",
        MetricType::Counter,
    ),
    (
        "multicast_packets_received_total",
        "Number of multicast packets received (including errors)",
        MetricType::Counter,
    ),
    (
        "multicast_packets_transmitted_total",
        "Number of multicast packets transmitted (including errors)",
        MetricType::Counter,
    ),
    (
        "physical_state_id",
        "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)",
        MetricType::Gauge,
    ),
    (
        "port_constraint_errors_received_total",
        "Number of packets received on the switch physical port that are discarded",
        MetricType::Counter,
    ),
    (
        "port_constraint_errors_transmitted_total",
        "Number of packets not transmitted from the switch physical port",
        MetricType::Counter,
    ),
    (
        "port_data_received_bytes_total",
        "Number of data octets received on all links",
        MetricType::Counter,
    ),
    (
        "port_data_transmitted_bytes_total",
        "Number of data octets transmitted on all links",
        MetricType::Counter,
    ),
    (
        "port_discards_received_total",
        "Number of inbound packets discarded by the port because the port is down or congested",
        MetricType::Counter,
    ),
    (
        "port_discards_transmitted_total",
        "Number of outbound packets discarded by the port because the port is down or congested",
        MetricType::Counter,
    ),
    (
        "port_errors_received_total",
        "Number of packets containing an error that were received on this port",
        MetricType::Counter,
    ),
    (
        "port_packets_received_total",
        "Number of packets received on all VLs by this port (including errors)",
        MetricType::Counter,
    ),
    (
        "port_packets_transmitted_total",
        "Number of packets transmitted on all VLs from this port (including errors)",
        MetricType::Counter,
    ),
    (
        "port_transmit_wait_total",
        "Number of ticks during which the port had data to transmit but no data was sent during the entire tick",
        MetricType::Counter,
    ),
    (
        "rate_bytes_per_second",
        "Maximum signal transfer rate",
        MetricType::Gauge,
    ),
    (
        "state_id",
        "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)",
        MetricType::Gauge,
    ),
    (
        "unicast_packets_received_total",
        "Number of unicast packets received (including errors)",
        MetricType::Counter,
    ),
    (
        "unicast_packets_transmitted_total",
        "Number of unicast packets transmitted (including errors)",
        MetricType::Counter,
    ),
    (
        "port_receive_remote_physical_errors_total",
        "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
        MetricType::Counter,
    ),
    (
        "port_receive_switch_relay_errors_total",
        "Number of packets that could not be forwarded by the switch.",
        MetricType::Counter,
    ),
    (
        "symbol_error_total",
        "Number of minor link errors detected on one or more physical lanes.",
        MetricType::Counter,
    ),
    (
        "vl15_dropped_total",
        "Number of incoming VL15 packets dropped due to resource limitations.",
        MetricType::Counter,
    ),
    (
        "duplicate_requests_packets_total",
        "The number of received packets. A duplicate request is a request that had been previously executed.",
        MetricType::Counter,
    ),
    (
        "implied_nak_seq_errors_total",
        "The number of time the requested decided an ACK. with a PSN larger than the expected PSN for an RDMA read or response.",
        MetricType::Counter,
    ),
    (
        "lifespan_seconds",
        "The maximum period in ms which defines the aging of the counter reads. Two consecutive reads within this period might return the same values.",
        MetricType::Gauge,
    ),
    (
        "local_ack_timeout_errors_total",
        "The number of times QP's ack timer expired for RC, XRC, DCT QPs at the sender side. The QP retry limit was not exceed, therefore it is still recoverable error.",
        MetricType::Counter,
    ),
    (
        "np_cnp_packets_sent_total",
        "The number of CNP packets sent by the Notification Point when it noticed congestion experienced in the RoCEv2 IP header (ECN bits). The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "np_ecn_marked_roce_packets_received_total",
        "The number of RoCEv2 packets received by the notification point which were marked for experiencing the congestion (ECN bits where '11' on the ingress RoCE traffic) . The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "out_of_buffer_drops_total",
        "The number of drops occurred due to lack of WQE for the associated QPs.",
        MetricType::Counter,
    ),
    (
        "out_of_sequence_packets_received_total",
        "The number of out of sequence packets received.",
        MetricType::Counter,
    ),
    (
        "packet_sequence_errors_total",
        "The number of received NAK sequence error packets. The QP retry limit was not exceeded.",
        MetricType::Counter,
    ),
    (
        "req_cqes_errors_total",
        "The number of times requester detected CQEs completed with errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "req_cqes_flush_errors_total",
        "The number of times requester detected CQEs completed with flushed errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "req_remote_access_errors_total",
        "The number of times requester detected remote access errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "req_remote_invalid_request_errors_total",
        "The number of times requester detected remote invalid request errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "resp_cqes_errors_total",
        "The number of times responder detected CQEs completed with errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "resp_cqes_flush_errors_total",
        "The number of times responder detected CQEs completed with flushed errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "resp_local_length_errors_total",
        "The number of times responder detected local length errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "resp_remote_access_errors_total",
        "The number of times responder detected remote access errors. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "rnr_nak_retry_packets_received_total",
        "The number of received RNR NAK packets. The QP retry limit was not exceeded.",
        MetricType::Counter,
    ),
    (
        "roce_adp_retransmits_total",
        "The number of adaptive retransmissions for RoCE traffic. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
        MetricType::Counter,
    ),
    (
        "roce_adp_retransmits_timeout_total",
        "The number of times RoCE traffic reached timeout due to adaptive retransmission. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
        MetricType::Counter,
    ),
    (
        "roce_slow_restart_used_total",
        "The number of times RoCE slow restart was used. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
        MetricType::Counter,
    ),
    (
        "roce_slow_restart_cnps_total",
        "The number of times RoCE slow restart generated CNP packets. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
        MetricType::Counter,
    ),
    (
        "roce_slow_restart_total",
        "The number of times RoCE slow restart changed state to slow restart. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
        MetricType::Counter,
    ),
    (
        "rp_cnp_packets_handled_total",
        "The number of CNP packets handled by the Reaction Point HCA to throttle the transmission rate. The counters was added in MLNX_OFED 4.1",
        MetricType::Counter,
    ),
    (
        "rp_cnp_ignored_packets_received_total",
        "The number of CNP packets received and ignored by the Reaction Point HCA. This counter should not raise if RoCE Congestion Control was enabled in the network. If this counter raise, verify that ECN was enabled on the adapter.",
        MetricType::Counter,
    ),
    (
        "rx_atomic_requests_total",
        "The number of received ATOMIC request for the associated QPs.",
        MetricType::Counter,
    ),
    (
        "rx_dct_connect_requests_total",
        "The number of received connection requests for the associated DCTs.",
        MetricType::Counter,
    ),
    (
        "rx_read_requests_total",
        "The number of received READ requests for the associated QPs.",
        MetricType::Counter,
    ),
    (
        "rx_write_requests_total",
        "The number of received WRITE requests for the associated QPs.",
        MetricType::Counter,
    ),
    (
        "rx_icrc_encapsulated_errors_total",
        "The number of RoCE packets with ICRC errors. This counter was added in MLNX_OFED 4.4 and kernel 4.19",
        MetricType::Counter,
    ),
];

/// A counter file: `(file, metric, counts 4-byte words)`.
type CounterFile = (&'static str, &'static str, bool);

/// ports/<port>/counters (kernel 2.6.12 on).
const COUNTERS: &[CounterFile] = &[
    (
        "excessive_buffer_overrun_errors",
        "excessive_buffer_overrun_errors_total",
        false,
    ),
    ("link_downed", "link_downed_total", false),
    ("link_error_recovery", "link_error_recovery_total", false),
    (
        "local_link_integrity_errors",
        "local_link_integrity_errors_total",
        false,
    ),
    (
        "multicast_rcv_packets",
        "multicast_packets_received_total",
        false,
    ),
    (
        "multicast_xmit_packets",
        "multicast_packets_transmitted_total",
        false,
    ),
    (
        "port_rcv_constraint_errors",
        "port_constraint_errors_received_total",
        false,
    ),
    ("port_rcv_data", "port_data_received_bytes_total", true),
    ("port_rcv_discards", "port_discards_received_total", false),
    ("port_rcv_errors", "port_errors_received_total", false),
    ("port_rcv_packets", "port_packets_received_total", false),
    (
        "port_rcv_remote_physical_errors",
        "port_receive_remote_physical_errors_total",
        false,
    ),
    (
        "port_rcv_switch_relay_errors",
        "port_receive_switch_relay_errors_total",
        false,
    ),
    (
        "port_xmit_constraint_errors",
        "port_constraint_errors_transmitted_total",
        false,
    ),
    ("port_xmit_data", "port_data_transmitted_bytes_total", true),
    (
        "port_xmit_discards",
        "port_discards_transmitted_total",
        false,
    ),
    ("port_xmit_packets", "port_packets_transmitted_total", false),
    ("port_xmit_wait", "port_transmit_wait_total", false),
    ("symbol_error", "symbol_error_total", false),
    (
        "unicast_rcv_packets",
        "unicast_packets_received_total",
        false,
    ),
    (
        "unicast_xmit_packets",
        "unicast_packets_transmitted_total",
        false,
    ),
    ("VL15_dropped", "vl15_dropped_total", false),
];

/// ports/<port>/counters_ext: the 64-bit counters of kernels before 4.5.
const COUNTERS_EXT: &[CounterFile] = &[
    (
        "port_multicast_rcv_packets",
        "legacy_multicast_packets_received_total",
        false,
    ),
    (
        "port_multicast_xmit_packets",
        "legacy_multicast_packets_transmitted_total",
        false,
    ),
    ("port_rcv_data_64", "legacy_data_received_bytes_total", true),
    (
        "port_rcv_packets_64",
        "legacy_packets_received_total",
        false,
    ),
    (
        "port_unicast_rcv_packets",
        "legacy_unicast_packets_received_total",
        false,
    ),
    (
        "port_unicast_xmit_packets",
        "legacy_unicast_packets_transmitted_total",
        false,
    ),
    (
        "port_xmit_data_64",
        "legacy_data_transmitted_bytes_total",
        true,
    ),
    (
        "port_xmit_packets_64",
        "legacy_packets_transmitted_total",
        false,
    ),
];

/// The `lifespan` hardware counter, in milliseconds, exported in whole seconds.
const LIFESPAN: &str = "lifespan";

/// ports/<port>/hw_counters (kernel 4.6 on); `lifespan` is [`LIFESPAN`].
const HW_COUNTERS: &[CounterFile] = &[
    (
        "duplicate_request",
        "duplicate_requests_packets_total",
        false,
    ),
    ("implied_nak_seq_err", "implied_nak_seq_errors_total", false),
    (LIFESPAN, "lifespan_seconds", false),
    (
        "local_ack_timeout_err",
        "local_ack_timeout_errors_total",
        false,
    ),
    ("np_cnp_sent", "np_cnp_packets_sent_total", false),
    (
        "np_ecn_marked_roce_packets",
        "np_ecn_marked_roce_packets_received_total",
        false,
    ),
    ("out_of_buffer", "out_of_buffer_drops_total", false),
    (
        "out_of_sequence",
        "out_of_sequence_packets_received_total",
        false,
    ),
    ("packet_seq_err", "packet_sequence_errors_total", false),
    ("req_cqe_error", "req_cqes_errors_total", false),
    ("req_cqe_flush_error", "req_cqes_flush_errors_total", false),
    (
        "req_remote_access_errors",
        "req_remote_access_errors_total",
        false,
    ),
    (
        "req_remote_invalid_request",
        "req_remote_invalid_request_errors_total",
        false,
    ),
    ("resp_cqe_error", "resp_cqes_errors_total", false),
    (
        "resp_cqe_flush_error",
        "resp_cqes_flush_errors_total",
        false,
    ),
    (
        "resp_local_length_error",
        "resp_local_length_errors_total",
        false,
    ),
    (
        "resp_remote_access_errors",
        "resp_remote_access_errors_total",
        false,
    ),
    (
        "rnr_nak_retry_err",
        "rnr_nak_retry_packets_received_total",
        false,
    ),
    ("roce_adp_retrans", "roce_adp_retransmits_total", false),
    (
        "roce_adp_retrans_to",
        "roce_adp_retransmits_timeout_total",
        false,
    ),
    ("roce_slow_restart", "roce_slow_restart_used_total", false),
    (
        "roce_slow_restart_cnps",
        "roce_slow_restart_cnps_total",
        false,
    ),
    ("roce_slow_restart_trans", "roce_slow_restart_total", false),
    ("rp_cnp_handled", "rp_cnp_packets_handled_total", false),
    (
        "rp_cnp_ignored",
        "rp_cnp_ignored_packets_received_total",
        false,
    ),
    ("rx_atomic_requests", "rx_atomic_requests_total", false),
    ("rx_dct_connect", "rx_dct_connect_requests_total", false),
    (
        "rx_icrc_encapsulated",
        "rx_icrc_encapsulated_errors_total",
        false,
    ),
    ("rx_read_requests", "rx_read_requests_total", false),
    ("rx_write_requests", "rx_write_requests_total", false),
];

/// One device of /sys/class/infiniband.
#[derive(Debug, Default, PartialEq)]
struct Device {
    board_id: String,
    firmware_version: String,
    hca_type: String,
    /// By port number.
    ports: BTreeMap<u32, Port>,
}

/// One port of a device.
#[derive(Debug, Default, PartialEq)]
struct Port {
    state_id: u32,
    phys_state_id: u32,
    /// Bytes per second.
    rate: u64,
    /// Counter values by metric name (`lifespan_seconds` holds milliseconds).
    counters: HashMap<&'static str, u64>,
}

/// procfs' `parseInfiniBandDevice`: `fw_ver` is required, `board_id`, `hca_type` and
/// `node_guid` optional, every port parsed.
fn read_device(path: &Path) -> anyhow::Result<Device> {
    let mut device = Device {
        firmware_version: read::sys_read_file(&path.join("fw_ver"))
            .context("failed to read HCA firmware version")?,
        ..Device::default()
    };
    for name in ["board_id", "hca_type", "node_guid"] {
        let file = path.join(name);
        let value = match read::sys_read_file(&file) {
            Ok(value) => value,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("failed to read file {file:?}"));
            }
        };
        match name {
            "board_id" => device.board_id = value,
            "hca_type" => device.hca_type = value,
            _ => {}
        }
    }
    let ports_dir = path.join("ports");
    let ports = read::read_dir_sorted(&ports_dir)
        .with_context(|| format!("failed to list InfiniBand ports at {ports_dir:?}"))?;
    for entry in ports {
        let name = entry.name.to_string_lossy();
        let (number, port) = read_port(&entry.path, &name)?;
        device.ports.insert(number, port);
    }
    Ok(device)
}

/// procfs' `parseInfiniBandPort`: the port number is the folder's name, `link_layer`, `state`,
/// `phys_state` and `rate` are required, the counter folders read when they exist.
fn read_port(path: &Path, name: &str) -> anyhow::Result<(u32, Port)> {
    let number = goparse::parse_uint(name, 10, 32)
        .with_context(|| format!("failed to convert {name} into uint"))? as u32;
    let read = |file: &str| -> anyhow::Result<String> {
        let file = path.join(file);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read("link_layer")?;
    let mut port = Port {
        state_id: parse_state(&read("state")?)
            .with_context(|| format!("could not parse state file in {path:?}"))?,
        phys_state_id: parse_state(&read("phys_state")?)
            .with_context(|| format!("could not parse phys_state file in {path:?}"))?,
        rate: parse_rate(&read("rate")?)
            .with_context(|| format!("could not parse rate file in {path:?}"))?,
        counters: HashMap::new(),
    };
    if std::fs::metadata(path.join("counters")).is_ok() {
        read_counters(&path.join("counters"), COUNTERS, true, &mut port.counters)?;
        match read_counters(
            &path.join("counters_ext"),
            COUNTERS_EXT,
            false,
            &mut port.counters,
        ) {
            Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {}
            result => result?,
        }
    }
    if std::fs::metadata(path.join("hw_counters")).is_ok() {
        read_counters(
            &path.join("hw_counters"),
            HW_COUNTERS,
            false,
            &mut port.counters,
        )?;
    }
    Ok((number, port))
}

/// procfs' `parseState`: `<id>: <name>`, exactly one colon, the id a decimal `u32`.
fn parse_state(text: &str) -> anyhow::Result<u32> {
    let parts: Vec<&str> = text.split(':').collect();
    let [id, _name] = parts[..] else {
        anyhow::bail!("failed to split {text} into 'ID: NAME'");
    };
    let id = id.trim();
    goparse::parse_uint(id, 10, 32)
        .map(|id| id as u32)
        .with_context(|| format!("failed to convert {id} into uint"))
}

/// procfs' `parseRate`: `100 Gb/sec (4X EDR)`, the number before the first space, in Gb/s
/// (parsed as a `float32`), as bytes per second. Go's conversion of a negative or huge product
/// to `uint64` depends on the CPU; here it saturates.
fn parse_rate(text: &str) -> anyhow::Result<u64> {
    let Some((number, _)) = text.split_once(' ') else {
        anyhow::bail!("failed to split {text:?}");
    };
    let number = number.trim();
    let gbits = goparse::parse_float(number, 32)
        .with_context(|| format!("failed to convert {number} into uint"))?;
    Ok((gbits * 125_000_000.0) as u64)
}

/// procfs' `parseInfiniBandCounters`/`parseInfiniBandHwCounters` for one folder: every regular
/// file named in `files` parsed as Go's base-0 `ParseUint`; attributes the driver refuses are
/// skipped (missing, not permitted, EOPNOTSUPP, and for `counters` EINVAL), values of
/// `N/A (no PMA)` skipped, any other bad value an error.
fn read_counters(
    dir: &Path,
    files: &[CounterFile],
    skip_einval: bool,
    counters: &mut HashMap<&'static str, u64>,
) -> anyhow::Result<()> {
    let entries =
        read::read_dir_sorted(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        if !entry.file_type.is_file() {
            continue;
        }
        // procfs reads every file, and parses the ones it knows.
        let value = match read::sys_read_attribute(&entry.path) {
            Ok(value) => value,
            Err(error) if skippable(&error, skip_einval) => continue,
            Err(error) => {
                return Err(error.error)
                    .with_context(|| format!("failed to read file {:?}", entry.path));
            }
        };
        let Some(&(_, metric, words)) = files
            .iter()
            .find(|(file, _, _)| entry.name.as_encoded_bytes() == file.as_bytes())
        else {
            continue;
        };
        match goparse::parse_uint(&value, 0, 64) {
            Some(number) => {
                let number = if words {
                    number.wrapping_mul(4)
                } else {
                    number
                };
                counters.insert(metric, number);
            }
            // Old kernels print this for counters the port's agent does not have
            // (node_exporter issue 966).
            None if value.contains("N/A (no PMA)") => {}
            None => anyhow::bail!(
                "{}: strconv.ParseUint: parsing {value:?}: invalid syntax",
                entry.path.display()
            ),
        }
    }
    Ok(())
}

/// The read errors procfs skips in a counter folder.
fn skippable(error: &read::SysReadError, einval: bool) -> bool {
    error.not_found()
        || error.permission()
        || error.read_errno(libc::EOPNOTSUPP)
        || (einval && error.invalid())
}

/// procfs' `InfiniBandClass`: every entry of the class folder is a device.
fn read_class(class: &Path) -> anyhow::Result<BTreeMap<String, Device>> {
    let entries =
        read::read_dir_sorted(class).with_context(|| format!("reading {}", class.display()))?;
    let mut devices = BTreeMap::new();
    for entry in entries {
        let device = read_device(&entry.path)?;
        devices.insert(entry.name.to_string_lossy().into_owned(), device);
    }
    Ok(devices)
}

impl Collector for InfinibandCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let devices = match read_class(&self.class) {
            Ok(devices) => devices,
            Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {
                return Err(NoData(format!(
                    "infiniband statistics not found, skipping: {error:#}"
                ))
                .into());
            }
            Err(error) => return Err(error.context("error obtaining InfiniBand class info")),
        };

        let mut info = MetricFamily::gauge(
            "node_infiniband_info",
            "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
        );
        let mut families: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|(name, help, kind)| {
                MetricFamily::new(format!("node_infiniband_{name}"), *help, *kind)
            })
            .collect();
        let index = |metric: &str| FAMILIES.iter().position(|(name, _, _)| *name == metric);
        for (name, device) in devices
            .iter()
            .filter(|(name, _)| !self.filter.ignored(name))
        {
            info.push(
                [
                    ("device", name.as_str()),
                    ("board_id", device.board_id.as_str()),
                    ("firmware_version", device.firmware_version.as_str()),
                    ("hca_type", device.hca_type.as_str()),
                ],
                1.0,
            );
            for (number, port) in &device.ports {
                let labels = [("device", name.clone()), ("port", number.to_string())];
                let fixed = [
                    ("state_id", port.state_id as f64),
                    ("physical_state_id", port.phys_state_id as f64),
                    ("rate_bytes_per_second", port.rate as f64),
                ];
                let counted = port.counters.iter().map(|(metric, value)| {
                    let value = if *metric == "lifespan_seconds" {
                        // Milliseconds, divided as integers.
                        (value / 1000) as f64
                    } else {
                        *value as f64
                    };
                    (*metric, value)
                });
                for (metric, value) in fixed.into_iter().chain(counted) {
                    if let Some(i) = index(metric) {
                        families[i].push(labels.clone(), value);
                    }
                }
            }
        }
        out.push(info);
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("infiniband-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A device with one port of the given files (relative to the port).
    fn device(class: &Path, name: &str, port_files: &[(&str, &[u8])]) {
        let device = class.join(name);
        write(&device.join("fw_ver"), b"20.39.1002\n");
        let port = device.join("ports/1");
        write(&port.join("link_layer"), b"InfiniBand\n");
        write(&port.join("state"), b"4: ACTIVE\n");
        write(&port.join("phys_state"), b"5: LinkUp\n");
        write(&port.join("rate"), b"100 Gb/sec (4X EDR)\n");
        for (file, text) in port_files {
            write(&port.join(file), text);
        }
    }

    #[test]
    fn parses_states_and_rates() {
        assert_eq!(parse_state("4: ACTIVE\n").unwrap(), 4);
        assert_eq!(parse_state(" 5 : LinkUp").unwrap(), 5);
        assert!(parse_state("4 ACTIVE").is_err());
        assert!(parse_state("4: ACTIVE: x").is_err());
        assert!(parse_state("+4: ACTIVE").is_err());
        assert!(parse_state("4294967296: X").is_err());
        assert!(parse_state("").is_err());
        assert_eq!(parse_rate("100 Gb/sec (4X EDR)\n").unwrap(), 12_500_000_000);
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)").unwrap(), 312_500_000);
        assert_eq!(parse_rate("40 Gb/sec").unwrap(), 5_000_000_000);
        assert!(parse_rate("100\n").is_err());
        assert!(parse_rate("fast Gb/sec").is_err());
        assert!(parse_rate("1e39 Gb/sec").is_err(), "out of float32 range");
        assert_eq!(parse_rate("-1 Gb/sec").unwrap(), 0, "saturates, no panic");
    }

    #[test]
    fn reads_counters_as_procfs() {
        let class = temp_dir("counters");
        device(
            &class,
            "mlx5_0",
            &[
                ("counters/port_rcv_data", b"0x10\n"),
                // Multiplied by 4 with Go's wrap-around.
                ("counters/port_xmit_data", b"4611686018427387905\n"),
                ("counters/VL15_dropped", b"N/A (no PMA)\n"),
                ("counters/symbol_error", b"3\n"),
                ("counters/unknown_counter", b"garbage\n"),
                ("counters_ext/port_rcv_data_64", b"5\n"),
                ("hw_counters/lifespan", b"1999\n"),
                ("hw_counters/out_of_buffer", b"7\n"),
            ],
        );
        let devices = read_class(&class).unwrap();
        let counters = &devices["mlx5_0"].ports[&1].counters;
        assert_eq!(counters["port_data_received_bytes_total"], 64);
        assert_eq!(counters["port_data_transmitted_bytes_total"], 4);
        assert_eq!(counters["symbol_error_total"], 3);
        assert_eq!(counters["legacy_data_received_bytes_total"], 20);
        assert_eq!(counters["lifespan_seconds"], 1999);
        assert_eq!(counters["out_of_buffer_drops_total"], 7);
        assert!(!counters.contains_key("vl15_dropped_total"));
        assert_eq!(counters.len(), 6);
        assert_eq!(devices["mlx5_0"].firmware_version, "20.39.1002");
        assert_eq!(devices["mlx5_0"].ports[&1].rate, 12_500_000_000);

        let collector = InfinibandCollector {
            class: class.clone(),
            filter: DeviceFilter::default(),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let lifespan = out
            .iter()
            .find(|f| f.name == "node_infiniband_lifespan_seconds")
            .unwrap();
        assert_eq!(
            lifespan.metrics[0].value,
            crate::metrics::Value::Scalar(1.0)
        );

        // A bad value fails the scrape, naming the file.
        write(
            &class.join("mlx5_0/ports/1/hw_counters/out_of_buffer"),
            b"-7\n",
        );
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("out_of_buffer"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn missing_files_are_no_data_and_garbage_is_an_error() {
        let class = temp_dir("missing");
        let collector = InfinibandCollector {
            class: class.join("nonexistent"),
            filter: DeviceFilter::default(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());

        device(&class, "efa_0", &[]);
        std::fs::remove_file(class.join("efa_0/ports/1/state")).unwrap();
        let collector = InfinibandCollector {
            class: class.clone(),
            filter: DeviceFilter::default(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        write(&class.join("efa_0/ports/1/state"), b"ACTIVE\n");
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none());
        assert!(format!("{error:#}").contains("state"), "{error:#}");

        write(&class.join("efa_0/ports/1/state"), b"4: ACTIVE\n");
        std::fs::create_dir_all(class.join("efa_0/ports/one")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("one"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn filters_devices_after_reading_them() {
        let class = temp_dir("filter");
        device(&class, "efa_0", &[]);
        device(&class, "mlx5_0", &[]);
        let collector = InfinibandCollector {
            class: class.clone(),
            filter: DeviceFilter::new(Some(regex::Regex::new("^mlx").unwrap()), None),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let info = out
            .iter()
            .find(|f| f.name == "node_infiniband_info")
            .unwrap();
        assert_eq!(info.metrics.len(), 1);
        assert_eq!(info.metrics[0].labels[0].1, "efa_0");
        std::fs::remove_dir_all(&class).unwrap();
    }
}
