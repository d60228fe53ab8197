//! `--web.config.file`: node_exporter's web configuration file (Prometheus exporter-toolkit's
//! format): TLS (`tls_server_config`), HTTP/2 and response headers (`http_server_config`),
//! a request rate limit (`rate_limit`) and basic authentication (`basic_auth_users`).
//!
//! As exporter-toolkit, the YAML is strict (an unknown or repeated key is an error), relative file
//! names are relative to the file's directory, and the file and the certificates it names are
//! read again while serving, so certificates rotate without a restart. Unlike exporter-toolkit,
//! which reads them on every handshake and request, they are looked at at most once a second
//! (their inode, size and modification time), read again only when one changed, and a change that
//! does not load keeps the last good configuration (logged once).
//!
//! Everything invalid is an error naming the field, at start. What rustls cannot do (TLS 1.0 and
//! 1.1, CBC cipher suites, the P-521 curve) is such an error too, rather than a silent downgrade.
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::tls::{self, TlsFile};

/// How often, at most, the file and the certificates are looked at for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The file as written. Every field is optional; a null value is as good as none.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    rate_limit: Option<RateLimitFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpFile {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RateLimitFile {
    burst: Option<i64>,
    /// A Go duration ("1s", "1m30s") or a number of nanoseconds, as YAML decodes Go's
    /// `time.Duration`.
    interval: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Nanoseconds(i64),
    Text(String),
}

/// The response headers the file may set, and the values allowed where there is a fixed set:
/// exporter-toolkit's list, so that every Prometheus component answers alike.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// `rate_limit`: at most `burst` requests at once, then one every `interval`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub interval: Duration,
    pub burst: u64,
}

/// A user of `basic_auth_users`. No `Debug`: the hash is a secret.
pub struct User {
    /// SHA-256 of the name, compared in constant time.
    pub name_digest: [u8; 32],
    pub hash: String,
}

/// A loaded, valid configuration.
pub struct Loaded {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub users: Vec<User>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub http2: bool,
    pub rate_limit: Option<RateLimit>,
    /// The files read, to notice when one changes.
    files: Vec<PathBuf>,
}

/// What identifies a file's contents cheaply: a replaced file (a Kubernetes secret's symlink
/// swap, a rename) has another inode, a rewritten one another size or modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files.iter().map(|f| stamp(f)).collect()
}

/// The configuration being served, read again when its files change.
pub struct WebConfig {
    path: PathBuf,
    /// Fixed at start, as in exporter-toolkit: whether the listeners speak TLS, whether they offer
    /// HTTP/2, and the rate limit.
    tls_enabled: bool,
    http2: bool,
    rate_limit: Option<RateLimit>,
    /// Set under `--web.kubernetes-auth`: a reload that adds `basic_auth_users` is refused, as
    /// the start is, since both need the request's one `Authorization` header.
    users_forbidden: AtomicBool,
    state: Mutex<State>,
}

struct State {
    current: Arc<Loaded>,
    stamps: Vec<Option<Stamp>>,
    checked: Instant,
    /// The last reload error logged, so that a broken file is logged once, not every second.
    last_error: Option<String>,
}

