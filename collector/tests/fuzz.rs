//! Bounded fuzzing, run by `cargo xtask test`: the text exposition parser (what the textfile
//! collector reads) and the HTTP request path take arbitrary input without panicking, and the
//! daemon keeps answering. The case counts bound the time (a few seconds each); raise
//! PROPTEST_CASES for a longer run.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use common::Daemon;
use proptest::{prelude::*, test_runner::Config};

/// Tokens of the text format, so that generated input gets past the first character.
fn exposition_line() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("# HELP ".to_owned()),
        Just("# TYPE ".to_owned()),
        Just("counter".to_owned()),
        Just("gauge".to_owned()),
        Just("histogram".to_owned()),
        Just("summary".to_owned()),
        Just("untyped".to_owned()),
        Just("metric_a".to_owned()),
        Just("metric_a_bucket".to_owned()),
        Just("metric_a_sum".to_owned()),
        Just("metric_a_count".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("le=\"".to_owned()),
        Just("quantile=\"".to_owned()),
        Just("x=\"".to_owned()),
        Just("\"".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("\\".to_owned()),
        Just("+Inf".to_owned()),
        Just("NaN".to_owned()),
        Just("1e308".to_owned()),
        Just("-0".to_owned()),
        Just("1700000000000".to_owned()),
        "[0-9.eE+-]{1,12}",
        "[ -~]{0,8}",
    ];
    proptest::collection::vec(token, 0..12).prop_map(|tokens| tokens.concat())
}

fn exposition_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(exposition_line(), 0..30).prop_map(|lines| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    })
}

proptest! {
    // Generating structured text is the slow part in a debug build: ~10 ms a case.
    #![proptest_config(Config { cases: 400, ..Config::default() })]

    #[test]
    fn the_text_parser_takes_any_input(text in exposition_text()) {
        // Ok or an error naming the line; never a panic.
        let _ = collector::textparse::parse(&text);
    }

}

proptest! {
    #![proptest_config(Config { cases: 3000, ..Config::default() })]

    #[test]
    fn the_text_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = collector::textparse::parse(&String::from_utf8_lossy(&bytes));
    }
}

/// Pieces of an HTTP request, odd ones included.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("POST"),
        Just("OPTIONS"),
        Just("G\u{0}T"),
        Just(""),
    ];
    let path = prop_oneof![
        Just("/metrics".to_owned()),
        Just("/".to_owned()),
        Just("*".to_owned()),
        Just("http://x/metrics".to_owned()),
        "/[ -~]{0,40}",
    ];
    let version = prop_oneof![
        Just("HTTP/1.1"),
        Just("HTTP/1.0"),
        Just("HTTP/2.0"),
        Just("HTTP/9")
    ];
    let header = prop_oneof![
        Just("Host: x".to_owned()),
        Just("X-Prometheus-Scrape-Timeout-Seconds: 1e308".to_owned()),
        Just("Accept-Encoding: gzip".to_owned()),
        Just("Content-Length: 5".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        "[A-Za-z-]{1,20}: [ -~]{0,60}",
        "[\\x00-\\xff]{0,40}",
    ];
    (
        method,
        path,
        version,
        proptest::collection::vec(header, 0..8),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(method, path, version, headers, body)| {
            let mut request = format!("{method} {path} {version}\r\n").into_bytes();
            for header in headers {
                request.extend_from_slice(header.as_bytes());
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"Connection: close\r\n\r\n");
            request.extend_from_slice(&body);
            request
        })
}

