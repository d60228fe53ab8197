//! The `systemd` and `logind` collectors against a system bus of the test's own: a private
//! `dbus-daemon` (Debian's), on which the test registers fake `org.freedesktop.systemd1` and
//! `org.freedesktop.login1` services (zbus, in this process) that expose exactly the methods
//! and properties the collectors call, with units, sessions and seats the test knows. The real
//! daemon is pointed at it with `DBUS_SYSTEM_BUS_ADDRESS`, as libsystemd and godbus read it.
//!
//! This stands for the golden files of the file collectors (tests/golden.rs): those collectors
//! read no file. The golden-style checks are here instead: every family and value is asserted,
//! the whole output is compared with tests/golden/dbus/<collector>.prom (`UPDATE_GOLDEN=systemd`
//! or `=logind` rewrites it), and the real node_exporter is run against the same fake bus.
mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    Daemon, Scrape,
    exposition::{PrintedFamily, printed_families},
};
use zbus::{
    fdo,
    zvariant::{ObjectPath, OwnedObjectPath},
};

const SYSTEMD_FLAGS: &[&str] = &[
    "--collector.disable-defaults",
    "--web.disable-exporter-metrics",
    "--collector.systemd",
    "--collector.systemd.enable-task-metrics",
    "--collector.systemd.enable-restarts-metrics",
    "--collector.systemd.enable-start-time-metrics",
];

const LOGIND_FLAGS: &[&str] = &[
    "--collector.disable-defaults",
    "--web.disable-exporter-metrics",
    "--collector.logind",
];

// ---------------------------------------------------------------------------------------------
// The bus.

/// A private `dbus-daemon` on a socket in a directory of its own; stopped when dropped.
struct Bus {
    child: Child,
    dir: PathBuf,
    address: String,
}

