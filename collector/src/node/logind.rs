//! `logind`: sessions per seat, remoteness, type and class, asked of systemd-logind
//! (`org.freedesktop.login1`) over the system bus as node_exporter's logind collector does:
//! `ListSeats`, `ListSessions`, then each session's `Remote`, `Type` and `Class`.
//!
//! Every combination of the known label values is served for every seat and the empty seat (of
//! remote sessions such as SSH), zeros included; a type or class logind may add later counts as
//! `other`, and a session whose properties cannot be read is left out.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    node::dbus::{self, Bus, Endpoint},
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "logind",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

const LOGIN1: &str = "org.freedesktop.login1";
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";

/// The label values served, as logind knows them since systemd 229; "other" stands for the
/// types and classes added since.
const REMOTE_VALUES: [&str; 2] = ["true", "false"];
const TYPE_VALUES: [&str; 7] = [
    "other",
    "unspecified",
    "tty",
    "x11",
    "wayland",
    "mir",
    "web",
];
const CLASS_VALUES: [&str; 5] = ["other", "user", "greeter", "lock-screen", "background"];

struct LogindCollector;

fn build(_context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(LogindCollector))
}

/// `ListSessions`' `a(susso)`: id, user id, user name, seat id, object path.
type ListedSession = (String, u32, String, String, OwnedObjectPath);

/// What a session is counted under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Session {
    seat: String,
    remote: String,
    session_type: String,
    class: String,
}

impl Collector for LogindCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let bus = dbus::connect(Endpoint::SystemBus).context("unable to connect to dbus")?;
        let seats: Vec<(String, OwnedObjectPath)> = bus
            .call(LOGIN1, MANAGER_PATH, MANAGER, "ListSeats")
            .context("unable to get seats")?;
        let sessions: Vec<ListedSession> = bus
            .call(LOGIN1, MANAGER_PATH, MANAGER, "ListSessions")
            .context("unable to get sessions")?;
        let sessions: Vec<Session> = sessions
            .into_iter()
            .filter_map(|(_, _, _, seat, path)| session(&bus, seat, &path))
            .collect();
        out.push(sessions_family(
            seats.into_iter().map(|(seat, _)| seat).collect(),
            &sessions,
        ));
        bus.finish()
    }
}

/// The session at `path` on `seat`, or `None` when one of its properties cannot be read, or
/// is not of logind's type (upstream skips those, or counts them where it serves nothing).
fn session(bus: &Bus, seat: String, path: &OwnedObjectPath) -> Option<Session> {
    let get = |name: &str| {
        bus.property(LOGIN1, path.as_str(), SESSION, name)
            .inspect_err(|error| {
                tracing::debug!(session = path.as_str(), err = %format!("{error:#}"), "couldn't get session {name}");
            })
            .ok()
    };
    let remote = get("Remote")?;
    let remote = remote_label(&remote);
    let session_type = get("Type")?;
    let Value::Str(session_type) = &*session_type else {
        return None;
    };
    let class = get("Class")?;
    let Value::Str(class) = &*class else {
        return None;
    };
    Some(Session {
        seat,
        remote: remote?,
        session_type: known_or_other(session_type.as_str(), &TYPE_VALUES),
        class: known_or_other(class.as_str(), &CLASS_VALUES),
    })
}

/// godbus' `Variant.String()` of `Remote`, a boolean: "true" or "false". Of any other type it
/// is neither, and upstream counts the session under a label value it never serves: `None`.
fn remote_label(value: &Value<'_>) -> Option<String> {
    match value {
        Value::Bool(remote) => Some(remote.to_string()),
        _ => None,
    }
}

fn known_or_other(value: &str, known: &[&str]) -> String {
    if known.contains(&value) {
        value.to_owned()
    } else {
        "other".to_owned()
    }
}

