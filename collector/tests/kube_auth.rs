//! `--web.kubernetes-auth` on the real daemon, against a fake Kubernetes API server (HTTPS with a
//! CA of its own, as the pod-watch tests' one) that answers TokenReviews and SubjectAccessReviews
//! from a table of accounts and keeps every review it is sent. Checked: the status of each kind
//! of request, what the reviews carry, how many are made (cache, single flight, TTLs, the bound on
//! reviews in flight), the API server down, refusals at start, that no token reaches the log, and
//! the Debian Prometheus scraping over TLS with a bearer credentials file. No root needed (the
//! daemon runs one /proc collector), except to give it a pod's service account in a mount
//! namespace of its own.
mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Daemon, prometheus::Prometheus, prometheus::TempDir};
use serde_json::{Value, json};

/// Only /proc/loadavg: no eBPF, no root.
const COLLECTORS: [&str; 3] = [
    "--collector.disable-defaults",
    "--collector.loadavg",
    "--web.disable-exporter-metrics",
];

/// The audience the daemon asks the API server to check tokens against.
const AUDIENCE: &str = "ebpf-node-collector";

/// The daemon's own credential for the API server (its service account, in a cluster).
const DAEMON_TOKEN: &str = "daemon-sa-token";

/// An identity the fake API server vouches for.
struct Account {
    token: &'static str,
    user: &'static str,
    /// The paths RBAC lets it `get` (its ClusterRole's nonResourceURLs).
    paths: &'static [&'static str],
    /// The audiences the TokenReview answers with; `None`: the ones asked.
    audiences: Option<&'static [&'static str]>,
}

const SCRAPER: Account = Account {
    token: "scraper-token-4f1c",
    user: "system:serviceaccount:monitoring:prometheus",
    paths: &["/metrics"],
    audiences: None,
};
const SECOND_SCRAPER: Account = Account {
    token: "second-scraper-token-77aa",
    user: "system:serviceaccount:monitoring:prometheus-1",
    paths: &["/metrics"],
    audiences: None,
};
const NOT_ALLOWED: Account = Account {
    token: "not-allowed-token-9d2e",
    user: "system:serviceaccount:default:nobody",
    paths: &[],
    audiences: None,
};
/// The API server cannot evaluate this one's access: its SubjectAccessReviews get a 500.
const UNEVALUABLE: Account = Account {
    token: "unevaluable-token-31b0",
    user: "system:serviceaccount:default:broken",
    paths: &["/metrics"],
    audiences: None,
};
/// A valid token, but for another audience.
const OTHER_AUDIENCE: Account = Account {
    token: "other-audience-token-5e81",
    user: "system:serviceaccount:monitoring:prometheus",
    paths: &["/metrics"],
    audiences: Some(&["vault"]),
};
/// Its TokenReviews are answered only once the test lets them go (`FakeApiServer::hold`).
const SLOW: Account = Account {
    token: "slow-token-c4d9",
    user: "system:serviceaccount:monitoring:slow",
    paths: &["/metrics"],
    audiences: None,
};
const ACCOUNTS: [&Account; 6] = [
    &SCRAPER,
    &SECOND_SCRAPER,
    &NOT_ALLOWED,
    &UNEVALUABLE,
    &OTHER_AUDIENCE,
    &SLOW,
];
/// A token the API server does not know.
const INVALID_TOKEN: &str = "invalid-token-0000";

/// Every token of the tests: none may appear in the daemon's log.
const TOKENS: [&str; 8] = [
    SCRAPER.token,
    SECOND_SCRAPER.token,
    NOT_ALLOWED.token,
    UNEVALUABLE.token,
    OTHER_AUDIENCE.token,
    SLOW.token,
    INVALID_TOKEN,
    DAEMON_TOKEN,
];

/// One review the fake API server was sent.
#[derive(Clone, Debug)]
struct Review {
    /// `tokenreviews` or `subjectaccessreviews`.
    kind: String,
    /// The request's `Authorization` header: the daemon's own credential.
    authorization: Option<String>,
    body: Value,
}

/// A Kubernetes API server that knows `ACCOUNTS`.
struct FakeApiServer {
    port: u16,
    ca_pem: String,
    reviews: Arc<Mutex<Vec<Review>>>,
    /// Every request answered 500 (etcd down, say).
    failing: Arc<AtomicBool>,
    /// SLOW's TokenReviews wait while this is set.
    hold: Arc<AtomicBool>,
}

