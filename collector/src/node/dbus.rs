//! The system bus for the collectors that ask systemd over D-Bus (`systemd`, `logind`); not a
//! collector. A fresh connection per update, as upstream's go-systemd and godbus make one per
//! scrape: the address from `DBUS_SYSTEM_BUS_ADDRESS` (`;`-separated addresses tried in turn,
//! unset or empty meaning `/var/run/dbus/system_bus_socket`, as godbus reads it), EXTERNAL
//! authentication, then `Hello` (or, for systemd's private socket, no `Hello`: a peer-to-peer
//! connection, as go-systemd's `NewSystemdConnection`).
//!
//! Bounds upstream does not have (it calls with `context.TODO()`): the handshake and each call
//! must be answered within [`CALL_TIMEOUT`], and once one call timed out or the update has been
//! calling for [`UPDATE_TIMEOUT`] the bus is taken as hung: later calls fail at once and
//! [`Bus::finish`] fails the update. A hung bus so fails the scrape, with its own error, and frees
//! the collector's thread instead of holding it.
use std::{
    cell::RefCell,
    future::Future,
    pin::{Pin, pin},
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use zbus::{
    AuthMechanism, blocking,
    zvariant::{DynamicDeserialize, OwnedValue, Value},
};

/// How long the handshake and each call may take: systemd answers in well under a millisecond,
/// and a hung bus is so reported within a scrape's time (10 s at most, `--scrape.timeout`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an update may go on calling (thousands of units, a call or more each).
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// godbus' system bus when `DBUS_SYSTEM_BUS_ADDRESS` is unset or empty.
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// systemd's own socket, for `--collector.systemd.private` (go-systemd's address).
const SYSTEMD_PRIVATE: &str = "unix:path=/run/systemd/private";

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Where to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The system bus, through the bus daemon.
    SystemBus,
    /// systemd's private socket, without a bus daemon.
    SystemdPrivate,
}

/// One update's connection. Not shared between threads: an update makes its calls in turn.
pub struct Bus {
    connection: blocking::Connection,
    update_timeout: Duration,
    deadline: Instant,
    /// Why the bus is taken as hung, once it is.
    hung: RefCell<Option<String>>,
}

/// Connects to `endpoint` within [`CALL_TIMEOUT`].
pub fn connect(endpoint: Endpoint) -> anyhow::Result<Bus> {
    let (addresses, p2p) = match endpoint {
        Endpoint::SystemBus => {
            let from_env = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok();
            (system_bus_address(from_env.as_deref()), false)
        }
        Endpoint::SystemdPrivate => (SYSTEMD_PRIVATE.to_owned(), true),
    };
    connect_within(&addresses, p2p, CALL_TIMEOUT, UPDATE_TIMEOUT)
}

/// godbus' `getSystemBusPlatformAddress`: the variable when set and not empty.
fn system_bus_address(from_env: Option<&str>) -> String {
    match from_env {
        Some(address) if !address.is_empty() => address.to_owned(),
        _ => DEFAULT_SYSTEM_BUS.to_owned(),
    }
}

/// Connects to the first of the `;`-separated `addresses` that answers (godbus tries them in
/// turn), each handshake within `call_timeout`; the connection's calls get `call_timeout` each
/// and the update `update_timeout` in all from now.
pub fn connect_within(
    addresses: &str,
    p2p: bool,
    call_timeout: Duration,
    update_timeout: Duration,
) -> anyhow::Result<Bus> {
    let deadline = Instant::now() + update_timeout;
    let mut last_error = anyhow!("no D-Bus address in {addresses:?}");
    for address in addresses.split(';').filter(|a| !a.is_empty()) {
        let handshake_deadline = deadline.min(Instant::now() + call_timeout);
        match connect_one(address, p2p, call_timeout, handshake_deadline) {
            Ok(connection) => {
                return Ok(Bus {
                    connection,
                    update_timeout,
                    deadline,
                    hung: RefCell::new(None),
                });
            }
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

fn connect_one(
    address: &str,
    p2p: bool,
    call_timeout: Duration,
    deadline: Instant,
) -> anyhow::Result<blocking::Connection> {
    let mut builder = zbus::connection::Builder::address(address)
        .with_context(|| format!("bad D-Bus address {address:?}"))?
        .auth_mechanism(AuthMechanism::External)
        .method_timeout(call_timeout);
    if p2p {
        builder = builder.p2p();
    }
    let connection = within(deadline, builder.build())
        .with_context(|| format!("connecting to {address}: no answer within {call_timeout:?}"))?
        // zbus' errors print their source themselves: flattened, so it is not said twice.
        .map_err(|error| anyhow!("connecting to {address}: {error}"))?;
    Ok(connection.into())
}

/// Runs `future` on this thread until it completes or `deadline` passes (the future is then
/// dropped, which cancels it).
fn within<F: Future>(deadline: Instant, future: F) -> anyhow::Result<F::Output> {
    let mut future = pin!(future);
    let mut timer = async_io::Timer::at(deadline);
    async_io::block_on(std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(Err(anyhow!("timed out")));
        }
        Poll::Pending
    }))
}

