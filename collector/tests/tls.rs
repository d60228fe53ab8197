//! `--web.config.file` and `--web.systemd-socket` on the real daemon: curl and the Debian
//! Prometheus server scrape it over TLS, mutual TLS and basic authentication; a wrong password is
//! 401; a client without a certificate fails the handshake; a rotated certificate is served to the
//! next connection without a restart; bad files stop the daemon at start naming the field; a
//! client that never finishes its handshake blocks nobody; systemd's socket is served. No root
//! needed: the daemon runs one /proc collector.
mod common;

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Daemon, prometheus::Prometheus, prometheus::TempDir};

/// Only /proc/loadavg: no eBPF, no root.
const COLLECTORS: [&str; 3] = [
    "--collector.disable-defaults",
    "--collector.loadavg",
    "--web.disable-exporter-metrics",
];

/// Certificates for one test: a server CA and a server certificate for localhost and 127.0.0.1,
/// a client CA with a client certificate, and a client certificate of another CA.
struct Pki {
    dir: TempDir,
    server_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let (server_ca, server_issuer) = ca("server CA");
        std::fs::write(dir.path().join("ca.pem"), server_ca).unwrap();
        let (client_ca, client_issuer) = ca("client CA");
        std::fs::write(dir.path().join("client-ca.pem"), client_ca).unwrap();
        let pki = Self { dir, server_issuer };
        pki.server_certificate("first");
        let (cert, key) = leaf(&client_issuer, "prometheus", &["prometheus"], true);
        pki.write("client.crt", &cert);
        pki.write("client.key", &key);
        let (_, other_issuer) = ca("other CA");
        let (cert, key) = leaf(&other_issuer, "intruder", &["prometheus"], true);
        pki.write("other.crt", &cert);
        pki.write("other.key", &key);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A new server certificate and key (common name `name`) in server.crt and server.key, each
    /// written whole at once (a rename, as Kubernetes and cert-manager do).
    fn server_certificate(&self, name: &str) -> String {
        let (cert, key) = leaf(
            &self.server_issuer,
            name,
            &["localhost", "127.0.0.1"],
            false,
        );
        for (file, contents) in [("server.key", &key), ("server.crt", &cert)] {
            let temporary = self.path(&format!("{file}.new"));
            std::fs::write(&temporary, contents).unwrap();
            std::fs::rename(&temporary, self.path(file)).unwrap();
        }
        cert
    }

    /// A web configuration file of its own (daemons sharing one would all reload what the last
    /// one wrote), and the daemon started with it.
    fn daemon(&self, contents: &str, extra: &[&str]) -> Daemon {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = self.write(&format!("web-{n}.yml"), contents);
        let flag = format!("--web.config.file={}", config.display());
        let mut args = vec![flag.as_str()];
        args.extend(COLLECTORS);
        args.extend(extra);
        Daemon::start(&args)
    }
}

fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, rcgen::Issuer::new(params, key))
}

fn leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    name: &str,
    sans: &[&str],
    client: bool,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A bcrypt hash as `htpasswd -nBC 4` makes it (the lowest cost: fast tests).
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// What curl got: its exit code, the status code (0 without an answer), the HTTP version, the
/// headers and the body.
struct Curl {
    exit: i32,
    status: u16,
    version: String,
    headers: String,
    body: String,
    stderr: String,
}