impl FakeApiServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake API server");
        let port = listener.local_addr().unwrap().port();
        let (tls, ca_pem) = common::kube_api::tls_config();
        let server = Self {
            port,
            ca_pem,
            reviews: Arc::default(),
            failing: Arc::default(),
            hold: Arc::default(),
        };
        let (reviews, failing, hold) = (
            Arc::clone(&server.reviews),
            Arc::clone(&server.failing),
            Arc::clone(&server.hold),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let connection = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
                let (reviews, failing, hold) = (
                    Arc::clone(&reviews),
                    Arc::clone(&failing),
                    Arc::clone(&hold),
                );
                std::thread::spawn(move || {
                    let mut stream = rustls::StreamOwned::new(connection, stream);
                    serve(&mut stream, &reviews, &failing, &hold);
                });
            }
        });
        server
    }

    fn reviews(&self, kind: &str) -> Vec<Review> {
        let reviews = self.reviews.lock().unwrap();
        reviews.iter().filter(|r| r.kind == kind).cloned().collect()
    }

    /// How many TokenReviews and SubjectAccessReviews it was sent.
    fn counts(&self) -> (usize, usize) {
        (
            self.reviews("tokenreviews").len(),
            self.reviews("subjectaccessreviews").len(),
        )
    }

    /// A kubeconfig in `dir` for this server, with the daemon's credential.
    fn kubeconfig(&self, dir: &TempDir) -> PathBuf {
        let ca = dir.path().join("api-ca.crt");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        kubeconfig(
            dir,
            &format!("https://127.0.0.1:{}", self.port),
            &ca.display().to_string(),
        )
    }
}

fn kubeconfig(dir: &TempDir, server: &str, ca: &str) -> PathBuf {
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: '{server}', certificate-authority: '{ca}'}}}}]\n\
             users: [{{name: test, user: {{token: {DAEMON_TOKEN}}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n"
        ),
    )
    .unwrap();
    path
}

/// Serves one connection's requests, one after the other (keep-alive), until it ends.
fn serve(
    stream: &mut (impl Read + Write),
    reviews: &Mutex<Vec<Review>>,
    failing: &AtomicBool,
    hold: &AtomicBool,
) {
    while let Some(HttpRequest {
        line,
        headers,
        body,
    }) = read_request(stream)
    {
        let header = |name: &str| {
            headers
                .iter()
                .find_map(|(n, v)| n.eq_ignore_ascii_case(name).then(|| v.clone()))
        };
        let kind = line
            .split(' ')
            .nth(1)
            .and_then(|path| path.split('?').next())
            .and_then(|path| path.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        reviews.lock().unwrap().push(Review {
            kind: kind.clone(),
            authorization: header("authorization"),
            body: body.clone(),
        });
        let answer = if failing.load(Ordering::SeqCst) {
            None
        } else if line.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews") {
            Some(token_review(&body, hold))
        } else if line.starts_with("POST /apis/authorization.k8s.io/v1/subjectaccessreviews") {
            subject_access_review(&body)
        } else {
            None
        };
        let (status, answer) = match answer {
            Some(answer) => ("200 OK", answer),
            None => (
                "500 Internal Server Error",
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "etcdserver: request timed out", "code": 500}),
            ),
        };
        let answer = answer.to_string();
        let written = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if written.and_then(|()| stream.flush()).is_err() {
            return;
        }
    }
}

fn token_review(review: &Value, hold: &AtomicBool) -> Value {
    let spec = &review["spec"];
    let token = spec["token"].as_str().unwrap_or_default();
    let status = match ACCOUNTS.iter().find(|a| a.token == token) {
        Some(account) => {
            if account.token == SLOW.token {
                while hold.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let audiences = match account.audiences {
                Some(audiences) => json!(audiences),
                None => spec["audiences"].clone(),
            };
            json!({
                "authenticated": true,
                "audiences": audiences,
                "user": {
                    "username": account.user,
                    "uid": format!("uid-of-{}", account.user),
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
                },
            })
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {}, "spec": spec, "status": status,
    })
}

/// `None` (a 500) for UNEVALUABLE.
fn subject_access_review(review: &Value) -> Option<Value> {
    let spec = &review["spec"];
    let user = spec["user"].as_str().unwrap_or_default();
    if user == UNEVALUABLE.user {
        return None;
    }
    let attributes = &spec["nonResourceAttributes"];
    let path = attributes["path"].as_str().unwrap_or_default();
    let allowed = attributes["verb"] == "get"
        && ACCOUNTS
            .iter()
            .any(|a| a.user == user && a.paths.contains(&path));
    Some(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "metadata": {}, "spec": spec,
        "status": {"allowed": allowed, "reason": if allowed { "RBAC: allowed" } else { "" }},
    }))
}

