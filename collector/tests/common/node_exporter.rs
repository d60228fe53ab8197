//! The real node_exporter (Debian's `prometheus-node-exporter`) as a peer: started beside the
//! collector with the same flags, for comparing what both serve.
use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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