impl Bus {
    /// Calls `interface.method` without arguments on `path` of `destination` and reads the reply
    /// as `R`.
    pub fn call<R>(
        &self,
        destination: &str,
        path: &str,
        interface: &str,
        method: &str,
    ) -> anyhow::Result<R>
    where
        R: for<'d> DynamicDeserialize<'d>,
    {
        let reply = self.guarded(|connection| {
            connection.call_method(Some(destination), path, Some(interface), method, &())
        })?;
        reply
            .body()
            .deserialize::<R>()
            .with_context(|| format!("reply to {interface}.{method}"))
    }

    /// The property `interface`.`name` of `path` (`org.freedesktop.DBus.Properties.Get`).
    pub fn property(
        &self,
        destination: &str,
        path: &str,
        interface: &str,
        name: &str,
    ) -> anyhow::Result<OwnedValue> {
        let reply = self.guarded(|connection| {
            connection.call_method(
                Some(destination),
                path,
                Some(PROPERTIES),
                "Get",
                &(interface, name),
            )
        })?;
        reply
            .body()
            .deserialize::<OwnedValue>()
            .with_context(|| format!("reply to Get {interface}.{name}"))
    }

    /// Makes one call, unless the bus is already taken as hung; a timeout or the update's
    /// deadline marks it hung.
    fn guarded<T>(
        &self,
        call: impl FnOnce(&blocking::Connection) -> zbus::Result<T>,
    ) -> anyhow::Result<T> {
        if let Some(reason) = &*self.hung.borrow() {
            anyhow::bail!("not called: {reason}");
        }
        if Instant::now() >= self.deadline {
            let reason = format!("D-Bus calls still going after {:?}", self.update_timeout);
            *self.hung.borrow_mut() = Some(reason.clone());
            anyhow::bail!(reason);
        }
        call(&self.connection).map_err(|error| {
            if let zbus::Error::InputOutput(io) = &error
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                *self.hung.borrow_mut() = Some(format!("a D-Bus call timed out: {error}"));
            }
            anyhow!("{error}")
        })
    }

    /// The update's verdict on the bus: an error once it was taken as hung (those calls' errors
    /// were only logged, as upstream logs a unit's failed call and goes on).
    pub fn finish(&self) -> anyhow::Result<()> {
        match &*self.hung.borrow() {
            Some(reason) => Err(anyhow!("{reason}")),
            None => Ok(()),
        }
    }
}

/// The signature of a property's value, for errors about an unexpected type.
pub fn signature(value: &Value<'_>) -> String {
    value.value_signature().to_string()
}

/// What godbus' `Variant.String()` gives for a string, `strconv.Quote`'s form, as upstream
/// compares and trims systemd's manager properties in that form.
pub fn go_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_bus_address_as_godbus_reads_it() {
        assert_eq!(system_bus_address(None), DEFAULT_SYSTEM_BUS);
        assert_eq!(system_bus_address(Some("")), DEFAULT_SYSTEM_BUS);
        assert_eq!(
            system_bus_address(Some("unix:path=/tmp/bus")),
            "unix:path=/tmp/bus"
        );
    }

    #[test]
    fn quotes_as_go() {
        assert_eq!(go_quote("running"), "\"running\"");
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(go_quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\x01\"");
        assert_eq!(go_quote("é\u{85}"), "\"é\\u0085\"");
    }

    #[test]
    fn an_absent_bus_fails_at_once() {
        let dir = std::env::temp_dir().join(format!("dbus-absent-{}", std::process::id()));
        let started = Instant::now();
        let error = connect_within(
            &format!("unix:path={}/bus", dir.display()),
            false,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .err()
        .expect("no bus there");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            format!("{error:#}").contains("connecting to unix:path="),
            "{error:#}"
        );
        let error = connect_within("nonsense", false, CALL_TIMEOUT, UPDATE_TIMEOUT)
            .err()
            .expect("not an address");
        assert!(
            format!("{error:#}").contains("bad D-Bus address"),
            "{error:#}"
        );
        assert!(connect_within(";;", false, CALL_TIMEOUT, UPDATE_TIMEOUT).is_err());
    }

    #[test]
    fn a_silent_bus_times_out() {
        // A socket that accepts (the kernel's backlog) and never answers the handshake.
        let dir = std::env::temp_dir().join(format!("dbus-silent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bus");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let error = connect_within(
            &format!("unix:path={}", path.display()),
            false,
            Duration::from_millis(300),
            UPDATE_TIMEOUT,
        )
        .err()
        .expect("no handshake");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(format!("{error:#}").contains("timed out"), "{error:#}");
        // The next address is tried when one fails.
        let error = connect_within(
            &format!(
                "unix:path={}/none;unix:path={}",
                dir.display(),
                path.display()
            ),
            false,
            Duration::from_millis(300),
            UPDATE_TIMEOUT,
        )
        .err()
        .expect("no handshake");
        assert!(format!("{error:#}").contains("timed out"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
