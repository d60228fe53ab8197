//! What `--web.config.file` asks of every request, in exporter-toolkit's order: the rate limit
//! (429), the configured response headers, then basic authentication (401 with
//! `WWW-Authenticate: Basic`).
//!
//! Passwords are checked as exporter-toolkit checks them: the user is looked up in constant time,
//! and an unknown user costs a bcrypt comparison against a fixed hash all the same, so timing
//! tells neither; results are cached (100 entries); one bcrypt comparison runs at a time. Nothing
//! about the credentials is logged.
use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::web_config::{AuthCache, Loaded, RateLimit, WebConfig, sha256};

/// exporter-toolkit's stand-in for an unknown user: a bcrypt hash of "fakepassword" (cost 10),
/// which no request can authenticate against.
const FAKE_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The middleware's state: the configuration and what requests share.
pub struct Guard {
    pub web: Arc<WebConfig>,
    limiter: Option<Limiter>,
    cache: AuthCache,
    /// One bcrypt comparison at a time: it is meant to be slow.
    bcrypt: Arc<tokio::sync::Mutex<()>>,
}

impl Guard {
    pub fn new(web: Arc<WebConfig>) -> Self {
        Self {
            limiter: web.rate_limit().map(Limiter::new),
            web,
            cache: AuthCache::default(),
            bcrypt: Arc::default(),
        }
    }

    /// Whether `user` with `password` is one of the configured users.
    async fn authenticate(&self, config: &Loaded, user: &str, password: &[u8]) -> bool {
        let (hash, known) = find_user(config, user);
        let key = AuthCache::key(user, &hash, password);
        if let Some(ok) = self.cache.get(&key) {
            return ok && known;
        }
        let lock = Arc::clone(&self.bcrypt).lock_owned().await;
        // Another request may have just checked the same credentials.
        if let Some(ok) = self.cache.get(&key) {
            return ok && known;
        }
        let password = password.to_vec();
        // The lock is held until the comparison ends, even if the request is dropped meanwhile.
        let matched = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = lock;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let ok = matched && known;
        self.cache.set(key, ok);
        ok
    }
}

/// The user's hash, or the fake one; every user is compared, in constant time.
fn find_user(config: &Loaded, user: &str) -> (String, bool) {
    let digest = sha256(user.as_bytes());
    let mut found = subtle::Choice::from(0);
    let mut index = 0u32;
    for (i, candidate) in config.users.iter().enumerate() {
        let equal = candidate.name_digest.ct_eq(&digest);
        index.conditional_assign(&(i as u32), equal);
        found |= equal;
    }
    if bool::from(found) {
        (config.users[index as usize].hash.clone(), true)
    } else {
        (FAKE_HASH.to_owned(), false)
    }
}

/// Go's `Request.BasicAuth`: `Authorization: Basic <base64(user:password)>`, the scheme in any
/// case.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let prefix = b"Basic ";
    if value.len() < prefix.len() || !value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&value[prefix.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
    Some((user, decoded[colon + 1..].to_vec()))
}

pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let config = guard.web.current();
    if let Some(limiter) = &guard.limiter
        && !limiter.allow()
    {
        return plain_error(StatusCode::TOO_MANY_REQUESTS);
    }
    let allowed = config.users.is_empty()
        || match basic_credentials(request.headers()) {
            Some((user, password)) => guard.authenticate(&config, &user, &password).await,
            None => false,
        };
    let mut response = if allowed {
        next.run(request).await
    } else {
        let mut response = plain_error(StatusCode::UNAUTHORIZED);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        response
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Go's `http.Error`: the status text and a newline, as plain text.
pub(super) fn plain_error(status: StatusCode) -> Response {
    let body = format!("{}\n", status.canonical_reason().unwrap_or(""));
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A token bucket as Go's `rate.NewLimiter(rate.Every(interval), burst)`: full at start, one
/// token back every `interval`, at most `burst` held.
struct Limiter {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((limit.burst as f64, Instant::now())),
        }
    }

    fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let refill = now.duration_since(*last).as_secs_f64() / self.limit.interval.as_secs_f64();
        *tokens = (*tokens + refill).min(self.limit.burst as f64);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, body::Body, routing::get};
    use tower_service::Service as _;

    use super::*;
    use crate::server::web_config::tests::{Dir, hash_of};

    fn app(dir: &Dir, yaml: &str) -> Router {
        let path = dir.write("web.yml", yaml);
        let web = Arc::new(WebConfig::load(&path).unwrap());
        Router::new().route("/", get(|| async { "hello" })).layer(
            axum::middleware::from_fn_with_state(Arc::new(Guard::new(web)), guard),
        )
    }

    async fn get_with(app: &mut Router, authorization: Option<&str>) -> Response {
        let mut request = Request::builder().uri("/");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app.call(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn basic_auth() {
        let dir = Dir::new("auth");
        let yaml = format!(
            "basic_auth_users:\n  alice: '{}'\n  bob: '{}'\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            hash_of("secret"),
            hash_of("other")
        );
        let mut app = app(&dir, &yaml);
        let ok = get_with(&mut app, Some(&basic("alice", "secret"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["x-frame-options"], "deny");
        assert_eq!(body(ok).await, "hello");
        // Cached: the same answer.
        let ok = get_with(&mut app, Some(&basic("alice", "secret"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        for authorization in [
            None,
            Some(basic("alice", "wrong")),
            Some(basic("alice", "other")),
            Some(basic("carol", "secret")),
            Some(basic("carol", "fakepassword")),
            Some(basic("", "")),
            Some("Basic !!!".to_owned()),
            Some("Bearer abc".to_owned()),
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice")
            )),
        ] {
            let response = get_with(&mut app, authorization.as_deref()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Basic");
            assert_eq!(response.headers()["x-frame-options"], "deny");
            assert_eq!(body(response).await, "Unauthorized\n");
        }
        // The scheme in any case, as Go.
        let ok = get_with(
            &mut app,
            Some(&basic("bob", "other").replace("Basic", "bAsIc")),
        )
        .await;
        assert_eq!(ok.status(), StatusCode::OK);
        // A password with a colon: split at the first.
        let yaml = format!("basic_auth_users:\n  u: '{}'\n", hash_of("a:b"));
        let mut app = self::app(&dir, &yaml);
        let ok = get_with(&mut app, Some(&basic("u", "a:b"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn no_users_no_auth() {
        let dir = Dir::new("noauth");
        let mut app = app(&dir, "");
        let response = get_with(&mut app, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("www-authenticate").is_none());
    }

    #[tokio::test]
    async fn rate_limit() {
        let dir = Dir::new("rate");
        let mut app = app(&dir, "rate_limit:\n  interval: 1s\n  burst: 0\n");
        let response = get_with(&mut app, None).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body(response).await, "Too Many Requests\n");
        let mut app = self::app(&dir, "rate_limit:\n  interval: 200ms\n  burst: 2\n");
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(get_with(&mut app, None).await.status().as_u16());
        }
        assert_eq!(codes, [200, 200, 429]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(get_with(&mut app, None).await.status(), StatusCode::OK);
    }

    #[test]
    fn fake_hash_is_a_valid_hash() {
        assert_eq!(bcrypt::verify("fakepassword", FAKE_HASH).ok(), Some(true));
    }
}