#[test]
fn the_http_request_path_takes_any_request() {
    let daemon = Daemon::start(&["--collector.disable-defaults", "--collector.loadavg"]);
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&request(), |request| {
            let mut stream = TcpStream::connect(daemon.address).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(&request);
            // The request ends here, even where a header promised more.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            // Whatever it was, an answer or a closed connection; a status line if any.
            prop_assert!(response.is_empty() || response.starts_with(b"HTTP/1."));
            Ok(())
        })
        .unwrap();
    // Still serving, and nothing panicked.
    assert!(daemon.scrape().has("node_load1"));
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Pieces of /proc/zoneinfo (zone headers, known and unknown keys, protection arrays, numbers
/// good and bad), so that generated text reaches every branch of the parser.
fn zoneinfo_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("Node ".to_owned()),
        Just("\nNode".to_owned()),
        Just(", zone ".to_owned()),
        Just("DMA32".to_owned()),
        Just("Normal".to_owned()),
        Just("  per-node stats".to_owned()),
        Just("pages free".to_owned()),
        Just("nr_free_pages ".to_owned()),
        Just("min ".to_owned()),
        Just("high: ".to_owned()),
        Just("numa_hit ".to_owned()),
        Just("nr_mlock_stack ".to_owned()),
        Just("protection: (".to_owned()),
        Just("protection:".to_owned()),
        Just(", ".to_owned()),
        Just(")".to_owned()),
        Just(":".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("0x_1f".to_owned()),
        Just("\u{a0}".to_owned()),
        "[0-9]{1,6}",
        "[ \t\r\x0b\x0c]{1,4}",
        "[ -~]{0,8}",
    ];
    let line = proptest::collection::vec(token, 0..10).prop_map(|tokens| tokens.concat());
    proptest::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

/// Pieces of /proc/slabinfo: its version and header lines, cache lines of 16 fields or
/// thereabouts, separators Go's `\s` does and does not take.
fn slabinfo_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("slabinfo - version: 2.1".to_owned()),
        Just("# name".to_owned()),
        Just(":".to_owned()),
        Just("tunables".to_owned()),
        Just("slabdata".to_owned()),
        Just("kmalloc-8k".to_owned()),
        Just("-1".to_owned()),
        Just("+7".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("".to_owned()),
        "[0-9]{1,8}",
        "[ -~]{0,6}",
    ];
    let separator = prop_oneof![
        Just(" ".to_owned()),
        Just("   ".to_owned()),
        Just("\t".to_owned()),
        Just("\r".to_owned()),
        Just("\x0b".to_owned()),
        Just("\x0c".to_owned()),
    ];
    let line = proptest::collection::vec((field, separator), 0..20).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(field, separator)| field + &separator)
            .collect::<String>()
    });
    proptest::collection::vec(line, 0..20).prop_map(|lines| lines.join("\n"))
}

