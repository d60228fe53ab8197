//! `systemd`: unit states, and per-unit service, timer and socket figures, asked of systemd
//! (`org.freedesktop.systemd1`) over the system bus, as node_exporter's systemd collector does
//! through go-systemd: the manager's `Version`, `Virtualization` and `SystemState`, its
//! `ListUnits`, then one `Properties.Get` per unit and figure on the unit's object path.
//!
//! Differences from upstream, none visible with a real systemd: the calls are made in turn
//! rather than from five goroutines; a property of another type than systemd declares is logged
//! and skipped (upstream's type assertion would panic); the bus is bounded in time (see
//! [`super::dbus`]).
use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use regex::Regex;
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{CollectorFlags, FlagSpec},
    metrics::MetricFamily,
    node::dbus::{self, Bus, Endpoint},
};

const UNIT_INCLUDE: &str = "collector.systemd.unit-include";
const UNIT_WHITELIST: &str = "collector.systemd.unit-whitelist";
const UNIT_EXCLUDE: &str = "collector.systemd.unit-exclude";
const UNIT_BLACKLIST: &str = "collector.systemd.unit-blacklist";
const PRIVATE: &str = "collector.systemd.private";
const TASK_METRICS: &str = "collector.systemd.enable-task-metrics";
const RESTARTS_METRICS: &str = "collector.systemd.enable-restarts-metrics";
const START_TIME_METRICS: &str = "collector.systemd.enable-start-time-metrics";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "systemd",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            UNIT_INCLUDE,
            Some(".+"),
            "Regexp of systemd units to include. Units must both match include and not match exclude to be included.",
        ),
        FlagSpec::value(
            UNIT_WHITELIST,
            Some(""),
            "DEPRECATED: Use --collector.systemd.unit-include",
        )
        .hidden(),
        FlagSpec::value(
            UNIT_EXCLUDE,
            Some(".+\\.(automount|device|mount|scope|slice)"),
            "Regexp of systemd units to exclude. Units must both match include and not match exclude to be included.",
        ),
        FlagSpec::value(
            UNIT_BLACKLIST,
            Some(""),
            "DEPRECATED: Use collector.systemd.unit-exclude",
        )
        .hidden(),
        FlagSpec::bool(
            PRIVATE,
            false,
            "Establish a private, direct connection to systemd without dbus (Strongly discouraged since it requires root. For testing purposes only).",
        )
        .hidden(),
        FlagSpec::bool(
            TASK_METRICS,
            false,
            "Enables service unit tasks metrics unit_tasks_current and unit_tasks_max",
        ),
        FlagSpec::bool(
            RESTARTS_METRICS,
            false,
            "Enables service unit metric service_restart_total",
        ),
        FlagSpec::bool(
            START_TIME_METRICS,
            false,
            "Enables service unit metric unit_start_time_seconds",
        ),
    ],
    kernel: None,
    build,
};

/// The first version with the manager's `SystemState` and the timers' `LastTriggerUSec`
/// (node_exporter issue #291): below it, neither family is served.
const MIN_VERSION_SYSTEM_STATE: f64 = 212.0;

/// The `state` label values of `node_systemd_unit_state`, and the states always in
/// `node_systemd_units`.
const UNIT_STATES: [&str; 5] = ["active", "activating", "deactivating", "inactive", "failed"];

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

struct SystemdCollector {
    endpoint: Endpoint,
    include: Regex,
    exclude: Regex,
    task_metrics: bool,
    restarts_metrics: bool,
    start_time_metrics: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let (include, exclude) = unit_patterns(&context.flags)?;
    tracing::info!(
        flag = include,
        "Parsed flag --collector.systemd.unit-include"
    );
    tracing::info!(
        flag = exclude,
        "Parsed flag --collector.systemd.unit-exclude"
    );
    Ok(Arc::new(SystemdCollector {
        endpoint: if context.flags.bool(PRIVATE) {
            Endpoint::SystemdPrivate
        } else {
            Endpoint::SystemBus
        },
        include: anchored(UNIT_INCLUDE, &include)?,
        exclude: anchored(UNIT_EXCLUDE, &exclude)?,
        task_metrics: context.flags.bool(TASK_METRICS),
        restarts_metrics: context.flags.bool(RESTARTS_METRICS),
        start_time_metrics: context.flags.bool(START_TIME_METRICS),
    }))
}

