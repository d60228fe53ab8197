//! The collector binary under test, started as a child process on a free loopback port.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use super::Scrape;

pub const BINARY: &str = env!("CARGO_BIN_EXE_collector");

pub struct Daemon {
    child: Option<Child>,
    pub address: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the collector with `args` (a loopback listen address is added).
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(BINARY);
        command.args(args);
        Self::spawn(command)
    }

    /// Starts `command`, which must end up exec'ing the collector (through `setpriv`, say).
    pub fn spawn(mut command: Command) -> Self {
        command
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("msg=listening")
                    && let Some(address) = line.split("address=").nth(1)
                {
                    let _ = address_tx.send(address.trim().to_owned());
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address.parse().expect("listen address in the log"),
            Err(_) => {
                let _ = child.kill();
                let log = log.lock().unwrap().clone();
                panic!("collector did not start listening within 30 s; log:\n{log}");
            }
        };
        Self {
            child: Some(child),
            address,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// GET /metrics, parsed. Panics with the log on failure.
    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&self.get("/metrics"))
    }

    pub fn get(&self, path: &str) -> String {
        let mut response = ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.log()));
        let mut body = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .expect("reading the response");
        body
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits (at most 20 s) for the process to exit.
    pub fn stop_with(mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(child.id() as i32, signal) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the collector") {
                return status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!(
                    "collector did not exit within 20 s of signal {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `command`, the collector expected to stop by itself (refusing a flag or a file), on a
/// loopback port: its exit status and log. Panics if it still runs after 20 s.
pub fn run_to_exit(mut command: Command) -> (ExitStatus, String) {
    command
        .arg("--web.listen-address=127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    // Read while it runs: a log larger than the pipe would otherwise hold it up.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the collector") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the collector did not stop within 20 s: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("reading the log"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
