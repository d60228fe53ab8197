//! The netlink collectors (`arp` with its default `--collector.arp.netlink`, `network_route`,
//! `tcpstat`, `qdisc`) against what `ip neigh`, `ip route`, `ss -tan` and `tc -s qdisc` print,
//! and `ethtool` against the veth driver, in a network namespace each test creates with
//! neighbours, routes, sockets and qdiscs of its own. Each outer test runs its
//! inner test again in a new network namespace (`unshare --net`; for a non-root user also
//! `--user --map-root-user`, which gives CAP_NET_ADMIN over the new namespace only), where it
//! sets the namespace up, starts the daemon and scrapes it over the namespace's loopback; arp
//! and network_route are also compared with node_exporter's output there, when it is installed.
//! Skipped, with the reason, where namespaces cannot be created or iproute2 is missing.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Daemon, Scrape,
    exposition::{PrintedFamily, printed_families},
    node_exporter::NodeExporter,
};

/// Set for the inner run: the inner tests do nothing (and touch no network) without it.
const IN_NETNS: &str = "NETLINK_TEST_IN_NETNS";

/// Runs the ignored test `inner` of this binary in a new network namespace; skips (printing
/// why) when one cannot be made here.
fn run_in_new_network_namespace(inner: &str) {
    for tool in ["unshare", "ip", "ss"] {
        if Command::new(tool).arg("-V").output().is_err() {
            eprintln!("skipped: {tool} is not installed");
            return;
        }
    }
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = |program: &std::path::Path| {
        let mut command = Command::new("unshare");
        if !root {
            command.args(["--user", "--map-root-user"]);
        }
        command.arg("--net").arg("--").arg(program);
        command
    };
    let probe = unshare(std::path::Path::new("true")).output().unwrap();
    if !probe.status.success() {
        eprintln!(
            "skipped: cannot create a network namespace here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let output = unshare(&std::env::current_exe().unwrap())
        .args([
            inner,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{inner} in a new network namespace failed:\n{stdout}\n{stderr}"
    );
}

/// Whether this is the inner run (in the test's own namespace).
fn inner_run() -> bool {
    std::env::var_os(IN_NETNS).is_some()
}

/// Runs `ip` with `args`, which must succeed; its output.
fn ip(args: &str) -> String {
    let output = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Loopback up, and a veth pair v0/v1, up, with 10.1.0.1/24 and 2001:db8:1::1/64 on v0 and
/// 10.2.0.1/24 on v1.
fn set_up_links() {
    for command in [
        "link set lo up",
        "link add v0 type veth peer name v1",
        "link set v0 up",
        "link set v1 up",
        "addr add 10.1.0.1/24 dev v0",
        "addr add 10.2.0.1/24 dev v1",
        "-6 addr add 2001:db8:1::1/64 dev v0 nodad",
    ] {
        ip(command);
    }
}

fn daemon(extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--collector.disable-defaults".to_owned(),
        "--web.disable-exporter-metrics".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

/// Asserts that node_exporter (Debian's 1.5.0, when installed), run in this namespace with
/// `args`, prints the `families` as `ours` does.
fn assert_node_exporter_agrees(args: &[&str], ours: &Scrape, families: &[&str]) {
    let installed = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("prometheus-node-exporter").is_file())
    });
    if !installed {
        eprintln!("not compared with node_exporter: prometheus-node-exporter is not installed");
        return;
    }
    let mut args = args.to_vec();
    args.extend([
        "--collector.disable-defaults",
        "--web.disable-exporter-metrics",
    ]);
    let theirs = printed_families(&NodeExporter::start(&args).get_metrics());
    let ours = printed_families(&ours.text);
    let missing = PrintedFamily::default();
    for family in families {
        assert_eq!(
            theirs.get(*family).unwrap_or(&missing),
            ours.get(*family).unwrap_or(&missing),
            "{family}: node_exporter (left) and collector (right) differ"
        );
    }
}

fn assert_success(scrape: &Scrape, collector: &str) {
    assert_eq!(
        scrape.value("node_scrape_collector_success", &[("collector", collector)]),
        1.0,
        "{}",
        scrape.text
    );
}

/// `(label value, sample value)` of every `name` sample, keyed by label `label`.
fn by_label(scrape: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s.labels[label].clone(), s.value))
        .collect()
}

#[test]
fn arp_counts_the_neighbours_ip_neigh_shows() {
    run_in_new_network_namespace("arp_in_a_new_network_namespace");
}

