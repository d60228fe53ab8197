//! Several scrapers at once (an HA Prometheus pair, AMP's collector beside an in-cluster agent):
//! every answer is complete, a hung collector fails alone, the log stays bounded, and SIGTERM
//! ends the process within 2 s whatever the open connections do.
mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::{Duration, Instant},
};

use common::{Daemon, Scrape};

/// What one scrape served: its family names and the collectors at success 1.
#[derive(Debug)]
struct Served {
    families: BTreeSet<String>,
    succeeded: BTreeSet<String>,
}

fn served(body: &str) -> Served {
    let scrape = Scrape::parse(body);
    let families = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect();
    let succeeded = scrape
        .matching("node_scrape_collector_success", &[])
        .filter(|sample| sample.value == 1.0)
        .filter_map(|sample| sample.labels.get("collector").cloned())
        .collect();
    Served {
        families,
        succeeded,
    }
}

/// `clients` threads scrape `daemon` back to back over kept-alive connections for `duration`;
/// returns every answer's status and body.
fn scrape_concurrently(daemon: &Daemon, clients: usize, duration: Duration) -> Vec<(u16, String)> {
    let url = daemon.url("/metrics");
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let started = Instant::now();
                let mut answers = Vec::new();
                while started.elapsed() < duration {
                    let mut response = agent.get(&url).call().expect("a response");
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().expect("a body");
                    answers.push((status, body));
                }
                answers
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect()
}

/// Checks every answer against a scrape taken alone; returns (complete answers, 503s).
fn assert_complete(alone: &Served, answers: &[(u16, String)]) -> (usize, usize) {
    let mut complete = 0;
    let mut refused = 0;
    for (status, body) in answers {
        match status {
            200 => {
                let answer = served(body);
                let missing: Vec<_> = alone.families.difference(&answer.families).collect();
                assert!(missing.is_empty(), "families missing: {missing:?}");
                let failed: Vec<_> = alone.succeeded.difference(&answer.succeeded).collect();
                assert!(failed.is_empty(), "collectors failing: {failed:?}");
                complete += 1;
            }
            503 => refused += 1,
            other => panic!("HTTP {other}: {body}"),
        }
    }
    (complete, refused)
}

#[test]
fn concurrent_scrapers_each_get_everything() {
    let daemon = Daemon::start(&[]);
    let alone = served(&daemon.get("/metrics"));
    assert!(alone.succeeded.len() > 15, "{alone:?}");
    for clients in [2, 8, 40] {
        let answers = scrape_concurrently(&daemon, clients, Duration::from_secs(3));
        let (complete, refused) = assert_complete(&alone, &answers);
        eprintln!("{clients} clients: {complete} complete answers, {refused} refused (503)");
        assert!(complete >= clients, "{clients} clients: {complete} answers");
        // --web.max-requests is 40: no more clients than that, so none is turned away.
        assert_eq!(refused, 0, "{clients} clients");
    }
    // Thousands of scrapes, and the log has only start-up and what failed once.
    let log = daemon.log();
    let lines = log.lines().count();
    assert!(lines < 150, "{lines} log lines:\n{log}");
}

#[test]
fn a_hung_collector_fails_alone_under_concurrent_scrapers() {
    let root = common::rootfs_with_a_hanging_os_release("concurrency");
    let flag = format!("--path.rootfs={}", root.0.display());
    let daemon = Daemon::start(&[&flag, "--scrape.timeout=1s"]);
    let alone = served(&daemon.get("/metrics"));
    assert!(!alone.succeeded.contains("os"), "{alone:?}");
    for clients in [2, 8] {
        let answers = scrape_concurrently(&daemon, clients, Duration::from_secs(3));
        let (complete, _) = assert_complete(&alone, &answers);
        assert!(complete >= clients);
        for (_, body) in &answers {
            assert!(!served(body).succeeded.contains("os"));
        }
    }
    let log = daemon.log();
    assert_eq!(
        log.matches("collector failed").count(),
        1,
        "one line for the hung collector:\n{log}"
    );
}

/// Sends SIGTERM and returns how long the process took to exit.
fn time_to_exit(daemon: Daemon) -> Duration {
    let started = Instant::now();
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}");
    started.elapsed()
}

#[test]
fn sigterm_exits_within_two_seconds_with_a_half_open_request() {
    let daemon = Daemon::start(&[]);
    let mut half_open = TcpStream::connect(daemon.address).unwrap();
    half_open
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    daemon.scrape();
    let took = time_to_exit(daemon);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn sigterm_exits_within_two_seconds_with_a_slow_reader() {
    let daemon = Daemon::start(&[]);
    // Pipelined requests whose answers are never read: the daemon's writes block once the
    // socket buffers are full.
    let mut slow = TcpStream::connect(daemon.address).unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n\r\n";
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = slow.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) && stream.write_all(request).is_ok() {}
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let took = time_to_exit(daemon);
    stop.store(true, Ordering::Release);
    let _ = slow.shutdown(std::net::Shutdown::Both);
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    writer.join().unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn sigterm_exits_within_two_seconds_during_a_scrape_of_a_hung_collector() {
    let root = common::rootfs_with_a_hanging_os_release("shutdown");
    let flag = format!("--path.rootfs={}", root.0.display());
    let daemon = Daemon::start(&[&flag]);
    let url = daemon.url("/metrics");
    // The scrape waits for the hung collector until its 10 s deadline.
    let scrape = std::thread::spawn(move || ureq::get(&url).call().map(|_| ()));
    std::thread::sleep(Duration::from_millis(500));
    let took = time_to_exit(daemon);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let _ = scrape.join();
}
