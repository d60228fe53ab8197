//! `tcpstat`: TCP sockets per state, and the bytes in their receive and send queues, from
//! inet_diag (`SOCK_DIAG_BY_FAMILY` dumps of AF_INET, and of AF_INET6 when
//! `<procfs>/net/tcp6` exists), as node_exporter's tcpstat collector. The queue sizes are those
//! of `struct inet_diag_msg` (for a listening socket its accept backlog and its maximum, as the
//! kernel reports them); upstream also asks for each socket's `tcp_info`, which it never reads,
//! and which costs the kernel a lock of every socket, so it is not asked for here. The states
//! keep upstream's numbering, in which the two queue totals are states 12 and 13; a state the
//! kernel does not report (0, or above 13) is counted as `unknown`.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use netlink_packet_core::Parseable as _;
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};

use super::netlink_dump;
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "tcpstat",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// Upstream's `TCPFAll`: every state bit (0 to 11).
const ALL_STATES: u32 = 0xFFF;
/// Upstream's keys of the queue totals, after the states.
const RX_QUEUED: u8 = 12;
const TX_QUEUED: u8 = 13;
/// Where states upstream has no name for are counted.
const UNKNOWN: u8 = 0;

struct TcpstatCollector {
    tcp6: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(TcpstatCollector {
        tcp6: context.proc_path("net/tcp6"),
    }))
}

/// Upstream's `tcpConnectionState.String()`.
fn state_name(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        RX_QUEUED => "rx_queued_bytes",
        TX_QUEUED => "tx_queued_bytes",
        _ => "unknown",
    }
}

/// Adds one socket's `inet_diag_msg` to `stats` (upstream's `parseTCPStats`).
fn add_socket(stats: &mut BTreeMap<u8, f64>, payload: &[u8]) -> anyhow::Result<()> {
    let socket = InetResponseHeader::parse(payload)
        .map_err(|e| anyhow::anyhow!("malformed inet_diag message: {e}"))?;
    *stats.entry(TX_QUEUED).or_default() += f64::from(socket.send_queue);
    *stats.entry(RX_QUEUED).or_default() += f64::from(socket.recv_queue);
    let state = match socket.state {
        0 | 14.. => UNKNOWN,
        state => state,
    };
    *stats.entry(state).or_default() += 1.0;
    Ok(())
}

/// Adds every TCP socket of `family` to `stats`.
fn dump_family(family: u8, stats: &mut BTreeMap<u8, f64>) -> anyhow::Result<()> {
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::from_bits_retain(ALL_STATES),
        socket_id: if family == AF_INET6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        },
    };
    netlink_dump::dump(
        netlink_dump::NETLINK_SOCK_DIAG,
        SockDiagMessage::InetRequest(request),
        |kind, payload| {
            if kind == SOCK_DIAG_BY_FAMILY {
                add_socket(stats, payload)?;
            }
            Ok(())
        },
    )
}

impl Collector for TcpstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut stats = BTreeMap::new();
        dump_family(AF_INET, &mut stats).context("couldn't get tcpstats")?;
        if std::fs::metadata(&self.tcp6).is_ok() {
            dump_family(AF_INET6, &mut stats).context("couldn't get tcp6stats")?;
        }
        let mut family =
            MetricFamily::gauge("node_tcp_connection_states", "Number of connection states.");
        for (state, value) in stats {
            family.push([("state", state_name(state))], value);
        }
        out.push(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `inet_diag_msg` of `family` in `state` with the given queues.
    fn socket(family: u8, state: u8, rqueue: u32, wqueue: u32) -> Vec<u8> {
        let mut bytes = vec![family, state, 0, 0];
        bytes.extend_from_slice(&[0; 48]); // inet_diag_sockid
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // expires
        bytes.extend_from_slice(&rqueue.to_ne_bytes());
        bytes.extend_from_slice(&wqueue.to_ne_bytes());
        bytes.extend_from_slice(&1000u32.to_ne_bytes()); // uid
        bytes.extend_from_slice(&12345u32.to_ne_bytes()); // inode
        bytes
    }

    fn named(stats: &BTreeMap<u8, f64>) -> Vec<(&'static str, f64)> {
        stats.iter().map(|(s, v)| (state_name(*s), *v)).collect()
    }

    #[test]
    fn sockets_are_counted_per_state_with_their_queues() {
        let mut stats = BTreeMap::new();
        add_socket(&mut stats, &socket(AF_INET, 10, 0, 4096)).unwrap();
        add_socket(&mut stats, &socket(AF_INET, 1, 12, 0)).unwrap();
        add_socket(&mut stats, &socket(AF_INET6, 1, u32::MAX, 7)).unwrap();
        add_socket(&mut stats, &socket(AF_INET, 6, 0, 0)).unwrap();
        assert_eq!(
            named(&stats),
            [
                ("established", 2.0),
                ("time_wait", 1.0),
                ("listen", 1.0),
                ("rx_queued_bytes", 12.0 + f64::from(u32::MAX)),
                ("tx_queued_bytes", 4103.0),
            ]
        );
    }

    #[test]
    fn odd_states_and_short_messages() {
        let mut stats = BTreeMap::new();
        add_socket(&mut stats, &socket(AF_INET, 0, 0, 0)).unwrap();
        add_socket(&mut stats, &socket(AF_INET, 200, 0, 0)).unwrap();
        // Upstream's numbering: a state 12 lands on the receive-queue key.
        add_socket(&mut stats, &socket(AF_INET, 12, 5, 0)).unwrap();
        assert_eq!(
            named(&stats),
            [
                ("unknown", 2.0),
                ("rx_queued_bytes", 6.0),
                ("tx_queued_bytes", 0.0)
            ]
        );
        assert!(add_socket(&mut stats, &socket(AF_INET, 1, 0, 0)[..71]).is_err());
        assert!(add_socket(&mut stats, &[]).is_err());
    }
}