impl Bus {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dbus-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(common::tool("dbus-daemon"))
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // As root it warns that it cannot raise its fd limit, which is of no matter here.
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon (cargo xtask setup installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Self {
            child,
            dir,
            address: line.trim().to_owned(),
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the bus daemon: a hung bus.
    fn signal(&self, signal: i32) {
        // SAFETY: kill takes plain integers.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// The collector with `args`, on this bus.
    fn daemon(&self, args: &[&str]) -> Daemon {
        let mut command = Command::new(common::daemon::BINARY);
        command
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        Daemon::spawn(command)
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The fake systemd.

#[derive(Clone)]
enum Kind {
    Service {
        service_type: &'static str,
        /// `None`: before systemd 235, no `NRestarts`.
        restarts: Option<u32>,
        tasks_current: u64,
        tasks_max: u64,
    },
    Mount {
        mount_type: &'static str,
    },
    Timer {
        last_trigger_usec: u64,
    },
    Socket {
        accepted: u32,
        connections: u32,
        /// `None`: before systemd 239, no `NRefused`.
        refused: Option<u32>,
    },
    /// A target, device...: only the `Unit` interface.
    Plain,
}

#[derive(Clone)]
struct FakeUnit {
    name: &'static str,
    load_state: &'static str,
    active_state: &'static str,
    /// Listed but without an object on the bus (its calls fail).
    no_object: bool,
    active_enter_usec: u64,
    kind: Kind,
}

const fn unit(
    name: &'static str,
    load_state: &'static str,
    active_state: &'static str,
    active_enter_usec: u64,
    kind: Kind,
) -> FakeUnit {
    FakeUnit {
        name,
        load_state,
        active_state,
        no_object: false,
        active_enter_usec,
        kind,
    }
}

/// An EKS node on EC2: kubelet and containerd, a failed SSM agent, a reloading containerd,
/// sockets old and new, a timer, and units the default filter drops.
fn host_units() -> Vec<FakeUnit> {
    vec![
        unit(
            "sshd.service",
            "loaded",
            "active",
            1_717_171_717_123_456,
            Kind::Service {
                service_type: "notify",
                restarts: Some(0),
                tasks_current: 1,
                tasks_max: 4915,
            },
        ),
        unit(
            "kubelet.service",
            "loaded",
            "active",
            1_717_171_800_000_000,
            Kind::Service {
                service_type: "simple",
                restarts: Some(3),
                tasks_current: 42,
                // infinity: not served
                tasks_max: u64::MAX,
            },
        ),
        unit(
            "amazon-ssm-agent.service",
            "loaded",
            "failed",
            1_717_171_720_000_000,
            Kind::Service {
                service_type: "simple",
                restarts: Some(5),
                tasks_current: u64::MAX,
                tasks_max: 18_446_744_073_709_551_614,
            },
        ),
        unit(
            "containerd.service",
            "loaded",
            "reloading",
            1_717_171_790_000_000,
            Kind::Service {
                service_type: "notify",
                restarts: None,
                tasks_current: 97,
                tasks_max: 4_194_304,
            },
        ),
        unit(
            "getty@tty1.service",
            "loaded",
            "activating",
            0,
            Kind::Service {
                service_type: "idle",
                restarts: Some(0),
                tasks_current: 1,
                tasks_max: 1000,
            },
        ),
        FakeUnit {
            no_object: true,
            ..unit("ghost.service", "loaded", "active", 0, Kind::Plain)
        },
        unit(
            "nfs-server.service",
            "not-found",
            "inactive",
            0,
            Kind::Plain,
        ),
        unit(
            "logrotate.timer",
            "loaded",
            "active",
            1_717_171_700_000_000,
            Kind::Timer {
                last_trigger_usec: 1_717_200_000_500_000,
            },
        ),
        unit(
            "docker.socket",
            "loaded",
            "active",
            1_717_171_701_000_000,
            Kind::Socket {
                accepted: 12,
                connections: 2,
                refused: Some(1),
            },
        ),
        unit(
            "rpcbind.socket",
            "loaded",
            "inactive",
            0,
            Kind::Socket {
                accepted: 0,
                connections: 0,
                refused: None,
            },
        ),
        unit(
            "var-lib-kubelet.mount",
            "loaded",
            "active",
            1_717_171_650_000_000,
            Kind::Mount { mount_type: "xfs" },
        ),
        unit(
            "dev-nvme0n1.device",
            "loaded",
            "active",
            1_717_171_600_000_000,
            Kind::Plain,
        ),
        unit(
            "multi-user.target",
            "loaded",
            "active",
            1_717_171_702_000_000,
            Kind::Plain,
        ),
    ]
}

/// The manager's properties; `None` for one the manager does not have.
#[derive(Clone)]
struct FakeManager {
    version: Option<&'static str>,
    virtualization: Option<&'static str>,
    system_state: Option<&'static str>,
    units: Vec<FakeUnit>,
}

fn amazon_linux() -> FakeManager {
    FakeManager {
        version: Some("252.23-2.amzn2023"),
        virtualization: Some("amazon"),
        system_state: Some("degraded"),
        units: host_units(),
    }
}

fn missing(name: &str) -> fdo::Error {
    fdo::Error::UnknownProperty(format!("no property {name}"))
}

/// `ListUnits`' `a(ssssssouso)`.
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

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeManager {
    fn list_units(&self) -> Vec<ListedUnit> {
        self.units
            .iter()
            .map(|u| {
                (
                    u.name.to_owned(),
                    format!("{} description", u.name),
                    u.load_state.to_owned(),
                    u.active_state.to_owned(),
                    "running".to_owned(),
                    String::new(),
                    path(&unit_path(u.name)),
                    0,
                    String::new(),
                    path("/"),
                )
            })
            .collect()
    }

    #[zbus(property, name = "Version")]
    fn version(&self) -> fdo::Result<String> {
        self.version
            .map(str::to_owned)
            .ok_or_else(|| missing("Version"))
    }

    #[zbus(property, name = "Virtualization")]
    fn virtualization(&self) -> fdo::Result<String> {
        self.virtualization
            .map(str::to_owned)
            .ok_or_else(|| missing("Virtualization"))
    }

    #[zbus(property, name = "SystemState")]
    fn system_state(&self) -> fdo::Result<String> {
        self.system_state
            .map(str::to_owned)
            .ok_or_else(|| missing("SystemState"))
    }
}

struct UnitObject(u64);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    #[zbus(property, name = "ActiveEnterTimestamp")]
    fn active_enter_timestamp(&self) -> u64 {
        self.0
    }
}

struct ServiceObject {
    service_type: &'static str,
    restarts: Option<u32>,
    tasks_current: u64,
    tasks_max: u64,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceObject {
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> String {
        self.service_type.to_owned()
    }

    #[zbus(property, name = "NRestarts")]
    fn restarts(&self) -> fdo::Result<u32> {
        self.restarts.ok_or_else(|| missing("NRestarts"))
    }

    #[zbus(property, name = "TasksCurrent")]
    fn tasks_current(&self) -> u64 {
        self.tasks_current
    }

    #[zbus(property, name = "TasksMax")]
    fn tasks_max(&self) -> u64 {
        self.tasks_max
    }
}

struct MountObject(&'static str);

#[zbus::interface(name = "org.freedesktop.systemd1.Mount")]
impl MountObject {
    #[zbus(property, name = "Type")]
    fn mount_type(&self) -> String {
        self.0.to_owned()
    }
}

struct TimerObject(u64);

#[zbus::interface(name = "org.freedesktop.systemd1.Timer")]
impl TimerObject {
    #[zbus(property, name = "LastTriggerUSec")]
    fn last_trigger(&self) -> u64 {
        self.0
    }
}

struct SocketObject {
    accepted: u32,
    connections: u32,
    refused: Option<u32>,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Socket")]
impl SocketObject {
    #[zbus(property, name = "NAccepted")]
    fn accepted(&self) -> u32 {
        self.accepted
    }

    #[zbus(property, name = "NConnections")]
    fn connections(&self) -> u32 {
        self.connections
    }

    #[zbus(property, name = "NRefused")]
    fn refused(&self) -> fdo::Result<u32> {
        self.refused.ok_or_else(|| missing("NRefused"))
    }
}

fn path(path: &str) -> OwnedObjectPath {
    ObjectPath::try_from(path.to_owned()).unwrap().into()
}

/// systemd's object path of a unit: bytes other than ASCII letters and digits (and a leading
/// digit) as `_xx`.
fn unit_path(name: &str) -> String {
    let mut path = "/org/freedesktop/systemd1/unit/".to_owned();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// Registers `manager` and its units' objects on `builder`.
fn serve_systemd(
    builder: zbus::blocking::connection::Builder<'static>,
    manager: FakeManager,
) -> zbus::blocking::connection::Builder<'static> {
    let mut builder = builder;
    for unit in manager.units.iter().filter(|u| !u.no_object) {
        let path = unit_path(unit.name);
        builder = builder
            .serve_at(path.clone(), UnitObject(unit.active_enter_usec))
            .unwrap();
        builder = match unit.kind.clone() {
            Kind::Service {
                service_type,
                restarts,
                tasks_current,
                tasks_max,
            } => builder.serve_at(
                path,
                ServiceObject {
                    service_type,
                    restarts,
                    tasks_current,
                    tasks_max,
                },
            ),
            Kind::Mount { mount_type } => builder.serve_at(path, MountObject(mount_type)),
            Kind::Timer { last_trigger_usec } => {
                builder.serve_at(path, TimerObject(last_trigger_usec))
            }
            Kind::Socket {
                accepted,
                connections,
                refused,
            } => builder.serve_at(
                path,
                SocketObject {
                    accepted,
                    connections,
                    refused,
                },
            ),
            Kind::Plain => Ok(builder),
        }
        .unwrap();
    }
    builder
        .serve_at("/org/freedesktop/systemd1", manager)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The fake logind.

struct FakeSession {
    id: &'static str,
    seat: &'static str,
    remote: bool,
    session_type: &'static str,
    class: &'static str,
    /// Listed but without an object on the bus.
    no_object: bool,
}

const fn session(
    id: &'static str,
    seat: &'static str,
    remote: bool,
    session_type: &'static str,
    class: &'static str,
) -> FakeSession {
    FakeSession {
        id,
        seat,
        remote,
        session_type,
        class,
        no_object: false,
    }
}

/// Two SSH sessions, a greeter on seat0, a session of a class newer than the collector knows
/// (systemd 256's `manager`), a web session of an unknown class on seat0, and a session gone
/// between the listing and the property calls.
fn host_sessions() -> Vec<FakeSession> {
    vec![
        session("1", "", true, "tty", "user"),
        session("3", "", true, "tty", "user"),
        session("c1", "seat0", false, "x11", "greeter"),
        session("5", "", true, "unspecified", "manager"),
        session("8", "seat0", false, "web", "user-early"),
        FakeSession {
            no_object: true,
            ..session("9", "", true, "tty", "user")
        },
    ]
}

fn session_path(id: &str) -> String {
    format!(
        "/org/freedesktop/login1/session/{}",
        unit_path(id).rsplit('/').next().unwrap()
    )
}

struct Login1 {
    seats: Vec<&'static str>,
    sessions: Vec<(String, String)>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Login1 {
    fn list_seats(&self) -> Vec<(String, OwnedObjectPath)> {
        self.seats
            .iter()
            .map(|seat| {
                (
                    (*seat).to_owned(),
                    path(&format!("/org/freedesktop/login1/seat/{seat}")),
                )
            })
            .collect()
    }

    fn list_sessions(&self) -> Vec<(String, u32, String, String, OwnedObjectPath)> {
        self.sessions
            .iter()
            .map(|(id, seat)| {
                (
                    id.clone(),
                    1000,
                    "ec2-user".to_owned(),
                    seat.clone(),
                    path(&session_path(id)),
                )
            })
            .collect()
    }
}

struct SessionObject {
    remote: bool,
    session_type: &'static str,
    class: &'static str,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl SessionObject {
    #[zbus(property, name = "Remote")]
    fn remote(&self) -> bool {
        self.remote
    }

    #[zbus(property, name = "Type")]
    fn session_type(&self) -> String {
        self.session_type.to_owned()
    }

    #[zbus(property, name = "Class")]
    fn class(&self) -> String {
        self.class.to_owned()
    }
}

fn serve_logind(
    builder: zbus::blocking::connection::Builder<'static>,
    seats: Vec<&'static str>,
    sessions: Vec<FakeSession>,
) -> zbus::blocking::connection::Builder<'static> {
    let mut builder = builder;
    for s in sessions.iter().filter(|s| !s.no_object) {
        builder = builder
            .serve_at(
                session_path(s.id),
                SessionObject {
                    remote: s.remote,
                    session_type: s.session_type,
                    class: s.class,
                },
            )
            .unwrap();
    }
    let manager = Login1 {
        seats,
        sessions: sessions
            .iter()
            .map(|s| (s.id.to_owned(), s.seat.to_owned()))
            .collect(),
    };
    builder
        .serve_at("/org/freedesktop/login1", manager)
        .unwrap()
}

/// Fake systemd and logind on `bus`, served until the connection is dropped.
fn serve(
    bus: &Bus,
    manager: Option<FakeManager>,
    logind: Option<(Vec<&'static str>, Vec<FakeSession>)>,
) -> zbus::blocking::Connection {
    let mut builder = zbus::blocking::connection::Builder::address(bus.address.as_str()).unwrap();
    if let Some(manager) = manager {
        builder = serve_systemd(builder.name("org.freedesktop.systemd1").unwrap(), manager);
    }
    if let Some((seats, sessions)) = logind {
        builder = serve_logind(
            builder.name("org.freedesktop.login1").unwrap(),
            seats,
            sessions,
        );
    }
    builder.build().expect("registering the fake services")
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn success(scrape: &Scrape, collector: &str) -> f64 {
    scrape.value("node_scrape_collector_success", &[("collector", collector)])
}

/// The lines of `text` of families starting with `prefix`, with their HELP and TYPE.
fn family_lines(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if name.starts_with(prefix) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Compares `actual` with tests/golden/dbus/<name>.prom, or rewrites it under `UPDATE_GOLDEN`.
fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/dbus/{name}.prom"));
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|names| {
        names == "1"
            || names
                .split(',')
                .any(|n| n == name.split('-').next().unwrap())
    });
    if update {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN={name} writes it)", path.display()));
    assert_eq!(
        expected,
        actual,
        "differs from {} (UPDATE_GOLDEN to rewrite it)",
        path.display()
    );
}

/// The collector's output of families starting with `prefix`, and its success.
fn collect(daemon: &Daemon, prefix: &str) -> (String, Scrape) {
    let text = daemon.get("/metrics");
    (family_lines(&text, prefix), Scrape::parse(&text))
}

fn failures_logged(daemon: &Daemon, collector: &str) -> usize {
    daemon
        .log()
        .lines()
        .filter(|line| {
            line.contains("level=error")
                && line.contains("collector failed")
                && line.contains(&format!("collector={collector}"))
        })
        .count()
}

#[test]
fn systemd_serves_every_family_from_the_bus() {
    let bus = Bus::start("systemd");
    let _service = serve(&bus, Some(amazon_linux()), None);
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let (text, scrape) = collect(&daemon, "node_systemd_");
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());

    let value = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    let names = |family: &str| -> BTreeSet<String> {
        scrape
            .matching(family, &[])
            .map(|s| s.labels["name"].clone())
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| (*n).to_owned()).collect() };

    assert_eq!(
        value("node_systemd_version", &[("version", "252.23-2.amzn2023")]),
        252.23
    );
    assert_eq!(
        value(
            "node_systemd_virtualization_info",
            &[("virtualization_type", "amazon")]
        ),
        1.0
    );
    assert_eq!(value("node_systemd_system_running", &[]), 0.0, "degraded");

    // Every listed unit counts, the filtered out and not-found ones too; "reloading" is a
    // state of its own.
    for (state, count) in [
        ("active", 8.0),
        ("activating", 1.0),
        ("deactivating", 0.0),
        ("inactive", 2.0),
        ("failed", 1.0),
        ("reloading", 1.0),
    ] {
        assert_eq!(
            value("node_systemd_units", &[("state", state)]),
            count,
            "{state}"
        );
    }
    assert_eq!(scrape.matching("node_systemd_units", &[]).count(), 6);

    // Loaded units not excluded by default (automount, device, mount, scope, slice).
    let kept = set(&[
        "sshd.service",
        "kubelet.service",
        "amazon-ssm-agent.service",
        "containerd.service",
        "getty@tty1.service",
        "ghost.service",
        "logrotate.timer",
        "docker.socket",
        "rpcbind.socket",
        "multi-user.target",
    ]);
    assert_eq!(names("node_systemd_unit_state"), kept);
    assert_eq!(
        scrape.matching("node_systemd_unit_state", &[]).count(),
        5 * kept.len()
    );
    for (unit, state, unit_type) in [
        ("sshd.service", "active", "notify"),
        ("kubelet.service", "active", "simple"),
        ("amazon-ssm-agent.service", "failed", "simple"),
        ("getty@tty1.service", "activating", "idle"),
        // Its type could not be read: empty, as upstream.
        ("ghost.service", "active", ""),
        ("logrotate.timer", "active", ""),
        ("docker.socket", "active", ""),
        ("rpcbind.socket", "inactive", ""),
        ("multi-user.target", "active", ""),
    ] {
        for each in ["active", "activating", "deactivating", "inactive", "failed"] {
            assert_eq!(
                value(
                    "node_systemd_unit_state",
                    &[("name", unit), ("state", each), ("type", unit_type)]
                ),
                if each == state { 1.0 } else { 0.0 },
                "{unit} {each}"
            );
        }
    }
    // Reloading is none of the five.
    assert_eq!(
        scrape.sum(
            "node_systemd_unit_state",
            &[("name", "containerd.service"), ("type", "notify")]
        ),
        0.0
    );

    // Restarts of services that have NRestarts (containerd's systemd "predates" it).
    for (unit, restarts) in [
        ("sshd.service", 0.0),
        ("kubelet.service", 3.0),
        ("amazon-ssm-agent.service", 5.0),
        ("getty@tty1.service", 0.0),
    ] {
        assert_eq!(
            value("node_systemd_service_restart_total", &[("name", unit)]),
            restarts
        );
    }
    assert_eq!(names("node_systemd_service_restart_total").len(), 4);

    // Start times of active units; 0 for the others; none where the call failed (ghost).
    for (unit, seconds) in [
        ("sshd.service", 1_717_171_717.123_456),
        ("kubelet.service", 1_717_171_800.0),
        ("logrotate.timer", 1_717_171_700.0),
        ("docker.socket", 1_717_171_701.0),
        ("multi-user.target", 1_717_171_702.0),
        ("amazon-ssm-agent.service", 0.0),
        ("containerd.service", 0.0),
        ("getty@tty1.service", 0.0),
        ("rpcbind.socket", 0.0),
    ] {
        assert_eq!(
            value("node_systemd_unit_start_time_seconds", &[("name", unit)]),
            seconds,
            "{unit}"
        );
    }
    assert_eq!(names("node_systemd_unit_start_time_seconds").len(), 9);

    // Tasks of services, u64::MAX ("infinity", or not accounted) left out.
    for (unit, current) in [
        ("sshd.service", 1.0),
        ("kubelet.service", 42.0),
        ("containerd.service", 97.0),
        ("getty@tty1.service", 1.0),
    ] {
        assert_eq!(
            value("node_systemd_unit_tasks_current", &[("name", unit)]),
            current
        );
    }
    assert_eq!(names("node_systemd_unit_tasks_current").len(), 4);
    for (unit, max) in [
        ("sshd.service", 4915.0),
        (
            "amazon-ssm-agent.service",
            18_446_744_073_709_551_614_u64 as f64,
        ),
        ("containerd.service", 4_194_304.0),
        ("getty@tty1.service", 1000.0),
    ] {
        assert_eq!(value("node_systemd_unit_tasks_max", &[("name", unit)]), max);
    }
    assert_eq!(names("node_systemd_unit_tasks_max").len(), 4);

    assert_eq!(
        value(
            "node_systemd_timer_last_trigger_seconds",
            &[("name", "logrotate.timer")]
        ),
        1_717_200_000.5
    );
    assert_eq!(names("node_systemd_timer_last_trigger_seconds").len(), 1);

    for (unit, accepted, current) in [("docker.socket", 12.0, 2.0), ("rpcbind.socket", 0.0, 0.0)] {
        assert_eq!(
            value(
                "node_systemd_socket_accepted_connections_total",
                &[("name", unit)]
            ),
            accepted
        );
        assert_eq!(
            value("node_systemd_socket_current_connections", &[("name", unit)]),
            current
        );
    }
    // rpcbind's systemd has no NRefused.
    assert_eq!(
        names("node_systemd_socket_refused_connections_total"),
        set(&["docker.socket"])
    );
    assert_eq!(
        value(
            "node_systemd_socket_refused_connections_total",
            &[("name", "docker.socket")]
        ),
        1.0
    );

    // TYPE as upstream, the refused "total" a gauge.
    let types: BTreeSet<(String, String)> = scrape.typed_families().into_iter().collect();
    for (family, kind) in [
        ("node_systemd_service_restart_total", "counter"),
        ("node_systemd_socket_accepted_connections_total", "counter"),
        ("node_systemd_socket_refused_connections_total", "gauge"),
        ("node_systemd_unit_state", "gauge"),
    ] {
        assert!(
            types.contains(&(family.to_owned(), kind.to_owned())),
            "{family}"
        );
    }
    check_golden("systemd", &text);
    assert_eq!(failures_logged(&daemon, "systemd"), 0, "{}", daemon.log());
}

#[test]
fn systemd_filters_units_by_name() {
    let bus = Bus::start("filters");
    let _service = serve(&bus, Some(amazon_linux()), None);
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.extend([
        r"--collector.systemd.unit-include=.+\.(mount|service)",
        r"--collector.systemd.unit-exclude=(ghost|sshd)\.service",
    ]);
    let daemon = bus.daemon(&flags);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    let names: BTreeSet<String> = scrape
        .matching("node_systemd_unit_state", &[("state", "active")])
        .map(|s| s.labels["name"].clone())
        .collect();
    let expected: BTreeSet<String> = [
        "amazon-ssm-agent.service",
        "containerd.service",
        "getty@tty1.service",
        "kubelet.service",
        "var-lib-kubelet.mount",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
    // A mount's type is its filesystem.
    assert_eq!(
        scrape.value(
            "node_systemd_unit_state",
            &[
                ("name", "var-lib-kubelet.mount"),
                ("state", "active"),
                ("type", "xfs")
            ]
        ),
        1.0
    );
    // No timer nor socket is left, so their families are not served; the summary is whole.
    assert!(!scrape.has("node_systemd_timer_last_trigger_seconds"));
    assert!(!scrape.has("node_systemd_socket_accepted_connections_total"));
    assert_eq!(scrape.sum("node_systemd_units", &[]), 13.0);
    drop(daemon);

    // The deprecated spellings stand in for defaulted new ones.
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.extend([
        r"--collector.systemd.unit-whitelist=.+\.socket",
        r"--collector.systemd.unit-blacklist=docker\.socket",
    ]);
    let daemon = bus.daemon(&flags);
    let scrape = daemon.scrape();
    let names: Vec<String> = scrape
        .matching("node_systemd_unit_state", &[("state", "active")])
        .map(|s| s.labels["name"].clone())
        .collect();
    assert_eq!(names, ["rpcbind.socket"]);
    assert!(daemon.log().contains("unit-blacklist is DEPRECATED"));
    drop(daemon);

    // Beside an explicit new one, the collector is not started.
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.extend([
        "--collector.systemd.unit-blacklist=x",
        "--collector.systemd.unit-exclude=y",
    ]);
    let daemon = bus.daemon(&flags);
    assert!(
        daemon.wait_for_log("mutually exclusive", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
}

#[test]
fn systemd_below_212_and_without_manager_properties() {
    // Before 212: no SystemState, no timers' LastTriggerUSec, so neither family; empty
    // Virtualization is bare metal.
    let bus = Bus::start("old");
    let _service = serve(
        &bus,
        Some(FakeManager {
            version: Some("211"),
            virtualization: Some(""),
            system_state: None,
            units: host_units(),
        }),
        None,
    );
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    assert_eq!(
        scrape.value("node_systemd_version", &[("version", "211")]),
        211.0
    );
    assert_eq!(
        scrape.value(
            "node_systemd_virtualization_info",
            &[("virtualization_type", "none")]
        ),
        1.0
    );
    assert!(!scrape.has("node_systemd_system_running"));
    assert!(!scrape.has("node_systemd_timer_last_trigger_seconds"));
    assert!(scrape.has("node_systemd_socket_accepted_connections_total"));
    drop((daemon, _service, bus));

    // No Version (version 0, so the same), no Virtualization ("unknown").
    let bus = Bus::start("noversion");
    let _service = serve(
        &bus,
        Some(FakeManager {
            version: None,
            virtualization: None,
            system_state: Some("running"),
            units: host_units(),
        }),
        None,
    );
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    assert_eq!(
        scrape.value("node_systemd_version", &[("version", "")]),
        0.0
    );
    assert_eq!(
        scrape.value(
            "node_systemd_virtualization_info",
            &[("virtualization_type", "unknown")]
        ),
        1.0
    );
    assert!(!scrape.has("node_systemd_system_running"));
    drop((daemon, _service, bus));

    // From 212 on, a missing SystemState fails the collector after everything else is served.
    let bus = Bus::start("nostate");
    let _service = serve(
        &bus,
        Some(FakeManager {
            system_state: None,
            ..amazon_linux()
        }),
        None,
    );
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 0.0);
    assert!(scrape.has("node_systemd_timer_last_trigger_seconds"));
    assert!(scrape.has("node_systemd_unit_state"));
    assert!(!scrape.has("node_systemd_system_running"));
    assert!(
        daemon.wait_for_log("couldn't get system state", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    drop((daemon, _service, bus));

    // Running.
    let bus = Bus::start("running");
    let _service = serve(
        &bus,
        Some(FakeManager {
            system_state: Some("running"),
            ..amazon_linux()
        }),
        None,
    );
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    assert_eq!(
        daemon.scrape().value("node_systemd_system_running", &[]),
        1.0
    );
}

/// A manager whose `ListUnits` has another signature than systemd's, and a service whose
/// properties have other types.
struct OddManager;

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl OddManager {
    fn list_units(&self) -> Vec<(String, String)> {
        vec![("sshd.service".to_owned(), "loaded".to_owned())]
    }

    #[zbus(property, name = "Version")]
    fn version(&self) -> String {
        "255.4-1ubuntu8".to_owned()
    }

    #[zbus(property, name = "Virtualization")]
    fn virtualization(&self) -> u32 {
        7
    }
}

struct OddService;

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl OddService {
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> u32 {
        1
    }

    #[zbus(property, name = "NRestarts")]
    fn restarts(&self) -> String {
        "3".to_owned()
    }

    #[zbus(property, name = "TasksCurrent")]
    fn tasks_current(&self) -> u32 {
        4
    }

    #[zbus(property, name = "TasksMax")]
    fn tasks_max(&self) -> i64 {
        -1
    }
}

#[test]
fn replies_of_other_types_are_errors_not_panics() {
    let bus = Bus::start("odd");
    let _service = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", OddManager)
        .unwrap()
        .build()
        .unwrap();
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let scrape = daemon.scrape();
    // The manager's families before the listing are served, then the listing fails.
    assert_eq!(success(&scrape, "systemd"), 0.0);
    assert_eq!(
        scrape.value("node_systemd_version", &[("version", "255.4-1ubuntu8")]),
        255.4
    );
    assert_eq!(
        scrape.value(
            "node_systemd_virtualization_info",
            &[("virtualization_type", "unknown")]
        ),
        1.0
    );
    assert!(!scrape.has("node_systemd_units"));
    assert!(
        daemon.wait_for_log("couldn't get units", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
    drop((daemon, _service, bus));

    // A service whose properties have other types: logged and skipped, the unit still served.
    let bus = Bus::start("oddservice");
    let manager = FakeManager {
        units: vec![unit("sshd.service", "loaded", "active", 1, Kind::Plain)],
        ..amazon_linux()
    };
    let _service = serve_systemd(
        zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name("org.freedesktop.systemd1")
            .unwrap(),
        manager,
    )
    .serve_at(unit_path("sshd.service"), OddService)
    .unwrap()
    .build()
    .unwrap();
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    assert_eq!(
        scrape.value(
            "node_systemd_unit_state",
            &[("name", "sshd.service"), ("state", "active"), ("type", "")]
        ),
        1.0
    );
    assert!(!scrape.has("node_systemd_service_restart_total"));
    assert!(!scrape.has("node_systemd_unit_tasks_current"));
    assert!(!scrape.has("node_systemd_unit_tasks_max"));
    drop((daemon, _service, bus));

    // logind with a seat listing of another signature.
    let bus = Bus::start("oddlogind");
    let _service = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.login1")
        .unwrap()
        .serve_at("/org/freedesktop/login1", OddLogin1)
        .unwrap()
        .build()
        .unwrap();
    let daemon = bus.daemon(LOGIND_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "logind"), 0.0);
    assert!(!scrape.has("node_logind_sessions"));
    assert!(
        daemon.wait_for_log("unable to get seats", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
}

struct OddLogin1;

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl OddLogin1 {
    fn list_seats(&self) -> Vec<String> {
        vec!["seat0".to_owned()]
    }
}

#[test]
fn logind_serves_every_combination_for_every_seat() {
    let bus = Bus::start("logind");
    let _service = serve(&bus, None, Some((vec!["seat0"], host_sessions())));
    let daemon = bus.daemon(LOGIND_FLAGS);
    let (text, scrape) = collect(&daemon, "node_logind_");
    assert_eq!(success(&scrape, "logind"), 1.0, "{}", daemon.log());
    // 2 remote values x 7 types x 5 classes x (seat0 and the empty seat).
    assert_eq!(scrape.matching("node_logind_sessions", &[]).count(), 140);
    let sessions = |seat: &str, remote: &str, session_type: &str, class: &str| {
        scrape.value(
            "node_logind_sessions",
            &[
                ("seat", seat),
                ("remote", remote),
                ("type", session_type),
                ("class", class),
            ],
        )
    };
    assert_eq!(sessions("", "true", "tty", "user"), 2.0, "two SSH sessions");
    assert_eq!(sessions("seat0", "false", "x11", "greeter"), 1.0);
    // Classes logind added later are "other".
    assert_eq!(sessions("", "true", "unspecified", "other"), 1.0);
    assert_eq!(sessions("seat0", "false", "web", "other"), 1.0);
    // The session without an object is not counted.
    assert_eq!(scrape.sum("node_logind_sessions", &[]), 5.0);
    check_golden("logind", &text);
    drop((daemon, _service, bus));

    // No seat (a server): the empty seat only.
    let bus = Bus::start("noseat");
    let _service = serve(
        &bus,
        None,
        Some((vec![], vec![session("4", "", true, "tty", "user")])),
    );
    let daemon = bus.daemon(LOGIND_FLAGS);
    let scrape = daemon.scrape();
    assert_eq!(scrape.matching("node_logind_sessions", &[]).count(), 70);
    assert_eq!(
        scrape.value(
            "node_logind_sessions",
            &[
                ("seat", ""),
                ("remote", "true"),
                ("type", "tty"),
                ("class", "user")
            ]
        ),
        1.0
    );
}

/// node_exporter 1.12's default `unit-exclude`; Debian's 1.5.0 also excludes targets.
const UPSTREAM_UNIT_EXCLUDE: &str =
    r"--collector.systemd.unit-exclude=.+\.(automount|device|mount|scope|slice)";

/// Families node_exporter 1.5.0 does not have (1.12 does), not compared.
const NOT_IN_1_5: &[&str] = &["node_systemd_virtualization_info"];

/// Debian's node_exporter 1.5.0 on the same fake bus: both read systemd and logind the same.
#[test]
fn both_collectors_read_the_bus_as_node_exporter() {
    let bus = Bus::start("peer");
    let _service = serve(
        &bus,
        Some(amazon_linux()),
        Some((vec!["seat0"], host_sessions())),
    );
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.extend(["--collector.logind", UPSTREAM_UNIT_EXCLUDE]);
    let ours = bus.daemon(&flags).get("/metrics");
    let theirs = node_exporter(&bus, &flags);
    let (ours, theirs) = (printed_families(&ours), printed_families(&theirs));
    let mut compared = 0;
    let mut failures = Vec::new();
    let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    for name in names {
        if !(name.starts_with("node_systemd_") || name.starts_with("node_logind_"))
            || NOT_IN_1_5.contains(&name.as_str())
        {
            continue;
        }
        let missing = PrintedFamily::default();
        let (a, b) = (
            theirs.get(name).unwrap_or(&missing),
            ours.get(name).unwrap_or(&missing),
        );
        compared += 1;
        if a != b {
            failures.push(format!("{name}: node_exporter {a:#?}\ncollector {b:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(compared, 13, "families compared");
}

/// node_exporter's output with `flags` on `bus`.
fn node_exporter(bus: &Bus, flags: &[&str]) -> String {
    let address = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let mut child = Command::new(common::tool("prometheus-node-exporter"))
        .args(flags)
        .arg(format!("--web.listen-address={address}"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus-node-exporter");
    let started = Instant::now();
    let body = loop {
        if let Ok(mut response) = ureq::get(&format!("http://{address}/metrics")).call() {
            break response.body_mut().read_to_string().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node_exporter did not answer"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let _ = child.kill();
    let _ = child.wait();
    body
}

#[test]
fn an_absent_bus_fails_at_once_with_one_log_line() {
    let dir = std::env::temp_dir().join(format!("dbus-test-absent-{}", std::process::id()));
    let mut command = Command::new(common::daemon::BINARY);
    command.args(SYSTEMD_FLAGS).arg("--collector.logind").env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}/bus", dir.display()),
    );
    let daemon = Daemon::spawn(command);
    for _ in 0..3 {
        let started = Instant::now();
        let scrape = daemon.scrape();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(success(&scrape, "systemd"), 0.0);
        assert_eq!(success(&scrape, "logind"), 0.0);
        assert!(!scrape.has("node_systemd_version"));
        assert!(!scrape.has("node_logind_sessions"));
    }
    // One line each however many scrapes, naming the cause.
    assert_eq!(failures_logged(&daemon, "systemd"), 1, "{}", daemon.log());
    assert_eq!(failures_logged(&daemon, "logind"), 1, "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("couldn't get dbus connection: connecting to unix:path="),
        "{log}"
    );
    assert!(
        log.contains("unable to connect to dbus: connecting to unix:path="),
        "{log}"
    );
}

#[test]
fn a_hung_bus_fails_the_scrape_not_the_daemon() {
    let bus = Bus::start("hung");
    let _service = serve(
        &bus,
        Some(amazon_linux()),
        Some((vec!["seat0"], host_sessions())),
    );
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.extend(["--collector.logind", "--collector.loadavg"]);
    let daemon = bus.daemon(&flags);
    assert_eq!(
        success(&daemon.scrape(), "systemd"),
        1.0,
        "{}",
        daemon.log()
    );

    // The bus daemon stops: connections are accepted by the kernel and never answered.
    bus.signal(libc::SIGSTOP);
    for _ in 0..2 {
        let started = Instant::now();
        let scrape = daemon.scrape();
        // The handshake's timeout (5 s), within the scrape's (10 s).
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(success(&scrape, "systemd"), 0.0);
        assert_eq!(success(&scrape, "logind"), 0.0);
        assert_eq!(success(&scrape, "loadavg"), 1.0, "the others still served");
    }
    // One line each, with the cause.
    assert_eq!(failures_logged(&daemon, "systemd"), 1, "{}", daemon.log());
    assert_eq!(failures_logged(&daemon, "logind"), 1, "{}", daemon.log());
    assert!(
        daemon.log().contains("no answer within 5s: timed out"),
        "{}",
        daemon.log()
    );

    // The bus back, the collectors recover.
    bus.signal(libc::SIGCONT);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    assert_eq!(success(&scrape, "logind"), 1.0, "{}", daemon.log());
    assert_eq!(scrape.sum("node_logind_sessions", &[]), 5.0);
    assert!(daemon.wait_for_log("collector recovered", Duration::from_secs(5)));
}

/// A service whose `Type` is answered after the call timeout: the bus hangs mid-update.
struct SlowService;

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl SlowService {
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> String {
        std::thread::sleep(Duration::from_secs(7));
        "simple".to_owned()
    }
}

#[test]
fn a_call_that_times_out_fails_the_update() {
    let bus = Bus::start("slowcall");
    let manager = FakeManager {
        units: vec![
            unit("a-slow.service", "loaded", "active", 1, Kind::Plain),
            unit(
                "b.socket",
                "loaded",
                "active",
                1,
                Kind::Socket {
                    accepted: 1,
                    connections: 1,
                    refused: Some(1),
                },
            ),
        ],
        ..amazon_linux()
    };
    let _service = serve_systemd(
        zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name("org.freedesktop.systemd1")
            .unwrap(),
        manager,
    )
    .serve_at(unit_path("a-slow.service"), SlowService)
    .unwrap()
    .build()
    .unwrap();
    let daemon = bus.daemon(SYSTEMD_FLAGS);
    let started = Instant::now();
    let scrape = daemon.scrape();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    // The unit is served without its type, the calls after the timeout are not made, and
    // the collector fails.
    assert_eq!(success(&scrape, "systemd"), 0.0);
    assert_eq!(
        scrape.value(
            "node_systemd_unit_state",
            &[
                ("name", "a-slow.service"),
                ("state", "active"),
                ("type", "")
            ]
        ),
        1.0
    );
    assert!(!scrape.has("node_systemd_socket_accepted_connections_total"));
    assert!(
        daemon.wait_for_log("a D-Bus call timed out", Duration::from_secs(5)),
        "{}",
        daemon.log()
    );
}

/// `--collector.systemd.private`: a peer-to-peer connection to /run/systemd/private, without
/// the bus daemon nor `Hello`. Only where that socket is free to take (no systemd here).
#[test]
fn systemd_private_socket() {
    let socket = Path::new("/run/systemd/private");
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 || socket.exists() {
        eprintln!(
            "skipped: needs root and no systemd (its private socket is {})",
            socket.display()
        );
        return;
    }
    let created_dir = !socket.parent().unwrap().exists();
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let cleanup = Cleanup(socket.to_owned(), created_dir);
    let connections = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let builder = zbus::blocking::connection::Builder::async_io_unix_stream(stream)
                .server(zbus::Guid::generate())
                .unwrap()
                .p2p();
            if let Ok(connection) = serve_systemd(builder, amazon_linux()).build() {
                served.lock().unwrap().push(connection);
            }
        }
    });
    let mut flags = SYSTEMD_FLAGS.to_vec();
    flags.push("--collector.systemd.private");
    // The system bus is not used: point it nowhere.
    let mut command = Command::new(common::daemon::BINARY);
    command
        .args(&flags)
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let daemon = Daemon::spawn(command);
    let scrape = daemon.scrape();
    assert_eq!(success(&scrape, "systemd"), 1.0, "{}", daemon.log());
    assert_eq!(
        scrape.value("node_systemd_version", &[("version", "252.23-2.amzn2023")]),
        252.23
    );
    assert_eq!(scrape.sum("node_systemd_units", &[]), 13.0);
    assert_eq!(
        scrape.value(
            "node_systemd_unit_tasks_current",
            &[("name", "kubelet.service")]
        ),
        42.0
    );
    assert!(!connections.lock().unwrap().is_empty());
    drop(cleanup);
}

/// Removes the socket (and the directory, if the test made it).
struct Cleanup(PathBuf, bool);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if self.1 {
            let _ = std::fs::remove_dir(self.0.parent().unwrap());
        }
    }
}
