//! Connections: listening sockets with node_exporter's backlog, an accept loop that bounds the
//! open connections and the time a client may take to send its request or stay idle, and
//! shutdown with a short grace period. Whatever clients do, memory and descriptors stay bounded
//! by `--web.max-connections`, and the process exits within 2 s of SIGTERM.
//!
//! At the limit, a new connection takes the place of the one idle longest (no request in
//! progress, least recently used), so a crowd of idle or half-open connections cannot lock a
//! scraper out; only when every connection is busy is the new one closed.
//!
//! With TLS (`--web.config.file`), the same holds: a connection in its handshake counts, can be
//! the one replaced, and has [`ConnectionLimits::tls_handshake_timeout`] to finish it. HTTP/2 is
//! spoken when the client asks for it through ALPN (and `http_server_config.http2` allows it); its
//! connections close after the same idle time as HTTP/1.1's.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream},
    sync::{Notify, Semaphore, watch},
};

use super::web_config::WebConfig;

/// How long, once shutdown is asked for, requests in progress may still finish. Connections
/// still open then (a scrape waiting on a hung collector, a client that never finishes its
/// request or never reads the answer) are dropped, so the process exits well within the 30 s
/// Kubernetes allows before SIGKILL, and within 2 s of SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bounds on what clients can hold.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; a connection beyond them is closed as soon as accepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, and to send the next request on
    /// a kept-alive connection: longer than Prometheus' usual scrape intervals (1 min), so its
    /// connections stay open between scrapes.
    pub header_read_timeout: Duration,
    /// Longest a client may take to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl ConnectionLimits {
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

/// A listening socket: TCP, or (from systemd) Unix.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl Listener {
    /// The address, for the log.
    pub fn describe(&self) -> String {
        let address = match self {
            Self::Tcp(listener) => listener.local_addr().map(|a| a.to_string()),
            Self::Unix(listener) => listener.local_addr().map(|a| match a.as_pathname() {
                Some(path) => path.display().to_string(),
                None => "(unnamed Unix socket)".to_owned(),
            }),
        };
        address.unwrap_or_else(|e| format!("(unknown: {e})"))
    }

    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Self::Tcp(listener) => listener.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Self::Unix(listener) => listener.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }
}

/// Listens on every address, with the backlog node_exporter's Go runtime asks for.
pub async fn bind(addresses: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let backlog = listen_backlog();
    let mut listeners = Vec::new();
    for address in addresses {
        let listener =
            listen(*address, backlog).with_context(|| format!("cannot listen on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        listeners.push(listener);
    }
    Ok(listeners)
}

fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// `net.core.somaxconn` capped at 65535, as Go's `maxListenerBacklog`; 4096 (the kernel's default
/// since 5.4) if it cannot be read. A burst of connections waits in the queue instead of being
/// dropped (tokio's default is 1024; 128 on kernels before 5.4).
fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|value| value.trim().parse::<u32>().ok())
        .map_or(4096, |n| n.clamp(1, 65535))
}

/// Serves `router` on every listener until `shutdown` is set, then gives requests in progress
/// [`SHUTDOWN_GRACE`] to finish. With `tls` (a web configuration with TLS on), connections are
/// TLS, with the certificate the configuration has when each connects.
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    tls: Option<Arc<WebConfig>>,
) -> anyhow::Result<()> {
    let tls = tls.filter(|web| web.tls_enabled());
    let open = Arc::new(OpenConnections::new(limits.max_connections));
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(
            listener,
            router.clone(),
            shutdown.clone(),
            Arc::clone(&open),
            limits,
            tls.clone(),
        ));
    }
    let mut stop = shutdown;
    let _ = stop.wait_for(|stop| *stop).await;
    accepting.abort_all();
    // Connections finish their request in progress and close; idle ones close at once.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, open.permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            grace = ?SHUTDOWN_GRACE,
            still_open = limits.max_connections - open.permits.available_permits(),
            "connections still open after the shutdown grace period are dropped"
        );
    }
    Ok(())
}

