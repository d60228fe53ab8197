//! Root: the network programs, attached with each hook type, count the retransmits, resets and
//! drops of traffic the test makes between two network namespaces joined by a veth pair.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use common::Daemon;

const CLIENT: &str = "10.213.0.1";
const SERVER: &str = "10.213.0.2";
const DATA_PORT: u16 = 5001;
const CLOSED_PORT: u16 = 5002;
const ABORT_PORT: u16 = 5003;

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Two namespaces, `client` and `server`, joined by a veth pair; removed on drop.
struct Namespaces {
    client: String,
    server: String,
}

impl Namespaces {
    /// `tag` tells apart the tests of one binary, which run in parallel.
    fn create(tag: &str) -> Self {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let ns = Self {
            client: format!("ebpfio-c{id}"),
            server: format!("ebpfio-s{id}"),
        };
        let (veth_c, veth_s) = (format!("vc{id}"), format!("vs{id}"));
        run("ip", &["netns", "add", &ns.client], None);
        run("ip", &["netns", "add", &ns.server], None);
        run(
            "ip",
            &[
                "link", "add", &veth_c, "netns", &ns.client, "type", "veth", "peer", "name",
                &veth_s, "netns", &ns.server,
            ],
            None,
        );
        for (netns, veth, address) in [(&ns.client, &veth_c, CLIENT), (&ns.server, &veth_s, SERVER)]
        {
            run(
                "ip",
                &[
                    "-n",
                    netns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    veth,
                ],
                None,
            );
            run("ip", &["-n", netns, "link", "set", veth, "up"], None);
            run("ip", &["-n", netns, "link", "set", "lo", "up"], None);
        }
        ns
    }

    /// Runs `work` on a thread that has entered namespace `name`.
    fn spawn_in<T: Send + 'static>(
        name: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // setns(CLONE_NEWNET) moves only this thread.
            // SAFETY: an open namespace file's descriptor.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
    }

    fn nft(&self, ruleset: &str) {
        let nft = common::tool("nft");
        let nft = nft.to_str().unwrap();
        run(
            "ip",
            &["netns", "exec", &self.server, nft, "-f", "-"],
            Some(ruleset),
        );
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn server_address(port: u16) -> SocketAddr {
    format!("{SERVER}:{port}").parse().unwrap()
}

/// A connection whose data the server's input filter drops for `outage`: the client's kernel
/// retransmits until the filter goes, then everything arrives. 8 KiB fit in the initial
/// congestion window, so all is sent at once and nothing new is left to send: the first
/// retransmission is a tail loss probe resending the last segment, then come timeouts.
fn retransmit_through_outage(ns: &Namespaces, outage: Duration) {
    const BYTES: usize = 8 * 1024;
    let listener = Namespaces::spawn_in(&ns.server, || {
        TcpListener::bind(server_address(DATA_PORT)).expect("bind in the server namespace")
    })
    .join()
    .unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("read");
        received.len()
    });
    let stream = Namespaces::spawn_in(&ns.client, || {
        TcpStream::connect_timeout(&server_address(DATA_PORT), Duration::from_secs(5))
            .expect("connect")
    })
    .join()
    .unwrap();
    ns.nft(&format!(
        "table inet ebpfio {{\n chain input {{\n type filter hook input priority 0; policy accept;\n \
         tcp dport {DATA_PORT} drop\n }}\n}}\n"
    ));
    let client = std::thread::spawn(move || {
        let mut stream = stream;
        stream.write_all(&vec![7u8; BYTES]).expect("write");
    });
    std::thread::sleep(outage);
    ns.nft("delete table inet ebpfio");
    client.join().expect("client");
    assert_eq!(server.join().expect("server"), BYTES);
}

/// A counter of namespace `name`'s /proc/net/netstat (`TcpExt`, `TCPLossProbes`, say).
fn netstat_counter(name: &str, group: &'static str, field: &'static str) -> u64 {
    Namespaces::spawn_in(name, move || {
        // thread-self: /proc/self/net would show the process's namespace, not this thread's.
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
        let mut lines = text.lines();
        while let (Some(header), Some(values)) = (lines.next(), lines.next()) {
            let Some(names) = header.strip_prefix(&format!("{group}: ")) else {
                continue;
            };
            let values = values.strip_prefix(&format!("{group}: ")).unwrap();
            if let Some((_, value)) = names
                .split(' ')
                .zip(values.split(' '))
                .find(|(name, _)| *name == field)
            {
                return value.parse().unwrap();
            }
        }
        panic!("no {group} {field} in netstat")
    })
    .join()
    .unwrap()
}

/// `count` connection attempts to a port nobody listens on: each is answered with a reset.
fn connect_to_closed_port(ns: &Namespaces, count: usize) {
    Namespaces::spawn_in(&ns.client, move || {
        for _ in 0..count {
            let error =
                TcpStream::connect_timeout(&server_address(CLOSED_PORT), Duration::from_secs(5))
                    .expect_err("nothing listens there");
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{error}"
            );
        }
    })
    .join()
    .unwrap();
}