/// `node_logind_sessions` for every seat listed and the empty seat, over every known remote,
/// type and class. A seat listed twice is served once (upstream's registry would refuse the
/// duplicate series).
fn sessions_family(mut seats: Vec<String>, sessions: &[Session]) -> MetricFamily {
    // Always the empty seat, which remote sessions like SSH have.
    seats.push(String::new());
    let mut unique = Vec::with_capacity(seats.len());
    for seat in seats {
        if !unique.contains(&seat) {
            unique.push(seat);
        }
    }
    let mut counts: HashMap<&Session, f64> = HashMap::new();
    for session in sessions {
        *counts.entry(session).or_default() += 1.0;
    }
    let mut family = MetricFamily::gauge(
        "node_logind_sessions",
        "Number of sessions registered in logind.",
    );
    for remote in REMOTE_VALUES {
        for session_type in TYPE_VALUES {
            for class in CLASS_VALUES {
                for seat in &unique {
                    let key = Session {
                        seat: seat.clone(),
                        remote: remote.to_owned(),
                        session_type: session_type.to_owned(),
                        class: class.to_owned(),
                    };
                    let count = counts.get(&key).copied().unwrap_or(0.0);
                    family.push(
                        [
                            ("seat", seat.as_str()),
                            ("remote", remote),
                            ("type", session_type),
                            ("class", class),
                        ],
                        count,
                    );
                }
            }
        }
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value as Sample;

    fn session(seat: &str, remote: &str, session_type: &str, class: &str) -> Session {
        Session {
            seat: seat.to_owned(),
            remote: remote.to_owned(),
            session_type: known_or_other(session_type, &TYPE_VALUES),
            class: known_or_other(class, &CLASS_VALUES),
        }
    }

    fn value(family: &MetricFamily, labels: [(&str, &str); 4]) -> f64 {
        let found: Vec<_> = family
            .metrics
            .iter()
            .filter(|m| {
                labels
                    .iter()
                    .all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{labels:?}");
        match found[0].value {
            Sample::Scalar(v) => v,
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn known_string_or_other() {
        assert_eq!(known_or_other("foo", &["foo", "bar"]), "foo");
        assert_eq!(known_or_other("baz", &["foo", "bar"]), "other");
        assert_eq!(known_or_other("", &["foo"]), "other");
    }

    #[test]
    fn every_combination_for_every_seat() {
        // Upstream's test: an SSH session without a seat, a greeter on seat0.
        let sessions = [
            session("", "true", "tty", "user"),
            session("seat0", "false", "x11", "greeter"),
        ];
        let family = sessions_family(vec!["seat0".to_owned()], &sessions);
        assert_eq!(family.metrics.len(), 2 * 2 * 7 * 5);
        assert_eq!(
            value(
                &family,
                [
                    ("seat", ""),
                    ("remote", "true"),
                    ("type", "tty"),
                    ("class", "user")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &family,
                [
                    ("seat", "seat0"),
                    ("remote", "false"),
                    ("type", "x11"),
                    ("class", "greeter")
                ]
            ),
            1.0
        );
        let total: f64 = family
            .metrics
            .iter()
            .map(|m| match m.value {
                Sample::Scalar(v) => v,
                _ => 0.0,
            })
            .sum();
        assert_eq!(total, 2.0);
    }

    #[test]
    fn unknown_values_and_odd_seats() {
        let sessions = [
            session("", "true", "mir2", "manager"),
            session("", "true", "tty", "user-early"),
            // A session on a seat not listed is not served, as upstream.
            session("seat9", "false", "tty", "user"),
        ];
        let family = sessions_family(
            vec!["".to_owned(), "seat0".to_owned(), "seat0".to_owned()],
            &sessions,
        );
        assert_eq!(family.metrics.len(), 2 * 2 * 7 * 5, "seats once each");
        assert_eq!(
            value(
                &family,
                [
                    ("seat", ""),
                    ("remote", "true"),
                    ("type", "other"),
                    ("class", "other")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &family,
                [
                    ("seat", ""),
                    ("remote", "true"),
                    ("type", "tty"),
                    ("class", "other")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &family,
                [
                    ("seat", ""),
                    ("remote", "true"),
                    ("type", "tty"),
                    ("class", "user")
                ]
            ),
            0.0
        );
        assert_eq!(remote_label(&Value::Bool(false)).as_deref(), Some("false"));
        assert_eq!(remote_label(&Value::from("true")), None);
    }
}