/// The open connections: one permit each, and what eviction needs to know of them.
struct OpenConnections {
    permits: Semaphore,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    started: Instant,
}

/// What the accept loop knows of one open connection.
struct Connection {
    /// Requests being handled.
    busy: AtomicUsize,
    /// Milliseconds since `OpenConnections::started` of its last request or response.
    last_active_ms: AtomicU64,
    /// Told to close: another connection needs its place.
    evict: Notify,
    /// Already told, so not chosen again.
    evicted: AtomicBool,
}

impl OpenConnections {
    fn new(max: usize) -> Self {
        Self {
            permits: Semaphore::new(max),
            connections: Mutex::default(),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Closes the connection idle longest; false when every connection is busy.
    fn evict_idlest(&self) -> bool {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = connections
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Acquire))
            .min_by_key(|c| c.last_active_ms.load(Ordering::Acquire));
        match idlest {
            Some(connection) => {
                connection.evicted.store(true, Ordering::Release);
                // Stored if its task is not waiting right now: it closes at its next poll.
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Accepts connections on `listener`; at the limit, one replaces the connection idle longest.
async fn accept_loop(
    listener: Listener,
    router: Router,
    shutdown: watch::Receiver<bool>,
    open: Arc<OpenConnections>,
    limits: ConnectionLimits,
    tls: Option<Arc<WebConfig>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: the queue keeps the client
                // until one is free. Go's server backs off the same way.
                tracing::warn!(err = %error, "cannot accept a connection; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match Arc::clone(&open).permits_owned() {
            Some(permit) => permit,
            None => {
                let evicted = open.evict_idlest();
                // The evicted connection's place, or one a connection closing meanwhile frees.
                let wait = open.wait_for_permit(Duration::from_millis(200));
                match wait.await {
                    Some(permit) => {
                        if evicted {
                            tracing::warn!(
                                max_connections = limits.max_connections,
                                "connection limit reached (--web.max-connections): closed the connection idle longest"
                            );
                        }
                        permit
                    }
                    None => {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            "connection limit reached (--web.max-connections) and every connection busy: closing a new connection"
                        );
                        continue;
                    }
                }
            }
        };
        let connection = Arc::new(Connection {
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(open.now_ms()),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        open.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&connection));
        let router = router.clone();
        let shutdown = shutdown.clone();
        let open = Arc::clone(&open);
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, shutdown, &connection, &open, limits, tls).await;
            open.connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            drop(permit);
        });
    }
}

impl OpenConnections {
    fn permits_owned(self: Arc<Self>) -> Option<OwnedPermit> {
        let permit = self.permits.try_acquire().ok()?;
        permit.forget();
        Some(OwnedPermit(self))
    }

    async fn wait_for_permit(self: &Arc<Self>, wait: Duration) -> Option<OwnedPermit> {
        let permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .ok()?
            .ok()?;
        permit.forget();
        Some(OwnedPermit(Arc::clone(self)))
    }
}

/// One connection's place, given back when dropped.
struct OwnedPermit(Arc<OpenConnections>);

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// One connection: TLS first if configured, then HTTP/1.1 with keep-alive (or HTTP/2) until the
/// client closes it, falls silent for `header_read_timeout`, another connection needs its place,
/// or shutdown asks it to finish.
async fn serve_connection(
    stream: Stream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    connection: &Arc<Connection>,
    open: &Arc<OpenConnections>,
    limits: ConnectionLimits,
    tls: Option<Arc<WebConfig>>,
) {
    let Some(web) = tls else {
        serve_http(stream, false, router, shutdown, connection, open, limits).await;
        return;
    };
    let Some(config) = web.current().tls.clone() else {
        return;
    };
    let handshake = async {
        let mut stream = stream;
        reject_plain_http(&mut stream).await?;
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await
    };
    let handshake = tokio::time::timeout(limits.tls_handshake_timeout, handshake);
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(err = %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    timeout = ?limits.tls_handshake_timeout,
                    "TLS handshake not finished in time: connection closed"
                );
                return;
            }
        },
        () = connection.evict.notified() => return,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let http2 = web.http2() && stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(stream, http2, router, shutdown, connection, open, limits).await;
}