impl WebConfig {
    /// Reads and checks the file: any error names the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let (loaded, stamps) =
            load(path, None).with_context(|| format!("--web.config.file={}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            tls_enabled: loaded.tls.is_some(),
            http2: loaded.http2,
            rate_limit: loaded.rate_limit,
            users_forbidden: AtomicBool::new(false),
            state: Mutex::new(State {
                current: Arc::new(loaded),
                stamps,
                checked: Instant::now(),
                last_error: None,
            }),
        })
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_enabled
    }

    /// HTTP/2 is offered (ALPN `h2`) over TLS only, as Go's server does.
    pub fn http2(&self) -> bool {
        self.tls_enabled && self.http2
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// From now on, a reload that has `basic_auth_users` is refused (the last good configuration
    /// stays), as `--web.kubernetes-auth` refuses them at start.
    pub fn forbid_basic_auth_users(&self) {
        self.users_forbidden.store(true, Ordering::Relaxed);
    }

    /// The configuration now: the last one loaded, or, if a second has passed since the files
    /// were last looked at and one of them changed, the new one (the last one if the new one does
    /// not load).
    pub fn current(&self) -> Arc<Loaded> {
        let (current, old_stamps, failed_before) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.checked.elapsed() < RELOAD_CHECK_INTERVAL {
                return Arc::clone(&state.current);
            }
            // Whoever looks, looks alone: the others keep the current configuration meanwhile.
            state.checked = Instant::now();
            let failed_before = state.last_error.is_some();
            (
                Arc::clone(&state.current),
                state.stamps.clone(),
                failed_before,
            )
        };
        let mut files = vec![self.path.clone()];
        files.extend(current.files.iter().cloned());
        // A failed reload is tried again every second until it loads (a certificate and its key
        // written one after the other fail in between).
        if stamps(&files) == old_stamps && !failed_before {
            return current;
        }
        let reloaded = load(&self.path, Some((self.tls_enabled, self.http2))).and_then(|loaded| {
            if self.users_forbidden.load(Ordering::Relaxed) && !loaded.0.users.is_empty() {
                bail!(
                    "basic_auth_users: not with --web.kubernetes-auth (both need the request's \
                     Authorization header)"
                );
            }
            Ok(loaded)
        });
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match reloaded {
            Ok((loaded, new_stamps)) => {
                if state.last_error.take().is_some() || new_stamps != state.stamps {
                    if loaded.http2 != self.http2 || loaded.rate_limit != self.rate_limit {
                        tracing::warn!(
                            file = %self.path.display(),
                            "http_server_config.http2 and rate_limit changes take effect on restart"
                        );
                    }
                    tracing::info!(file = %self.path.display(), "web configuration reloaded");
                }
                state.current = Arc::new(loaded);
                state.stamps = new_stamps;
            }
            Err(error) => {
                let message = format!("{error:#}");
                if state.last_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        file = %self.path.display(),
                        err = message,
                        "cannot reload the web configuration; serving with the last good one"
                    );
                    state.last_error = Some(message);
                }
            }
        }
        Arc::clone(&state.current)
    }
}

/// Reads the file and everything it names. `fixed`: when reloading, whether TLS was on at start
/// (it cannot be switched) and the HTTP/2 setting the listeners keep.
fn load(path: &Path, fixed: Option<(bool, bool)>) -> anyhow::Result<(Loaded, Vec<Option<Stamp>>)> {
    let config_stamp = stamp(path);
    let text = std::fs::read_to_string(path).context("cannot read the file")?;
    let mut file = parse(&text)?;
    let dir = path.parent().unwrap_or(Path::new("."));

    // exporter-toolkit checks the users first.
    let users = users(file.basic_auth_users.take().unwrap_or_default())?;
    let http = file.http_server_config.take().unwrap_or_default();
    let http2 = http.http2.unwrap_or(true);
    let headers = headers(http.headers.unwrap_or_default())?;
    let rate_limit = rate_limit(file.rate_limit.take().unwrap_or_default())?;

    let mut tls_file = file.tls_server_config.take().unwrap_or_default();
    tls_file.resolve_paths(dir);
    let mut files = Vec::new();
    let mut file_stamps = vec![config_stamp];
    let tls = if tls_file.is_enabled() {
        if fixed.is_some_and(|(tls_enabled, _)| !tls_enabled) {
            bail!("tls_server_config: TLS cannot be turned on without a restart");
        }
        for name in [
            &tls_file.cert_file,
            &tls_file.key_file,
            &tls_file.client_ca_file,
        ]
        .into_iter()
        .flatten()
        .filter(|name| !name.is_empty())
        {
            files.push(PathBuf::from(name));
            file_stamps.push(stamp(Path::new(name)));
        }
        let alpn_http2 = fixed.map_or(http2, |(_, http2)| http2);
        Some(tls::server_config(&tls_file, alpn_http2)?)
    } else {
        if fixed.is_some_and(|(tls_enabled, _)| tls_enabled) {
            bail!("tls_server_config: TLS cannot be turned off without a restart");
        }
        None
    };
    Ok((
        Loaded {
            tls,
            users,
            headers,
            http2,
            rate_limit,
            files,
        },
        file_stamps,
    ))
}

