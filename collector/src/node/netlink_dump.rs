//! Blocking netlink dumps for the collectors that ask the kernel over netlink (`arp`,
//! `network_route`, `tcpstat`); not a collector. It does what upstream's mdlayher/netlink
//! `Conn.Execute` does for a dump request (send it, read datagrams until `NLMSG_DONE`, fail on an
//! `NLMSG_ERROR` or a reply to another request), with bounds upstream does not have: the whole
//! dump must finish within a deadline, and each datagram is read into one fixed buffer (a
//! datagram that does not fit is an error, never a reallocation). Messages are handed to the
//! caller as they are read, so memory does not grow with the size of the table dumped.
use std::{
    io,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netlink_packet_core::{
    ErrorBuffer, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

pub use netlink_sys::protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG};

/// How long one dump may take in all. A scrape waits for a collector 10 s at most
/// (`--scrape.timeout`); a dump that never ends must not hold the collector's thread for good.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The receive buffer. The kernel fills a dump datagram up to the larger of NLMSG_GOODSIZE (8 KiB
/// at most) and the reader's largest receive so far capped at 32 KiB (`netlink_dump`); messages
/// of the neighbour, route and inet_diag dumps are far smaller than that.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// The sequence number of the request; every reply must carry it (a fresh socket per dump, so
/// nothing else is in flight).
const SEQUENCE: u32 = 1;

/// Sends `request` as a dump request (`NLM_F_REQUEST | NLM_F_DUMP`) on a new `protocol` socket and
/// calls `each` with the type and payload of every message of the reply, within [`TIMEOUT`].
pub fn dump<M: NetlinkSerializable>(
    protocol: isize,
    request: M,
    each: impl FnMut(u16, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    dump_within(protocol, request, TIMEOUT, each)
}

/// [`dump`] with its own deadline.
pub fn dump_within<M: NetlinkSerializable>(
    protocol: isize,
    request: M,
    timeout: Duration,
    mut each: impl FnMut(u16, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut socket = Socket::new(protocol).context("opening a netlink socket")?;
    let local = socket
        .bind_auto()
        .context("binding a netlink socket")?
        .port_number();
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting a netlink socket to the kernel")?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = SEQUENCE;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket
        .send(&bytes, 0)
        .context("sending a netlink dump request")?;

    let mut buffer: Vec<u8> = Vec::with_capacity(RECEIVE_BUFFER);
    loop {
        set_receive_timeout(&socket, deadline, timeout)?;
        buffer.clear();
        // MSG_TRUNC: the datagram's real length, to tell a truncated one from a whole one.
        let received = match socket.recv(&mut buffer, libc::MSG_TRUNC) {
            Ok(received) => received,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                anyhow::bail!("netlink dump not finished within {timeout:?}")
            }
            Err(error) => return Err(error).context("receiving a netlink dump"),
        };
        if received > buffer.len() {
            anyhow::bail!(
                "netlink datagram of {received} bytes is larger than the {RECEIVE_BUFFER}-byte buffer"
            );
        }
        if !messages(&buffer[..received], local, &mut each)? {
            return Ok(());
        }
    }
}

/// Hands the messages of one datagram to `each`; whether more datagrams follow (no
/// `NLMSG_DONE` yet, and the messages are parts of a multipart reply).
fn messages(
    mut data: &[u8],
    local_port: u32,
    each: &mut impl FnMut(u16, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let mut more = false;
    while !data.is_empty() {
        let message = NetlinkBuffer::new_checked(data)
            .map_err(|e| anyhow::anyhow!("malformed netlink message: {e}"))?;
        if message.sequence_number() != SEQUENCE {
            anyhow::bail!(
                "netlink reply to another request: sequence {} (sent {SEQUENCE})",
                message.sequence_number()
            );
        }
        if message.port_number() != 0 && message.port_number() != local_port {
            anyhow::bail!(
                "netlink reply for port {} (this socket is {local_port})",
                message.port_number()
            );
        }
        more |= message.flags() & NLM_F_MULTIPART != 0;
        let payload = message.payload();
        match message.message_type() {
            // A dump may end with an error number in its DONE message (inet_diag does).
            NLMSG_DONE => return error_number(payload).map(|()| false),
            NLMSG_ERROR => {
                let error = ErrorBuffer::new_checked(payload)
                    .map_err(|e| anyhow::anyhow!("malformed netlink error message: {e}"))?;
                if let Some(code) = error.code() {
                    return Err(io::Error::from_raw_os_error(code.get().saturating_neg()))
                        .context("netlink dump refused");
                }
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => anyhow::bail!("netlink dump overrun"),
            kind => each(kind, payload)?,
        }
        // Messages are 4-byte aligned within a datagram.
        let next = (message.length() as usize).next_multiple_of(4);
        data = data.get(next..).unwrap_or_default();
    }
    Ok(more)
}

/// The error number a `NLMSG_DONE` payload may carry (0 or absent when the dump succeeded).
fn error_number(payload: &[u8]) -> anyhow::Result<()> {
    let Some(bytes) = payload.get(..4) else {
        return Ok(());
    };
    let code = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if code == 0 {
        return Ok(());
    }
    Err(io::Error::from_raw_os_error(code.saturating_neg())).context("netlink dump failed")
}

/// Makes the next receive wait no later than `deadline`.
fn set_receive_timeout(
    socket: &Socket,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        anyhow::bail!("netlink dump not finished within {timeout:?}");
    }
    // A zero timeval would mean "wait forever": at least a millisecond.
    let left = left.max(Duration::from_millis(1));
    let value = libc::timeval {
        tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: left.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the descriptor is the socket's, open for its lifetime; `value` is a timeval that
    // lives across the call, and its size is the one passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error()).context("setting a netlink receive timeout");
    }
    Ok(())
}

/// The name of interface `index` in this network namespace (`if_indextoname(3)`); `None` when
/// there is no such interface (any more).
pub fn interface_name(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Go's `net.IP.String()` for the 4- or 16-byte addresses netlink carries: dotted for IPv4 and
/// IPv4-mapped IPv6, RFC 5952 for other IPv6 (Rust's `Ipv6Addr` prints the same, but for mapped
/// addresses, handled first); `"?"` and hex for other lengths, `"<nil>"` for none.
pub fn go_ip_string(bytes: &[u8]) -> String {
    match bytes.len() {
        0 => "<nil>".to_owned(),
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            let address = std::net::Ipv6Addr::from(octets);
            match address.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => address.to_string(),
            }
        }
        _ => {
            let mut text = String::from("?");
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, flags: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let length = 16 + payload.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes.resize(length.next_multiple_of(4), 0);
        bytes
    }

    fn collect(datagram: &[u8]) -> (anyhow::Result<bool>, Vec<(u16, Vec<u8>)>) {
        let mut seen = Vec::new();
        let result = messages(datagram, 7, &mut |kind, payload: &[u8]| {
            seen.push((kind, payload.to_vec()));
            Ok(())
        });
        (result, seen)
    }

    #[test]
    fn datagrams_are_split_into_messages_until_done() {
        let mut datagram = message(24, NLM_F_MULTIPART, SEQUENCE, &[1, 2, 3]);
        datagram.extend(message(NLMSG_NOOP, NLM_F_MULTIPART, SEQUENCE, &[]));
        datagram.extend(message(24, NLM_F_MULTIPART, SEQUENCE, &[4; 8]));
        let (more, seen) = collect(&datagram);
        assert!(more.unwrap(), "multipart, no DONE yet");
        assert_eq!(seen, [(24, vec![1, 2, 3]), (24, vec![4; 8])]);

        let mut datagram = message(24, NLM_F_MULTIPART, SEQUENCE, &[9]);
        datagram.extend(message(
            NLMSG_DONE,
            NLM_F_MULTIPART,
            SEQUENCE,
            &0i32.to_ne_bytes(),
        ));
        datagram.extend(message(24, NLM_F_MULTIPART, SEQUENCE, &[10]));
        let (more, seen) = collect(&datagram);
        assert!(!more.unwrap());
        assert_eq!(seen, [(24, vec![9])], "nothing after DONE");
    }

    #[test]
    fn errors_and_malformed_replies_fail_the_dump() {
        let refused = message(NLMSG_ERROR, 0, SEQUENCE, &(-libc::EPERM).to_ne_bytes());
        let error = collect(&refused).0.unwrap_err();
        assert_eq!(
            error
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error),
            Some(libc::EPERM),
            "{error:#}"
        );
        let failed_done = message(
            NLMSG_DONE,
            NLM_F_MULTIPART,
            SEQUENCE,
            &(-libc::ENOENT).to_ne_bytes(),
        );
        assert!(collect(&failed_done).0.is_err());
        let ack = message(NLMSG_ERROR, 0, SEQUENCE, &[0; 20]);
        assert!(!collect(&ack).0.unwrap(), "an ACK is not an error");
        assert!(
            collect(&message(NLMSG_OVERRUN, 0, SEQUENCE, &[]))
                .0
                .is_err()
        );
        assert!(
            collect(&message(24, 0, SEQUENCE + 1, &[])).0.is_err(),
            "other sequence"
        );
        let truncated = message(24, NLM_F_MULTIPART, SEQUENCE, &[1; 40]);
        assert!(collect(&truncated[..30]).0.is_err());
        assert!(collect(&truncated[..10]).0.is_err());
        let short_error = message(NLMSG_ERROR, 0, SEQUENCE, &[1, 2]);
        assert!(collect(&short_error).0.is_err());
        let mut lying = message(24, NLM_F_MULTIPART, SEQUENCE, &[]);
        lying[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(collect(&lying).0.is_err(), "length below the header");
    }

    #[test]
    fn addresses_print_as_go_prints_them() {
        assert_eq!(go_ip_string(&[]), "<nil>");
        assert_eq!(go_ip_string(&[10, 0, 0, 1]), "10.0.0.1");
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(go_ip_string(&v6("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(go_ip_string(&v6("::")), "::");
        assert_eq!(go_ip_string(&v6("::1")), "::1");
        assert_eq!(go_ip_string(&v6("::102:304")), "::102:304");
        assert_eq!(
            go_ip_string(&v6("2001:db8:0:0:1:0:0:1")),
            "2001:db8::1:0:0:1"
        );
        assert_eq!(
            go_ip_string(&v6("2001:db8:0:1:1:1:1:1")),
            "2001:db8:0:1:1:1:1:1"
        );
        assert_eq!(go_ip_string(&v6("fe80::a:0:0:0:0")), "fe80:0:0:a::");
        assert_eq!(go_ip_string(&[1, 2, 3]), "?010203");
    }

    #[test]
    fn live_dumps_end_and_are_bounded_in_time() {
        use netlink_packet_route::{RouteNetlinkMessage, neighbour::NeighbourMessage};
        let request = || RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default());
        let mut messages = 0;
        dump(NETLINK_ROUTE, request(), |_, _| {
            messages += 1;
            Ok(())
        })
        .unwrap();
        let error =
            dump_within(NETLINK_ROUTE, request(), Duration::ZERO, |_, _| Ok(())).unwrap_err();
        assert!(
            error.to_string().contains("not finished within"),
            "{error:#}"
        );
        // The caller's error ends the dump (when there is a message to fail on).
        if messages > 0 {
            let error = dump(NETLINK_ROUTE, request(), |_, _| anyhow::bail!("enough"));
            assert_eq!(error.unwrap_err().to_string(), "enough");
        }
    }

    #[test]
    fn interface_names() {
        assert_eq!(interface_name(1).as_deref(), Some("lo"));
        assert_eq!(interface_name(0), None);
        assert_eq!(interface_name(u32::MAX), None);
    }
}
