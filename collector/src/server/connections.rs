//! Connections: listening sockets with node_exporter's backlog, an accept loop that bounds the
//! open connections and the time a client may take to send its request or stay idle, and
//! shutdown with a short grace period. Whatever clients do, memory and descriptors stay bounded
//! by `--web.max-connections`, and the process exits within 2 s of SIGTERM.
//!
//! At the limit, a new connection takes the place of the one idle longest (no request in
//! progress, least recently used), so a crowd of idle or half-open connections cannot lock a
//! scraper out; only when every connection is busy is the new one closed.
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
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Notify, Semaphore, watch},
};

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
}

impl ConnectionLimits {
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
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
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> anyhow::Result<()> {
    let open = Arc::new(OpenConnections::new(limits.max_connections));
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(
            listener,
            router.clone(),
            shutdown.clone(),
            Arc::clone(&open),
            limits,
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
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
    open: Arc<OpenConnections>,
    limits: ConnectionLimits,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
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
        tokio::spawn(async move {
            serve_connection(
                stream,
                router,
                shutdown,
                &connection,
                &open,
                limits.header_read_timeout,
            )
            .await;
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

/// One connection: HTTP/1.1 with keep-alive until the client closes it, falls silent for
/// `header_read_timeout`, another connection needs its place, or shutdown asks it to finish.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    connection: &Arc<Connection>,
    open: &Arc<OpenConnections>,
    header_read_timeout: Duration,
) {
    let started = Instant::now();
    let service = TowerToHyperService::new(Tracked {
        router,
        connection: Arc::clone(connection),
        open: Arc::clone(open),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    let mut serving = std::pin::pin!(serving);
    let stop = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = connection.evict.notified() => Ok(()),
        () = stop => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(err = %error, open_for = ?started.elapsed(), "connection ended with an error");
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
