//! Requests and connections from a hostile or careless client: a bad scrape-timeout header,
//! clients that leave mid-scrape, more idle connections than there are descriptors, a burst of
//! connections, requests without a Host header. The daemon keeps answering, and its own
//! accounting stays right.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use common::{Daemon, Scrape};

/// A raw HTTP/1.1 exchange: sends `request` and returns the status line.
fn status_line(daemon: &Daemon, request: &str) -> String {
    let mut stream = TcpStream::connect(daemon.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_huge_scrape_timeout_header_is_ignored_not_a_panic() {
    let daemon = Daemon::start(&["--collector.disable-defaults", "--collector.loadavg"]);
    for value in ["1e308", "inf", "-1", "NaN", "99999999999999999999"] {
        let response = status_line(
            &daemon,
            &format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 X-Prometheus-Scrape-Timeout-Seconds: {value}\r\n\r\n"
            ),
        );
        assert!(response.contains(" 200 "), "{value}: {response}");
    }
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[test]
fn http_1_1_needs_exactly_one_host_header() {
    let daemon = Daemon::start(&["--collector.disable-defaults", "--collector.loadavg"]);
    let cases = [
        (
            "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
            " 400 ",
        ),
        (
            "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            " 400 ",
        ),
        (
            "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            " 200 ",
        ),
        ("GET /metrics HTTP/1.0\r\n\r\n", " 200 "),
    ];
    for (request, status) in cases {
        let response = status_line(&daemon, request);
        assert!(response.contains(status), "{request:?}: {response}");
    }
}

#[test]
fn clients_leaving_mid_scrape_are_not_counted_in_flight() {
    let root = common::rootfs_with_a_hanging_os_release("hostile");
    let daemon = Daemon::start(&[
        "--collector.disable-defaults",
        "--collector.os",
        "--collector.loadavg",
        &format!("--path.rootfs={}", root.0.display()),
        "--scrape.timeout=3s",
    ]);
    // Twenty clients each give up on a scrape that waits for the hung collector.
    for _ in 0..20 {
        let mut stream = TcpStream::connect(daemon.address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("promhttp_metric_handler_requests_in_flight", &[]),
        1.0,
        "only this scrape"
    );
}

#[test]
fn more_idle_connections_than_descriptors_do_not_lock_scrapers_out() {
    // The soft limit systemd gives services, with room above it.
    let mut command = Command::new(common::tool("prlimit"));
    command.args([
        "--nofile=1024:8192",
        common::daemon::BINARY,
        "--collector.disable-defaults",
        "--collector.loadavg",
    ]);
    let daemon = Daemon::spawn(command);
    let idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(daemon.address).unwrap())
        .collect();
    // Half-open requests too: headers that never end.
    let mut half_open: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(daemon.address).unwrap())
        .collect();
    for stream in &mut half_open {
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let scrape = daemon.scrape();
        assert!(scrape.has("node_load1"));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        open_files.split_whitespace().nth(3) == Some("8192"),
        "soft limit raised to the hard one: {open_files}"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .count();
    assert!(
        fds < 400,
        "{fds} descriptors open: bounded by --web.max-connections"
    );
    assert!(
        daemon.log().contains("connection limit reached"),
        "{}",
        daemon.log()
    );
    drop(idle);
    drop(half_open);
}

#[test]
fn a_burst_of_connections_waits_in_the_listen_queue() {
    let daemon = Daemon::start(&["--collector.disable-defaults", "--collector.loadavg"]);
    let pid = daemon.pid();
    // The listening socket's queue limit, as `ss` shows it: somaxconn, not tokio's 1024.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ss = Command::new(common::tool("ss"))
        .args(["-ltnH", &format!("sport = :{}", daemon.address.port())])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ss.stdout);
    let backlog: u32 = listing
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ss: {listing}"));
    assert_eq!(backlog, somaxconn.min(65535), "pid {pid}: {listing}");
    let burst: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(daemon.address).unwrap())
        .collect();
    let scrape = Scrape::parse(&daemon.get("/metrics"));
    assert!(scrape.has("node_load1"));
    drop(burst);
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// `series` samples of one gauge family, as a textfile.
fn textfile_of(series: usize) -> String {
    let mut text = String::from("# HELP big_metric Many series.\n# TYPE big_metric gauge\n");
    for i in 0..series {
        text.push_str(&format!("big_metric{{id=\"{i}\"}} {i}\n"));
    }
    text
}

#[test]
fn hostile_textfiles_cost_only_themselves_and_memory_comes_back() {
    let dir = common::TempDir(
        std::env::temp_dir().join(format!("hostile-textfile-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("good.prom"), "good_metric 1\n").unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.0.join("zero.prom")).unwrap();
    let fifo = std::ffi::CString::new(dir.0.join("fifo.prom").to_str().unwrap()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let directory = format!("--collector.textfile.directory={}", dir.0.display());
    let daemon = Daemon::start(&[
        "--collector.disable-defaults",
        "--collector.textfile",
        &directory,
    ]);
    daemon.scrape(); // the code a scrape runs is paged in
    let baseline = rss_mib(daemon.pid());
    // A million series: refused by the default cap.
    std::fs::write(dir.0.join("huge.prom"), textfile_of(1_000_000)).unwrap();
    let scrape = daemon.scrape();
    assert_eq!(scrape.value("good_metric", &[]), 1.0);
    assert_eq!(scrape.value("node_textfile_scrape_error", &[]), 1.0);
    assert!(!scrape.has("big_metric"));
    assert!(
        rss_mib(daemon.pid()) < baseline + 16.0,
        "{} MiB after refusing a 1M-series file (from {baseline})",
        rss_mib(daemon.pid())
    );
    let log = daemon.log();
    for file in ["zero.prom", "fifo.prom", "huge.prom"] {
        assert!(log.contains(file), "{file} not logged:\n{log}");
    }
    drop(daemon);

    // Under a raised cap a large file is served; once it is gone, its memory is given back.
    std::fs::remove_file(dir.0.join("huge.prom")).unwrap();
    std::fs::write(dir.0.join("large.prom"), textfile_of(100_000)).unwrap();
    let daemon = Daemon::start(&[
        "--collector.disable-defaults",
        "--collector.textfile",
        &directory,
        "--collector.textfile.max-file-bytes=67108864",
    ]);
    std::fs::rename(dir.0.join("large.prom"), dir.0.join("large.later")).unwrap();
    daemon.scrape(); // the code a scrape runs is paged in
    let baseline = rss_mib(daemon.pid());
    std::fs::rename(dir.0.join("large.later"), dir.0.join("large.prom")).unwrap();
    let scrape = daemon.scrape();
    assert_eq!(scrape.matching("big_metric", &[]).count(), 100_000);
    let peak = rss_mib(daemon.pid());
    std::fs::remove_file(dir.0.join("large.prom")).unwrap();
    daemon.scrape();
    daemon.scrape();
    let after = rss_mib(daemon.pid());
    eprintln!(
        "RSS {baseline:.1} MiB, {peak:.1} with 100k series, {after:.1} once the file is gone"
    );
    assert!(
        after < baseline + 8.0,
        "{after:.1} MiB once the file is gone (from {baseline:.1}, peak {peak:.1})"
    );
}