/// One HTTP request to the fake API server.
struct HttpRequest {
    /// `POST /apis/... HTTP/1.1`.
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The next request on the connection; `None` at its end.
fn read_request(stream: &mut impl Read) -> Option<HttpRequest> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|header| {
            let (name, value) = header.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        line,
        headers,
        body,
    })
}

/// The daemon with `--web.kubernetes-auth` reaching the API server through `kubeconfig`.
fn daemon(kubeconfig: &std::path::Path, extra: &[&str]) -> Daemon {
    let kubeconfig = format!("--web.kubernetes-auth.kubeconfig={}", kubeconfig.display());
    let audiences = format!("--web.kubernetes-auth.audiences={AUDIENCE}");
    let mut args = vec!["--web.kubernetes-auth", &kubeconfig, &audiences];
    args.extend(COLLECTORS);
    args.extend(extra);
    Daemon::start(&args)
}

/// What a GET got.
#[derive(Debug)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

fn get(daemon: &Daemon, path: &str, authorization: Option<&str>) -> Answer {
    let mut request = ureq::get(&daemon.url(path))
        .config()
        .http_status_as_error(false)
        .build();
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", daemon.log()));
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        www_authenticate,
        body,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn status(daemon: &Daemon, token: &str) -> u16 {
    get(daemon, "/metrics", Some(&bearer(token))).status
}

fn assert_no_token_logged(daemon: &Daemon) {
    let log = daemon.log();
    for token in TOKENS {
        assert!(!log.contains(token), "token {token} in the log:\n{log}");
    }
}

#[test]
fn statuses_review_attributes_and_cache() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-statuses");
    // Refusals cached well past the test's length, so every count below is exact however slow
    // the machine; their expiry has a test of its own.
    let daemon = daemon(
        &server.kubeconfig(&dir),
        &["--web.kubernetes-auth.deny-ttl=10m"],
    );

    // No token, or no bearer token: 401 without asking the API server.
    for authorization in [
        None,
        Some("Basic cHJvbWV0aGV1czpzM2NyZXQ="),
        Some("Bearer "),
    ] {
        let answer = get(&daemon, "/metrics", authorization);
        assert_eq!(answer.status, 401, "{authorization:?}: {answer:?}");
        assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
        assert_eq!(answer.body, "Unauthorized\n");
    }
    assert_eq!(server.counts(), (0, 0));
    // The landing page, which kubelet's probes ask for, needs no token; another path is 404
    // without a review.
    assert_eq!(get(&daemon, "/", None).status, 200);
    assert_eq!(
        get(&daemon, "/other", Some(&bearer(SCRAPER.token))).status,
        404
    );
    assert_eq!(server.counts(), (0, 0));

    // Allowed: the metrics; five scrapes, one review of each kind.
    for _ in 0..5 {
        let answer = get(&daemon, "/metrics", Some(&bearer(SCRAPER.token)));
        assert_eq!(answer.status, 200, "{answer:?}\nlog:\n{}", daemon.log());
        assert!(answer.body.contains("\nnode_load1 "), "{}", answer.body);
    }
    assert_eq!(server.counts(), (1, 1));
    // What the reviews carried.
    let token_review = &server.reviews("tokenreviews")[0];
    assert_eq!(
        token_review.body["spec"],
        json!({"token": SCRAPER.token, "audiences": [AUDIENCE]})
    );
    assert_eq!(
        token_review.authorization.as_deref(),
        Some(format!("Bearer {DAEMON_TOKEN}").as_str()),
        "the daemon's own credential"
    );
    let access_review = &server.reviews("subjectaccessreviews")[0];
    assert_eq!(
        access_review.body["spec"],
        json!({
            "user": SCRAPER.user,
            "uid": format!("uid-of-{}", SCRAPER.user),
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
        })
    );

    // Authenticated, not allowed: 403, cached for the deny TTL.
    for _ in 0..3 {
        let answer = get(&daemon, "/metrics", Some(&bearer(NOT_ALLOWED.token)));
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_eq!(answer.www_authenticate, None);
        assert_eq!(answer.body, "Forbidden\n");
    }
    assert_eq!(server.counts(), (2, 2));
    // Not vouched for, or for another audience: 401, cached too.
    for _ in 0..3 {
        let answer = get(&daemon, "/metrics", Some(&bearer(INVALID_TOKEN)));
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
        assert_eq!(status(&daemon, OTHER_AUDIENCE.token), 401);
    }
    assert_eq!(server.counts(), (4, 2));
    // The API server cannot evaluate access: 500, not cached.
    for _ in 0..2 {
        assert_eq!(status(&daemon, UNEVALUABLE.token), 500);
    }
    assert_eq!(server.counts(), (6, 4));

    assert!(daemon.log().contains("SubjectAccessReview failed"));
    assert!(daemon.log().contains("not allowed by RBAC"));
    assert_no_token_logged(&daemon);
}

