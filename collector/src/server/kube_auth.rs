//! `--web.kubernetes-auth`: the metrics path for Kubernetes identities only, as kube-rbac-proxy
//! guards an exporter, without the sidecar. The request's `Authorization: Bearer` token is
//! checked with a TokenReview (authentication.k8s.io/v1, for `--web.kubernetes-auth.audiences`),
//! and the user it names must be allowed `get` on the request's path by a SubjectAccessReview
//! (authorization.k8s.io/v1, `nonResourceAttributes`: RBAC's `nonResourceURLs`).
//!
//! The answers are kube-rbac-proxy's: no token, an invalid one or a TokenReview that fails: 401
//! (with `WWW-Authenticate: Bearer`); a user not allowed: 403; a SubjectAccessReview that fails:
//! 500. One more: a request that needs a review while `--web.kubernetes-auth.max-reviews` are in
//! flight gets 503, so that a flood of tokens cannot queue unbounded work on the API server.
//!
//! Verdicts are cached by a SHA-256 of the token and the path (the token itself is neither kept
//! nor logged): allowed ones for `--web.kubernetes-auth.allow-ttl`, refused ones for
//! `--web.kubernetes-auth.deny-ttl`, failures not at all. Requests that miss the cache for the
//! same token and path wait for one review. Failures are logged once a minute, not per request.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use clap::Args;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{WebConfig, auth::plain_error};

/// How long one review may take, as the API server's own webhook authenticators wait (10 s).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// A kind of failure is logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The verb of every SubjectAccessReview: kube-rbac-proxy's for a GET, and the only method the
/// metrics path serves (HEAD is a GET without the body).
const VERB: &str = "get";

#[derive(Debug, Args)]
pub struct KubeAuthOptions {
    /// Require a Kubernetes bearer token on the metrics path, authenticated by a TokenReview and
    /// authorised by a SubjectAccessReview (`get` on the path, as kube-rbac-proxy). See
    /// docs/security.md.
    #[arg(long = "web.kubernetes-auth")]
    pub enabled: bool,

    /// kubeconfig for the API server that reviews tokens; without it, the pod's service account.
    #[arg(long = "web.kubernetes-auth.kubeconfig", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Audiences a token must be meant for (comma-separated); none: the API server's own.
    #[arg(
        long = "web.kubernetes-auth.audiences",
        value_name = "AUDIENCE",
        value_delimiter = ','
    )]
    pub audiences: Vec<String>,

    /// How long an allowed token is trusted without asking the API server again.
    #[arg(long = "web.kubernetes-auth.allow-ttl", value_name = "DURATION", default_value = "2m", value_parser = parse_ttl)]
    pub allow_ttl: Duration,

    /// How long a refused token (invalid, or not allowed) is refused without asking again.
    #[arg(long = "web.kubernetes-auth.deny-ttl", value_name = "DURATION", default_value = "30s", value_parser = parse_ttl)]
    pub deny_ttl: Duration,

    /// Most verdicts cached at once.
    #[arg(long = "web.kubernetes-auth.cache-size", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub cache_size: u32,

    /// Most reviews in flight at once; a request that needs one more gets 503.
    #[arg(long = "web.kubernetes-auth.max-reviews", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_reviews: u32,
}

/// The longest a verdict is cached: an RBAC change shows within a day at worst.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// A cache TTL flag: a duration of at most [`MAX_TTL`].
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl > MAX_TTL {
        return Err(format!("at most {}", humantime::format_duration(MAX_TTL)));
    }
    Ok(ttl)
}

/// What a request's token earns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// Authenticated, but not allowed `get` on the path: 403.
    Forbidden,
    /// No token, or one the API server does not vouch for: 401.
    Unauthenticated,
    /// The TokenReview failed (API server unreachable, slow or erring): 401, as kube-rbac-proxy,
    /// which cannot tell it from an invalid token either.
    TokenReviewFailed,
    /// The SubjectAccessReview failed: 500, as kube-rbac-proxy.
    AccessReviewFailed,
    /// `--web.kubernetes-auth.max-reviews` reviews already in flight: 503.
    Busy,
}