/// The include and exclude patterns as upstream settles them: a deprecated spelling replaces a
/// defaulted new one (with a warning) and is an error beside an explicit one.
fn unit_patterns(flags: &CollectorFlags) -> anyhow::Result<(String, String)> {
    let pick = |new: &str, old: &str| -> anyhow::Result<String> {
        let value = flags.string(new).unwrap_or_default().to_owned();
        let deprecated = flags.string(old).unwrap_or_default();
        if deprecated.is_empty() {
            return Ok(value);
        }
        if flags.is_explicit(new) {
            anyhow::bail!("--{old} and --{new} are mutually exclusive");
        }
        tracing::warn!("--{old} is DEPRECATED and will be removed in 2.0.0, use --{new}");
        Ok(deprecated.to_owned())
    };
    let exclude = pick(UNIT_EXCLUDE, UNIT_BLACKLIST)?;
    let include = pick(UNIT_INCLUDE, UNIT_WHITELIST)?;
    Ok((include, exclude))
}

/// `pattern` matched against a whole unit name, as upstream's `^(?:pattern)$`.
fn anchored(flag: &str, pattern: &str) -> anyhow::Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$"))
        .with_context(|| format!("--{flag}: bad regular expression"))
}

/// A unit as `ListUnits` lists it, less what the collector does not use.
#[derive(Clone, Debug, PartialEq)]
struct Unit {
    name: String,
    load_state: String,
    active_state: String,
}

/// `ListUnits`' `a(ssssssouso)`: name, description, load state, active state, sub state,
/// followed, object path, job id, job type, job path.
type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl Collector for SystemdCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let bus = dbus::connect(self.endpoint).context("couldn't get dbus connection")?;

        let (version, version_full) = systemd_version(&bus);
        if version < MIN_VERSION_SYSTEM_STATE {
            tracing::debug!(
                current = version,
                minimum = MIN_VERSION_SYSTEM_STATE,
                "Detected systemd version is lower than minimum, some systemd state and timer metrics will not be available"
            );
        }
        out.push(
            MetricFamily::gauge("node_systemd_version", "Detected systemd version")
                .with([("version", version_full)], version),
        );
        out.push(
            MetricFamily::gauge(
                "node_systemd_virtualization_info",
                "Detected virtualization technology",
            )
            .with([("virtualization_type", virtualization(&bus))], 1.0),
        );

        let all_units = list_units(&bus).context("couldn't get units")?;
        out.push(summary_family(&summarize_units(&all_units)));
        let units = filter_units(&all_units, &self.include, &self.exclude);

        self.unit_status(&bus, &units, out);
        if self.start_time_metrics {
            out.push(start_times(&bus, &units));
        }
        if self.task_metrics {
            out.extend(tasks(&bus, &units));
        }
        if version >= MIN_VERSION_SYSTEM_STATE {
            out.push(timers(&bus, &units));
        }
        out.extend(sockets(&bus, &units));
        if version >= MIN_VERSION_SYSTEM_STATE {
            let running = system_running(&bus).context("couldn't get system state")?;
            out.push(
                MetricFamily::gauge(
                    "node_systemd_system_running",
                    "Whether the system is operational (see 'systemctl is-system-running')",
                )
                .with_value(if running { 1.0 } else { 0.0 }),
            );
        }
        bus.finish()
    }
}

