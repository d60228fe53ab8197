//! The netlink collectors (`arp` with its default `--collector.arp.netlink`, `network_route`,
//! `tcpstat`, `qdisc`, `netclass` with `--collector.netclass.netlink`) against what `ip neigh`,
//! `ip route`, `ss -tan`, `tc -s qdisc` and `ip -d -s link` print, and `ethtool` against the veth
//! driver, in a network namespace each test creates with
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

#[test]
fn netclass_netlink_reports_what_ip_link_shows() {
    run_in_new_network_namespace("netclass_netlink_in_a_new_network_namespace");
}

/// `ip link` flag names (`IFF_*`); `NO-CARRIER` and `M-DOWN` are ip's own, not flags.
const IFF_NAMES: &[(&str, u32)] = &[
    ("UP", 0x1),
    ("BROADCAST", 0x2),
    ("DEBUG", 0x4),
    ("LOOPBACK", 0x8),
    ("POINTOPOINT", 0x10),
    ("NOTRAILERS", 0x20),
    ("NOARP", 0x80),
    ("PROMISC", 0x100),
    ("ALLMULTI", 0x200),
    ("MASTER", 0x400),
    ("SLAVE", 0x800),
    ("MULTICAST", 0x1000),
    ("PORTSEL", 0x2000),
    ("AUTOMEDIA", 0x4000),
    ("DYNAMIC", 0x8000),
    ("LOWER_UP", 0x10000),
    ("DORMANT", 0x20000),
    ("ECHO", 0x40000),
];
const IFF_RUNNING: u32 = 0x40;

/// The with-stats gauges (without `_total`) and where `ip -j -s -s link` prints each
/// (`compressed` and `nohandler` only when not 0).
const IP_LINK_STATS: &[(&str, &str, &str)] = &[
    ("receive_packets", "rx", "packets"),
    ("receive_bytes", "rx", "bytes"),
    ("receive_errors", "rx", "errors"),
    ("receive_dropped", "rx", "dropped"),
    ("multicast", "rx", "multicast"),
    ("receive_length_errors", "rx", "length_errors"),
    ("receive_over_errors", "rx", "over_errors"),
    ("receive_crc_errors", "rx", "crc_errors"),
    ("receive_frame_errors", "rx", "frame_errors"),
    ("receive_fifo_errors", "rx", "fifo_errors"),
    ("receive_missed_errors", "rx", "missed_errors"),
    ("receive_compressed", "rx", "compressed"),
    ("receive_nohandler", "rx", "nohandler"),
    ("transmit_packets", "tx", "packets"),
    ("transmit_bytes", "tx", "bytes"),
    ("transmit_errors", "tx", "errors"),
    ("transmit_dropped", "tx", "dropped"),
    ("collisions", "tx", "collisions"),
    ("transmit_aborted_errors", "tx", "aborted_errors"),
    ("transmit_carrier_errors", "tx", "carrier_errors"),
    ("transmit_fifo_errors", "tx", "fifo_errors"),
    ("transmit_heartbeat_errors", "tx", "heartbeat_errors"),
    ("transmit_window_errors", "tx", "window_errors"),
    ("transmit_compressed", "tx", "compressed"),
];

/// Whether a sysfs of this network namespace can be mounted in a mount namespace of its own
/// (not where the outer /sys has parts hidden from a user namespace); why not otherwise.
fn own_sysfs_mountable() -> Result<(), String> {
    let output = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", "mount -t sysfs sysfs /sys"])
        .output()
        .unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// The collector with `extra`, in a mount namespace of its own whose /sys is a fresh sysfs,
/// which shows this network namespace's devices (the /sys inherited shows the host's).
fn daemon_with_own_sysfs(extra: &[&str]) -> Daemon {
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--",
            "sh",
            "-c",
            r#"mount -t sysfs sysfs /sys && exec "$0" "$@""#,
            common::daemon::BINARY,
            "--collector.disable-defaults",
            "--web.disable-exporter-metrics",
        ])
        .args(extra);
    Daemon::spawn(command)
}