impl Verdict {
    fn response(self) -> Response {
        let status = match self {
            Self::Allowed => StatusCode::OK,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unauthenticated | Self::TokenReviewFailed => StatusCode::UNAUTHORIZED,
            Self::AccessReviewFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = plain_error(status);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A SHA-256 of the token and the path: what the cache knows of a token.
type Key = [u8; 32];

fn key(token: &str, path: &str) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // The length first: no token and path run together into another's.
    context.update(&(token.len() as u64).to_le_bytes());
    context.update(token.as_bytes());
    context.update(path.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// Verdicts until they expire, and the reviews under way.
struct Cache {
    capacity: usize,
    verdicts: HashMap<Key, (Verdict, Instant)>,
    /// At most `--web.kubernetes-auth.max-reviews`: an entry is made with a review's permit.
    pending: HashMap<Key, watch::Receiver<Option<Verdict>>>,
}

impl Cache {
    fn fresh(&self, key: &Key, now: Instant) -> Option<Verdict> {
        let (verdict, expires) = self.verdicts.get(key)?;
        (now < *expires).then_some(*verdict)
    }

    /// Keeps `verdict` until `expires`; when full, the expired verdicts go, else the refusal
    /// that expires first, else the allowed verdict that does: a flood of unknown tokens pushes
    /// out its own refusals before the scrapers' verdicts.
    fn insert(&mut self, key: Key, verdict: Verdict, expires: Instant) {
        if self.verdicts.len() >= self.capacity && !self.verdicts.contains_key(&key) {
            let now = Instant::now();
            self.verdicts.retain(|_, (_, expires)| *expires > now);
            if self.verdicts.len() >= self.capacity
                && let Some(first) = self
                    .verdicts
                    .iter()
                    .min_by_key(|(_, (verdict, expires))| (*verdict == Verdict::Allowed, *expires))
                    .map(|(key, _)| *key)
            {
                self.verdicts.remove(&first);
            }
        }
        self.verdicts.insert(key, (verdict, expires));
    }
}

/// A review's entry in `Cache::pending`, removed when the review ends however it ends (even
/// cancelled at shutdown), so that no token waits on a review that will never finish.
struct PendingEntry<'a> {
    auth: &'a KubeAuth,
    key: Key,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.auth.cache().pending.remove(&self.key);
    }
}

/// Logs one kind of failure at most once per `LOG_INTERVAL`, saying how many were not logged.
#[derive(Default)]
struct ThrottledLog {
    /// When a line was last written, and the failures since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl ThrottledLog {
    /// `Some(failures not logged before this one)` when this one may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, skipped) = &mut *state;
        if last.is_some_and(|last| last.elapsed() < LOG_INTERVAL) {
            *skipped += 1;
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(skipped))
    }
}

/// The failures worth an operator's attention, each logged on its own schedule.
#[derive(Default)]
struct FailureLogs {
    token_review: ThrottledLog,
    access_review: ThrottledLog,
    forbidden: ThrottledLog,
    busy: ThrottledLog,
}

/// The middleware's state: the API client, the cache and the bound on reviews.
pub struct KubeAuth {
    client: Client,
    audiences: Vec<String>,
    allow_ttl: Duration,
    deny_ttl: Duration,
    cache: Mutex<Cache>,
    reviews: Arc<Semaphore>,
    logs: FailureLogs,
}

impl KubeAuth {
    /// The guard `options` ask for, `None` when off. `web` must not have basic-auth users: both
    /// would need the `Authorization` header, and a request carries one. Must be called within
    /// the tokio runtime.
    pub async fn from_options(
        options: &KubeAuthOptions,
        web: Option<&WebConfig>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if !options.enabled {
            return Ok(None);
        }
        if web.is_some_and(|web| !web.current().users.is_empty()) {
            anyhow::bail!(
                "--web.kubernetes-auth cannot be used with basic_auth_users in --web.config.file: \
                 both need the request's Authorization header"
            );
        }
        if let Some(web) = web {
            web.forbid_basic_auth_users();
        }
        if !web.is_some_and(WebConfig::tls_enabled) {
            tracing::warn!(
                "--web.kubernetes-auth without TLS (--web.config.file tls_server_config): \
                 scrapers' tokens cross the network in clear text"
            );
        }
        let config = match &options.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            None => Config::incluster().context(
                "--web.kubernetes-auth: no in-cluster Kubernetes configuration (service \
                 account token and KUBERNETES_SERVICE_HOST); pass \
                 --web.kubernetes-auth.kubeconfig",
            )?,
        };
        let client = Client::try_from(config).context("creating the Kubernetes API client")?;
        tracing::info!(
            audiences = ?options.audiences,
            allow_ttl = ?options.allow_ttl,
            deny_ttl = ?options.deny_ttl,
            "the metrics path needs a Kubernetes bearer token (TokenReview, SubjectAccessReview)"
        );
        Ok(Some(Arc::new(Self {
            client,
            audiences: options.audiences.clone(),
            allow_ttl: options.allow_ttl,
            deny_ttl: options.deny_ttl,
            cache: Mutex::new(Cache {
                capacity: options.cache_size as usize,
                verdicts: HashMap::new(),
                pending: HashMap::new(),
            }),
            reviews: Arc::new(Semaphore::new(options.max_reviews as usize)),
            logs: FailureLogs::default(),
        })))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict on `token` for `path`: cached, awaited from a review under way, or reviewed.
    async fn verdict(self: &Arc<Self>, token: &str, path: &str) -> Verdict {
        let key = key(token, path);
        let mut under_way = {
            let mut cache = self.cache();
            if let Some(verdict) = cache.fresh(&key, Instant::now()) {
                return verdict;
            }
            match cache.pending.get(&key) {
                Some(under_way) => under_way.clone(),
                None => {
                    let Ok(permit) = Arc::clone(&self.reviews).try_acquire_owned() else {
                        if let Some(skipped) = self.logs.busy.admit() {
                            tracing::warn!(
                                skipped,
                                "--web.kubernetes-auth.max-reviews reviews in flight: answering 503"
                            );
                        }
                        return Verdict::Busy;
                    };
                    let (done, under_way) = watch::channel(None);
                    cache.pending.insert(key, under_way.clone());
                    // Its own task: a review ends and is cached even if the request that
                    // started it goes away, and the permit bounds how many run.
                    tokio::spawn(Arc::clone(self).review(
                        key,
                        token.to_owned(),
                        path.to_owned(),
                        permit,
                        done,
                    ));
                    under_way
                }
            }
        };
        match under_way.wait_for(Option::is_some).await {
            Ok(verdict) => verdict.unwrap_or(Verdict::TokenReviewFailed),
            // The review's task ended without a verdict (the runtime is shutting down).
            Err(_) => Verdict::TokenReviewFailed,
        }
    }

