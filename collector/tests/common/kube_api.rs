//! A Kubernetes API server that knows one pod, for the pod-watch tests: list requests get the
//! pod, watch requests are held open without events. Plain HTTP, or HTTPS with a server
//! certificate for 127.0.0.1 signed by a CA of its own, as a cluster's API server has.
use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET /api/v1/pods?... HTTP/1.1`.
    pub line: String,
    /// The `Authorization` header's value.
    pub authorization: Option<String>,
}

pub struct FakeApiServer {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate (HTTPS only).
    pub ca_pem: Option<String>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApiServer {
    pub fn start(pod: serde_json::Value, https: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake API server");
        let port = listener.local_addr().unwrap().port();
        let (tls, ca_pem) = if https {
            let (config, ca_pem) = tls_config();
            (Some(config), Some(ca_pem))
        } else {
            (None, None)
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (seen, pod, tls) = (Arc::clone(&seen), pod.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        serve(rustls::StreamOwned::new(connection, stream), &pod, &seen);
                    }
                    None => serve(stream, &pod, &seen),
                });
            }
        });
        Self {
            port,
            ca_pem,
            requests,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A CA, and a server certificate for 127.0.0.1 it signed: the server's TLS configuration and
/// the CA's PEM for the client.
pub fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (Arc::new(config), ca.pem())
}

/// Serves one connection: requests one after the other (keep-alive) until a watch or the end.
fn serve(mut stream: impl Read + Write, pod: &serde_json::Value, seen: &Mutex<Vec<Request>>) {
    while let Some(head) = read_head(&mut stream) {
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default().to_owned();
        let authorization = lines.find_map(|header| {
            let (name, value) = header.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        });
        let watch = line.contains("watch=true");
        seen.lock().unwrap().push(Request {
            line,
            authorization,
        });
        if watch {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "1"},
            "items": [pod],
        })
        .to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
    }
}

/// A request's line and headers, up to the blank line; `None` at the end of the connection.
fn read_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The collector as a pod runs it: in a mount namespace of its own, the service account's CA and
/// `token` under /var/run/secrets (a tmpfs over /run) and `KUBERNETES_SERVICE_HOST`/`_PORT`
/// naming `port` on loopback; no kubeconfig. Needs root; the caller adds the collector's
/// arguments.
pub fn in_cluster_command(ca: &std::path::Path, token: &str, port: u16) -> std::process::Command {
    let script = format!(
        "mount -t tmpfs none /run && d=/var/run/secrets/kubernetes.io/serviceaccount && \
         mkdir -p $d && cp '{}' $d/ca.crt && printf '%s' \"$TOKEN\" > $d/token && \
         printf default > $d/namespace && unset TOKEN && exec \"$@\"",
        ca.display()
    );
    let mut command = std::process::Command::new(super::tool("unshare"));
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(super::daemon::BINARY)
        .env("TOKEN", token)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port.to_string());
    command
}
