//! An exporter (ours or node_exporter) as a child process on a loopback port, for the bench
//! and the soak.
use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// An exporter child process on a loopback port, killed when dropped.
pub struct Exporter {
    child: Child,
    pub url: String,
    /// Keeps its connection open between scrapes, as Prometheus does.
    agent: ureq::Agent,
}

impl Exporter {
    pub fn start(command: &mut Command) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = command
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let exporter = Self {
            child,
            url: format!("http://127.0.0.1:{port}/metrics"),
            agent: ureq::Agent::new_with_defaults(),
        };
        let started = Instant::now();
        while exporter.get().is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{command:?} did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(exporter)
    }

    pub fn get(&self) -> anyhow::Result<String> {
        let mut body = String::new();
        self.agent
            .get(&self.url)
            .call()?
            .body_mut()
            .as_reader()
            .read_to_string(&mut body)?;
        Ok(body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_kib(status: &str, key: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/<pid>/status"))
}
