//! The Debian Prometheus server on a free loopback port, and its HTTP API.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; JSON is YAML too) in a fresh directory.
    pub fn start(config: &str) -> Self {
        let dir = TempDir::new("prometheus");
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let child = Command::new(super::tool("prometheus"))
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// GET /api/v1/`path`: the `data` of a successful answer, the error message otherwise (also
    /// when the server is not up yet).
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut request = ureq::get(&format!("{}/api/v1/{path}", self.url))
            .config()
            .http_status_as_error(false)
            .build();
        for (key, value) in params {
            request = request.query(*key, *value);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let mut body = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!("{}: {}", answer["errorType"], answer["error"]))
        }
    }

    /// An instant query: the samples of the result vector (`{"metric": {...}, "value": [t, "v"]}`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)])?;
        match &data["result"] {
            Value::Array(samples) => Ok(samples.clone()),
            // A scalar or string expression: one value.
            other => Ok(vec![serde_json::json!({ "metric": {}, "value": other })]),
        }
    }

    /// The values of an instant query's result vector; `None` until the server answers.
    pub fn values(&self, expr: &str) -> Option<Vec<f64>> {
        let samples = self.query(expr).ok()?;
        Some(
            samples
                .iter()
                .map(|sample| {
                    sample["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        )
    }

    /// `up` of each job once every job's is the value `expected` gives it, or as last seen
    /// after 60 s (each `None` until the job's first scrape).
    pub fn up_by_job<'a>(&self, expected: &[(&'a str, f64)]) -> Vec<(&'a str, Option<f64>)> {
        let started = std::time::Instant::now();
        loop {
            let seen: Vec<_> = expected
                .iter()
                .map(|(job, _)| {
                    let value = self
                        .values(&format!("up{{job=\"{job}\"}}"))
                        .and_then(|v| v.first().copied());
                    (*job, value)
                })
                .collect();
            let done = seen
                .iter()
                .zip(expected)
                .all(|((_, got), (_, want))| *got == Some(*want));
            if done || started.elapsed() > std::time::Duration::from_secs(60) {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the target's test directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
