//! The real node_exporter (Debian's `prometheus-node-exporter`) as a peer: started beside the
//! collector with the same flags, for comparing what both serve.
use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// node_exporter 1.12's defaults where the peer (Debian's 1.5.0, partly patched by Debian)
/// has others, as flags 1.5.0 accepts: given to both exporters, they read the same things.
pub const UPSTREAM_DEFAULTS: &[&str] = &[
    "--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
    "--collector.netdev.device-exclude=",
    // 1.8.0 and 1.9.0 added TCPOFOQueue and TCPRcvQDrop to the default netstat fields.
    "--collector.netstat.fields=^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$",
    // 1.8.0 added zram to the default exclude; 1.5.0 accepts the new default as a flag.
    "--collector.diskstats.device-exclude=^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$",
];

/// Whether the peer node_exporter has the collector `name` (1.5.0 lacks those added since).
pub fn has_collector(name: &str) -> bool {
    static HELP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let help = HELP.get_or_init(|| {
        let output = Command::new(super::tool("prometheus-node-exporter"))
            .arg("--help")
            .output()
            .expect("running prometheus-node-exporter --help");
        // kingpin prints its usage on stderr.
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    });
    help.contains(&format!("--collector.{name} "))
}

pub struct NodeExporter {
    child: Child,
    pub address: SocketAddr,
}

impl NodeExporter {
    /// Starts node_exporter with `args` on a free loopback port and waits until it answers.
    pub fn start(args: &[&str]) -> Self {
        // node_exporter logs the configured address, not the bound one: pick a free port.
        let address = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port");
        let child = Command::new(super::tool("prometheus-node-exporter"))
            .args(args)
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus-node-exporter");
        let exporter = Self { child, address };
        let started = Instant::now();
        while ureq::get(&exporter.url()).call().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node_exporter did not answer on {address} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        exporter
    }

    fn url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }

    pub fn get_metrics(&self) -> String {
        let mut body = String::new();
        ureq::get(&self.url())
            .call()
            .expect("scraping node_exporter")
            .body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .expect("reading node_exporter's response");
        body
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