/// `count` datagrams to a closed UDP port: the server's kernel drops each (no socket).
fn udp_to_closed_port(ns: &Namespaces, count: usize) {
    Namespaces::spawn_in(&ns.client, move || {
        let socket = UdpSocket::bind(format!("{CLIENT}:0")).expect("udp bind");
        for _ in 0..count {
            // ICMP port unreachable may surface as an error on a later send; either is fine.
            let _ = socket.send_to(b"x", server_address(CLOSED_PORT));
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
}

/// `count` connections the client closes with a zero linger: each is a reset sent from the
/// client's socket, which the server receives.
fn abort_connections(ns: &Namespaces, count: usize) {
    let listener = Namespaces::spawn_in(&ns.server, || {
        TcpListener::bind(server_address(ABORT_PORT)).expect("bind in the server namespace")
    })
    .join()
    .unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut byte = [0u8];
            let result = stream.read(&mut byte);
            assert!(
                result
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "the server sees the reset: {result:?}"
            );
        }
    });
    Namespaces::spawn_in(&ns.client, move || {
        for _ in 0..count {
            let stream =
                TcpStream::connect_timeout(&server_address(ABORT_PORT), Duration::from_secs(5))
                    .expect("connect");
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a linger struct.
            let rc = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    std::ptr::from_ref(&linger).cast(),
                    size_of::<libc::linger>() as u32,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        }
    })
    .join()
    .unwrap();
    server.join().expect("server");
}

/// The programs this test expects attached: `kfree_skb` has its drop reason since 5.17.
fn net_programs() -> Vec<&'static str> {
    let mut programs = vec![
        "tcp_retransmit_skb",
        "tcp_retransmit_synack",
        "tcp_send_reset",
        "tcp_receive_reset",
    ];
    if common::kernel_at_least(5, 17) {
        programs.push("kfree_skb");
    }
    programs
}

fn counts_traffic_with(hook_type: &str) {
    common::tool("nft");
    let ns = Namespaces::create(&hook_type[..2]);
    let daemon = Daemon::start(&[
        &format!("--ebpf.hook-types={hook_type}"),
        "--no-collector.ebpf.irq",
        "--no-collector.ebpf.sched",
        "--no-collector.ebpf.block",
    ]);
    let before = daemon.scrape();
    common::assert_attached(&before, &net_programs(), hook_type);
    assert_eq!(
        before.value(
            "node_scrape_collector_success",
            &[("collector", "ebpf.net")]
        ),
        1.0
    );

    const REFUSED: usize = 20;
    const ABORTED: usize = 20;
    const DATAGRAMS: usize = 20;
    // The first retransmission of the outage is a tail loss probe (the connection is still Open),
    // the later ones are timeouts.
    let probes_before = netstat_counter(&ns.client, "TcpExt", "TCPLossProbes");
    retransmit_through_outage(&ns, Duration::from_millis(1500));
    let probes = netstat_counter(&ns.client, "TcpExt", "TCPLossProbes") - probes_before;
    connect_to_closed_port(&ns, REFUSED);
    abort_connections(&ns, ABORTED);
    udp_to_closed_port(&ns, DATAGRAMS);

    let after = daemon.scrape();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let retransmits = delta("ebpf_tcp_retransmits_total", &[("kind", "regular")]);
    let tlp = delta("ebpf_tcp_retransmits_total", &[("kind", "tlp")]);
    let sent = delta("ebpf_tcp_resets_sent_total", &[]);
    let received = delta("ebpf_tcp_resets_received_total", &[]);
    let netfilter = delta("ebpf_skb_drops_total", &[("reason", "netfilter_drop")]);
    let no_socket = delta("ebpf_skb_drops_total", &[("reason", "no_socket")]);
    eprintln!(
        "{hook_type}: {retransmits} retransmits, {tlp} loss probes ({probes} by the client's \
         TCPLossProbes), {sent} resets sent, {received} received, \
         drops: {netfilter} netfilter_drop, {no_socket} no_socket"
    );
    assert!(
        retransmits >= 1.0,
        "{retransmits} retransmits through a 1.5 s outage"
    );
    assert!(
        probes >= 1,
        "the outage made the client send a tail loss probe"
    );
    assert!(
        tlp >= 1.0,
        "{tlp} loss probes counted; the client's kernel sent {probes}"
    );
    // Before 6.10 tcp_send_reset fires only for resets sent from a full socket (the aborts),
    // not for those answering connections to a closed port (docs/kernels.md).
    let expected_sent = if common::kernel_at_least(6, 10) {
        REFUSED + ABORTED
    } else {
        ABORTED
    };
    assert!(
        sent >= expected_sent as f64,
        "{sent} resets sent for {ABORTED} aborted connections and {REFUSED} refused ones"
    );
    assert!(
        received >= (REFUSED + ABORTED) as f64,
        "{received} resets received for {REFUSED} refused connections and {ABORTED} aborted ones"
    );
    if !common::kernel_at_least(5, 17) {
        eprintln!("drops not checked: kfree_skb has its drop reason since 5.17");
        return;
    }
    assert!(
        netfilter >= 1.0,
        "{netfilter} netfilter drops; scrape:\n{}",
        after.text
    );
    assert!(
        no_socket >= (REFUSED + DATAGRAMS) as f64,
        "{no_socket} no-socket drops for {REFUSED} SYNs and {DATAGRAMS} datagrams to closed ports"
    );
    assert!(
        after
            .matching("ebpf_skb_drops_total", &[])
            .all(|s| s.labels["reason"] != "not_dropped_yet" && s.labels["reason"] != "consumed"),
        "consumed packets are not drops"
    );
}

test_each_hook_type!(
    counts_traffic_with =>
    tp_btf_hooks_count_tcp_events_and_drops,
    raw_tracepoint_fallback_counts_tcp_events_and_drops,
    classic_tracepoint_fallback_counts_tcp_events_and_drops
);