fn curl(url: &str, args: &[&str]) -> Curl {
    let dir = std::env::temp_dir();
    let headers = dir.join(format!(
        "tls-test-headers-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let output = Command::new(common::tool("curl"))
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("running curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = trailer.split_once(' ').unwrap_or(("0", ""));
    let header_text = std::fs::read_to_string(&headers).unwrap_or_default();
    let _ = std::fs::remove_file(&headers);
    Curl {
        exit: output.status.code().unwrap_or(-1),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        headers: header_text.to_ascii_lowercase(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn https(daemon: &Daemon, path: &str) -> String {
    format!("https://localhost:{}{path}", daemon.address.port())
}

/// `--resolve` so that `localhost` is the daemon's loopback address whatever /etc/hosts says.
fn resolve(daemon: &Daemon) -> String {
    format!("localhost:{}:127.0.0.1", daemon.address.port())
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn curl_over_tls_http1_and_http2() {
    let pki = Pki::new("tls-curl");
    let daemon = pki.daemon(
        &format!(
            "{TLS}http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n"
        ),
        &[],
    );
    let (resolve, ca) = (resolve(&daemon), pki.arg("ca.pem"));
    for (version_flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let answer = curl(
            &https(&daemon, "/metrics"),
            &["--resolve", &resolve, "--cacert", &ca, version_flag],
        );
        assert_eq!(
            answer.status,
            200,
            "{}; log:\n{}",
            answer.stderr,
            daemon.log()
        );
        assert_eq!(answer.version, version);
        assert!(answer.body.contains("\nnode_load1 "), "{}", answer.body);
        assert!(
            answer.headers.contains("x-frame-options: deny"),
            "{}",
            answer.headers
        );
        assert!(
            answer
                .headers
                .contains("strict-transport-security: max-age=31536000"),
            "{}",
            answer.headers
        );
    }
    // Gzip and the landing page work over TLS too.
    let answer = curl(
        &https(&daemon, "/metrics"),
        &["--resolve", &resolve, "--cacert", &ca, "--compressed"],
    );
    assert!(
        answer.headers.contains("content-encoding: gzip"),
        "{}",
        answer.headers
    );
    assert!(answer.body.contains("\nnode_load1 "));
    let answer = curl(
        &https(&daemon, "/"),
        &["--resolve", &resolve, "--cacert", &ca],
    );
    assert!(
        answer.body.contains("<a href=\"/metrics\">"),
        "{}",
        answer.body
    );
    // An HTTP/1.1 request without a Host header is still refused.
    let answer = curl(
        &https(&daemon, "/metrics"),
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--http1.1",
            "-H",
            "Host:",
        ],
    );
    assert_eq!(answer.status, 400);
    // Plain HTTP on the TLS port: Go's answer.
    let answer = curl(&format!("http://{}/metrics", daemon.address), &[]);
    assert_eq!(answer.status, 400);
    assert!(
        answer
            .body
            .contains("Client sent an HTTP request to an HTTPS server."),
        "{}",
        answer.body
    );
    // A client that does not trust the certificate stops.
    let answer = curl(&https(&daemon, "/metrics"), &["--resolve", &resolve]);
    assert_ne!(answer.exit, 0);
    assert!(daemon.log().contains("TLS is enabled"), "{}", daemon.log());

    // Shutdown is as quick with a client stuck in its handshake.
    let _silent = TcpStream::connect(daemon.address).unwrap();
    let mut half = TcpStream::connect(daemon.address).unwrap();
    std::io::Write::write_all(&mut half, &[0x16, 0x03, 0x01]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn http2_off_and_tls12_only() {
    let pki = Pki::new("tls-http1");
    let daemon = pki.daemon(
        &format!(
            "{TLS}  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n\
             http_server_config:\n  http2: false\n"
        ),
        &[],
    );
    let (resolve, ca) = (resolve(&daemon), pki.arg("ca.pem"));
    let answer = curl(
        &https(&daemon, "/metrics"),
        &["--resolve", &resolve, "--cacert", &ca, "--http2", "-v"],
    );
    assert_eq!(answer.status, 200, "{}", answer.stderr);
    assert_eq!(answer.version, "1.1");
    assert!(answer.stderr.contains("TLSv1.2"), "{}", answer.stderr);
    assert!(
        answer.stderr.contains("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{}",
        answer.stderr
    );
    let answer = curl(
        &https(&daemon, "/metrics"),
        &["--resolve", &resolve, "--cacert", &ca, "--tlsv1.3"],
    );
    assert_ne!(answer.exit, 0, "TLS 1.3 was accepted");
}

#[test]
fn basic_auth_wrong_password_is_401() {
    let pki = Pki::new("tls-auth");
    let config = format!(
        "{TLS}basic_auth_users:\n  alice: {}\n  bob: {}\n",
        hash("wonderland"),
        hash("builder")
    );
    let daemon = pki.daemon(&config, &[]);
    let (resolve, ca) = (resolve(&daemon), pki.arg("ca.pem"));
    let url = https(&daemon, "/metrics");
    let with = |args: &[&str]| {
        let mut all = vec!["--resolve", resolve.as_str(), "--cacert", ca.as_str()];
        all.extend_from_slice(args);
        curl(&url, &all)
    };
    let answer = with(&["-u", "alice:wonderland"]);
    assert_eq!(answer.status, 200, "{}", answer.stderr);
    assert!(answer.body.contains("\nnode_load1 "));
    let answer = with(&["-u", "bob:builder", "--http1.1"]);
    assert_eq!(answer.status, 200);
    for credentials in [
        &["-u", "alice:builder"][..],
        &["-u", "alice:"],
        &["-u", "carol:wonderland"],
        &["-u", "carol:fakepassword"],
        &[],
    ] {
        let answer = with(credentials);
        assert_eq!(answer.status, 401, "{credentials:?}");
        assert!(
            answer.headers.contains("www-authenticate: basic\r\n"),
            "{}",
            answer.headers
        );
        assert_eq!(answer.body, "Unauthorized\n");
    }
    // The landing page too: the whole server is behind the password, as in exporter-toolkit.
    let answer = with(&[]);
    assert_eq!(answer.status, 401);
    let answer = curl(
        &https(&daemon, "/"),
        &["--resolve", &resolve, "--cacert", &ca],
    );
    assert_eq!(answer.status, 401);
    // No password or hash in the log.
    let log = daemon.log();
    for secret in ["wonderland", "builder", "$2"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    // Basic authentication without TLS works too (exporter-toolkit allows it).
    let plain = pki.daemon(
        &format!("basic_auth_users:\n  alice: {}\n", hash("wonderland")),
        &[],
    );
    let url = format!("http://{}/metrics", plain.address);
    assert_eq!(curl(&url, &["-u", "alice:wonderland"]).status, 200);
    assert_eq!(curl(&url, &["-u", "alice:x"]).status, 401);
    assert!(plain.log().contains("TLS is disabled"));
}

#[test]
fn client_certificates() {
    let pki = Pki::new("tls-mtls");
    let daemon = pki.daemon(
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        ),
        &[],
    );
    let (resolve, ca) = (resolve(&daemon), pki.arg("ca.pem"));
    let url = https(&daemon, "/metrics");
    let (cert, key) = (pki.arg("client.crt"), pki.arg("client.key"));
    let answer = curl(
        &url,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    assert_eq!(
        answer.status,
        200,
        "{}; log:\n{}",
        answer.stderr,
        daemon.log()
    );
    // No certificate: the handshake fails, there is no HTTP answer.
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let answer = curl(&url, &["--resolve", &resolve, "--cacert", &ca, version]);
        assert_ne!(answer.exit, 0, "{version}");
        assert_eq!(answer.status, 0, "{version}");
    }
    // A certificate of another CA: the same.
    let (other, other_key) = (pki.arg("other.crt"), pki.arg("other.key"));
    let answer = curl(
        &url,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &other,
            "--key",
            &other_key,
        ],
    );
    assert_ne!(answer.exit, 0);
    assert_eq!(answer.status, 0);

    // client_allowed_sans: the client's SAN is, or is not, among them.
    let allowed = pki.daemon(
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n  \
             client_allowed_sans: [one, prometheus]\n"
        ),
        &[],
    );
    let url = https(&allowed, "/metrics");
    let resolve = self::resolve(&allowed);
    let answer = curl(
        &url,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.stderr);
    let refused = pki.daemon(
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n  \
             client_allowed_sans: [one, two]\n"
        ),
        &[],
    );
    let answer = curl(
        &https(&refused, "/metrics"),
        &[
            "--resolve",
            &self::resolve(&refused),
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    assert_ne!(answer.exit, 0);
    assert_eq!(answer.status, 0);
}

#[test]
fn prometheus_scrapes_over_tls_mtls_and_basic_auth() {
    let pki = Pki::new("tls-prometheus");
    let tls = pki.daemon(TLS, &[]);
    let mtls = pki.daemon(
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        ),
        &[],
    );
    let auth = pki.daemon(
        &format!("{TLS}basic_auth_users:\n  prometheus: {}\n", hash("s3cret")),
        &[],
    );
    let (ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("client.crt"),
        pki.arg("client.key"),
    );
    let job = |name: &str, target: SocketAddr, extra: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n{extra}\
             \n    static_configs:\n      - targets: ['{target}']\n"
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}{}{}{}",
        job("tls", tls.address, ""),
        job(
            "mtls",
            mtls.address,
            &format!("      cert_file: {cert}\n      key_file: {key}")
        ),
        job("mtls_without_cert", mtls.address, ""),
        job(
            "auth",
            auth.address,
            "    basic_auth:\n      username: prometheus\n      password: s3cret"
        ),
        job(
            "auth_wrong_password",
            auth.address,
            "    basic_auth:\n      username: prometheus\n      password: wrong"
        ),
    );
    let prometheus = Prometheus::start(&config);
    let expected = [
        ("tls", 1.0),
        ("mtls", 1.0),
        ("mtls_without_cert", 0.0),
        ("auth", 1.0),
        ("auth_wrong_password", 0.0),
    ];
    let seen = prometheus.up_by_job(&expected);
    let want: Vec<_> = expected.iter().map(|(job, v)| (*job, Some(*v))).collect();
    assert_eq!(seen, want, "up by job");
    // The series came through.
    let loads = prometheus.values("node_load1").unwrap_or_default();
    assert_eq!(
        loads.len(),
        3,
        "node_load1 of tls, mtls and auth: {loads:?}"
    );
}

/// The certificate the daemon presents to a new connection (DER).
fn served_certificate(address: SocketAddr, ca: &Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).unwrap();
    }
    connection.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn certificate_rotation_without_restart() {
    let pki = Pki::new("tls-rotation");
    let first = der(&std::fs::read_to_string(pki.path("server.crt")).unwrap());
    let daemon = pki.daemon(TLS, &[]);
    let pid = daemon.pid();
    let ca = pki.path("ca.pem");
    assert_eq!(served_certificate(daemon.address, &ca), first);

    // A new certificate: the next connection after at most a second gets it.
    let second = der(&pki.server_certificate("second"));
    let started = Instant::now();
    while served_certificate(daemon.address, &ca) != second {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new certificate is not served; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(daemon.pid(), pid);
    assert!(daemon.log().contains("web configuration reloaded"));
    let answer = curl(
        &https(&daemon, "/metrics"),
        &[
            "--resolve",
            &resolve(&daemon),
            "--cacert",
            &pki.arg("ca.pem"),
        ],
    );
    assert_eq!(answer.status, 200);

    // A broken key: the last good certificate stays, and the error is logged once.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..3 {
        assert_eq!(served_certificate(daemon.address, &ca), second);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let log = daemon.log();
    assert_eq!(
        log.matches("cannot reload the web configuration").count(),
        1,
        "{log}"
    );
    assert!(log.contains("tls_server_config.key_file"), "{log}");
    // Fixed again: a third certificate.
    let third = der(&pki.server_certificate("third"));
    let started = Instant::now();
    while served_certificate(daemon.address, &ca) != third {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the daemon with `web.yml` = `contents`: its exit status and log, if it exits within 20 s.
fn start_with(pki: &Pki, contents: &str) -> (std::process::ExitStatus, String) {
    let config = pki.write("web.yml", contents);
    let mut command = Command::new(common::daemon::BINARY);
    command
        .arg(format!("--web.config.file={}", config.display()))
        .args(COLLECTORS);
    common::daemon::run_to_exit(command)
}

#[test]
fn bad_configs_are_refused_at_start() {
    let pki = Pki::new("tls-bad");
    let cases = [
        (
            "tls_server_config:\n  cert_filse: server.crt\n".to_owned(),
            "tls_server_config.cert_filse: unknown field `cert_filse`",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".to_owned(),
            "tls_server_config.cert_file: cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n".to_owned(),
            "missing one of key or key_file",
        ),
        (
            "basic_auth_users:\n  alice: plaintext-password\n".to_owned(),
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            format!("{TLS}  min_version: TLS10\n"),
            "tls_server_config.min_version: TLS10 is not supported",
        ),
        (
            format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"),
            "tls_server_config.cipher_suites",
        ),
        (
            format!("{TLS}  curve_preferences: [CurveP521]\n"),
            "tls_server_config.curve_preferences",
        ),
        (
            format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
            "tls_server_config.client_ca_file",
        ),
        (
            format!("{TLS}  client_auth_type: Sometimes\n"),
            "tls_server_config.client_auth_type: invalid ClientAuth",
        ),
        (
            "http_server_config:\n  headers:\n    Server: x\n".to_owned(),
            "http_server_config.headers",
        ),
        ("not: [valid\n".to_owned(), "--web.config.file="),
    ];
    for (contents, needle) in &cases {
        let (status, log) = start_with(&pki, contents);
        assert!(!status.success(), "started with:\n{contents}\nlog:\n{log}");
        assert!(
            log.contains(needle),
            "{needle:?} not in the log for:\n{contents}\nlog:\n{log}"
        );
        assert!(!log.contains("msg=listening"), "{log}");
    }
    // A secret that fails to parse is not quoted.
    let (status, log) = start_with(
        &pki,
        "tls_server_config:\n  cert_file: server.crt\n  key: \"SECRETKEYMATERIAL\"\n",
    );
    assert!(!status.success());
    assert!(log.contains("tls_server_config.key"), "{log}");
    assert!(!log.contains("SECRETKEYMATERIAL"), "{log}");
}

#[test]
fn a_silent_tls_client_blocks_nobody() {
    let pki = Pki::new("tls-silent");
    let daemon = pki.daemon(TLS, &["--web.max-connections=3"]);
    let (resolve, ca) = (resolve(&daemon), pki.arg("ca.pem"));
    // Connections that never send a byte, and one that stops in the middle of its ClientHello,
    // more than the connection limit.
    let mut silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(daemon.address).unwrap())
        .collect();
    let mut half = TcpStream::connect(daemon.address).unwrap();
    std::io::Write::write_all(&mut half, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    silent.push(half);
    for _ in 0..3 {
        let started = Instant::now();
        let answer = curl(
            &https(&daemon, "/metrics"),
            &["--resolve", &resolve, "--cacert", &ca],
        );
        assert_eq!(
            answer.status,
            200,
            "{}; log:\n{}",
            answer.stderr,
            daemon.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Those still open are closed at the handshake timeout (10 s).
    std::thread::sleep(Duration::from_secs(11));
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 16];
        let read = stream.read(&mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a silent connection is still open: {read:?}"
        );
    }
}

/// Starts the daemon as systemd would with socket activation: `listener` as descriptor 3,
/// LISTEN_FDS=1 and LISTEN_PID its own pid (a shell sets it, then execs the daemon).
fn socket_activated(listener: &std::net::TcpListener, args: &[String]) -> Daemon {
    use std::os::unix::process::CommandExt as _;
    let fd = listener.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ exec \"$0\" \"$@\"",
            common::daemon::BINARY,
        ])
        .arg("--web.systemd-socket")
        .args(args)
        .args(COLLECTORS)
        .env("LISTEN_FDS", "1");
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Daemon::spawn(command)
}

#[test]
fn systemd_socket_activation() {
    let pki = Pki::new("tls-systemd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let config = pki.write("web.yml", TLS);
    let daemon = socket_activated(
        &listener,
        &[format!("--web.config.file={}", config.display())],
    );
    // The passed socket is served (the listen address the helper adds is not).
    assert_eq!(daemon.address, address, "log:\n{}", daemon.log());
    assert!(daemon.log().contains("systemd activated listeners"));
    let answer = curl(
        &https(&daemon, "/metrics"),
        &[
            "--resolve",
            &resolve(&daemon),
            "--cacert",
            &pki.arg("ca.pem"),
        ],
    );
    assert_eq!(
        answer.status,
        200,
        "{}; log:\n{}",
        answer.stderr,
        daemon.log()
    );
    drop(daemon);

    // Plain HTTP on a passed socket.
    let daemon = socket_activated(&listener, &[]);
    assert_eq!(daemon.address, address);
    assert!(daemon.get("/metrics").contains("\nnode_load1 "));
    drop(daemon);

    // Without the variables: refused at start.
    let output = Command::new(common::daemon::BINARY)
        .arg("--web.systemd-socket")
        .args(COLLECTORS)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("no socket activation file descriptors found"),
        "{log}"
    );
}