#[test]
fn refusals_are_reviewed_again_after_the_deny_ttl() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-deny-ttl");
    let daemon = daemon(
        &server.kubeconfig(&dir),
        &["--web.kubernetes-auth.deny-ttl=1s"],
    );
    assert_eq!(status(&daemon, SCRAPER.token), 200);
    assert_eq!(status(&daemon, NOT_ALLOWED.token), 403);
    assert_eq!(status(&daemon, INVALID_TOKEN), 401);
    let before = server.counts();
    // Past the deny TTL (the allowed TTL is 2 minutes): the two refusals are reviewed again,
    // the allowed token is not.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&daemon, NOT_ALLOWED.token), 403);
    assert_eq!(status(&daemon, INVALID_TOKEN), 401);
    assert_eq!(status(&daemon, SCRAPER.token), 200);
    assert_eq!(server.counts(), (before.0 + 2, before.1 + 1));
}

#[test]
fn concurrent_misses_make_one_review() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-single-flight");
    let daemon = daemon(&server.kubeconfig(&dir), &[]);
    // Held at the API server until all requests are in: they all miss the cache.
    server.hold.store(true, Ordering::SeqCst);
    let daemon = Arc::new(daemon);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let daemon = Arc::clone(&daemon);
            std::thread::spawn(move || status(&daemon, SLOW.token))
        })
        .collect();
    wait_until(|| server.counts().0 == 1, "the TokenReview");
    std::thread::sleep(Duration::from_millis(300));
    server.hold.store(false, Ordering::SeqCst);
    let statuses: Vec<u16> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(statuses, [200; 8]);
    assert_eq!(server.counts(), (1, 1));
}

#[test]
fn reviews_in_flight_are_bounded() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-bounded");
    let daemon = Arc::new(daemon(
        &server.kubeconfig(&dir),
        &["--web.kubernetes-auth.max-reviews=1"],
    ));
    server.hold.store(true, Ordering::SeqCst);
    let slow = {
        let daemon = Arc::clone(&daemon);
        std::thread::spawn(move || status(&daemon, SLOW.token))
    };
    wait_until(|| server.counts().0 == 1, "the slow TokenReview");
    // The one review allowed is under way: another token is refused, a cached one is served.
    let answer = get(&daemon, "/metrics", Some(&bearer(SCRAPER.token)));
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.body, "Service Unavailable\n");
    assert_eq!(server.counts().0, 1, "not sent to the API server");
    server.hold.store(false, Ordering::SeqCst);
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(status(&daemon, SCRAPER.token), 200);
    assert!(daemon.log().contains("max-reviews reviews in flight"));
}

#[test]
fn api_server_down() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-down");
    let daemon = daemon(&server.kubeconfig(&dir), &[]);
    assert_eq!(status(&daemon, SCRAPER.token), 200);
    server.failing.store(true, Ordering::SeqCst);
    // The allowed token is cached: its scrapes go on. A new one gets kube-rbac-proxy's 401.
    assert_eq!(status(&daemon, SCRAPER.token), 200);
    for _ in 0..3 {
        let answer = get(&daemon, "/metrics", Some(&bearer(SECOND_SCRAPER.token)));
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    // Failures are not cached: back up, the next request is allowed.
    server.failing.store(false, Ordering::SeqCst);
    assert_eq!(status(&daemon, SECOND_SCRAPER.token), 200);
    // Logged once, not once per request.
    let log = daemon.log();
    assert_eq!(log.matches("level=error").count(), 1, "log:\n{log}");
    assert!(log.contains("TokenReview failed"), "{log}");
    assert!(log.contains("etcdserver: request timed out"), "{log}");
    assert_no_token_logged(&daemon);

    // Unreachable: nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = TempDir::new("kube-auth-unreachable");
    let ca = unreachable.path().join("ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let config = kubeconfig(
        &unreachable,
        &format!("https://127.0.0.1:{port}"),
        &ca.display().to_string(),
    );
    let daemon = self::daemon(&config, &[]);
    for _ in 0..3 {
        assert_eq!(status(&daemon, SCRAPER.token), 401);
    }
    // One error line in all (not one of kube's client per request too).
    let log = daemon.log();
    assert_eq!(log.matches("level=error").count(), 1, "log:\n{log}");
    assert!(log.contains("TokenReview failed"), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
    assert_no_token_logged(&daemon);
}

#[test]
fn in_cluster_with_the_pods_service_account() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (a mount namespace with the service account's files)");
        return;
    }
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-in-cluster");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let mut command = common::kube_api::in_cluster_command(&ca, DAEMON_TOKEN, server.port);
    command.arg("--web.kubernetes-auth").args(COLLECTORS);
    let daemon = Daemon::spawn(command);
    assert_eq!(
        status(&daemon, SCRAPER.token),
        200,
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(status(&daemon, NOT_ALLOWED.token), 403);
    let reviews = server.reviews.lock().unwrap().clone();
    assert_eq!(reviews.len(), 4);
    for review in reviews {
        assert_eq!(
            review.authorization.as_deref(),
            Some(format!("Bearer {DAEMON_TOKEN}").as_str()),
            "the service account's token"
        );
        // No audiences asked: the API server's own.
        if review.kind == "tokenreviews" {
            assert_eq!(review.body["spec"].get("audiences"), None);
        }
    }
    assert_no_token_logged(&daemon);
}

/// Runs the daemon with `args` and `env`: its exit status and log, if it exits within 20 s.
fn start_failing(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(common::daemon::BINARY);
    command
        .args(args)
        .args(COLLECTORS)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied());
    common::daemon::run_to_exit(command)
}

