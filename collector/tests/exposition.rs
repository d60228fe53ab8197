//! Root: what the daemon serves over HTTP, checked by promtool and by format rules.
mod common;

use std::{
    io::{Read as _, Write as _},
    process::{Command, Stdio},
};

use common::{
    Daemon, Scrape,
    node_exporter::{NodeExporter, UPSTREAM_DEFAULTS},
};

/// node_exporter keeps some kernel-given camelCase names (node_netstat_Tcp_InSegs...), which
/// promtool flags; those, and only those, are accepted.
/// `promtool check metrics` findings, one per line.
fn promtool_lint(text: &str) -> Vec<String> {
    let mut promtool = Command::new(common::tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn scrape_passes_promtool() {
    require_root!();
    let daemon = Daemon::start(&["--ebpf.enable-stats"]);
    let text = daemon.get("/metrics");
    // node_exporter's own names are kept for compatibility even where promtool objects to
    // them (camelCase, `_bits`): a finding node_exporter's own output also gets is accepted.
    let peer = NodeExporter::start(UPSTREAM_DEFAULTS);
    let accepted = promtool_lint(&peer.get_metrics());
    let problems: Vec<String> = promtool_lint(&text)
        .into_iter()
        .filter(|finding| !accepted.contains(finding))
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{}\n--- scrape ---\n{text}",
        problems.join("\n")
    );
    // Statistics were asked for, so the self-overhead counters are there and moving.
    let scrape = Scrape::parse(&text);
    assert!(scrape.sum("ebpf_program_runs_total", &[("program", "sched_switch")]) > 0.0);
    assert!(
        scrape.sum(
            "ebpf_program_run_seconds_total",
            &[("program", "sched_switch")]
        ) > 0.0
    );
}

#[test]
fn every_family_has_help_and_type_and_is_sorted() {
    require_root!();
    let daemon = Daemon::start(&[]);
    let scrape = daemon.scrape();
    let families = scrape.typed_families();
    let names: Vec<&str> = families.iter().map(|(name, _)| name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "families not sorted");
    for (name, _) in &families {
        assert!(
            scrape.text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    for sample in &scrape.samples {
        let family = families
            .iter()
            .find(|(name, kind)| {
                sample.name == *name
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| sample.name.strip_suffix(suffix) == Some(name)))
            })
            .map(|(name, _)| name);
        assert!(family.is_some(), "{} has no TYPE line", sample.name);
    }
    for expected in [
        "ebpf_build_info",
        "node_exporter_build_info",
        "process_virtual_memory_max_bytes",
        "ebpf_context_switches_total",
        "ebpf_hardirq_seconds_total",
        "ebpf_program_attached",
        "ebpf_runqueue_latency_seconds",
        "ebpf_sched_migrations_total",
        "ebpf_sched_wakeups_total",
        "ebpf_softirq_seconds_total",
        "node_scrape_collector_duration_seconds",
        "node_scrape_collector_success",
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "promhttp_metric_handler_requests_total",
    ] {
        assert!(names.contains(&expected), "{expected} missing");
    }
    for collector in ["ebpf.sched", "ebpf.irq"] {
        assert_eq!(
            scrape.value("node_scrape_collector_success", &[("collector", collector)]),
            1.0
        );
    }
    assert_eq!(
        scrape.value("ebpf_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    // Every attached program's recursion misses, from its fdinfo (5.12+).
    if !common::kernel_at_least(5, 12) {
        eprintln!("recursion misses not checked: the kernel counts them since 5.12");
        return;
    }
    let attached: Vec<&str> = scrape
        .matching("ebpf_program_attached", &[])
        .filter(|sample| sample.value == 1.0)
        .map(|sample| sample.labels["program"].as_str())
        .collect();
    assert!(attached.len() >= 16, "{attached:?}");
    for program in attached {
        let misses = scrape.value(
            "ebpf_program_recursion_misses_total",
            &[("program", program)],
        );
        assert!(misses >= 0.0, "{program}: {misses}");
    }
}

#[test]
fn http_behaves_as_node_exporter() {
    require_root!();
    let daemon = Daemon::start(&[
        "--web.telemetry-path=/custom",
        "--web.disable-exporter-metrics",
    ]);

    let landing = daemon.get("/");
    assert!(landing.contains("href=\"/custom\""), "{landing}");

    let mut response = ureq::get(&daemon.url("/custom"))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("gzip scrape");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut compressed = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut compressed)
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_string(&mut text)
        .expect("valid gzip");
    let scrape = Scrape::parse(&text);
    assert!(scrape.has("ebpf_runqueue_latency_seconds_count"));
    assert!(
        !scrape.has("process_cpu_seconds_total"),
        "exporter metrics were disabled"
    );
    assert!(!scrape.has("promhttp_metric_handler_requests_total"));
    assert!(
        scrape.has("ebpf_build_info"),
        "build info stays, as node_exporter's"
    );

    let plain = daemon.get("/custom");
    assert!(plain.starts_with("# HELP "), "{plain}");
    let missing = ureq::get(&daemon.url("/metrics")).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );
}

#[test]
fn collectors_can_be_switched_off() {
    require_root!();
    let daemon = Daemon::start(&["--no-collector.ebpf.irq"]);
    let scrape = daemon.scrape();
    assert!(!scrape.has("ebpf_softirq_seconds_total"));
    assert_eq!(
        scrape
            .matching(
                "node_scrape_collector_success",
                &[("collector", "ebpf.irq")]
            )
            .count(),
        0
    );
    assert_eq!(
        scrape.value(
            "node_scrape_collector_success",
            &[("collector", "ebpf.sched")]
        ),
        1.0
    );
    // Hooks of disabled collectors are not attached at all.
    assert_eq!(
        scrape
            .matching("ebpf_program_attached", &[("program", "softirq_entry")])
            .count(),
        0
    );
}