#[test]
#[ignore = "run in a network namespace of its own by arp_counts_the_neighbours_ip_neigh_shows"]
fn arp_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    set_up_links();
    for command in [
        "neigh add 10.1.0.2 lladdr 02:00:00:00:00:02 dev v0",
        "neigh add 10.1.0.3 lladdr 02:00:00:00:00:03 dev v0 nud stale",
        // NOARP entries are not in /proc/net/arp, nor counted.
        "neigh add 10.1.0.4 lladdr 02:00:00:00:00:04 dev v0 nud noarp",
        "neigh add 10.2.0.2 lladdr 02:00:00:00:01:02 dev v1",
        // Not an ARP entry.
        "-6 neigh add 2001:db8:1::2 lladdr 02:00:00:00:00:12 dev v0",
    ] {
        ip(command);
    }

    let scrape = daemon(&["--collector.arp"]).scrape();
    assert_success(&scrape, "arp");
    let ours = by_label(&scrape, "node_arp_entries", "device");

    // `ip neigh show` leaves NOARP entries out, as upstream's netlink path does.
    let mut theirs: BTreeMap<String, f64> = BTreeMap::new();
    for line in ip("-4 neigh show").lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let Some(device) = tokens.windows(2).find(|w| w[0] == "dev").map(|w| w[1]) {
            *theirs.entry(device.to_owned()).or_default() += 1.0;
        }
    }
    assert_eq!(ours, theirs, "{}", scrape.text);
    assert_eq!(ours.get("v0"), Some(&2.0), "{}", scrape.text);
    assert_eq!(ours.get("v1"), Some(&1.0), "{}", scrape.text);
    // node_exporter 1.5.0 reads /proc/net/arp: the same entries.
    assert_node_exporter_agrees(&["--collector.arp"], &scrape, &["node_arp_entries"]);

    let filtered = daemon(&["--collector.arp", "--collector.arp.device-exclude=^v1$"]).scrape();
    assert_eq!(
        by_label(&filtered, "node_arp_entries", "device"),
        BTreeMap::from([("v0".to_owned(), 2.0)])
    );
}

/// `ip route show table all` of `family` (`-4`, `-6`) as upstream's route_info label values
/// (device, src, dest, gw, priority, proto, weight), unicast routes only.
fn ip_routes(family: &str) -> Vec<[String; 7]> {
    const NOT_UNICAST: [&str; 9] = [
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "unreachable",
        "prohibit",
        "blackhole",
        "throw",
        "nat",
    ];
    let text = ip(&format!("{family} route show table all"));
    let mut routes = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let mut next_hops = Vec::new();
        while let Some(hop) = lines.next_if(|l| l.starts_with(char::is_whitespace)) {
            next_hops.push(hop.split_whitespace().collect::<Vec<_>>());
        }
        let mut tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.first() == Some(&"unicast") {
            tokens.remove(0);
        }
        let Some(&destination) = tokens.first() else {
            continue;
        };
        if NOT_UNICAST.contains(&destination) {
            continue;
        }
        let destination = if destination == "default" || destination.contains('/') {
            destination.to_owned()
        } else if family == "-4" {
            format!("{destination}/32")
        } else {
            format!("{destination}/128")
        };
        let value = |tokens: &[&str], key: &str| {
            tokens
                .windows(2)
                .find(|w| w[0] == key)
                .map(|w| w[1].to_owned())
        };
        let source = value(&tokens, "src").unwrap_or_default();
        let metric = value(&tokens, "metric").unwrap_or_else(|| "0".to_owned());
        // iproute2 leaves out the default protocol, boot.
        let protocol = value(&tokens, "proto").unwrap_or_else(|| "boot".to_owned());
        if next_hops.is_empty() {
            routes.push([
                value(&tokens, "dev").unwrap_or_default(),
                source,
                destination,
                value(&tokens, "via").unwrap_or_default(),
                metric,
                protocol,
                String::new(),
            ]);
        } else {
            for hop in next_hops {
                routes.push([
                    value(&hop, "dev").unwrap_or_default(),
                    source.clone(),
                    destination.clone(),
                    value(&hop, "via").unwrap_or_default(),
                    metric.clone(),
                    protocol.clone(),
                    value(&hop, "weight").unwrap_or_default(),
                ]);
            }
        }
    }
    routes
}

