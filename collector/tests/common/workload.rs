//! Workloads whose size the tests know, so counters can be checked against it.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    time::Duration,
};

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls get valid pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity({cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Two threads pinned to one CPU pass a byte back and forth `rounds` times over two pipes.
///
/// On one CPU every hand-over needs a context switch (the peer cannot run otherwise), so there
/// are at least `2 * rounds` switches on `cpu`; and in every round one side finds its pipe empty
/// and blocks, so at least `rounds - 1` voluntary switches, wake-ups, and wake-up-to-run delays.
/// Returns how long the two threads waited on the run queue meanwhile, by the scheduler's own
/// account (`run_delay` in `/proc/thread-self/schedstat`).
pub fn pipe_ping_pong(rounds: usize, cpu: usize) -> Duration {
    let (mut ping_rx, mut ping_tx) = std::io::pipe().expect("pipe");
    let (mut pong_rx, mut pong_tx) = std::io::pipe().expect("pipe");
    let echo = std::thread::spawn(move || {
        pin_to_cpu(cpu);
        let started = run_delay();
        let mut byte = [0u8];
        for _ in 0..rounds {
            ping_rx.read_exact(&mut byte).expect("ping");
            pong_tx.write_all(&byte).expect("pong");
        }
        run_delay() - started
    });
    let pinger = std::thread::spawn(move || {
        pin_to_cpu(cpu);
        let started = run_delay();
        let mut byte = [0u8];
        for _ in 0..rounds {
            ping_tx.write_all(&[1]).expect("ping");
            pong_rx.read_exact(&mut byte).expect("pong");
        }
        run_delay() - started
    });
    pinger.join().expect("ping thread") + echo.join().expect("echo thread")
}

/// The calling thread's total wait on run queues so far: the second field of its schedstat.
fn run_delay() -> Duration {
    let schedstat =
        std::fs::read_to_string("/proc/thread-self/schedstat").expect("reading schedstat");
    let nanos = schedstat
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("malformed /proc/thread-self/schedstat: {schedstat:?}"));
    Duration::from_nanos(nanos)
}

/// Moves one thread between CPU 0 and CPU 1 `times` times: each move is a task migration.
pub fn flip_between_cpus(times: usize) {
    std::thread::spawn(move || {
        for i in 0..times {
            pin_to_cpu(i % 2);
            // Run on the new CPU before moving again.
            std::hint::black_box((0..1000).sum::<u64>());
        }
    })
    .join()
    .expect("flipping thread");
}

/// Starts and reaps `count` processes: each is a new task woken for the first time.
pub fn spawn_processes(count: usize) {
    for _ in 0..count {
        let status = std::process::Command::new("true")
            .status()
            .expect("running true");
        assert!(status.success());
    }
}

/// `count` 4 KiB writes to `path`, each followed by fdatasync: every one reaches the disk as a
/// write request (plus the journal's and a cache flush) and its completion interrupt.
pub fn fsync_writes(path: &Path, count: usize) {
    let mut file = std::fs::File::create(path).expect("creating the fsync workload file");
    let block = [0x5au8; 4096];
    for _ in 0..count {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let _ = std::fs::remove_file(path);
}

/// Sends `bytes` over a loopback TCP connection in 64 KiB writes; loopback delivery runs in the
/// NET_RX softirq, and delivered packets end in `consume_skb`, not `kfree_skb`.
pub fn loopback_tcp(bytes: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match stream.read(&mut buffer).expect("read") {
                0 => break total,
                n => total += n,
            }
        }
    });
    let mut stream = TcpStream::connect(address).expect("connect");
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        stream.write_all(&chunk[..n]).expect("write");
        sent += n;
    }
    drop(stream);
    assert_eq!(reader.join().expect("reader"), bytes);
}

/// `count` connection attempts to a loopback port nobody listens on: the kernel drops each SYN
/// (no socket) and answers it with a reset, which the connecting socket receives.
pub fn refused_connections(count: usize) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    for _ in 0..count {
        let error = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens there");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{error}"
        );
    }
}