    /// Reviews `token` for `path`, caches the verdict and tells whoever waits.
    async fn review(
        self: Arc<Self>,
        key: Key,
        token: String,
        path: String,
        _permit: OwnedSemaphorePermit,
        done: watch::Sender<Option<Verdict>>,
    ) {
        let _pending = PendingEntry { auth: &self, key };
        let verdict = match self.authenticate(token).await {
            Ok(Some(user)) => match self.authorize(user, &path).await {
                Ok(true) => Verdict::Allowed,
                Ok(false) => Verdict::Forbidden,
                Err(e) => {
                    if let Some(skipped) = self.logs.access_review.admit() {
                        tracing::error!(
                            err = format!("{e:#}"),
                            skipped,
                            "SubjectAccessReview failed: answering 500"
                        );
                    }
                    Verdict::AccessReviewFailed
                }
            },
            Ok(None) => Verdict::Unauthenticated,
            Err(e) => {
                if let Some(skipped) = self.logs.token_review.admit() {
                    tracing::error!(
                        err = format!("{e:#}"),
                        skipped,
                        "TokenReview failed: answering 401"
                    );
                }
                Verdict::TokenReviewFailed
            }
        };
        let ttl = match verdict {
            Verdict::Allowed => Some(self.allow_ttl),
            Verdict::Forbidden | Verdict::Unauthenticated => Some(self.deny_ttl),
            _ => None,
        };
        if let Some(ttl) = ttl {
            self.cache().insert(key, verdict, Instant::now() + ttl);
        }
        // Whoever finds the entry still pending meanwhile gets this verdict from it as well.
        done.send_replace(Some(verdict));
    }