#[test]
fn network_route_shows_the_routes_ip_route_shows() {
    run_in_new_network_namespace("network_route_in_a_new_network_namespace");
}

#[test]
#[ignore = "run in a network namespace of its own by network_route_shows_the_routes_ip_route_shows"]
fn network_route_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    set_up_links();
    for command in [
        "route add 198.51.100.0/24 via 10.1.0.2 src 10.1.0.1 metric 50 proto static",
        // The same route in another table: one series, counted twice.
        "route add 198.51.100.0/24 via 10.1.0.2 src 10.1.0.1 metric 50 proto static table 200",
        "route add 192.0.2.0/24 proto bird nexthop via 10.1.0.2 dev v0 weight 2 nexthop via 10.2.0.2 dev v1 weight 1",
        "route add default via 10.1.0.2 proto dhcp metric 100",
        "route add 203.0.113.7 dev v1 table 100",
        "route add blackhole 203.0.113.0/24",
        "-6 route add 2001:db8:2::/48 via 2001:db8:1::2 dev v0 metric 1024 proto static",
        "-6 route add 2001:db8:3::/64 dev v1 metric 10",
        "-6 route add 2001:db8:4::/64 nexthop via 2001:db8:1::2 dev v0 weight 3 nexthop via fe80::1 dev v1 weight 1",
    ] {
        ip(command);
    }

    let scrape = daemon(&["--collector.network_route"]).scrape();
    assert_success(&scrape, "network_route");
    const LABELS: [&str; 7] = ["device", "src", "dest", "gw", "priority", "proto", "weight"];
    let ours: BTreeSet<[String; 7]> = scrape
        .samples
        .iter()
        .filter(|s| s.name == "node_network_route_info")
        .map(|s| {
            assert_eq!(s.value, 1.0);
            LABELS.map(|label| s.labels[label].clone())
        })
        .collect();
    let our_counts = by_label(&scrape, "node_network_routes", "device");

    let theirs: Vec<[String; 7]> = [ip_routes("-4"), ip_routes("-6")].concat();
    let mut their_counts: BTreeMap<String, f64> = BTreeMap::new();
    for route in &theirs {
        *their_counts.entry(route[0].clone()).or_default() += 1.0;
    }
    let theirs: BTreeSet<[String; 7]> = theirs.into_iter().collect();
    assert_eq!(ours, theirs, "{}", scrape.text);
    assert_eq!(our_counts, their_counts, "{}", scrape.text);

    // What the setup makes, so that the comparison is not of two empty sets.
    for expected in [
        [
            "v0",
            "10.1.0.1",
            "198.51.100.0/24",
            "10.1.0.2",
            "50",
            "static",
            "",
        ],
        ["v0", "", "192.0.2.0/24", "10.1.0.2", "0", "bird", "2"],
        ["v1", "", "192.0.2.0/24", "10.2.0.2", "0", "bird", "1"],
        ["v0", "", "default", "10.1.0.2", "100", "dhcp", ""],
        ["v1", "", "203.0.113.7/32", "", "0", "boot", ""],
        ["v0", "10.1.0.1", "10.1.0.0/24", "", "0", "kernel", ""],
        [
            "v0",
            "",
            "2001:db8:2::/48",
            "2001:db8:1::2",
            "1024",
            "static",
            "",
        ],
        ["v1", "", "2001:db8:4::/64", "fe80::1", "1024", "boot", "1"],
        [
            "v0",
            "",
            "2001:db8:4::/64",
            "2001:db8:1::2",
            "1024",
            "boot",
            "3",
        ],
    ] {
        assert!(
            ours.contains(&expected.map(String::from)),
            "{expected:?} missing:\n{}",
            scrape.text
        );
    }
    assert!(
        !scrape.text.contains("203.0.113.0/24"),
        "a blackhole route is not unicast"
    );
    assert_node_exporter_agrees(
        &["--collector.network_route"],
        &scrape,
        &["node_network_route_info", "node_network_routes"],
    );
}

