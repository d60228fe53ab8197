//! `--web.systemd-socket`: serve on the sockets systemd passed (socket activation), instead of
//! `--web.listen-address`, as go-systemd's `activation.Listeners` does for node_exporter:
//! `LISTEN_FDS` descriptors from 3 on, when `LISTEN_PID` is this process; the variables are then
//! removed, so that no child takes them for its own.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use anyhow::{Context as _, bail};

use super::connections::Listener;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes the passed descriptors (close-on-exec from now on) and removes the variables. Must run
/// before any other thread is started: it changes the environment.
pub fn take_listen_fds() -> anyhow::Result<Vec<OwnedFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called from `main` before the async runtime or any other thread is started.
        unsafe { std::env::remove_var(name) };
    }
    let ours = pid.and_then(|pid| pid.parse::<u32>().ok()) == Some(std::process::id());
    let count: RawFd = match count.and_then(|n| n.parse().ok()) {
        Some(n) if ours && n > 0 => n,
        _ => bail!(
            "--web.systemd-socket: no socket activation file descriptors found (LISTEN_PID and \
             LISTEN_FDS are not set for this process)"
        ),
    };
    let mut fds = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        // SAFETY: fcntl on a descriptor number only queries or sets its flags.
        let open = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
        if !open {
            bail!("--web.systemd-socket: LISTEN_FDS={count}, but descriptor {fd} is not open");
        }
        // SAFETY: systemd passed this open descriptor to this process for it to own; nothing else
        // in the process uses it.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(fds)
}

/// The listeners of the passed descriptors: TCP or Unix stream sockets already listening.
pub fn listeners(fds: Vec<OwnedFd>) -> anyhow::Result<Vec<Listener>> {
    fds.into_iter()
        .map(|fd| {
            let raw = fd.as_raw_fd();
            let listener =
                listener(fd).with_context(|| format!("--web.systemd-socket: descriptor {raw}"))?;
            tracing::info!(address = %listener.describe(), "listening");
            Ok(listener)
        })
        .collect()
}

fn listener(fd: OwnedFd) -> anyhow::Result<Listener> {
    let option = |name| -> std::io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and length are valid for an int-sized option.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &raw mut length,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let kind = option(libc::SO_TYPE).context("not a socket")?;
    if kind != libc::SOCK_STREAM {
        bail!("not a stream socket");
    }
    if option(libc::SO_ACCEPTCONN)? == 0 {
        bail!("not a listening socket");
    }
    match option(libc::SO_DOMAIN)? {
        libc::AF_INET | libc::AF_INET6 => {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(Listener::Tcp(tokio::net::TcpListener::from_std(listener)?))
        }
        libc::AF_UNIX => {
            let listener = std::os::unix::net::UnixListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(Listener::Unix(tokio::net::UnixListener::from_std(
                listener,
            )?))
        }
        domain => bail!("socket family {domain} is neither IP nor Unix"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_of_passed_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = tcp.local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("systemd-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let listeners = listeners(vec![OwnedFd::from(tcp), OwnedFd::from(unix)]).unwrap();
        assert_eq!(listeners[0].describe(), address.to_string());
        assert!(matches!(listeners[1], Listener::Unix(_)));
        // Not listening, or not a socket at all: a clear error.
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = listeners_err(OwnedFd::from(connected));
        assert!(err.contains("not a stream socket"), "{err}");
        let unbound = tokio::net::TcpSocket::new_v4().unwrap();
        // SAFETY: into_raw_fd hands over the descriptor.
        let unbound = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(unbound)) };
        let err = listeners_err(unbound);
        assert!(err.contains("not a listening socket"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = listeners_err(OwnedFd::from(file));
        assert!(err.contains("not a socket"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn listeners_err(fd: OwnedFd) -> String {
        match listeners(vec![fd]) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }
}
