//! Command-line flags, named and defaulted as node_exporter's so an existing DaemonSet's args
//! work unchanged. Collector switches (`--collector.<name>`, `--no-collector.<name>`) are
//! generated from the collector registry.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{
    Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, ValueEnum, parser::ValueSource,
};

use crate::{collectors::CollectorSpec, ebpf::HookType};

#[derive(Debug, Args)]
pub struct Options {
    /// Addresses on which to expose metrics and web interface. Repeatable.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = ":9100", action = ArgAction::Append)]
    pub listen_addresses: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,

    /// Maximum number of parallel scrape requests. Use 0 to disable.
    #[arg(long = "web.max-requests", default_value_t = 40)]
    pub max_requests: usize,

    /// Exclude metrics about the exporter itself (process_*, promhttp_*).
    #[arg(long = "web.disable-exporter-metrics")]
    pub disable_exporter_metrics: bool,

    /// procfs mountpoint.
    #[arg(long = "path.procfs", default_value = "/proc")]
    pub procfs: PathBuf,

    /// sysfs mountpoint.
    #[arg(long = "path.sysfs", default_value = "/sys")]
    pub sysfs: PathBuf,

    /// rootfs mountpoint.
    #[arg(long = "path.rootfs", default_value = "/")]
    pub rootfs: PathBuf,

    /// Set all collectors to disabled by default.
    #[arg(long = "collector.disable-defaults")]
    pub disable_defaults: bool,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,

    /// Longest time one collector may take in a scrape; a scrape's own timeout (Prometheus'
    /// X-Prometheus-Scrape-Timeout-Seconds header) shortens it.
    #[arg(long = "scrape.timeout", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub scrape_timeout: Duration,

    /// eBPF hook types to try for each kernel hook, best first; the first the kernel accepts is
    /// attached.
    #[arg(
        long = "ebpf.hook-types",
        value_enum,
        value_delimiter = ',',
        default_value = "tp_btf,raw_tp,tracepoint"
    )]
    pub hook_types: Vec<HookType>,

    /// Enable the kernel's BPF run-time statistics (kernel.bpf_stats_enabled) while running, to
    /// export per-program run time and run count. Costs some nanoseconds per event.
    #[arg(long = "ebpf.enable-stats")]
    pub enable_bpf_stats: bool,

    /// Size of the map of tasks waiting on a run queue (pid → enqueue time).
    #[arg(long = "ebpf.runqueue-max-tasks", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(64..))]
    pub runqueue_max_tasks: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Parsed command line: the options and the names of the collectors to run.
#[derive(Debug)]
pub struct Cli {
    pub options: Options,
    pub enabled_collectors: Vec<&'static str>,
}

pub fn command(collectors: &[CollectorSpec]) -> Command {
    let mut command = Options::augment_args(
        Command::new("collector")
            .version(env!("CARGO_PKG_VERSION"))
            .about("eBPF kernel metrics collector; a drop-in replacement for node_exporter."),
    );
    for spec in collectors {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        let default = if spec.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        command = command
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector (default: {default}).",
                        spec.name
                    ))
                    .help_heading("Collectors"),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .hide(true),
            );
    }
    command
}

pub fn parse_from<I, T>(collectors: &[CollectorSpec], args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command(collectors).try_get_matches_from(args)?;
    let options = Options::from_arg_matches(&matches)?;
    let enabled_collectors = collectors
        .iter()
        .filter(|spec| is_enabled(&matches, spec, options.disable_defaults))
        .map(|spec| spec.name)
        .collect();
    Ok(Cli {
        options,
        enabled_collectors,
    })
}

/// The last of `--collector.X` / `--no-collector.X` wins; without either, the default (or
/// disabled under `--collector.disable-defaults`).
fn is_enabled(matches: &ArgMatches, spec: &CollectorSpec, disable_defaults: bool) -> bool {
    let given = |id: &str| {
        matches.value_source(id) == Some(ValueSource::CommandLine) && matches.get_flag(id)
    };
    if given(&format!("collector.{}", spec.name)) {
        true
    } else if given(&format!("no-collector.{}", spec.name)) {
        false
    } else {
        spec.default_enabled && !disable_defaults
    }
}