impl SystemdCollector {
    /// `node_systemd_unit_state` (with the service's or mount's `Type`), and the services'
    /// restarts when asked for.
    fn unit_status(&self, bus: &Bus, units: &[Unit], out: &mut Vec<MetricFamily>) {
        let mut states = MetricFamily::gauge("node_systemd_unit_state", "Systemd unit");
        let mut restarts = MetricFamily::counter(
            "node_systemd_service_restart_total",
            "Service unit count of Restart triggers",
        );
        for unit in units {
            let kind = if unit.name.ends_with(".service") {
                Some("Service")
            } else if unit.name.ends_with(".mount") {
                Some("Mount")
            } else {
                None
            };
            let unit_type = kind
                .and_then(|kind| {
                    unit_property(bus, &unit.name, kind, "Type", as_string)
                        .inspect_err(|error| {
                            tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit type");
                        })
                        .ok()
                })
                .unwrap_or_default();
            for state in UNIT_STATES {
                let active = if state == unit.active_state { 1.0 } else { 0.0 };
                states.push(
                    [
                        ("name", unit.name.as_str()),
                        ("state", state),
                        ("type", unit_type.as_str()),
                    ],
                    active,
                );
            }
            if self.restarts_metrics && unit.name.ends_with(".service") {
                // NRestarts wasn't added until systemd 235.
                match unit_property(bus, &unit.name, "Service", "NRestarts", as_u32) {
                    Ok(count) => restarts.push([("name", unit.name.as_str())], f64::from(count)),
                    Err(error) => {
                        tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit NRestarts");
                    }
                }
            }
        }
        out.push(states);
        out.push(restarts);
    }
}

/// `node_systemd_unit_start_time_seconds`: `ActiveEnterTimestamp` of active units, 0 for the
/// others.
fn start_times(bus: &Bus, units: &[Unit]) -> MetricFamily {
    let mut family = MetricFamily::gauge(
        "node_systemd_unit_start_time_seconds",
        "Start time of the unit since unix epoch in seconds.",
    );
    for unit in units {
        let usec = if unit.active_state != "active" {
            0
        } else {
            match unit_property(bus, &unit.name, "Unit", "ActiveEnterTimestamp", as_u64) {
                Ok(usec) => usec,
                Err(error) => {
                    tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit StartTimeUsec");
                    continue;
                }
            }
        };
        family.push([("name", unit.name.as_str())], usec as f64 / 1e6);
    }
    family
}

/// `node_systemd_unit_tasks_current` and `_max` of services; systemd's "no value",
/// `u64::MAX`, is left out.
fn tasks(bus: &Bus, units: &[Unit]) -> [MetricFamily; 2] {
    let mut current = MetricFamily::gauge(
        "node_systemd_unit_tasks_current",
        "Current number of tasks per Systemd unit",
    );
    let mut max = MetricFamily::gauge(
        "node_systemd_unit_tasks_max",
        "Maximum number of tasks per Systemd unit",
    );
    for unit in units.iter().filter(|u| u.name.ends_with(".service")) {
        for (property, family) in [("TasksCurrent", &mut current), ("TasksMax", &mut max)] {
            match unit_property(bus, &unit.name, "Service", property, as_u64) {
                Ok(u64::MAX) => {}
                Ok(value) => family.push([("name", unit.name.as_str())], value as f64),
                Err(error) => {
                    tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit {property}");
                }
            }
        }
    }
    [current, max]
}

/// `node_systemd_timer_last_trigger_seconds`: timers' `LastTriggerUSec`.
fn timers(bus: &Bus, units: &[Unit]) -> MetricFamily {
    let mut family = MetricFamily::gauge(
        "node_systemd_timer_last_trigger_seconds",
        "Seconds since epoch of last trigger.",
    );
    for unit in units.iter().filter(|u| u.name.ends_with(".timer")) {
        match unit_property(bus, &unit.name, "Timer", "LastTriggerUSec", as_u64) {
            Ok(usec) => family.push([("name", unit.name.as_str())], usec as f64 / 1e6),
            Err(error) => {
                tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit LastTriggerUSec");
            }
        }
    }
    family
}

/// Sockets' accepted, current and refused connections. As upstream, a socket without
/// `NAccepted` gets none of the three and one without `NConnections` no more; `NRefused`
/// (systemd 239) is a gauge despite its `_total`.
fn sockets(bus: &Bus, units: &[Unit]) -> [MetricFamily; 3] {
    let mut accepted = MetricFamily::counter(
        "node_systemd_socket_accepted_connections_total",
        "Total number of accepted socket connections",
    );
    let mut current = MetricFamily::gauge(
        "node_systemd_socket_current_connections",
        "Current number of socket connections",
    );
    let mut refused = MetricFamily::gauge(
        "node_systemd_socket_refused_connections_total",
        "Total number of refused socket connections",
    );
    for unit in units.iter().filter(|u| u.name.ends_with(".socket")) {
        let name = [("name", unit.name.as_str())];
        match unit_property(bus, &unit.name, "Socket", "NAccepted", as_u32) {
            Ok(count) => accepted.push(name, f64::from(count)),
            Err(error) => {
                tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit NAccepted");
                continue;
            }
        }
        match unit_property(bus, &unit.name, "Socket", "NConnections", as_u32) {
            Ok(count) => current.push(name, f64::from(count)),
            Err(error) => {
                tracing::debug!(unit = unit.name, err = %format!("{error:#}"), "couldn't get unit NConnections");
                continue;
            }
        }
        if let Ok(count) = unit_property(bus, &unit.name, "Socket", "NRefused", as_u32) {
            refused.push(name, f64::from(count));
        }
    }
    [accepted, current, refused]
}