/// Strict YAML: an unknown or repeated key is an error, which names the field. No snippet of the
/// file is quoted, since the file holds secrets.
fn parse(text: &str) -> anyhow::Result<File> {
    let mut path = String::new();
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| match path.as_str() {
        "" | "." | "?" => anyhow!("{e}"),
        path => anyhow!("{}: {e}", path.replace(".?", "")),
    })
}

fn users(users: BTreeMap<String, String>) -> anyhow::Result<Vec<User>> {
    users
        .into_iter()
        .map(|(name, hash)| {
            check_bcrypt_hash(&hash).map_err(|e| anyhow!("basic_auth_users.{name}: {e}"))?;
            Ok(User {
                name_digest: sha256(name.as_bytes()),
                hash,
            })
        })
        .collect()
}

/// What Go's `bcrypt.Cost` checks: the format, the version, a cost from 4 to 31. The message
/// never quotes the hash.
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\"`"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4 to 31"));
    }
    Ok(())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn headers(headers: BTreeMap<String, String>) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(known, _)| *known == name) else {
            bail!(
                "http_server_config.headers: HTTP header {name:?} can not be configured (one of {})",
                EXTRA_HEADERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            bail!(
                "http_server_config.headers.{name}: invalid value for {name}. Expected one of: \
                 {allowed:?}, but got: {value:?}"
            );
        }
        // Unset if blank.
        if value.is_empty() {
            continue;
        }
        let value = HeaderValue::from_str(&value).map_err(|_| {
            anyhow!("http_server_config.headers.{name}: not a valid header value: {value:?}")
        })?;
        out.push((HeaderName::from_bytes(name.as_bytes())?, value));
    }
    Ok(out)
}

fn rate_limit(file: RateLimitFile) -> anyhow::Result<Option<RateLimit>> {
    let interval = match file.interval {
        None => Duration::ZERO,
        Some(DurationValue::Nanoseconds(n)) => {
            if n < 0 {
                bail!("rate_limit.interval: negative");
            }
            Duration::from_nanos(n as u64)
        }
        Some(DurationValue::Text(text)) => {
            parse_go_duration(&text).map_err(|e| anyhow!("rate_limit.interval: {e}: {text:?}"))?
        }
    };
    let burst = file.burst.unwrap_or(0);
    if burst < 0 {
        bail!("rate_limit.burst: negative");
    }
    // An interval of 0 turns the limiter off.
    Ok((!interval.is_zero()).then_some(RateLimit {
        interval,
        burst: burst as u64,
    }))
}

/// Go's `time.ParseDuration`, for the non-negative values a rate limit takes: "300ms", "1.5h",
/// "2h45m", "0".
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return Err("not a positive duration".into());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("missing unit")?;
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| "invalid duration")?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit".into()),
            _ => return Err(format!("unknown unit {unit:?}")),
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err("invalid duration".into());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// The users' cache of bcrypt results, as exporter-toolkit keeps it: at most 100 entries, a tenth
/// of them dropped at random when full. Keyed by a SHA-256 of user, hash and password, so no
/// password stays in memory.
#[derive(Default)]
pub struct AuthCache(Mutex<HashMap<[u8; 32], bool>>);

const AUTH_CACHE_SIZE: usize = 100;