/// `ss -tan`'s sockets per upstream state name, and the sums of its Recv-Q and Send-Q.
fn ss_states() -> (BTreeMap<String, f64>, f64, f64) {
    let output = Command::new("ss").arg("-tan").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut states: BTreeMap<String, f64> = BTreeMap::new();
    let (mut received, mut sent) = (0.0, 0.0);
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [state, recv_q, send_q, ..] = fields[..] else {
            continue;
        };
        let name = match state {
            "ESTAB" => "established",
            "SYN-SENT" => "syn_sent",
            "SYN-RECV" => "syn_recv",
            "FIN-WAIT-1" => "fin_wait1",
            "FIN-WAIT-2" => "fin_wait2",
            "TIME-WAIT" => "time_wait",
            "UNCONN" => "close",
            "CLOSE-WAIT" => "close_wait",
            "LAST-ACK" => "last_ack",
            "LISTEN" => "listen",
            "CLOSING" => "closing",
            other => panic!("ss state {other:?}"),
        };
        *states.entry(name.to_owned()).or_default() += 1.0;
        received += recv_q.parse::<f64>().unwrap();
        sent += send_q.parse::<f64>().unwrap();
    }
    (states, received, sent)
}

/// Waits until `ss -tan` shows `count` sockets in `state` (state changes after a close are
/// asynchronous).
fn wait_for_state(state: &str, count: f64) {
    let started = Instant::now();
    while ss_states().0.get(state).copied().unwrap_or_default() < count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {count} {state} sockets"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcpstat_counts_the_sockets_ss_shows() {
    run_in_new_network_namespace("tcpstat_in_a_new_network_namespace");
}

#[test]
#[ignore = "run in a network namespace of its own by tcpstat_counts_the_sockets_ss_shows"]
fn tcpstat_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    ip("link set lo up");
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    // Accepted, with 1000 unread bytes in the server side's receive queue.
    let mut unread = TcpStream::connect(v4.local_addr().unwrap()).unwrap();
    let (_unread_server, _) = v4.accept().unwrap();
    unread.write_all(&[7; 1000]).unwrap();
    // Accepted over IPv6, with 300 unread bytes at the client.
    let _v6_client = TcpStream::connect(v6.local_addr().unwrap()).unwrap();
    let (mut v6_server, _) = v6.accept().unwrap();
    v6_server.write_all(&[8; 300]).unwrap();
    // Closed by the client only: FIN-WAIT-2 and CLOSE-WAIT.
    let half = TcpStream::connect(v4.local_addr().unwrap()).unwrap();
    let (_half_server, _) = v4.accept().unwrap();
    half.shutdown(Shutdown::Both).unwrap();
    drop(half);
    // Closed by both, the client first: TIME-WAIT.
    let closed = TcpStream::connect(v4.local_addr().unwrap()).unwrap();
    let (closed_server, _) = v4.accept().unwrap();
    drop(closed);
    wait_for_state("close_wait", 2.0);
    drop(closed_server);
    wait_for_state("time_wait", 1.0);
    // Not accepted: in the listener's accept queue (its Recv-Q).
    let _queued = TcpStream::connect(v4.local_addr().unwrap()).unwrap();

    let daemon = daemon(&["--collector.tcpstat"]);
    // Everything but the scrape's own connection, which is established at both ends while
    // the collector runs.
    let (mut states, received, sent) = ss_states();
    *states.entry("established".to_owned()).or_default() += 2.0;
    let scrape = daemon.scrape();
    assert_success(&scrape, "tcpstat");
    let mut ours = by_label(&scrape, "node_tcp_connection_states", "state");
    assert_eq!(
        ours.remove("rx_queued_bytes"),
        Some(received),
        "{}",
        scrape.text
    );
    assert_eq!(
        ours.remove("tx_queued_bytes"),
        Some(sent),
        "{}",
        scrape.text
    );
    assert_eq!(ours, states, "{}", scrape.text);

    // What the setup makes: 2 listeners and the daemon's; in Recv-Q, 1000 + 300 unread bytes,
    // 1 queued connection and the CLOSE-WAIT socket's FIN (a sequence number not read); the
    // listeners' backlogs in Send-Q.
    assert_eq!(ours["listen"], 3.0, "{}", scrape.text);
    assert_eq!(ours["time_wait"], 1.0, "{}", scrape.text);
    assert_eq!(ours["fin_wait2"], 1.0, "{}", scrape.text);
    assert_eq!(ours["close_wait"], 1.0, "{}", scrape.text);
    assert_eq!(ours["established"], 2.0 * 3.0 + 2.0, "{}", scrape.text);
    assert_eq!(received, 1302.0);
    assert!(sent >= 2.0 * 128.0, "listeners' backlogs: {sent}");
}