#[test]
fn refused_at_start() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-refused");
    let kubeconfig = format!(
        "--web.kubernetes-auth.kubeconfig={}",
        server.kubeconfig(&dir).display()
    );
    // With basic authentication: both need the Authorization header.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let web = format!("--web.config.file={}", web.display());
    let (exit, log) = start_failing(&["--web.kubernetes-auth", &kubeconfig, &web], &[]);
    assert!(!exit.success());
    assert!(
        log.contains("--web.kubernetes-auth cannot be used with basic_auth_users"),
        "{log}"
    );
    // Outside a cluster without a kubeconfig.
    let (exit, log) = start_failing(&["--web.kubernetes-auth"], &[]);
    assert!(!exit.success());
    assert!(
        log.contains("no in-cluster Kubernetes configuration"),
        "{log}"
    );
    assert!(log.contains("--web.kubernetes-auth.kubeconfig"), "{log}");
    // Nothing was asked of the API server.
    assert_eq!(server.counts(), (0, 0));
}

#[test]
fn prometheus_scrapes_over_tls_with_a_bearer_credentials_file() {
    let server = FakeApiServer::start();
    let dir = TempDir::new("kube-auth-prometheus");
    let (ca, cert, key) = serving_certificate();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(dir.path().join("server.crt"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let web = format!("--web.config.file={}", web.display());
    // Refusals cached for the whole test: the counts below are exact.
    let daemon = daemon(
        &server.kubeconfig(&dir),
        &[&web, "--web.kubernetes-auth.deny-ttl=10m"],
    );
    let target = SocketAddr::from(([127, 0, 0, 1], daemon.address.port()));

    let token_file = |account: &Account| {
        let path = dir
            .path()
            .join(format!("{}.token", account.user.replace(':', "-")));
        std::fs::write(&path, account.token).unwrap();
        path.display().to_string()
    };
    let job = |name: &str, authorization: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n\
             {authorization}    static_configs:\n      - targets: ['{target}']\n",
            ca_file.display()
        )
    };
    let credentials =
        |file: String| format!("    authorization:\n      credentials_file: {file}\n");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}{}",
        job("allowed", &credentials(token_file(&SCRAPER))),
        job("not_allowed", &credentials(token_file(&NOT_ALLOWED))),
        job("anonymous", ""),
    );
    let prometheus = Prometheus::start(&config);
    let expected = [("allowed", 1.0), ("not_allowed", 0.0), ("anonymous", 0.0)];
    let seen = prometheus.up_by_job(&expected);
    let want: Vec<_> = expected.iter().map(|(job, v)| (*job, Some(*v))).collect();
    assert_eq!(seen, want, "up by job; log:\n{}", daemon.log());
    let loads = prometheus.values("node_load1").unwrap_or_default();
    assert_eq!(loads.len(), 1, "node_load1 of the allowed job: {loads:?}");
    // A scrape a second per job, and one review of each kind per token (within the TTLs).
    assert_eq!(server.counts(), (2, 2));
    assert_no_token_logged(&daemon);
}

/// A CA's PEM, and a certificate for localhost and 127.0.0.1 it signed with its key.
fn serving_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