fn list_units(bus: &Bus) -> anyhow::Result<Vec<Unit>> {
    let listed: Vec<ListedUnit> = bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "ListUnits")?;
    Ok(listed
        .into_iter()
        .map(|(name, _, load_state, active_state, ..)| Unit {
            name,
            load_state,
            active_state,
        })
        .collect())
}

/// Units per active state, over every listed unit: the five known states always, and any other
/// state a unit is in (systemd's `reloading`, `maintenance`, ...).
fn summarize_units(units: &[Unit]) -> BTreeMap<String, f64> {
    let mut summary: BTreeMap<String, f64> =
        UNIT_STATES.iter().map(|s| ((*s).to_owned(), 0.0)).collect();
    for unit in units {
        *summary.entry(unit.active_state.clone()).or_default() += 1.0;
    }
    summary
}

fn summary_family(summary: &BTreeMap<String, f64>) -> MetricFamily {
    let mut family = MetricFamily::gauge("node_systemd_units", "Summary of systemd unit states");
    for (state, count) in summary {
        family.push([("state", state.as_str())], *count);
    }
    family
}

/// Loaded units whose name matches `include` and not `exclude`.
fn filter_units(units: &[Unit], include: &Regex, exclude: &Regex) -> Vec<Unit> {
    units
        .iter()
        .filter(|unit| {
            let keep = include.is_match(&unit.name)
                && !exclude.is_match(&unit.name)
                && unit.load_state == "loaded";
            if keep {
                tracing::debug!(unit = unit.name, "Adding unit");
            } else {
                tracing::debug!(unit = unit.name, "Ignoring unit");
            }
            keep
        })
        .cloned()
        .collect()
}

/// The manager's `Version` as upstream reads it: the number its first `NNN[.N]` gives, and the
/// whole string as the label; `(0, "")` when it cannot be had.
fn systemd_version(bus: &Bus) -> (f64, String) {
    match manager_string(bus, "Version") {
        Ok(quoted) => parse_version(&quoted),
        Err(error) => {
            tracing::debug!(err = %format!("{error:#}"), "Unable to get systemd version property, defaulting to 0");
            (0.0, String::new())
        }
    }
}

/// `quoted` is the property in godbus' quoted form; upstream strips one quote off each end.
fn parse_version(quoted: &str) -> (f64, String) {
    let version = quoted.strip_suffix('"').unwrap_or(quoted);
    let version = version.strip_prefix('"').unwrap_or(version);
    tracing::debug!(version, "Got systemd version");
    static NUMBER: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"[0-9]{3,}(\.[0-9]+)?").expect("a valid regular expression")
    });
    let parsed = NUMBER
        .find(version)
        .and_then(|m| m.as_str().parse::<f64>().ok())
        // Go's ParseFloat fails with a range error where Rust's gives infinity.
        .filter(|v| v.is_finite());
    match parsed {
        Some(number) => (number, version.to_owned()),
        None => {
            tracing::debug!(version, "Got invalid systemd version");
            (0.0, String::new())
        }
    }
}

/// The manager's `Virtualization`: "unknown" when it cannot be had, "none" when empty.
fn virtualization(bus: &Bus) -> String {
    match manager_string(bus, "Virtualization") {
        Ok(quoted) => virtualization_label(&quoted),
        Err(error) => {
            tracing::debug!(err = %format!("{error:#}"), "Could not get Virtualization property");
            "unknown".to_owned()
        }
    }
}

fn virtualization_label(quoted: &str) -> String {
    match quoted.trim_matches('"') {
        // No virtualization reported: bare metal.
        "" => "none".to_owned(),
        virt => virt.to_owned(),
    }
}