/// Runs `tc` with `args`, which must succeed; its output.
fn tc(args: &str) -> String {
    let output = Command::new("tc")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tc {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A veth pair q0/q1, up, quiet: no IPv6 (no router solicitations, no MLD), one IPv4 address on
/// q0 and a static neighbour behind it, so that only the datagrams a test sends leave q0.
fn set_up_quiet_links() {
    ip("link set lo up");
    ip("link add q0 type veth peer name q1");
    for device in ["q0", "q1"] {
        // Absent when the kernel has no IPv6: nothing to silence then.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6"),
            "1",
        );
    }
    ip("link set q0 up");
    ip("link set q1 up");
    ip("addr add 10.3.0.1/24 dev q0");
    ip("neigh add 10.3.0.2 lladdr 02:00:00:00:03:02 dev q0");
}

/// Root qdiscs as `tc -s qdisc show` prints them: (device, kind) to bytes, packets, drops,
/// requeues, overlimits, queue length and backlog.
fn tc_root_qdiscs() -> BTreeMap<(String, String), [f64; 7]> {
    let text = tc("-s qdisc show");
    let mut qdiscs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.first() != Some(&"qdisc") || !tokens.contains(&"root") {
            continue;
        }
        let device = tokens.windows(2).find(|w| w[0] == "dev").unwrap()[1];
        // " Sent 426 bytes 5 pkt (dropped 0, overlimits 0 requeues 0)"
        // " backlog 0b 0p requeues 0"
        let number = |token: &str| -> f64 {
            token
                .trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or_else(|_| panic!("{token:?} in {text}"))
        };
        let sent: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let backlog: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        qdiscs.insert(
            (device.to_owned(), tokens[1].to_owned()),
            [
                number(sent[1]),
                number(sent[3]),
                number(sent[6]),
                number(sent[10]),
                number(sent[8]),
                number(backlog[2]),
                number(backlog[1]),
            ],
        );
    }
    qdiscs
}

#[test]
fn qdisc_reports_the_root_qdiscs_tc_shows() {
    run_in_new_network_namespace("qdisc_in_a_new_network_namespace");
}

#[test]
#[ignore = "run in a network namespace of its own by qdisc_reports_the_root_qdiscs_tc_shows"]
fn qdisc_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    if Command::new("tc").arg("-V").output().is_err() {
        eprintln!("skipped: tc is not installed");
        return;
    }
    set_up_quiet_links();
    tc("qdisc add dev q0 root handle 1: pfifo limit 100");
    // mq: a root qdisc with a child per queue, which is not reported.
    tc("qdisc add dev q1 root handle 2: mq");
    // Not a root qdisc (parent ffff:fff1); the module may be missing here.
    let _ = Command::new("tc")
        .args(["qdisc", "add", "dev", "q0", "ingress"])
        .output();
    let sender = std::net::UdpSocket::bind("10.3.0.1:0").unwrap();
    for _ in 0..5 {
        sender.send_to(&[0; 100], "10.3.0.2:9").unwrap();
    }

    let families = [
        "node_qdisc_bytes_total",
        "node_qdisc_packets_total",
        "node_qdisc_drops_total",
        "node_qdisc_requeues_total",
        "node_qdisc_overlimits_total",
        "node_qdisc_current_queue_length",
        "node_qdisc_backlog",
    ];
    let scrape = daemon(&["--collector.qdisc"]).scrape();
    assert_success(&scrape, "qdisc");
    let mut ours: BTreeMap<(String, String), [f64; 7]> = BTreeMap::new();
    for (index, family) in families.iter().enumerate() {
        for sample in scrape.samples.iter().filter(|s| s.name == *family) {
            let key = (
                sample.labels["device"].clone(),
                sample.labels["kind"].clone(),
            );
            ours.entry(key).or_default()[index] = sample.value;
        }
    }
    assert_eq!(ours, tc_root_qdiscs(), "{}", scrape.text);
    let key = |device: &str, kind: &str| (device.to_owned(), kind.to_owned());
    assert_eq!(
        ours.keys().cloned().collect::<Vec<_>>(),
        [key("lo", "noqueue"), key("q0", "pfifo"), key("q1", "mq")],
        "{}",
        scrape.text
    );
    // Five frames of 100 bytes of payload, 8 of UDP, 20 of IPv4 and 14 of Ethernet.
    assert_eq!(
        ours[&key("q0", "pfifo")][..2],
        [5.0 * 142.0, 5.0],
        "{}",
        scrape.text
    );
    assert_node_exporter_agrees(&["--collector.qdisc"], &scrape, &families);

    let filtered = daemon(&["--collector.qdisc", "--collector.qdisc.device-include=^q"]).scrape();
    let devices: BTreeSet<String> = filtered
        .samples
        .iter()
        .filter(|s| s.name == "node_qdisc_packets_total")
        .map(|s| s.labels["device"].clone())
        .collect();
    assert_eq!(devices, BTreeSet::from(["q0".to_owned(), "q1".to_owned()]));
}