/// Go's answer to plain HTTP on a TLS port (the first bytes look like a request, not a TLS
/// record): a 400 that says so, then the connection is closed.
async fn reject_plain_http(stream: &mut Stream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Stream::Tcp(tcp) = stream else {
        return Ok(());
    };
    let mut start = [0u8; 5];
    let n = tcp.peek(&mut start).await?;
    let looks_like_http = ["GET /", "HEAD ", "POST ", "PUT /", "OPTIO"]
        .iter()
        .any(|method| n > 0 && method.as_bytes().starts_with(&start[..n]));
    if !looks_like_http {
        return Ok(());
    }
    tcp.write_all(
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
    )
    .await?;
    tcp.shutdown().await?;
    // Read what the client sent until it closes (it reads the answer to its end first), so that
    // closing does not reset the connection under the answer.
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut sink)).await {
            Ok(Ok(read)) if read > 0 => left = left.saturating_sub(read),
            _ => break,
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "plain HTTP request on the TLS port",
    ))
}

/// HTTP on an established connection (plain or TLS).
async fn serve_http<I>(
    io: I,
    http2: bool,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    connection: &Arc<Connection>,
    open: &Arc<OpenConnections>,
    limits: ConnectionLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let service = TowerToHyperService::new(Tracked {
        router,
        connection: Arc::clone(connection),
        open: Arc::clone(open),
    });
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = if http2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_HTTP2_STREAMS);
        let serving = builder.serve_connection(TokioIo::new(io), service);
        let mut serving = std::pin::pin!(serving);
        // HTTP/2 has no header read timeout: close a connection idle as long.
        let idle = idle(connection, open, limits.header_read_timeout);
        tokio::select! {
            result = serving.as_mut() => result,
            () = connection.evict.notified() => Ok(()),
            () = stop => {
                serving.as_mut().graceful_shutdown();
                serving.await
            }
            () = idle => {
                serving.as_mut().graceful_shutdown();
                serving.await
            }
        }
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let serving = builder.serve_connection(TokioIo::new(io), service);
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            result = serving.as_mut() => result,
            () = connection.evict.notified() => Ok(()),
            () = stop => {
                serving.as_mut().graceful_shutdown();
                serving.await
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(err = %error, open_for = ?started.elapsed(), "connection ended with an error");
    }
}

/// Streams (requests) at once on one HTTP/2 connection; `--web.max-requests` bounds scrapes.
const MAX_HTTP2_STREAMS: u32 = 32;

/// Resolves once the connection has had no request in progress for `timeout`.
async fn idle(connection: &Connection, open: &OpenConnections, timeout: Duration) {
    let timeout_ms = timeout.as_millis() as u64;
    loop {
        let idle_ms = open
            .now_ms()
            .saturating_sub(connection.last_active_ms.load(Ordering::Acquire));
        if connection.busy.load(Ordering::Acquire) == 0 && idle_ms >= timeout_ms {
            return;
        }
        let wait = timeout_ms.saturating_sub(idle_ms).max(100);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// The router, noting on its connection when a request is in progress and when it was last
/// active.
#[derive(Clone)]
struct Tracked {
    router: Router,
    connection: Arc<Connection>,
    open: Arc<OpenConnections>,
}

impl tower_service::Service<axum::http::Request<hyper::body::Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        let connection = Arc::clone(&self.connection);
        let open = Arc::clone(&self.open);
        connection.busy.fetch_add(1, Ordering::AcqRel);
        connection
            .last_active_ms
            .store(open.now_ms(), Ordering::Release);
        // A router is always ready.
        let response = self.router.call(request);
        Box::pin(async move {
            let response = response.await;
            connection
                .last_active_ms
                .store(open.now_ms(), Ordering::Release);
            connection.busy.fetch_sub(1, Ordering::AcqRel);
            response
        })
    }
}