/// Whether the manager's `SystemState` is `running`.
fn system_running(bus: &Bus) -> anyhow::Result<bool> {
    Ok(manager_string(bus, "SystemState")? == "\"running\"")
}

/// A string property of the manager in godbus' `Variant.String()` form (Go-quoted), as
/// go-systemd's `GetManagerProperty` returns it.
fn manager_string(bus: &Bus, name: &str) -> anyhow::Result<String> {
    let value = bus.property(SYSTEMD, MANAGER_PATH, MANAGER, name)?;
    as_string(&value).map(|s| dbus::go_quote(&s))
}

/// A property of `unit`'s object on `org.freedesktop.systemd1.<kind>`, read by `read`.
fn unit_property<T>(
    bus: &Bus,
    unit: &str,
    kind: &str,
    name: &str,
    read: fn(&Value<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let interface = format!("{SYSTEMD}.{kind}");
    let value = bus.property(SYSTEMD, &unit_path(unit), &interface, name)?;
    read(&value).with_context(|| format!("{interface}.{name}"))
}

/// The unit's object path, as go-systemd derives it without asking (`unitPath`): every byte but
/// ASCII letters and digits (and a leading digit) as `_xx`.
fn unit_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        path.push('_');
    }
    for (i, byte) in unit.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (byte.is_ascii_digit() && i > 0) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

fn as_string(value: &Value<'_>) -> anyhow::Result<String> {
    match value {
        Value::Str(s) => Ok(s.as_str().to_owned()),
        other => anyhow::bail!("a value of type {}, not s", dbus::signature(other)),
    }
}

fn as_u32(value: &Value<'_>) -> anyhow::Result<u32> {
    match value {
        Value::U32(n) => Ok(*n),
        other => anyhow::bail!("a value of type {}, not u", dbus::signature(other)),
    }
}