impl AuthCache {
    pub fn key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(24 + user.len() + hash.len() + password.len());
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            data.extend_from_slice(&(part.len() as u64).to_le_bytes());
            data.extend_from_slice(part);
        }
        let key = sha256(&data);
        data.fill(0);
        key
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<bool> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    pub fn set(&self, key: [u8; 32], ok: bool) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= AUTH_CACHE_SIZE {
            let drop = (cache.len() / 10).max(1);
            let rng = ring::rand::SystemRandom::new();
            for _ in 0..=drop {
                let mut bytes = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&rng, &mut bytes);
                let n = u64::from_le_bytes(bytes) as usize % cache.len().max(1);
                if let Some(victim) = cache.keys().nth(n).copied() {
                    cache.remove(&victim);
                }
            }
        }
        cache.insert(key, ok);
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A directory for one test's files, removed when dropped.
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("web-config-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed server certificate for localhost and its key, as PEM.
    pub fn server_cert() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn load_text(dir: &Dir, text: &str) -> anyhow::Result<WebConfig> {
        let path = dir.write("web.yml", text);
        WebConfig::load(&path)
    }

    fn error(dir: &Dir, text: &str) -> String {
        match load_text(dir, text) {
            Ok(_) => panic!("loaded: {text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A valid bcrypt hash of "secret", cost 4 (fast).
    pub fn hash_of(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let dir = Dir::new("empty");
        for text in [
            "",
            "# nothing\n",
            "tls_server_config:\nhttp_server_config: ~\n",
        ] {
            let config = load_text(&dir, text).unwrap();
            assert!(!config.tls_enabled());
            assert!(!config.http2());
            let loaded = config.current();
            assert!(loaded.users.is_empty() && loaded.headers.is_empty());
            assert!(loaded.http2, "http2 defaults to true");
            assert_eq!(config.rate_limit(), None);
        }
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = WebConfig::load(Path::new("/nonexistent/web.yml"))
            .err()
            .unwrap();
        let err = format!("{err:#}");
        assert!(
            err.contains("--web.config.file=/nonexistent/web.yml"),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_yaml_name_the_field() {
        let dir = Dir::new("strict");
        let err = error(&dir, "tls_server_config:\n  cert_filse: server.crt\n");
        assert!(
            err.contains("tls_server_config.cert_filse: unknown field `cert_filse`"),
            "{err}"
        );
        let err = error(&dir, "bogus: 1\n");
        assert!(err.contains("bogus: unknown field `bogus`"), "{err}");
        let err = error(&dir, "http_server_config:\n  http2: maybe\n");
        assert!(
            err.contains("http_server_config.http2: invalid boolean"),
            "{err}"
        );
        let err = error(&dir, "tls_server_config:\n  cipher_suites: TLS_X\n");
        assert!(err.contains("tls_server_config.cipher_suites"), "{err}");
        let err = error(&dir, "basic_auth_users:\n  a: x\n  a: y\n");
        assert!(err.contains("duplicate mapping key: a"), "{err}");
        let err = error(&dir, "hWkNKCp3fvIx3jKnsaBI\nTuEjdwNS8A2vYdFbiKqr\n");
        assert!(err.contains("line 1"), "{err}");
        let err = error(&dir, "rate_limit:\n  rate: 1\n");
        assert!(err.contains("rate_limit.rate: unknown field"), "{err}");
    }

    #[test]
    fn errors_quote_no_secret() {
        let dir = Dir::new("secret");
        let err = error(
            &dir,
            "tls_server_config:\n  cert: \"x\"\n  key: [SECRETSECRET]\n  bogus: SECRETSECRET\n",
        );
        assert!(!err.contains("SECRETSECRET"), "{err}");
        assert!(err.contains("tls_server_config.key"), "{err}");
        let err = error(&dir, "basic_auth_users:\n  alice: SECRETSECRET\n");
        assert!(!err.contains("SECRETSECRET"), "{err}");
    }

    #[test]
    fn bcrypt_hashes_are_checked() {
        let dir = Dir::new("users");
        let err = error(&dir, "basic_auth_users:\n  john: doe\n");
        assert!(
            err.contains("basic_auth_users.john: not a bcrypt hash"),
            "{err}"
        );
        // A cost of 3: too low for Go's bcrypt too.
        let low = "$2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
        let err = error(&dir, &format!("basic_auth_users:\n  john: '{low}'\n"));
        assert!(
            err.contains("basic_auth_users.john: bcrypt cost 3"),
            "{err}"
        );
        let good = hash_of("secret");
        let config = load_text(&dir, &format!("basic_auth_users:\n  alice: '{good}'\n")).unwrap();
        let loaded = config.current();
        assert_eq!(loaded.users.len(), 1);
        assert_eq!(loaded.users[0].name_digest, sha256(b"alice"));
        // The exporter-toolkit example hashes, $2y$ with costs 10 to 18, load.
        load_text(
            &dir,
            "basic_auth_users:\n  alice: $2y$12$1DpfPeqF9HzHJt.EWswy1exHluGfbhnn3yXhR7Xes6m3WJqFg0Wby\n  \
             bob: $2y$18$4VeFDzXIoPHKnKTU3O3GH.N.vZu06CVqczYZ8WvfzrddFU6tGqjR.\n",
        )
        .unwrap();
    }

    #[test]
    fn headers_follow_exporter_toolkit_rules() {
        let dir = Dir::new("headers");
        let config = load_text(
            &dir,
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000; includeSubDomains\n    \
             X-Content-Type-Options: nosniff\n    X-XSS-Protection: 1\n    \
             Content-Security-Policy: \"default-src 'self'\"\n",
        )
        .unwrap();
        let loaded = config.current();
        let names: Vec<_> = loaded.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-security-policy",
                "strict-transport-security",
                "x-content-type-options",
                "x-frame-options",
                "x-xss-protection"
            ]
        );
        let err = error(
            &dir,
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        );
        assert!(
            err.contains(
                "http_server_config.headers.X-Frame-Options: invalid value for X-Frame-Options"
            ),
            "{err}"
        );
        let err = error(
            &dir,
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        );
        assert!(
            err.contains("invalid value for X-Content-Type-Options"),
            "{err}"
        );
        let err = error(&dir, "http_server_config:\n  headers:\n    Server: me\n");
        assert!(
            err.contains("HTTP header \"Server\" can not be configured"),
            "{err}"
        );
        // Names are matched as written, as in Go.
        let err = error(
            &dir,
            "http_server_config:\n  headers:\n    x-frame-options: deny\n",
        );
        assert!(err.contains("can not be configured"), "{err}");
        let blank = load_text(
            &dir,
            "http_server_config:\n  headers:\n    X-XSS-Protection: ''\n",
        )
        .unwrap();
        assert!(blank.current().headers.is_empty());
    }

    #[test]
    fn rate_limit_takes_go_durations() {
        let dir = Dir::new("rate");
        let config = load_text(&dir, "rate_limit:\n  interval: \"1s\"\n  burst: 0\n").unwrap();
        assert_eq!(
            config.rate_limit(),
            Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 0
            })
        );
        let config = load_text(&dir, "rate_limit:\n  interval: 0\n  burst: 0\n").unwrap();
        assert_eq!(config.rate_limit(), None);
        let config = load_text(&dir, "rate_limit:\n  interval: 1500000000\n  burst: 3\n").unwrap();
        assert_eq!(
            config.rate_limit().unwrap().interval,
            Duration::from_millis(1500)
        );
        let err = error(&dir, "rate_limit:\n  interval: soon\n");
        assert!(err.contains("rate_limit.interval"), "{err}");
        let err = error(&dir, "rate_limit:\n  interval: 1s\n  burst: -1\n");
        assert!(err.contains("rate_limit.burst"), "{err}");
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("2us"), Ok(Duration::from_micros(2)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5d").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn relative_files_are_relative_to_the_config_file() {
        let dir = Dir::new("relative");
        let (cert, key) = server_cert();
        dir.write("server.crt", &cert);
        dir.write("server.key", &key);
        let config = load_text(
            &dir,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
        )
        .unwrap();
        assert!(config.tls_enabled());
        assert!(config.http2());
        let loaded = config.current();
        assert_eq!(
            loaded.files,
            [dir.0.join("server.crt"), dir.0.join("server.key")]
        );
        let alpn = &loaded.tls.as_ref().unwrap().alpn_protocols;
        assert_eq!(alpn, &[b"h2".to_vec(), b"http/1.1".to_vec()]);
        let config = load_text(
            &dir,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             http_server_config:\n  http2: false\n",
        )
        .unwrap();
        assert!(!config.http2());
        let loaded = config.current();
        let alpn = &loaded.tls.as_ref().unwrap().alpn_protocols;
        assert_eq!(alpn, &[b"http/1.1".to_vec()]);
    }

    #[test]
    fn reload_keeps_the_last_good_configuration() {
        let dir = Dir::new("reload");
        let (cert, key) = server_cert();
        dir.write("server.crt", &cert);
        dir.write("server.key", &key);
        let good = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
        let config = load_text(&dir, good).unwrap();
        let first = config.current();
        // Within a second: not even looked at.
        dir.write("web.yml", "bogus: 1\n");
        assert!(Arc::ptr_eq(&first, &config.current()));
        // After a second: the broken file is refused, the last good configuration stays.
        config.state.lock().unwrap().checked -= RELOAD_CHECK_INTERVAL;
        assert!(Arc::ptr_eq(&first, &config.current()));
        assert!(config.state.lock().unwrap().last_error.is_some());
        // TLS cannot be switched off while running.
        dir.write("web.yml", "basic_auth_users: {}\n");
        config.state.lock().unwrap().checked -= RELOAD_CHECK_INTERVAL;
        assert!(Arc::ptr_eq(&first, &config.current()));
        let error = config.state.lock().unwrap().last_error.clone().unwrap();
        assert!(error.contains("cannot be turned off"), "{error}");
        // A new certificate is picked up.
        dir.write("web.yml", good);
        let (cert, key) = server_cert();
        dir.write("server.crt", &cert);
        dir.write("server.key", &key);
        config.state.lock().unwrap().checked -= RELOAD_CHECK_INTERVAL;
        let second = config.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(config.state.lock().unwrap().last_error.is_none());
        // Nothing changed: the same configuration.
        config.state.lock().unwrap().checked -= RELOAD_CHECK_INTERVAL;
        assert!(Arc::ptr_eq(&second, &config.current()));
    }

    #[test]
    fn reload_refuses_users_when_forbidden() {
        let dir = Dir::new("reload-users");
        let config = load_text(&dir, "{}\n").unwrap();
        config.forbid_basic_auth_users();
        let first = config.current();
        dir.write(
            "web.yml",
            format!("basic_auth_users:\n  alice: '{}'\n", hash_of("secret")),
        );
        config.state.lock().unwrap().checked -= RELOAD_CHECK_INTERVAL;
        assert!(Arc::ptr_eq(&first, &config.current()));
        assert!(config.current().users.is_empty());
        let error = config.state.lock().unwrap().last_error.clone().unwrap();
        assert!(error.contains("--web.kubernetes-auth"), "{error}");
    }

    #[test]
    fn auth_cache_is_bounded() {
        let cache = AuthCache::default();
        for i in 0..1000u32 {
            let key = AuthCache::key("user", "hash", &i.to_le_bytes());
            cache.set(key, true);
            assert_eq!(cache.get(&key), Some(true));
        }
        assert!(cache.entries() <= AUTH_CACHE_SIZE, "{}", cache.entries());
        assert_ne!(
            AuthCache::key("ab", "c", b""),
            AuthCache::key("a", "bc", b"")
        );
    }
}