#[test]
fn ethtool_reports_what_the_veth_driver_answers() {
    run_in_new_network_namespace("ethtool_in_a_new_network_namespace");
}

#[test]
#[ignore = "run in a network namespace of its own by ethtool_reports_what_the_veth_driver_answers"]
fn ethtool_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    set_up_quiet_links();
    // The collector lists /sys/class/net, which shows the namespace sysfs was mounted in: a
    // tree of this namespace's devices (and one that is gone, and bonding_masters, a file).
    let sysfs = std::env::temp_dir().join(format!("ethtool-netns-{}", std::process::id()));
    let class_net = sysfs.join("class/net");
    for device in ["lo", "q0", "q1", "gone0"] {
        std::fs::create_dir_all(class_net.join(device)).unwrap();
    }
    std::fs::write(class_net.join("bonding_masters"), "").unwrap();
    let sysfs_flag = format!("--path.sysfs={}", sysfs.display());
    let sender = std::net::UdpSocket::bind("10.3.0.1:0").unwrap();
    for _ in 0..3 {
        sender.send_to(&[0; 64], "10.3.0.2:9").unwrap();
    }

    let scrape = daemon(&["--collector.ethtool", &sysfs_flag]).scrape();
    assert_success(&scrape, "ethtool");
    let info = |device: &str| {
        scrape.value(
            "node_ethtool_info",
            &[
                ("bus_info", ""),
                ("device", device),
                ("driver", "veth"),
                ("expansion_rom_version", ""),
                ("firmware_version", ""),
                ("version", "1.0"),
            ],
        )
    };
    assert_eq!(info("q0"), 1.0, "{}", scrape.text);
    assert_eq!(info("q1"), 1.0, "{}", scrape.text);
    // veth's first statistic is its peer's interface index.
    let index = |device: &str| -> f64 {
        let line = ip(&format!("-o link show {device}"));
        line.split(':').next().unwrap().trim().parse().unwrap()
    };
    let peers = by_label(&scrape, "node_ethtool_peer_ifindex", "device");
    assert_eq!(
        peers,
        BTreeMap::from([
            ("q0".to_owned(), index("q1")),
            ("q1".to_owned(), index("q0"))
        ]),
        "{}",
        scrape.text
    );
    // veth has link settings (10000 Mb/s, no link modes), lo has none.
    let autonegotiate = by_label(&scrape, "node_network_autonegotiate", "device");
    assert_eq!(
        autonegotiate,
        BTreeMap::from([("q0".to_owned(), 0.0), ("q1".to_owned(), 0.0)]),
        "{}",
        scrape.text
    );
    assert!(
        !scrape.text.contains("device=\"lo\"") && !scrape.text.contains("gone0"),
        "{}",
        scrape.text
    );
    // node_exporter 1.5.0 prints the same for every family of the collector.
    let families: BTreeSet<&str> = scrape
        .samples
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| name.starts_with("node_ethtool_") || name.starts_with("node_network_"))
        .collect();
    assert!(families.len() > 5, "{}", scrape.text);
    let families: Vec<&str> = families.into_iter().collect();
    assert_node_exporter_agrees(&["--collector.ethtool", &sysfs_flag], &scrape, &families);

    let filtered = daemon(&[
        "--collector.ethtool",
        &sysfs_flag,
        "--collector.ethtool.device-exclude=^q1$",
        "--collector.ethtool.metrics-include=^peer_",
    ])
    .scrape();
    let stats: BTreeSet<&str> = filtered
        .samples
        .iter()
        .filter(|s| s.name.starts_with("node_ethtool_"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        stats,
        BTreeSet::from(["node_ethtool_info", "node_ethtool_peer_ifindex"]),
        "{}",
        filtered.text
    );
    assert!(
        !filtered.text.contains("device=\"q1\""),
        "{}",
        filtered.text
    );
    std::fs::remove_dir_all(&sysfs).unwrap();
}