fn as_u64(value: &Value<'_>) -> anyhow::Result<u64> {
    match value {
        Value::U64(n) => Ok(*n),
        other => anyhow::bail!("a value of type {}, not t", dbus::signature(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, load_state: &str, active_state: &str) -> Unit {
        Unit {
            name: name.to_owned(),
            load_state: load_state.to_owned(),
            active_state: active_state.to_owned(),
        }
    }

    /// Upstream's test fixture: one loaded active unit, three not found.
    fn fixture() -> Vec<Unit> {
        vec![
            unit("foo", "loaded", "active"),
            unit("bar", "not-found", "inactive"),
            unit("foobar", "not-found", "inactive"),
            unit("baz", "not-found", "inactive"),
        ]
    }

    fn flags(args: &[&str]) -> CollectorFlags {
        let command = SPEC
            .flags
            .iter()
            .fold(clap::Command::new("t"), |command, spec| {
                command.args(spec.args("systemd"))
            });
        let matches = command
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap();
        CollectorFlags::from_matches(&matches, SPEC.flags)
    }

    #[test]
    fn filters_as_upstream() {
        let include = anchored(UNIT_INCLUDE, "foo").unwrap();
        let exclude = anchored(UNIT_EXCLUDE, "bar").unwrap();
        let kept = filter_units(&fixture(), &include, &exclude);
        assert_eq!(kept, vec![unit("foo", "loaded", "active")]);
        // The defaults keep every loaded unit but automounts, devices, mounts, scopes, slices.
        let (include, exclude) = unit_patterns(&flags(&[])).unwrap();
        let (include, exclude) = (
            anchored(UNIT_INCLUDE, &include).unwrap(),
            anchored(UNIT_EXCLUDE, &exclude).unwrap(),
        );
        assert_eq!(filter_units(&fixture(), &include, &exclude).len(), 1);
        let mut units = fixture();
        units.push(unit("home.mount", "loaded", "active"));
        units.push(unit("sshd.service", "loaded", "active"));
        units.push(unit("x.slice.service", "loaded", "active"));
        let names: Vec<String> = filter_units(&units, &include, &exclude)
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["foo", "sshd.service", "x.slice.service"]);
    }

    #[test]
    fn deprecated_patterns() {
        let (include, exclude) = unit_patterns(&flags(&[
            "--collector.systemd.unit-whitelist=a.*",
            "--collector.systemd.unit-blacklist=b.*",
        ]))
        .unwrap();
        assert_eq!((include.as_str(), exclude.as_str()), ("a.*", "b.*"));
        let error = unit_patterns(&flags(&[
            "--collector.systemd.unit-blacklist=b.*",
            "--collector.systemd.unit-exclude=c.*",
        ]))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "--collector.systemd.unit-blacklist and --collector.systemd.unit-exclude are mutually exclusive"
        );
        assert!(
            unit_patterns(&flags(&[
                "--collector.systemd.unit-whitelist=a",
                "--collector.systemd.unit-include=b",
            ]))
            .is_err()
        );
        assert!(anchored(UNIT_INCLUDE, "(").is_err());
    }

    #[test]
    fn summary_counts_every_unit_in_every_state() {
        let summary = summarize_units(&fixture());
        let expected: BTreeMap<String, f64> = [
            ("activating", 0.0),
            ("active", 1.0),
            ("deactivating", 0.0),
            ("failed", 0.0),
            ("inactive", 3.0),
        ]
        .into_iter()
        .map(|(s, n)| (s.to_owned(), n))
        .collect();
        assert_eq!(summary, expected);
        let mut units = fixture();
        units.push(unit("a.service", "loaded", "reloading"));
        let summary = summarize_units(&units);
        assert_eq!(summary.len(), 6);
        assert_eq!(summary["reloading"], 1.0);
        assert_eq!(summarize_units(&[]).values().sum::<f64>(), 0.0);
    }

    #[test]
    fn versions_as_upstream_reads_them() {
        assert_eq!(
            parse_version("\"252.19-1~deb12u1\""),
            (252.19, "252.19-1~deb12u1".to_owned())
        );
        assert_eq!(parse_version("\"255\""), (255.0, "255".to_owned()));
        assert_eq!(
            parse_version("\"v245.4-4ubuntu3\""),
            (245.4, "v245.4-4ubuntu3".to_owned())
        );
        assert_eq!(parse_version("\"99\""), (0.0, String::new()));
        assert_eq!(parse_version("\"\""), (0.0, String::new()));
        assert_eq!(parse_version("garbage"), (0.0, String::new()));
        let huge = format!("\"{}\"", "9".repeat(400));
        assert_eq!(parse_version(&huge), (0.0, String::new()));
        // Upstream strips one quote at each end, so an inner one stays escaped.
        assert_eq!(
            parse_version(&dbus::go_quote("250 \"x\"")),
            (250.0, "250 \\\"x\\\"".to_owned())
        );
    }

    #[test]
    fn virtualization_labels() {
        assert_eq!(virtualization_label("\"kvm\""), "kvm");
        assert_eq!(virtualization_label("\"\""), "none");
        assert_eq!(virtualization_label(&dbus::go_quote("\"\"")), "\\\"\\");
    }

    #[test]
    fn unit_paths_as_systemd_escapes_them() {
        assert_eq!(
            unit_path("sshd.service"),
            "/org/freedesktop/systemd1/unit/sshd_2eservice"
        );
        assert_eq!(
            unit_path("getty@tty1.service"),
            "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
        );
        assert_eq!(
            unit_path("1-x.mount"),
            "/org/freedesktop/systemd1/unit/_31_2dx_2emount"
        );
        assert_eq!(unit_path(""), "/org/freedesktop/systemd1/unit/_");
        assert_eq!(
            unit_path("é\u{1}"),
            "/org/freedesktop/systemd1/unit/_c3_a9_01"
        );
        for name in ["a.service", "", "é\u{1}", "0"] {
            assert!(
                zbus::zvariant::ObjectPath::try_from(unit_path(name)).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn property_types_are_checked() {
        assert_eq!(as_u32(&Value::U32(7)).unwrap(), 7);
        assert!(as_u32(&Value::U64(7)).is_err());
        assert_eq!(as_u64(&Value::U64(u64::MAX)).unwrap(), u64::MAX);
        let error = as_u64(&Value::from("7")).unwrap_err();
        assert_eq!(error.to_string(), "a value of type s, not t");
        assert_eq!(as_string(&Value::from("simple")).unwrap(), "simple");
        assert!(as_string(&Value::Bool(true)).is_err());
    }
}
