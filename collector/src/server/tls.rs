//! `tls_server_config` to a rustls server configuration, on the *ring* provider (the one kube's
//! client uses). Names and semantics are Go's `crypto/tls`, as exporter-toolkit uses them: what
//! rustls cannot do is an error naming the field.
use std::{net::IpAddr, path::Path, sync::Arc};

use anyhow::{Context as _, anyhow, bail};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject as _},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use serde::Deserialize;

/// `tls_server_config`. No `Debug`: `key` is a secret.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub client_allowed_sans: Option<Vec<String>>,
}

impl TlsFile {
    /// exporter-toolkit's `IsEnabled`: any certificate, key, CA or client auth policy asks for TLS.
    pub(super) fn is_enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.cert_file,
            &self.key_file,
            &self.client_ca_file,
            &self.client_auth_type,
        ]
        .iter()
        .any(|field| field.as_deref().is_some_and(|v| !v.is_empty()))
    }

    /// exporter-toolkit's `SetDirectory`: file names relative to the config file's directory.
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for path in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ] {
            if let Some(p) = path
                && !p.is_empty()
                && !Path::new(p.as_str()).is_absolute()
            {
                *p = dir.join(p.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

/// Go's client authentication policies (`tls.ClientAuthType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            // "RequireClientCert": exporter-toolkit keeps it for backwards compatibility.
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            other => bail!(
                "tls_server_config.client_auth_type: invalid ClientAuth: {other} (one of \
                 NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, \
                 RequireAndVerifyClientCert)"
            ),
        })
    }
}

