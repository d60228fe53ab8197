//! HTTP: a landing page at `/` and the metrics at the telemetry path, gzip-compressed when the
//! client accepts it, at most `--web.max-requests` scrapes at once (beyond that, 503).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
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

pub fn router(state: Arc<AppState>) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    let mut router = Router::new().route(&telemetry_path, get(metrics_handler));
    if telemetry_path != "/" {
        router = router.route("/", get(landing_page));
    }
    router
        .layer(CompressionLayer::new().gzip(true))
        .with_state(state)
}

/// How long, once shutdown is asked for, requests in progress may still finish. Connections
/// still open then (a scrape waiting on a hung collector, a client that never finishes its
/// request or never reads the answer) are dropped, so the process exits well within the 30 s
/// Kubernetes allows before SIGKILL, and within 2 s of SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on every address until `shutdown` is set, then gives requests in progress
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    router: Router,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await
        });
    }
    let drained = async {
        while let Some(result) = servers.join_next().await {
            result
                .context("HTTP server task failed")?
                .context("HTTP server failed")?;
        }
        anyhow::Ok(())
    };
    let mut stop = shutdown;
    let grace_over = async {
        let _ = stop.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = drained => result,
        () = grace_over => {
            tracing::info!(
                grace = ?SHUTDOWN_GRACE,
                "connections still open after the shutdown grace period are dropped"
            );
            Ok(())
        }
    }
}

pub async fn bind(addresses: &[SocketAddr]) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    for address in addresses {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        listeners.push(listener);
    }
    Ok(listeners)
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
    let mut families = state.scraper.scrape(timeout).await;
    families.push(exporter::build_info());
    if state.exporter_metrics_enabled {
        families.extend(state.exporter.families());
    }
    let body = exposition::encode(&metrics::merge_and_sort(families));
    drop(in_flight);
    state.exporter.count_response(200);
    ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], body).into_response()
}

/// Prometheus sends its scrape timeout; finish a little before it so the answer still arrives.
fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds > 0.0)
        .then(|| Duration::from_secs_f64((seconds - 0.5).max(seconds * 0.5)))
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
        let server = tokio::spawn(serve(listeners, router(Arc::clone(&state)), stopped));

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
        headers.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "soon".parse().unwrap(),
        );
        assert_eq!(scrape_timeout(&headers), None);
    }
}