    /// The user the API server says `token` is, `None` if it says the token is not valid (for
    /// the audiences asked).
    async fn authenticate(&self, token: String) -> anyhow::Result<Option<UserInfo>> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        // A raw request, parsed here: kube's typed `create` logs the whole answer when it does
        // not parse, and a TokenReview's answer echoes the token.
        let request = kube::core::Request::new("/apis/authentication.k8s.io/v1/tokenreviews")
            .create(&PostParams::default(), serde_json::to_vec(&review)?)
            .context("building a TokenReview")?;
        let text = tokio::time::timeout(REVIEW_TIMEOUT, self.client.request_text(request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REVIEW_TIMEOUT:?}"))?
            .context("creating a TokenReview")?;
        // Where it failed only: serde's message may quote a value of the answer.
        let answer: TokenReview = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "the TokenReview's answer does not parse ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        // As the API server's webhook authenticator: an answer that names audiences must name
        // one of ours; one that names none vouches for the audiences asked.
        if let Some(answered) = status.audiences.filter(|a| !a.is_empty())
            && !self.audiences.is_empty()
            && !answered.iter().any(|a| self.audiences.contains(a))
        {
            return Ok(None);
        }
        Ok(Some(status.user.unwrap_or_default()))
    }

    /// Whether `user` may `get` `path`.
    async fn authorize(&self, user: UserInfo, path: &str) -> anyhow::Result<bool> {
        let name = user.username.clone().unwrap_or_default();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(VERB.to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {REVIEW_TIMEOUT:?}"))?
        .context("creating a SubjectAccessReview")?;
        let allowed = answer.status.is_some_and(|status| status.allowed);
        if !allowed && let Some(skipped) = self.logs.forbidden.admit() {
            tracing::warn!(
                user = name,
                path,
                verb = VERB,
                skipped,
                "not allowed by RBAC (nonResourceURLs): answering 403"
            );
        }
        Ok(allowed)
    }
}

/// The token of `Authorization: Bearer <token>`, as the API server's bearer-token authenticator
/// reads it: the first such header, the scheme in any case, the token up to the next space.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware on the metrics path: the request goes on only if its token is allowed.
pub async fn require_token(
    State(auth): State<Arc<KubeAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let verdict = match bearer_token(request.headers()) {
        Some(token) => auth.verdict(token, request.uri().path()).await,
        None => Verdict::Unauthenticated,
    };
    match verdict {
        Verdict::Allowed => next.run(request).await,
        refused => refused.response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn ttls_are_at_most_a_day() {
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("24h"), Ok(MAX_TTL));
        assert_eq!(parse_ttl("25h"), Err("at most 1day".to_owned()));
        assert!(parse_ttl("1000000000y").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn bearer_token_as_the_api_server_reads_it() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bEaReR abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer abc def")), Some("abc"));
        for refused in ["Bearer", "Bearer ", "Bearer  abc", "Basic abc", "abc", ""] {
            assert_eq!(bearer_token(&headers(refused)), None, "{refused:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn keys_differ_by_token_and_path() {
        assert_eq!(key("a", "/metrics"), key("a", "/metrics"));
        assert_ne!(key("a", "/metrics"), key("b", "/metrics"));
        assert_ne!(key("a", "/metrics"), key("a", "/"));
        assert_ne!(key("ab", "/c"), key("a", "b/c"));
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_refusals_then_the_first_to_expire() {
        let mut cache = Cache {
            capacity: 2,
            verdicts: HashMap::new(),
            pending: HashMap::new(),
        };
        let now = Instant::now();
        let (a, b, c, d) = (key("a", "/"), key("b", "/"), key("c", "/"), key("d", "/"));
        cache.insert(a, Verdict::Allowed, now + Duration::from_secs(60));
        cache.insert(b, Verdict::Forbidden, now + Duration::from_secs(10));
        cache.insert(c, Verdict::Allowed, now + Duration::from_secs(30));
        assert_eq!(cache.verdicts.len(), 2);
        assert_eq!(cache.fresh(&b, now), None, "b expires first: it went");
        assert_eq!(cache.fresh(&a, now), Some(Verdict::Allowed));
        assert_eq!(cache.fresh(&c, now), Some(Verdict::Allowed));
        assert_eq!(cache.fresh(&c, now + Duration::from_secs(31)), None);
        // An expired entry goes before a live one.
        cache.insert(c, Verdict::Allowed, now - Duration::from_secs(1));
        cache.insert(d, Verdict::Unauthenticated, now + Duration::from_secs(5));
        assert_eq!(cache.fresh(&a, now), Some(Verdict::Allowed));
        assert_eq!(cache.fresh(&d, now), Some(Verdict::Unauthenticated));
        // A refusal goes before an allowed verdict, even one that expires sooner.
        let (x, y, z) = (key("x", "/"), key("y", "/"), key("z", "/"));
        cache.verdicts.clear();
        cache.insert(x, Verdict::Allowed, now + Duration::from_secs(10));
        cache.insert(y, Verdict::Forbidden, now + Duration::from_secs(100));
        cache.insert(z, Verdict::Allowed, now + Duration::from_secs(50));
        assert_eq!(cache.fresh(&y, now), None, "the refusal went");
        assert_eq!(cache.fresh(&x, now), Some(Verdict::Allowed));
        assert_eq!(cache.fresh(&z, now), Some(Verdict::Allowed));
    }

    #[test]
    fn throttled_log_admits_one_a_minute_and_counts_the_rest() {
        let log = ThrottledLog::default();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        log.state.lock().unwrap().0 = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(log.admit(), Some(2));
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        kube_auth: KubeAuthOptions,
    }

    fn parse(args: &[&str]) -> Result<KubeAuthOptions, clap::Error> {
        use clap::Parser as _;
        let args = std::iter::once("collector").chain(args.iter().copied());
        Flags::try_parse_from(args).map(|flags| flags.kube_auth)
    }

    #[test]
    fn flags_and_defaults() {
        let options = parse(&[]).unwrap();
        assert!(!options.enabled);
        assert_eq!(options.kubeconfig, None);
        assert!(options.audiences.is_empty());
        assert_eq!(options.allow_ttl, Duration::from_secs(120));
        assert_eq!(options.deny_ttl, Duration::from_secs(30));
        assert_eq!((options.cache_size, options.max_reviews), (1024, 8));
        let options = parse(&[
            "--web.kubernetes-auth",
            "--web.kubernetes-auth.kubeconfig=/etc/kubeconfig",
            "--web.kubernetes-auth.audiences=a,b",
            "--web.kubernetes-auth.allow-ttl=5m",
            "--web.kubernetes-auth.deny-ttl=1s",
            "--web.kubernetes-auth.cache-size=10",
            "--web.kubernetes-auth.max-reviews=2",
        ])
        .unwrap();
        assert!(options.enabled);
        assert_eq!(options.kubeconfig, Some(PathBuf::from("/etc/kubeconfig")));
        assert_eq!(options.audiences, ["a", "b"]);
        assert_eq!(options.allow_ttl, Duration::from_secs(300));
        assert_eq!(options.deny_ttl, Duration::from_secs(1));
        assert_eq!((options.cache_size, options.max_reviews), (10, 2));
        for bad in [
            "--web.kubernetes-auth.cache-size=0",
            "--web.kubernetes-auth.max-reviews=0",
            "--web.kubernetes-auth.allow-ttl=soon",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_are_kube_rbac_proxys() {
        let status = |verdict: Verdict| verdict.response().status().as_u16();
        assert_eq!(status(Verdict::Unauthenticated), 401);
        assert_eq!(status(Verdict::TokenReviewFailed), 401);
        assert_eq!(status(Verdict::Forbidden), 403);
        assert_eq!(status(Verdict::AccessReviewFailed), 500);
        assert_eq!(status(Verdict::Busy), 503);
        let response = Verdict::Unauthenticated.response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(
            Verdict::Forbidden
                .response()
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .is_none()
        );
    }
}
