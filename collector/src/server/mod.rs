//! HTTP: a landing page at `/` and the metrics at the telemetry path, gzip-compressed when the
//! client accepts it, at most `--web.max-requests` scrapes at once (beyond that, 503). How
//! connections are accepted, bounded and closed is `connections`; `--web.config.file` (TLS, basic
//! authentication, headers, rate limit) is `web_config`, `tls` and `auth`; `--web.kubernetes-auth`
//! (bearer tokens reviewed by the Kubernetes API) is `kube_auth`; `--web.systemd-socket` is
//! `systemd`.
mod auth;
mod connections;
pub mod kube_auth;
pub mod systemd;
mod tls;
pub mod web_config;

use std::{sync::Arc, time::Duration};

pub use connections::{ConnectionLimits, Listener, SHUTDOWN_GRACE, bind, serve};
pub use kube_auth::KubeAuth;
pub use web_config::WebConfig;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;

use crate::{
    exporter::{self, ExporterMetrics},
    exposition, metrics,
    scrape::Scraper,
};

pub struct AppState {
    pub scraper: Scraper,
    pub exporter: ExporterMetrics,
    pub exporter_metrics_enabled: bool,
    pub telemetry_path: String,
    /// `None`: no limit (`--web.max-requests=0`).
    pub scrape_permits: Option<Semaphore>,
    pub max_requests: usize,
}

/// The routes; with `web`, every request goes through its rate limit, headers and basic
/// authentication first (after the Host header check, which Go's server makes before any handler).
/// With `kube_auth`, the metrics path also needs an allowed bearer token; the landing page,
/// which kubelet's probes ask for, does not.
pub fn router(
    state: Arc<AppState>,
    web: Option<Arc<WebConfig>>,
    kube_auth: Option<Arc<KubeAuth>>,
) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    let mut metrics = get(metrics_handler);
    if let Some(kube_auth) = kube_auth {
        metrics = metrics.route_layer(axum::middleware::from_fn_with_state(
            kube_auth,
            kube_auth::require_token,
        ));
    }
    let mut router = Router::new().route(&telemetry_path, metrics);
    if telemetry_path != "/" {
        router = router.route("/", get(landing_page));
    }
    let mut router = router.layer(CompressionLayer::new().gzip(true));
    if let Some(web) = web {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::Guard::new(web)),
            auth::guard,
        ));
    }
    router
        .layer(axum::middleware::from_fn(one_host_header))
        .with_state(state)
}

/// RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with more than one, gets 400
/// (hyper serves them as they come).
async fn one_host_header(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if request.version() == axum::http::Version::HTTP_11 && hosts != 1 {
        let message = if hosts == 0 {
            "Bad Request: missing Host header\n"
        } else {
            "Bad Request: more than one Host header\n"
        };
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    next.run(request).await
}

async fn landing_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!DOCTYPE html>\n<html>\n<head><title>eBPF Node Collector</title></head>\n<body>\n\
         <h1>eBPF Node Collector</h1>\n\
         <p>Prometheus exporter for node and kernel metrics: node_exporter's metrics plus eBPF \
         scheduler, CPU, block and network metrics.</p>\n\
         <ul><li><a href=\"{path}\">Metrics</a></li></ul>\n\
         <p>Version {}</p>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

async fn metrics_handler(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let _permit = match &state.scrape_permits {
        None => None,
        Some(permits) => match permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                state.exporter.count_response(503);
                let message = format!(
                    "Limit of concurrent requests reached ({}), try again later.\n",
                    state.max_requests
                );
                return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
            }
        },
    };
    let in_flight = state.exporter.in_flight();
    let timeout = scrape_timeout(&headers);
    let mut own = vec![exporter::build_info(), exporter::node_exporter_build_info()];
    if state.exporter_metrics_enabled {
        own.extend(state.exporter.families());
    }
    let families = state.scraper.scrape(timeout, own).await;
    let body = exposition::encode(&metrics::merge_and_sort(families));
    drop(in_flight);
    state.exporter.count_response(200);
    ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], body).into_response()
}