proptest! {
    // As above, generation is the slow part: ~20 ms a case in a debug build.
    #![proptest_config(Config { cases: 200, ..Config::default() })]

    #[test]
    fn the_zoneinfo_parser_takes_any_input(text in zoneinfo_text()) {
        // Never an error: one zone per `\nNode` block, whatever is in it.
        let zones = collector::node::zoneinfo::parse(&text);
        prop_assert_eq!(zones.len(), text.matches("\nNode").count() + 1);
        for zone in &zones {
            prop_assert!(zone.node.bytes().all(|b| b.is_ascii_digit()));
            let _ = zone.fields().count();
        }
    }

    #[test]
    fn the_slabinfo_parser_takes_any_input(text in slabinfo_text()) {
        // A list of caches or an error; never a panic.
        if let Ok(slabs) = collector::node::slabinfo::parse(&text) {
            prop_assert!(slabs.iter().all(|slab| !slab.name.contains(' ')));
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn the_zoneinfo_and_slabinfo_parsers_take_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = collector::node::zoneinfo::parse(&text);
        let _ = collector::node::slabinfo::parse(&text);
    }
}

/// Pieces of /proc/interrupts: CPU headers, numbered and named rows (aarch64's without a space
/// after the colon), counts good and bad, chip and device words, stray colons and bytes.
fn interrupts_text() -> impl Strategy<Value = String> {
    let header = proptest::collection::vec(
        prop_oneof![
            Just("CPU0".to_owned()),
            Just("CPU17".to_owned()),
            Just("   ".to_owned()),
            "[ -~]{0,6}",
        ],
        0..6,
    )
    .prop_map(|cells| cells.join(" "));
    let token = prop_oneof![
        Just(" 24:".to_owned()),
        Just("NMI:".to_owned()),
        Just("IPI0:".to_owned()),
        Just("ERR:".to_owned()),
        Just("-1:".to_owned()),
        Just("+7:".to_owned()),
        Just("99999999999999999999:".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("-Inf".to_owned()),
        Just("NaN".to_owned()),
        Just("IO-APIC".to_owned()),
        Just("PCI-MSI 81921-edge".to_owned()),
        Just("nvme0q1,".to_owned()),
        Just("Local timer interrupts".to_owned()),
        Just("\u{a0}".to_owned()),
        "[0-9]{1,12}",
        "[ -~]{0,10}",
        "[\\x00-\\xff]{0,4}",
    ];
    let line = proptest::collection::vec(token, 0..12).prop_map(|tokens| tokens.concat());
    (header, proptest::collection::vec(line, 0..20)).prop_map(|(header, lines)| {
        let mut text = header;
        for line in lines {
            text.push('\n');
            text.push_str(&line);
        }
        text
    })
}

proptest! {
    // Generating the text is the slow part in a debug build: a few ms a case.
    #![proptest_config(Config { cases: 250, ..Config::default() })]

    #[test]
    fn the_interrupts_parser_takes_any_input(text in interrupts_text()) {
        // An error (an empty file) or rows, never a panic; each row has one count per CPU
        // column of the header.
        if let Ok(interrupts) = collector::node::interrupts::parse(&text) {
            let cpus = text.lines().next().map_or(0, |h| h.split_whitespace().count());
            for interrupt in interrupts.values() {
                prop_assert_eq!(interrupt.values.len(), cpus);
            }
        } else {
            prop_assert!(text.is_empty());
        }
    }

    #[test]
    fn the_interrupts_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = collector::node::interrupts::parse(&String::from_utf8_lossy(&bytes));
    }
}

/// A number of a mountstats line: a plausible counter, or one past a float's mantissa.
fn mountstats_number() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[0-9]{1,7}",
        1 => Just("9007199254740993".to_owned()),
        1 => Just("18446744073709551615".to_owned()),
    ]
}

/// `count` numbers, one of them sometimes one that procfs refuses (signed, out of range, not a
/// number): mostly whole lines that parse, so that the lines after them are reached.
fn mountstats_numbers(count: impl Strategy<Value = usize>) -> impl Strategy<Value = String> {
    let bad = prop_oneof![
        Just("18446744073709551616"),
        Just("-1"),
        Just("+1"),
        Just("0x1f"),
        Just("1.5"),
        Just("\u{fffd}"),
    ];
    count
        .prop_flat_map(|count| proptest::collection::vec(mountstats_number(), count))
        .prop_flat_map(move |numbers| {
            let len = numbers.len();
            (
                Just(numbers),
                proptest::option::weighted(0.04, (0..len.max(1), bad.clone())),
            )
        })
        .prop_map(|(mut numbers, bad)| {
            if let Some((index, bad)) = bad
                && let Some(number) = numbers.get_mut(index)
            {
                *number = bad.to_owned();
            }
            numbers.join(" ")
        })
}

