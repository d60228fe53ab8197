//! Command-line flags, named and defaulted as node_exporter's so an existing DaemonSet's args
//! work unchanged. Collector switches (`--collector.<name>`, `--no-collector.<name>`) are
//! generated from the collector registry.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, ValueEnum};

use crate::{
    collector::CollectorSpec,
    ebpf::runtime::EbpfOptions,
    flags::{self, CollectorFlags, FlagSpec},
    node::unimplemented::IgnoredCollector,
    server::kube_auth::KubeAuthOptions,
};

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

    /// Maximum number of open HTTP connections; a connection beyond it is closed at once
    /// (logged). Bounds the memory and file descriptors clients can hold.
    #[arg(long = "web.max-connections", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

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

    /// udev data path.
    #[arg(long = "path.udev.data", default_value = "/run/udev/data")]
    pub udev_data: PathBuf,

    /// Use systemd socket activation listeners instead of port listeners (Linux only).
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,

    /// Path to configuration file that can enable TLS or authentication (node_exporter's format:
    /// tls_server_config, http_server_config, basic_auth_users, rate_limit). See docs/security.md.
    #[arg(long = "web.config.file", default_value = "")]
    pub web_config_file: String,

    /// The target number of CPUs the async runtime runs on (node_exporter: Go's GOMAXPROCS).
    /// Collectors run on their own threads.
    #[arg(long = "runtime.gomaxprocs", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub gomaxprocs: u16,

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

    #[command(flatten)]
    pub ebpf: EbpfOptions,

    #[command(flatten)]
    pub kube_auth: KubeAuthOptions,
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

/// Parsed command line: the options, the names of the collectors to run and their flags.
#[derive(Debug)]
pub struct Cli {
    pub options: Options,
    pub enabled_collectors: Vec<&'static str>,
    pub collector_flags: CollectorFlags,
    /// Upstream collectors and options given on the command line that this collector does not
    /// implement: they do nothing here, which is logged once as a warning.
    pub ignored_given: Vec<String>,
    /// Upstream collectors on by default that this collector does not implement: logged once,
    /// as information.
    pub ignored_by_default: Vec<String>,
}

/// The collectors and options known to the command line: implemented and accepted-only.
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    pub collectors: &'a [CollectorSpec],
    pub ignored: &'a [IgnoredCollector],
}

impl Registry<'_> {
    fn switches(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        let implemented = self.collectors.iter().map(|c| (c.name, c.default_enabled));
        let ignored = self.ignored.iter().map(|c| (c.name, c.default_enabled));
        implemented.chain(ignored)
    }

    fn flags(&self) -> impl Iterator<Item = &FlagSpec> + '_ {
        let implemented = self.collectors.iter().flat_map(|c| c.flags);
        let ignored = self.ignored.iter().flat_map(|c| c.flags);
        implemented.chain(ignored)
    }
}

pub fn command(registry: Registry<'_>) -> Command {
    let mut command = Options::augment_args(
        Command::new("collector")
            .version(env!("CARGO_PKG_VERSION"))
            .about("eBPF kernel metrics collector; a drop-in replacement for node_exporter."),
    );
    for (name, default_enabled) in registry.switches() {
        let default = if default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        let switch = format!("collector.{name}");
        let arg = Arg::new(switch.clone())
            .long(switch)
            .help(format!("Enable the {name} collector (default: {default})."))
            .help_heading("Collectors");
        command = command.args(flags::bool_args(arg));
    }
    for flag in registry.flags() {
        command = command.args(flag.args("Collector options"));
    }
    command
}

pub fn parse_from<I, T>(registry: Registry<'_>, args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command(registry).try_get_matches_from(args)?;
    let options = Options::from_arg_matches(&matches)?;
    let enabled = |name: &str, default_enabled: bool| {
        is_enabled(&matches, name, default_enabled, options.disable_defaults)
    };
    let enabled_collectors = registry
        .collectors
        .iter()
        .filter(|spec| enabled(spec.name, spec.default_enabled))
        .map(|spec| spec.name)
        .collect();
    let collector_flags = CollectorFlags::from_matches(&matches, registry.flags());
    let (mut ignored_given, mut ignored_by_default) = (Vec::new(), Vec::new());
    for collector in registry.ignored {
        let switch = format!("collector.{}", collector.name);
        if flags::given_bool(&matches, &switch) == Some(true) {
            ignored_given.push(switch);
        } else if enabled(collector.name, collector.default_enabled) {
            ignored_by_default.push(switch);
        }
        ignored_given.extend(
            collector_flags
                .explicit_among(collector.flags)
                .map(str::to_owned),
        );
    }
    Ok(Cli {
        options,
        enabled_collectors,
        collector_flags,
        ignored_given,
        ignored_by_default,
    })
}