#[test]
#[ignore = "run in a network namespace of its own by netclass_netlink_reports_what_ip_link_shows"]
fn netclass_netlink_in_a_new_network_namespace() {
    if !inner_run() {
        return;
    }
    // q0/q1: up and quiet, q0 with an alias and an altname; r1 in link mode dormant (so
    // operstate dormant); s0 up with its peer s1 down (lowerlayerdown, down).
    set_up_quiet_links();
    for command in [
        "link add r0 type veth peer name r1",
        "link add s0 type veth peer name s1",
    ] {
        ip(command);
    }
    for device in ["r0", "r1", "s0", "s1"] {
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6"),
            "1",
        );
    }
    for command in [
        "link set r1 mode dormant",
        "link set r0 up",
        "link set r1 up",
        "link set s0 up",
        "link property add dev q0 altname uplink0",
        "link property add dev q0 altname edge0",
        "link set dev q0 alias edge-uplink",
    ] {
        ip(command);
    }
    let sender = std::net::UdpSocket::bind("10.3.0.1:0").unwrap();
    for _ in 0..3 {
        sender.send_to(&[0; 64], "10.3.0.2:9").unwrap();
    }
    let own_sysfs = own_sysfs_mountable();
    if let Err(why) = &own_sysfs {
        eprintln!("sysfs attributes not compared: cannot mount a sysfs here: {why}");
    }
    let start = |extra: &[&str]| {
        if own_sysfs.is_ok() {
            daemon_with_own_sysfs(extra)
        } else {
            daemon(extra)
        }
    };
    let netlink_args = [
        "--collector.netclass",
        "--collector.netclass.netlink",
        "--collector.netclass_rtnl.with-stats",
    ];

    let links: Vec<serde_json::Value> = serde_json::from_str(&ip("-j -d -s -s link show")).unwrap();
    let scrape = start(&netlink_args).scrape();
    assert_success(&scrape, "netclass");
    let value = |name: &str, device: &str| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.name == name && s.labels.get("device").map(String::as_str) == Some(device))
            .map(|s| s.value)
    };
    let index_of = |name: &str| -> f64 {
        links.iter().find(|l| l["ifname"] == name).unwrap()["ifindex"]
            .as_f64()
            .unwrap()
    };
    let devices: BTreeSet<String> = by_label(&scrape, "node_network_up", "device")
        .into_keys()
        .collect();
    let names: BTreeSet<String> = links
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(devices, names, "{}", scrape.text);
    for link in &links {
        let device = link["ifname"].as_str().unwrap();
        let number = |key: &str| link[key].as_f64().unwrap();
        let text = |key: &str| link[key].as_str().unwrap_or_default().to_owned();
        let context = format!("{device}: {link}\n{}", scrape.text);
        let ours = |name: &str| value(name, device).unwrap_or_else(|| panic!("{name}: {context}"));
        assert_eq!(
            ours("node_network_iface_id"),
            number("ifindex"),
            "{context}"
        );
        let iflink = link["link"].as_str().map_or(number("ifindex"), &index_of);
        assert_eq!(ours("node_network_iface_link"), iflink, "{context}");
        assert_eq!(ours("node_network_mtu_bytes"), number("mtu"), "{context}");
        assert_eq!(
            ours("node_network_transmit_queue_length"),
            number("txqlen"),
            "{context}"
        );
        assert_eq!(
            ours("node_network_net_dev_group"),
            0.0,
            "group {}",
            text("group")
        );
        let link_mode = match text("linkmode").as_str() {
            "DEFAULT" => 0.0,
            "DORMANT" => 1.0,
            other => panic!("link mode {other}"),
        };
        assert_eq!(ours("node_network_iface_link_mode"), link_mode, "{context}");
        // upstream reports the link mode as dormant.
        assert_eq!(ours("node_network_dormant"), link_mode, "{context}");
        let protocol = match text("link_type").as_str() {
            "ether" => 1.0,
            "loopback" => 772.0,
            other => panic!("link type {other}"),
        };
        assert_eq!(ours("node_network_protocol_type"), protocol, "{context}");
        let flags: u32 = link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|name| IFF_NAMES.iter().find(|(n, _)| name == n))
            .map(|(_, bit)| bit)
            .sum();
        assert_eq!(
            ours("node_network_flags") as u32 & !IFF_RUNNING,
            flags,
            "{context}"
        );
        let operstate = text("operstate").to_lowercase();
        let up = if operstate == "up" { 1.0 } else { 0.0 };
        assert_eq!(ours("node_network_up"), up, "{context}");
        let duplex = if device == "lo" { "" } else { "Full" };
        let info = scrape.value(
            "node_network_info",
            &[
                ("address", &text("address")),
                ("broadcast", &text("broadcast")),
                ("device", device),
                ("duplex", duplex),
                ("ifalias", &text("ifalias")),
                ("operstate", &operstate),
            ],
        );
        assert_eq!(info, 1.0, "{context}");
        let altnames: BTreeSet<String> = scrape
            .samples
            .iter()
            .filter(|s| s.name == "node_network_altnames_info" && s.labels["device"] == device)
            .map(|s| s.labels["altname"].clone())
            .collect();
        let theirs: BTreeSet<String> = link["altnames"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(altnames, theirs, "{context}");
        // veth answers the ethtool link modes (10000 Mb/s, full duplex), lo has none.
        let speed = (device != "lo").then_some(10_000.0 * 1e6 / 8.0);
        assert_eq!(
            value("node_network_speed_bytes", device),
            speed,
            "{context}"
        );
        let stats = &link["stats64"];
        assert_eq!(
            ours("node_network_carrier_changes_total"),
            stats["tx"]["carrier_changes"].as_f64().unwrap(),
            "{context}"
        );
        for (key, direction, field) in IP_LINK_STATS {
            let ours = ours(&format!("node_network_{key}_total"));
            let theirs = stats[direction][field].as_f64().unwrap_or(0.0);
            // The scrapes run over lo: its counters grow.
            if device == "lo" {
                assert!(ours >= theirs, "{key}: {ours} < {theirs}: {context}");
            } else {
                assert_eq!(ours, theirs, "{key}: {context}");
            }
        }
    }
    assert_eq!(
        value("node_network_transmit_packets_total", "q0"),
        Some(3.0)
    );
    assert_eq!(value("node_network_receive_packets_total", "q1"), Some(3.0));
    // The with-stats families are gauges, as upstream's.
    assert!(
        scrape
            .text
            .contains("# TYPE node_network_receive_bytes_total gauge\n")
    );

    // node_exporter 1.5.0's netlink mode (which reads no sysfs) agrees on the families it has.
    let mut families: Vec<&str> = scrape
        .samples
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| {
            name.starts_with("node_network_")
                && ![
                    "node_network_address_assign_type",
                    "node_network_device_id",
                    "node_network_name_assign_type",
                    "node_network_altnames_info",
                ]
                .contains(name)
                && !IP_LINK_STATS
                    .iter()
                    .any(|(key, _, _)| *name == format!("node_network_{key}_total"))
        })
        .collect();
    families.dedup();
    assert!(families.len() > 10, "{families:?}");
    assert_node_exporter_agrees(&netlink_args, &scrape, &families);

    // With netdev on too, its counters keep their names; netclass serves the other gauges.
    let both = start(&[&netlink_args[..], &["--collector.netdev"]].concat()).scrape();
    assert_success(&both, "netclass");
    assert_success(&both, "netdev");
    assert!(
        both.text
            .contains("# TYPE node_network_receive_bytes_total counter\n")
    );
    assert!(
        both.text
            .contains("# TYPE node_network_receive_crc_errors_total gauge\n")
    );
    assert_eq!(
        both.matching("node_network_receive_bytes_total", &[("device", "q1")])
            .count(),
        1,
        "{}",
        both.text
    );

    let filtered = start(
        &[
            &netlink_args[..],
            &["--collector.netclass.ignored-devices=^q1$"],
        ]
        .concat(),
    )
    .scrape();
    assert!(
        !filtered.text.contains("device=\"q1\""),
        "{}",
        filtered.text
    );
    assert!(filtered.text.contains("device=\"q0\""), "{}", filtered.text);

    if own_sysfs.is_err() {
        return;
    }
    // The attributes upstream reads from sysfs in netlink mode, and those the sysfs mode has
    // too, agree with the sysfs mode's.
    let sysfs = start(&["--collector.netclass"]).scrape();
    assert_success(&sysfs, "netclass");
    for name in [
        "node_network_address_assign_type",
        "node_network_device_id",
        "node_network_name_assign_type",
        "node_network_carrier_changes_total",
        "node_network_carrier_up_changes_total",
        "node_network_carrier_down_changes_total",
        "node_network_iface_id",
        "node_network_iface_link",
        "node_network_iface_link_mode",
        "node_network_mtu_bytes",
        "node_network_net_dev_group",
        "node_network_transmit_queue_length",
        "node_network_protocol_type",
        "node_network_up",
    ] {
        assert_eq!(
            by_label(&scrape, name, "device"),
            by_label(&sysfs, name, "device"),
            "{name}\n{}\n{}",
            scrape.text,
            sysfs.text
        );
    }
    // sysfs has carrier and speed for running devices only.
    for name in ["node_network_carrier", "node_network_speed_bytes"] {
        let theirs = by_label(&sysfs, name, "device");
        assert!(theirs.contains_key("q0"), "{name}: {}", sysfs.text);
        for (device, sysfs_value) in theirs {
            assert_eq!(value(name, &device), Some(sysfs_value), "{name} {device}");
        }
    }
    // sysfs' flags leave out what the kernel adds for netlink (running, lower up, dormant).
    let volatile = IFF_RUNNING | 0x10000 | 0x20000 | 0x40000;
    for (device, flags) in by_label(&sysfs, "node_network_flags", "device") {
        let ours = value("node_network_flags", &device).unwrap() as u32;
        assert_eq!(ours & !volatile, flags as u32, "{device}");
    }
    for sample in sysfs
        .samples
        .iter()
        .filter(|s| s.name == "node_network_info")
    {
        let device = &sample.labels["device"];
        let mut labels: Vec<(&str, &str)> = ["address", "broadcast", "ifalias", "operstate"]
            .into_iter()
            .map(|label| (label, sample.labels[label].as_str()))
            .chain([("device", device.as_str())])
            .collect();
        // Also the duplex where sysfs has it (running devices), spelled as upstream's
        // netlink mode spells it.
        match sample.labels["duplex"].as_str() {
            "full" => labels.push(("duplex", "Full")),
            "" => {}
            other => panic!("{device}: duplex {other}"),
        }
        assert_eq!(
            scrape.matching("node_network_info", &labels).count(),
            1,
            "{device}: {labels:?}\n{}",
            scrape.text
        );
    }
    // r1 is in link mode dormant, which upstream's netlink mode reports as dormant; sysfs'
    // dormant is the dormant state, which veth never sets.
    assert_eq!(value("node_network_dormant", "r1"), Some(1.0));
    assert_eq!(
        sysfs.value("node_network_dormant", &[("device", "r1")]),
        0.0
    );
}