/// Go's `tls.CipherSuites()` names (the only ones exporter-toolkit accepts), and the rustls suite
/// where there is one. TLS 1.3 suites are accepted and, as in Go, not configurable: all three are
/// always on for TLS 1.3.
const CIPHER_SUITES: &[(&str, Option<SupportedCipherSuite>)] = &[
    ("TLS_AES_128_GCM_SHA256", None),
    ("TLS_AES_256_GCM_SHA384", None),
    ("TLS_CHACHA20_POLY1305_SHA256", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Some(ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Some(ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
];

const TLS13_SUITES: &[SupportedCipherSuite] = &[
    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The suites Go's HTTP/2 server insists on when the list is restricted (RFC 7540 §9.2.2).
const HTTP2_REQUIRED: [&str; 2] = [
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
];

/// exporter-toolkit's curve names.
const CURVES: &[(&str, Option<&'static dyn SupportedKxGroup>)] = &[
    ("CurveP256", Some(ring::kx_group::SECP256R1)),
    ("CurveP384", Some(ring::kx_group::SECP384R1)),
    ("CurveP521", None),
    ("X25519", Some(ring::kx_group::X25519)),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

fn version(field: &str, value: Option<&str>, default: Version) -> anyhow::Result<Version> {
    let Some(value) = value else {
        return Ok(default);
    };
    let version = match value {
        "TLS10" => Version::Tls10,
        "TLS11" => Version::Tls11,
        "TLS12" => Version::Tls12,
        "TLS13" => Version::Tls13,
        other => bail!(
            "tls_server_config.{field}: unknown TLS version: {other} (TLS10, TLS11, TLS12, TLS13)"
        ),
    };
    if version < Version::Tls12 {
        bail!(
            "tls_server_config.{field}: {value} is not supported: TLS 1.0 and 1.1 are not \
             implemented (rustls); use TLS12 or TLS13"
        );
    }
    Ok(version)
}

/// Builds the server configuration: reads the certificate, key and client CAs (a file wins over
/// the inline form, as in exporter-toolkit), and offers HTTP/2 through ALPN when `http2`.
pub(super) fn server_config(
    file: &TlsFile,
    http2: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let non_empty = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    let (cert_file, cert) = (non_empty(&file.cert_file), non_empty(&file.cert));
    let (key_file, key) = (non_empty(&file.key_file), non_empty(&file.key));
    if cert_file.is_none() && cert.is_none() {
        bail!("tls_server_config: missing one of cert or cert_file");
    }
    if key_file.is_none() && key.is_none() {
        bail!("tls_server_config: missing one of key or key_file");
    }

    // The certificate chain and key.
    let (cert_pem, cert_field) = match &cert_file {
        Some(path) => (read("cert_file", path)?, format!("cert_file ({path})")),
        None => (cert.unwrap_or_default().into_bytes(), "cert".to_owned()),
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("tls_server_config.{cert_field}: {e}"))?;
    if chain.is_empty() {
        bail!("tls_server_config.{cert_field}: no PEM certificate in it");
    }
    let (key_pem, key_field) = match &key_file {
        Some(path) => (read("key_file", path)?, format!("key_file ({path})")),
        None => (key.unwrap_or_default().into_bytes(), "key".to_owned()),
    };
    // The error's text never quotes the key.
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        anyhow!("tls_server_config.{key_field}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")
    })?;

    // Versions, suites, curves.
    let min = version("min_version", file.min_version.as_deref(), Version::Tls12)?;
    let max = version("max_version", file.max_version.as_deref(), Version::Tls13)?;
    if min > max {
        bail!("tls_server_config.min_version: above max_version");
    }
    let versions: Vec<&'static SupportedProtocolVersion> = [
        (Version::Tls12, &rustls::version::TLS12),
        (Version::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, v)| v)
    .collect();

    let mut provider = ring::default_provider();
    if let Some(names) = &file.cipher_suites
        && !names.is_empty()
    {
        let mut suites = TLS13_SUITES.to_vec();
        for name in names {
            let Some((_, suite)) = CIPHER_SUITES.iter().find(|(known, _)| known == name) else {
                bail!("tls_server_config.cipher_suites: unknown cipher: {name}");
            };
            match suite {
                Some(suite) => suites.push(*suite),
                None if name.starts_with("TLS_AES") || name.starts_with("TLS_CHACHA") => {}
                None => bail!(
                    "tls_server_config.cipher_suites: {name} is not supported (rustls has no CBC \
                     suites); supported: {}",
                    CIPHER_SUITES
                        .iter()
                        .filter(|(_, s)| s.is_some())
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        // Go's HTTP/2 server refuses a restricted list without the suite HTTP/2 requires.
        if http2 && min < Version::Tls13 && !names.iter().any(|n| HTTP2_REQUIRED.contains(&&**n)) {
            bail!(
                "tls_server_config.cipher_suites: is missing an HTTP/2-required AES_128_GCM_SHA256 \
                 cipher (need at least one of {}), or set http_server_config.http2: false",
                HTTP2_REQUIRED.join(" or ")
            );
        }
        provider.cipher_suites = suites;
    }
    if let Some(names) = &file.curve_preferences
        && !names.is_empty()
    {
        let mut groups = Vec::new();
        for name in names {
            let Some((_, group)) = CURVES.iter().find(|(known, _)| known == name) else {
                bail!("tls_server_config.curve_preferences: unknown curve: {name}");
            };
            let Some(group) = group else {
                bail!(
                    "tls_server_config.curve_preferences: {name} is not supported (ring has no \
                     P-521); supported: X25519, CurveP256, CurveP384"
                );
            };
            groups.push(*group);
        }
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);

    // Client certificates.
    let client_auth = ClientAuth::parse(file.client_auth_type.as_deref().unwrap_or(""))?;
    let roots = client_cas(file)?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match (client_auth, roots) {
        (ClientAuth::NoClientCert, Some(_)) => bail!(
            "tls_server_config.client_auth_type: client CA's have been configured without a \
             Client Auth Policy"
        ),
        (ClientAuth::NoClientCert, None) => None,
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, roots) => {
            Some(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                hints: roots.map(|r| r.subjects()).unwrap_or_default(),
                algorithms: provider.signature_verification_algorithms,
            }))
        }
        (_, None) => bail!(
            "tls_server_config.client_ca_file: client_auth_type {client_auth:?} needs client_ca_file \
             or client_ca (the system's roots are not used)"
        ),
        (_, Some(roots)) => {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .context("tls_server_config.client_ca_file")?,
            )
        }
    };
    let verifier = match (&file.client_allowed_sans, verifier) {
        (Some(allowed), Some(inner)) => Some(Arc::new(AllowedSans {
            inner,
            allowed: allowed.clone(),
        }) as Arc<dyn ClientCertVerifier>),
        (_, verifier) => verifier,
    };

    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            anyhow!(
                "tls_server_config.cipher_suites: no suite for the versions min_version to \
                 max_version allow: {e}"
            )
        })?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            Error::InconsistentKeys(_) => anyhow!(
                "tls_server_config.{key_field}: the private key does not match the certificate \
                 of {cert_field}"
            ),
            e => anyhow!("tls_server_config.{cert_field}: {e}"),
        })?;
    config.ignore_client_order = file.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