/// The last of `--collector.X` / `--no-collector.X` wins; without either, the default (or
/// disabled under `--collector.disable-defaults`).
fn is_enabled(
    matches: &ArgMatches,
    name: &str,
    default_enabled: bool,
    disable_defaults: bool,
) -> bool {
    flags::given_bool(matches, &format!("collector.{name}"))
        .unwrap_or(default_enabled && !disable_defaults)
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
    use crate::ebpf::runtime::HookType;

    fn noop(
        _: &crate::collector::BuildContext,
    ) -> anyhow::Result<std::sync::Arc<dyn crate::collector::Collector>> {
        unreachable!("not built in these tests")
    }

    const SPECS: &[CollectorSpec] = &[
        CollectorSpec {
            name: "alpha",
            default_enabled: true,
            flags: &[
                FlagSpec::bool("collector.alpha.extra", false, "Extra."),
                FlagSpec::value("collector.alpha.exclude", Some("^lo$"), "Exclude."),
                FlagSpec::repeated("collector.alpha.include", "Include."),
            ],
            kernel: None,
            build: noop,
        },
        CollectorSpec {
            name: "beta",
            default_enabled: false,
            flags: &[],
            kernel: None,
            build: noop,
        },
        CollectorSpec {
            name: "ebpf.gamma",
            default_enabled: true,
            flags: &[],
            kernel: None,
            build: noop,
        },
    ];

    const IGNORED: &[IgnoredCollector] = &[
        IgnoredCollector {
            name: "zeta",
            default_enabled: true,
            flags: &[FlagSpec::value(
                "collector.zeta.url",
                Some("http://x"),
                "URL.",
            )],
        },
        IgnoredCollector {
            name: "eta",
            default_enabled: false,
            flags: &[],
        },
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let registry = Registry {
            collectors: SPECS,
            ignored: IGNORED,
        };
        parse_from(
            registry,
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
            o.ebpf.hook_types,
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
            o.ebpf.hook_types,
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
    fn collector_options() {
        let cli = parse(&[]).unwrap();
        let flags = &cli.collector_flags;
        assert!(!flags.bool("collector.alpha.extra"));
        assert_eq!(flags.string("collector.alpha.exclude"), Some("^lo$"));
        assert!(!flags.is_explicit("collector.alpha.exclude"));
        assert!(flags.strings("collector.alpha.include").is_empty());

        let cli = parse(&[
            "--collector.alpha.extra",
            "--collector.alpha.exclude=^(eth|lo)\\d*$",
            "--collector.alpha.include",
            "a",
            "--collector.alpha.include=-b",
        ])
        .unwrap();
        let flags = &cli.collector_flags;
        assert!(flags.bool("collector.alpha.extra"));
        assert!(flags.is_explicit("collector.alpha.exclude"));
        let exclude = flags.regex("collector.alpha.exclude").unwrap().unwrap();
        assert!(exclude.is_match("eth0") && !exclude.is_match("wlan0"));
        assert_eq!(flags.strings("collector.alpha.include"), ["a", "-b"]);

        let cli = parse(&["--collector.alpha.extra", "--no-collector.alpha.extra"]).unwrap();
        assert!(!cli.collector_flags.bool("collector.alpha.extra"));
        let cli = parse(&["--collector.alpha.exclude=("]).unwrap();
        let err = cli
            .collector_flags
            .regex("collector.alpha.exclude")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("--collector.alpha.exclude"),
            "{err:#}"
        );
    }

    #[test]
    fn unimplemented_upstream_options_are_accepted_and_reported() {
        let cli = parse(&[]).unwrap();
        assert!(cli.ignored_given.is_empty());
        assert_eq!(cli.ignored_by_default, ["collector.zeta"]);
        let cli = parse(&[
            "--no-collector.zeta",
            "--collector.eta",
            "--collector.zeta.url=http://y",
        ])
        .unwrap();
        assert_eq!(cli.ignored_given, ["collector.zeta.url", "collector.eta"]);
        assert!(cli.ignored_by_default.is_empty());
        parse(&["--runtime.gomaxprocs=2", "--path.udev.data=/x"]).unwrap();
    }

    #[test]
    fn web_config_file_and_systemd_socket_are_implemented() {
        let cli = parse(&["--web.config.file=/etc/web.yml", "--web.systemd-socket"]).unwrap();
        assert_eq!(cli.options.web_config_file, "/etc/web.yml");
        assert!(cli.options.systemd_socket);
        assert!(cli.ignored_given.is_empty());
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.options.web_config_file, "");
        assert!(!cli.options.systemd_socket);
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
        let err = parse(&["--ebpf.block-inflight-slots=1"]).unwrap_err();
        assert!(err.to_string().contains("2..=2097152"), "{err}");
        let cli = parse(&["--ebpf.block-inflight-slots=4096"]).unwrap();
        assert_eq!(cli.options.ebpf.block_inflight_slots, Some(4096));
        assert_eq!(parse(&[]).unwrap().options.ebpf.block_inflight_slots, None);
        let err = parse(&["--ebpf.histogram-buckets=all"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("possible values: measurable, full"),
            "{err}"
        );
        use crate::ebpf::runtime::histogram::HistogramBuckets;
        let buckets = |args: &[&str]| parse(args).unwrap().options.ebpf.histogram_buckets;
        assert_eq!(buckets(&[]), HistogramBuckets::Measurable);
        assert_eq!(
            buckets(&["--ebpf.histogram-buckets=full"]),
            HistogramBuckets::Full
        );
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