/// Resolves a Go-style listen address: `:9100` means every address, `host:port` one host.
pub fn resolve_listen_address(address: &str) -> anyhow::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs as _;
    let (host, port) = address.rsplit_once(':').with_context(|| {
        format!("listen address {address:?} has no port (expected host:port or :port)")
    })?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("listen address {address:?}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        // Dual-stack wildcard; IPv4 clients reach it unless net.ipv6.bindv6only=1.
        return Ok(vec![SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            port,
        ))]);
    }
    let resolved: Vec<_> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve listen address {address:?}"))?
        .collect();
    if resolved.is_empty() {
        bail!("listen address {address:?} resolves to nothing");
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(
        _: &crate::collectors::BuildContext,
    ) -> anyhow::Result<std::sync::Arc<dyn crate::scrape::Collector>> {
        unreachable!("not built in these tests")
    }

    const SPECS: &[CollectorSpec] = &[
        CollectorSpec {
            name: "alpha",
            default_enabled: true,
            hooks: &[],
            build: noop,
        },
        CollectorSpec {
            name: "beta",
            default_enabled: false,
            hooks: &[],
            build: noop,
        },
        CollectorSpec {
            name: "ebpf.gamma",
            default_enabled: true,
            hooks: &[],
            build: noop,
        },
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(
            SPECS,
            std::iter::once("collector").chain(args.iter().copied()),
        )
    }

    #[test]
    fn defaults_match_node_exporter() {
        let cli = parse(&[]).unwrap();
        let o = &cli.options;
        assert_eq!(o.listen_addresses, vec![":9100"]);
        assert_eq!(o.telemetry_path, "/metrics");
        assert_eq!(o.max_requests, 40);
        assert!(!o.disable_exporter_metrics);
        assert_eq!(o.procfs, PathBuf::from("/proc"));
        assert_eq!(o.sysfs, PathBuf::from("/sys"));
        assert_eq!(o.rootfs, PathBuf::from("/"));
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.log_format, LogFormat::Logfmt);
        assert_eq!(
            o.hook_types,
            vec![
                HookType::BtfTracepoint,
                HookType::RawTracepoint,
                HookType::Tracepoint
            ]
        );
        assert_eq!(cli.enabled_collectors, vec!["alpha", "ebpf.gamma"]);
    }

    #[test]
    fn node_exporter_style_values() {
        let cli = parse(&[
            "--web.listen-address=127.0.0.1:9100",
            "--web.listen-address",
            "[::1]:9101",
            "--web.telemetry-path=/m",
            "--web.max-requests=0",
            "--web.disable-exporter-metrics",
            "--path.procfs=/host/proc",
            "--path.sysfs",
            "/host/sys",
            "--path.rootfs=/host/root",
            "--log.level=debug",
            "--log.format=json",
            "--scrape.timeout=2s500ms",
            "--ebpf.hook-types=raw_tp,tracepoint",
        ])
        .unwrap();
        let o = &cli.options;
        assert_eq!(o.listen_addresses, vec!["127.0.0.1:9100", "[::1]:9101"]);
        assert_eq!(o.telemetry_path, "/m");
        assert_eq!(o.max_requests, 0);
        assert!(o.disable_exporter_metrics);
        assert_eq!(o.procfs, PathBuf::from("/host/proc"));
        assert_eq!(o.sysfs, PathBuf::from("/host/sys"));
        assert_eq!(o.rootfs, PathBuf::from("/host/root"));
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.log_format, LogFormat::Json);
        assert_eq!(o.scrape_timeout, Duration::from_millis(2500));
        assert_eq!(
            o.hook_types,
            vec![HookType::RawTracepoint, HookType::Tracepoint]
        );
    }

    #[test]
    fn collector_switches() {
        let cli = parse(&["--collector.beta", "--no-collector.alpha"]).unwrap();
        assert_eq!(cli.enabled_collectors, vec!["beta", "ebpf.gamma"]);
        let cli = parse(&["--collector.disable-defaults", "--collector.ebpf.gamma"]).unwrap();
        assert_eq!(cli.enabled_collectors, vec!["ebpf.gamma"]);
        // The last switch wins, as with kingpin.
        let cli = parse(&["--no-collector.alpha", "--collector.alpha"]).unwrap();
        assert!(cli.enabled_collectors.contains(&"alpha"));
        let cli = parse(&["--collector.alpha", "--no-collector.alpha"]).unwrap();
        assert!(!cli.enabled_collectors.contains(&"alpha"));
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let err = parse(&["--collector.nonexistent"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("--collector.nonexistent"), "{err}");
        let err = parse(&["--log.level=verbose"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("possible values: debug, info, warn, error"),
            "{err}"
        );
        let err = parse(&["--web.max-requests=many"]).unwrap_err();
        assert!(err.to_string().contains("--web.max-requests"), "{err}");
        let err = parse(&["--ebpf.hook-types=kprobe"]).unwrap_err();
        assert!(err.to_string().contains("tp_btf"), "{err}");
    }

    #[test]
    fn listen_addresses_resolve() {
        let any = resolve_listen_address(":9100").unwrap();
        assert_eq!(any, vec!["[::]:9100".parse().unwrap()]);
        let local = resolve_listen_address("127.0.0.1:0").unwrap();
        assert_eq!(local, vec!["127.0.0.1:0".parse().unwrap()]);
        let v6 = resolve_listen_address("[::1]:9100").unwrap();
        assert_eq!(v6, vec!["[::1]:9100".parse().unwrap()]);
        assert!(resolve_listen_address("9100").is_err());
        assert!(resolve_listen_address(":http").is_err());
    }
}