/// Prometheus sends its scrape timeout; finish a little before it so the answer still arrives.
/// A value that is not a positive number is ignored, and one too large for a `Duration` (it
/// only shortens `--scrape.timeout` anyway) is as good as none.
fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return None;
    }
    Duration::try_from_secs_f64((seconds - 0.5).max(seconds * 0.5)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collector::Collector, metrics::MetricFamily};

    struct Slow;
    impl Collector for Slow {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            std::thread::sleep(Duration::from_millis(800));
            out.push(MetricFamily::gauge("slow_value", "Slow.").with([("a", "b")], 1.0));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_max_requests_get_503() {
        let state = Arc::new(AppState {
            scraper: Scraper::new(
                vec![("slow", Arc::new(Slow) as Arc<dyn Collector>)],
                Duration::from_secs(5),
            ),
            exporter: ExporterMetrics::default(),
            exporter_metrics_enabled: true,
            telemetry_path: "/metrics".into(),
            scrape_permits: Some(Semaphore::new(1)),
            max_requests: 1,
        });
        let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let address = listeners[0].local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let limits = ConnectionLimits {
            max_connections: 16,
            header_read_timeout: ConnectionLimits::HEADER_READ_TIMEOUT,
            tls_handshake_timeout: ConnectionLimits::TLS_HANDSHAKE_TIMEOUT,
        };
        let server = tokio::spawn(serve(
            listeners.into_iter().map(Listener::from).collect(),
            router(Arc::clone(&state), None, None),
            stopped,
            limits,
            None,
        ));

        let url = format!("http://{address}/metrics");
        let statuses = tokio::task::spawn_blocking(move || {
            let first = {
                let url = url.clone();
                std::thread::spawn(move || ureq::get(&url).call().map(|r| r.status().as_u16()))
            };
            std::thread::sleep(Duration::from_millis(300));
            let second = ureq::get(&url).call();
            let second = match second {
                Ok(r) => r.status().as_u16(),
                Err(ureq::Error::StatusCode(code)) => code,
                Err(e) => panic!("{e}"),
            };
            (first.join().unwrap().unwrap(), second)
        })
        .await
        .unwrap();
        assert_eq!(statuses, (200, 503));
        let text =
            crate::exposition::encode(&crate::metrics::merge_and_sort(state.exporter.families()));
        assert!(
            text.contains("promhttp_metric_handler_requests_total{code=\"503\"} 1\n"),
            "{text}"
        );
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();
    }

    /// A TLS server (self-signed for localhost) on a free port, with small limits.
    async fn tls_server(
        dir: &web_config::tests::Dir,
        limits: ConnectionLimits,
    ) -> (
        std::net::SocketAddr,
        Arc<rustls::ClientConfig>,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let (cert, key) = web_config::tests::server_cert();
        dir.write("server.crt", &cert);
        dir.write("server.key", &key);
        let path = dir.write(
            "web.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
        );
        let web = Arc::new(WebConfig::load(&path).unwrap());
        let state = Arc::new(AppState {
            scraper: Scraper::new(Vec::new(), Duration::from_secs(5)),
            exporter: ExporterMetrics::default(),
            exporter_metrics_enabled: false,
            telemetry_path: "/metrics".into(),
            scrape_permits: None,
            max_requests: 0,
        });
        let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let address = listeners[0].local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(
            listeners.into_iter().map(Listener::from).collect(),
            router(state, Some(Arc::clone(&web)), None),
            stopped,
            limits,
            Some(web),
        ));
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls::pki_types::pem::PemObject::pem_slice_iter(cert.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        (address, Arc::new(client), stop, server)
    }

    /// GET /metrics over TLS (HTTP/1.1): the status line.
    async fn tls_get(address: std::net::SocketAddr, client: Arc<rustls::ClientConfig>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_handshakes_are_bounded_and_silent_clients_block_nobody() {
        use tokio::io::AsyncReadExt as _;
        let dir = web_config::tests::Dir::new("handshake");
        let limits = ConnectionLimits {
            max_connections: 2,
            header_read_timeout: ConnectionLimits::HEADER_READ_TIMEOUT,
            tls_handshake_timeout: Duration::from_millis(500),
        };
        let (address, client, stop, server) = tls_server(&dir, limits).await;
        assert_eq!(
            tls_get(address, Arc::clone(&client)).await,
            "HTTP/1.1 200 OK"
        );
        // Clients that connect and never start (or never finish) the handshake take every slot.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        let mut half = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut half, &[0x16, 0x03, 0x01, 0x00])
            .await
            .unwrap();
        // A scraper still gets in: it takes the place of one of them.
        assert_eq!(
            tls_get(address, Arc::clone(&client)).await,
            "HTTP/1.1 200 OK"
        );
        // And whoever is left is closed once the handshake timeout passes.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for mut stream in silent.into_iter().chain([half]) {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "connection still open: {read:?}"
            );
        }
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn scrape_timeout_header_leaves_margin() {
        let mut headers = HeaderMap::new();
        assert_eq!(scrape_timeout(&headers), None);
        headers.insert("X-Prometheus-Scrape-Timeout-Seconds", "10".parse().unwrap());
        assert_eq!(scrape_timeout(&headers), Some(Duration::from_secs_f64(9.5)));
        headers.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "0.5".parse().unwrap(),
        );
        assert_eq!(
            scrape_timeout(&headers),
            Some(Duration::from_secs_f64(0.25))
        );
        for bad in ["soon", "1e308", "-3", "0", "NaN", "inf"] {
            headers.insert("X-Prometheus-Scrape-Timeout-Seconds", bad.parse().unwrap());
            assert_eq!(scrape_timeout(&headers), None, "{bad}");
        }
    }
}