fn read(field: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("tls_server_config.{field}: cannot read {path}: {e}"))
}

/// The client CAs of `client_ca_file` (or `client_ca`), `None` when neither is given.
fn client_cas(file: &TlsFile) -> anyhow::Result<Option<RootCertStore>> {
    let (pem, field) = match (file.client_ca_file.as_deref(), file.client_ca.as_deref()) {
        (Some(path), _) if !path.is_empty() => (
            read("client_ca_file", path)?,
            format!("client_ca_file ({path})"),
        ),
        (_, Some(text)) if !text.is_empty() => (text.as_bytes().to_vec(), "client_ca".to_owned()),
        _ => return Ok(None),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow!("tls_server_config.{field}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| anyhow!("tls_server_config.{field}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        bail!("tls_server_config.{field}: no PEM certificate in it");
    }
    Ok(Some(roots))
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (required by the
/// second) and not verified, but the client must prove it holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the policy's own checks, the client certificate must have one of
/// these DNS, e-mail, IP or URI subject alternative names, exactly. A client without a
/// certificate is refused (exporter-toolkit's check fails on it too).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if names.iter().any(|name| self.allowed.contains(name)) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NoAllowedSan)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct NoAllowedSan;

impl std::fmt::Display for NoAllowedSan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not find allowed SANs in client cert")
    }
}

impl std::error::Error for NoAllowedSan {}

/// The DNS, e-mail, IP and URI subject alternative names of a DER certificate, as Go's x509
/// package prints them; `None` if it does not parse.
pub(super) fn subject_alt_names(cert: &[u8]) -> Option<Vec<String>> {
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const SAN: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
    let (tag, certificate, _) = der(cert)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, mut tbs, _) = der(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    let mut names = Vec::new();
    while !tbs.is_empty() {
        let (tag, value, rest) = der(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (tag, mut extensions, _) = der(value)?;
        (tag == SEQUENCE).then_some(())?;
        while !extensions.is_empty() {
            let (tag, extension, rest) = der(extensions)?;
            extensions = rest;
            (tag == SEQUENCE).then_some(())?;
            let (tag, oid, mut rest) = der(extension)?;
            if tag != OID || oid != SAN {
                continue;
            }
            let (mut tag, mut value, after) = der(rest)?;
            if tag == BOOLEAN {
                rest = after;
                (tag, value, _) = der(rest)?;
            }
            (tag == OCTET_STRING).then_some(())?;
            let (tag, mut general_names, _) = der(value)?;
            (tag == SEQUENCE).then_some(())?;
            while !general_names.is_empty() {
                let (tag, value, rest) = der(general_names)?;
                general_names = rest;
                match tag {
                    // rfc822Name, dNSName, uniformResourceIdentifier: IA5String.
                    0x81 | 0x82 | 0x86 => names.push(String::from_utf8(value.to_vec()).ok()?),
                    0x87 => names.push(match value.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(value).ok()?).to_string(),
                        16 => {
                            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?);
                            match v6.to_ipv4_mapped() {
                                Some(v4) => v4.to_string(),
                                None => v6.to_string(),
                            }
                        }
                        _ => return None,
                    }),
                    _ => {}
                }
            }
        }
    }
    Some(names)
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers do not occur in what is read here
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (value, rest) = rest.split_at(length);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::web_config::tests::{Dir, server_cert};

    fn tls_file(yaml_fields: &[(&str, &str)]) -> TlsFile {
        let mut file = TlsFile::default();
        for (field, value) in yaml_fields {
            let value = Some((*value).to_owned());
            match *field {
                "cert" => file.cert = value,
                "key" => file.key = value,
                "cert_file" => file.cert_file = value,
                "key_file" => file.key_file = value,
                "client_ca" => file.client_ca = value,
                "client_ca_file" => file.client_ca_file = value,
                "client_auth_type" => file.client_auth_type = value,
                "min_version" => file.min_version = value,
                "max_version" => file.max_version = value,
                other => panic!("{other}"),
            }
        }
        file
    }

    fn error(file: &TlsFile) -> String {
        match server_config(file, true) {
            Ok(_) => panic!("built"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn certificate_and_key_inline_or_in_files() {
        let dir = Dir::new("tls-files");
        let (cert, key) = server_cert();
        let cert_path = dir.write("server.crt", &cert);
        let key_path = dir.write("server.key", &key);
        let (cert_path, key_path) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
        server_config(&tls_file(&[("cert", &cert), ("key", &key)]), true).unwrap();
        server_config(&tls_file(&[("cert_file", cert_path), ("key", &key)]), true).unwrap();
        server_config(
            &tls_file(&[("cert_file", cert_path), ("key_file", key_path)]),
            true,
        )
        .unwrap();

        let err = error(&tls_file(&[("key", &key)]));
        assert!(err.contains("missing one of cert or cert_file"), "{err}");
        let err = error(&tls_file(&[("cert", &cert)]));
        assert!(err.contains("missing one of key or key_file"), "{err}");
        let err = error(&tls_file(&[
            ("cert_file", "/nonexistent.crt"),
            ("key", &key),
        ]));
        assert!(
            err.contains("tls_server_config.cert_file: cannot read /nonexistent.crt"),
            "{err}"
        );
        let err = error(&tls_file(&[
            ("cert", &cert),
            ("key_file", "/nonexistent.key"),
        ]));
        assert!(
            err.contains("tls_server_config.key_file: cannot read"),
            "{err}"
        );
        let err = error(&tls_file(&[("cert", "junk"), ("key", &key)]));
        assert!(
            err.contains("tls_server_config.cert: no PEM certificate"),
            "{err}"
        );
        let err = error(&tls_file(&[("cert", &cert), ("key", "junk SECRET")]));
        assert!(
            err.contains("tls_server_config.key: no PEM private key"),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
        let (_, other_key) = server_cert();
        let err = error(&tls_file(&[("cert", &cert), ("key", &other_key)]));
        assert!(err.contains("does not match the certificate"), "{err}");
    }

    #[test]
    fn versions() {
        let (cert, key) = server_cert();
        let with = |extra: &[(&str, &str)]| {
            let mut fields = vec![("cert", cert.as_str()), ("key", key.as_str())];
            fields.extend_from_slice(extra);
            tls_file(&fields)
        };
        let config = server_config(&with(&[]), true).unwrap();
        assert!(
            config.ignore_client_order,
            "prefer_server_cipher_suites defaults to true"
        );
        server_config(&with(&[("min_version", "TLS13")]), true).unwrap();
        server_config(&with(&[("max_version", "TLS12")]), true).unwrap();
        for (field, value, needle) in [
            (
                "min_version",
                "TLS10",
                "tls_server_config.min_version: TLS10 is not supported",
            ),
            (
                "min_version",
                "TLS11",
                "tls_server_config.min_version: TLS11 is not supported",
            ),
            (
                "max_version",
                "TLS11",
                "tls_server_config.max_version: TLS11 is not supported",
            ),
            ("min_version", "TLS14", "unknown TLS version: TLS14"),
            ("min_version", "1.2", "unknown TLS version: 1.2"),
        ] {
            let err = error(&with(&[(field, value)]));
            assert!(err.contains(needle), "{err}");
        }
        let err = error(&with(&[("min_version", "TLS13"), ("max_version", "TLS12")]));
        assert!(err.contains("min_version: above max_version"), "{err}");
    }

    #[test]
    fn cipher_suites_and_curves() {
        let (cert, key) = server_cert();
        let base = || tls_file(&[("cert", &cert), ("key", &key)]);
        let mut file = base();
        file.cipher_suites = Some(vec![
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
            "TLS_AES_128_GCM_SHA256".into(),
        ]);
        let config = server_config(&file, true).unwrap();
        let names: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        file.cipher_suites = Some(vec!["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into()]);
        let err = error(&file);
        assert!(
            err.contains("tls_server_config.cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported"),
            "{err}"
        );
        file.cipher_suites = Some(vec!["TLS_RSA_WITH_RC4_128_SHA".into()]);
        let err = error(&file);
        assert!(
            err.contains("unknown cipher: TLS_RSA_WITH_RC4_128_SHA"),
            "{err}"
        );
        // HTTP/2 needs an AES-128-GCM suite, as in Go; without HTTP/2 any list goes.
        file.cipher_suites = Some(vec!["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()]);
        let err = error(&file);
        assert!(err.contains("HTTP/2-required"), "{err}");
        server_config(&file, false).unwrap();
        // Only TLS 1.3 suites with TLS 1.2 only: nothing to offer.
        file.cipher_suites = Some(vec!["TLS_AES_128_GCM_SHA256".into()]);
        file.max_version = Some("TLS12".into());
        let err = format!("{:#}", server_config(&file, false).err().unwrap());
        assert!(err.contains("tls_server_config.cipher_suites"), "{err}");

        let mut file = base();
        file.curve_preferences = Some(vec!["X25519".into(), "CurveP384".into()]);
        let config = server_config(&file, true).unwrap();
        let groups: Vec<_> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp384r1"]);
        file.curve_preferences = Some(vec!["CurveP521".into()]);
        let err = error(&file);
        assert!(
            err.contains("tls_server_config.curve_preferences: CurveP521 is not supported"),
            "{err}"
        );
        file.curve_preferences = Some(vec!["P256".into()]);
        let err = error(&file);
        assert!(err.contains("unknown curve: P256"), "{err}");
    }

    /// A test CA, and client certificates it signs.
    pub(crate) struct Ca {
        pub pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Ca {
        pub fn new() -> Self {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test client CA");
            let pem = params.self_signed(&key).unwrap().pem();
            Self {
                pem,
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// A client certificate (PEM) and its key, with these subject alternative names.
        pub fn client(&self, sans: &[&str]) -> (String, String) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    /// Trusts any server: these tests are about the server's side.
    #[derive(Debug)]
    struct AnyServer(WebPkiSupportedAlgorithms);

    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// A client presenting `cert` (PEM certificate and key), if any.
    fn client(cert: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms)));
        Arc::new(match cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        })
    }

    /// A handshake in memory: the number of certificates the server got from the client, or the
    /// first error of either side.
    fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<usize, Error> {
        let mut server = rustls::ServerConnection::new(Arc::clone(server)).unwrap();
        let mut client =
            rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        for _ in 0..8 {
            let mut buffer = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buffer).unwrap();
            }
            let mut reader = &buffer[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).unwrap();
            }
            server.process_new_packets()?;
            let mut buffer = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buffer).unwrap();
            }
            let mut reader = &buffer[..];
            while !reader.is_empty() {
                client.read_tls(&mut reader).unwrap();
            }
            client.process_new_packets()?;
        }
        assert!(!server.is_handshaking() && !client.is_handshaking());
        Ok(server.peer_certificates().map_or(0, <[_]>::len))
    }

    #[test]
    fn client_auth_policies() {
        let (cert, key) = server_cert();
        let ca = Ca::new();
        let signed = ca.client(&["test3"]);
        let self_signed = server_cert();
        let with = |extra: &[(&str, &str)]| {
            let mut fields = vec![("cert", cert.as_str()), ("key", key.as_str())];
            fields.extend_from_slice(extra);
            server_config(&tls_file(&fields), true).unwrap()
        };
        let none = || client(None);
        for policy in ["", "NoClientCert"] {
            let config = with(&[("client_auth_type", policy)]);
            assert_eq!(handshake(&config, none()), Ok(0));
            // Not asked for: not sent.
            assert_eq!(handshake(&config, client(Some(&signed))), Ok(0));
        }
        let config = with(&[("client_auth_type", "RequestClientCert")]);
        assert_eq!(handshake(&config, none()), Ok(0));
        assert_eq!(handshake(&config, client(Some(&self_signed))), Ok(1));
        for policy in ["RequireAnyClientCert", "RequireClientCert"] {
            let config = with(&[("client_auth_type", policy)]);
            assert!(handshake(&config, none()).is_err(), "{policy}");
            assert_eq!(handshake(&config, client(Some(&self_signed))), Ok(1));
        }
        let config = with(&[
            ("client_auth_type", "VerifyClientCertIfGiven"),
            ("client_ca", &ca.pem),
        ]);
        assert_eq!(handshake(&config, none()), Ok(0));
        assert_eq!(handshake(&config, client(Some(&signed))), Ok(1));
        assert!(handshake(&config, client(Some(&self_signed))).is_err());
        let config = with(&[
            ("client_auth_type", "RequireAndVerifyClientCert"),
            ("client_ca", &ca.pem),
        ]);
        assert!(handshake(&config, none()).is_err());
        assert_eq!(handshake(&config, client(Some(&signed))), Ok(1));
        assert!(handshake(&config, client(Some(&self_signed))).is_err());

        for policy in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
            let file = tls_file(&[("cert", &cert), ("key", &key), ("client_auth_type", policy)]);
            let err = error(&file);
            assert!(err.contains("tls_server_config.client_ca_file"), "{err}");
        }
        let err = error(&tls_file(&[
            ("cert", &cert),
            ("key", &key),
            ("client_ca", &ca.pem),
        ]));
        assert!(
            err.contains("client CA's have been configured without a Client Auth Policy"),
            "{err}"
        );
        let err = error(&tls_file(&[
            ("cert", &cert),
            ("key", &key),
            ("client_auth_type", "Always"),
        ]));
        assert!(
            err.contains("tls_server_config.client_auth_type: invalid ClientAuth: Always"),
            "{err}"
        );
        let err = error(&tls_file(&[
            ("cert", &cert),
            ("key", &key),
            ("client_auth_type", "RequireAndVerifyClientCert"),
            ("client_ca_file", "/dev/null"),
        ]));
        assert!(
            err.contains("tls_server_config.client_ca_file (/dev/null): no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn client_allowed_sans() {
        let (cert, key) = server_cert();
        let ca = Ca::new();
        let config = |policy: &str, allowed: &[&str]| {
            let mut file = tls_file(&[
                ("cert", &cert),
                ("key", &key),
                ("client_auth_type", policy),
                ("client_ca", &ca.pem),
            ]);
            file.client_allowed_sans = Some(allowed.iter().map(|s| s.to_string()).collect());
            server_config(&file, true).unwrap()
        };
        let test3 = client(Some(&ca.client(&["test3", "127.0.0.1"])));
        let good = config("RequireAndVerifyClientCert", &["one", "test3", "two"]);
        assert_eq!(handshake(&good, Arc::clone(&test3)), Ok(1));
        let by_ip = config("RequireAndVerifyClientCert", &["127.0.0.1"]);
        assert_eq!(handshake(&by_ip, Arc::clone(&test3)), Ok(1));
        let bad = config("RequireAndVerifyClientCert", &["one", "two"]);
        assert!(handshake(&bad, Arc::clone(&test3)).is_err());
        // Without a certificate there is no SAN to allow.
        let if_given = config("VerifyClientCertIfGiven", &["test3"]);
        assert!(handshake(&if_given, client(None)).is_err());
        assert_eq!(handshake(&if_given, test3), Ok(1));
    }

    #[test]
    fn subject_alt_names_as_go_prints_them() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["test3".into(), "127.0.0.1".into(), "::1".into()])
                .unwrap();
        params.subject_alt_names.extend([
            rcgen::SanType::Rfc822Name("me@example.com".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://cluster/ns/monitoring".try_into().unwrap()),
            rcgen::SanType::IpAddress("::ffff:10.1.2.3".parse().unwrap()),
        ]);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()).unwrap(),
            [
                "test3",
                "127.0.0.1",
                "::1",
                "me@example.com",
                "spiffe://cluster/ns/monitoring",
                "10.1.2.3"
            ]
        );
        let plain = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            subject_alt_names(plain.der()).unwrap(),
            Vec::<String>::new()
        );
        // Truncated or garbage input never panics.
        let der = cert.der().to_vec();
        for end in 0..der.len() {
            let _ = subject_alt_names(&der[..end]);
        }
        assert_eq!(subject_alt_names(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