/// One mount of /proc/self/mountstats, mostly well formed (an EFS-like NFSv4.1 or NFSv3 mount
/// with its statistics), with counts of values around the expected ones, unknown protocols and
/// statistics versions, and the per-op header or closing blank line sometimes left out.
fn mountstats_mount() -> impl Strategy<Value = String> {
    (
        (
            prop_oneof![
                Just("fs-0a1b2c3d4e5f60789.efs.us-west-2.amazonaws.com:/"),
                Just("127.0.0.1:/"),
                Just("/dev/nvme0n1p1"),
            ],
            prop_oneof![12 => Just("nfs4"), 6 => Just("nfs"), 1 => Just("xfs")],
            prop_oneof![
                16 => Just(" statvers=1.1"),
                2 => Just(" statvers=1.0"),
                1 => Just(" statvers=1.2"),
                1 => Just(""),
                1 => Just(" 1.1"),
            ],
        ),
        prop_oneof![
            12 => "[0-9]{1,7}",
            2 => "[-+]?[0-9.]{0,4}[hmsuµn]{0,2}[0-9]{0,3}",
            1 => Just("99999999999999999999".to_owned()),
        ],
        mountstats_numbers(prop_oneof![12 => Just(8), 1 => 6..10usize]),
        mountstats_numbers(prop_oneof![12 => Just(27), 1 => 25..29usize]),
        proptest::collection::vec(
            prop_oneof![
                8 => (Just("tcp"), Just(13usize)),
                1 => (Just("udp"), Just(10usize)),
                1 => (Just("tcp"), Just(10usize)),
                1 => (Just("udp"), Just(7usize)),
                1 => (Just("rdma"), 19..33usize),
                1 => (prop_oneof![Just("tcp"), Just("sctp")], 0..16usize),
            ]
            .prop_flat_map(|(protocol, count)| (Just(protocol), mountstats_numbers(Just(count)))),
            0..3,
        ),
        proptest::collection::vec(
            (
                prop_oneof![Just("READ:"), Just("WRITE:"), Just("GETATTR"), Just(":")],
                mountstats_numbers(prop_oneof![8 => 8..10usize, 1 => 6..8usize]),
            ),
            0..5,
        ),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.85),
    )
        .prop_map(
            |((device, fstype, statvers), age, bytes, events, xprts, ops, per_op, blank)| {
                let mut text = format!(
                    "device {device} mounted on /mnt/efs with fstype {fstype}{statvers}\n\
                     \topts:\trw,vers=4.1,hard,proto=tcp\n\tage:\t{age}\n\
                     \tcaps:\tcaps=0x3ffbf,wtmult=512\n\tevents:\t{events}\n\tbytes:\t{bytes}\n\
                     \tRPC iostats version: 1.1  p/v: 100003/4 (nfs)\n"
                );
                for (protocol, numbers) in xprts {
                    text.push_str(&format!("\txprt:\t{protocol} {numbers}\n"));
                }
                if per_op {
                    text.push_str("\tper-op statistics\n");
                }
                for (name, numbers) in ops {
                    text.push_str(&format!("\t{name:>12} {numbers}\n"));
                }
                if blank {
                    text.push('\n');
                }
                text
            },
        )
}

/// Whole files: mounts, stray lines (other devices, keys without values, truncated lines,
/// carriage returns) in any order.
fn mountstats_text() -> impl Strategy<Value = String> {
    let stray = prop_oneof![
        Just("device proc mounted on /proc with fstype proc\n".to_owned()),
        Just("device\n".to_owned()),
        Just("\tage:\n".to_owned()),
        Just("\topts:\n".to_owned()),
        Just("\txprt:\ttcp\n".to_owned()),
        Just("\tper-op statistics\n".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        "[ -~\t]{0,40}\n",
    ];
    let piece = prop_oneof![3 => mountstats_mount(), 1 => stray];
    proptest::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

proptest! {
    // A mount's text is a few hundred tokens: ~5 ms a case in a debug build.
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    #[test]
    fn the_mountstats_parser_takes_any_input(text in mountstats_text()) {
        // Mounts or an error naming the line, never a panic.
        match collector::node::mountstats::parse_mountstats(text.as_bytes()) {
            Ok(mounts) => {
                let devices =
                    text.lines().filter(|l| l.split_whitespace().next() == Some("device"));
                prop_assert!(mounts.len() <= devices.count());
            }
            Err(error) => prop_assert!(format!("{error:#}").contains("line "), "{error:#}"),
        }
        let _ = collector::node::mountstats::parse_mountinfo_addresses(text.as_bytes());
    }

    #[test]
    fn the_mountstats_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = collector::node::mountstats::parse_mountstats(&bytes);
        let _ = collector::node::mountstats::parse_mountinfo_addresses(&bytes);
    }
}
