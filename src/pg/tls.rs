//! TLS policy for PostgreSQL connections: a rustls configuration built from libpq's settings
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), the certificate verifier each mode needs,
//! rustls errors turned into sentences, and the `tls-server-end-point` channel binding data.
//!
//! The byte stream itself (SSLRequest, handshake, the shared session) is in `transport`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::Digest;

use super::error::{Error, ErrorKind};
use super::{RootCert, SslMode, TlsSettings};

/// Everything `transport::negotiate` needs, loaded once per connection attempt (files are read
/// again at every reconnect, so a renewed CA file or client certificate is picked up).
pub(crate) struct TlsConfig {
    pub(crate) mode: SslMode,
    /// `None` with `sslmode=disable`.
    pub(crate) config: Option<Arc<ClientConfig>>,
    /// The trusted CAs in words, for errors: `None` when the chain is not verified.
    pub(crate) roots: Option<String>,
}

/// How much of the server's certificate is checked.
enum Verify {
    /// Nothing (prefer, require without sslrootcert): encryption without authentication.
    Nothing,
    /// The chain up to a trusted CA, not the name (verify-ca, require with sslrootcert).
    Chain(RootCertStore),
    /// The chain and the host name or address (verify-full).
    Full(RootCertStore),
}

impl TlsConfig {
    /// No TLS at all (`sslmode=disable`).
    pub(crate) fn disabled() -> TlsConfig {
        TlsConfig {
            mode: SslMode::Disable,
            config: None,
            roots: None,
        }
    }

    /// Reads the CA file (or the system store) and the client certificate and key the settings
    /// name, and builds the rustls configuration. Errors name the setting at fault.
    pub(crate) fn load(settings: &TlsSettings) -> Result<TlsConfig, Error> {
        #[cfg(test)]
        if let Some(RootCert::File(path)) = &settings.root_cert {
            super::blocking::ran_on::note(format!("tls {}", path.display()));
        }
        if settings.mode == SslMode::Disable {
            return Ok(TlsConfig::disabled());
        }
        let mode_name = mode_name(settings.mode);
        let roots = match (&settings.root_cert, settings.mode) {
            (_, SslMode::Prefer) => None,
            (None, SslMode::Require) => None,
            (None, _) => {
                return Err(config_error(format!(
                    "sslmode={mode_name} needs sslrootcert: a PEM file of the CA certificates to \
                     trust, or `system` for the operating system's store (libpq's default \
                     ~/.postgresql/root.crt is not read)"
                )))
            }
            (Some(root), _) => Some((load_roots(root)?, describe_roots(root))),
        };
        let (verify, roots_text) = match (roots, settings.mode) {
            (None, _) => (Verify::Nothing, None),
            (Some((store, text)), SslMode::VerifyFull) => (Verify::Full(store), Some(text)),
            // verify-ca, and require with sslrootcert (which libpq verifies like verify-ca).
            (Some((store, text)), _) => (Verify::Chain(store), Some(text)),
        };

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS configuration: {e}")))?;
        let builder = match verify {
            Verify::Full(store) => builder.with_root_certificates(store),
            Verify::Chain(store) => {
                let inner =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                        .build()
                        .map_err(|e| config_error(format!("sslrootcert: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            }
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider.clone()))),
        };
        let mut config =
            match (&settings.cert, &settings.key) {
                (None, None) => builder.with_no_client_auth(),
                (Some(cert), Some(key)) => {
                    let chain = load_certs(cert, "sslcert")?;
                    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                        config_error(format!(
                            "sslkey {}: cannot read a PEM private key: {e}",
                            key.display()
                        ))
                    })?;
                    builder.with_client_auth_cert(chain, key).map_err(|e| {
                        config_error(format!(
                            "sslcert {} with sslkey {}: {e}",
                            cert.display(),
                            key_path_text(&settings.key)
                        ))
                    })?
                }
                _ => return Err(config_error(
                    "sslcert and sslkey must be set together (the client certificate and its key)",
                )),
            };
        // PostgreSQL 17 checks ALPN on direct TLS; libpq 17 always sends it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsConfig {
            mode: settings.mode,
            config: Some(Arc::new(config)),
            roots: roots_text,
        })
    }
}

fn key_path_text(key: &Option<std::path::PathBuf>) -> String {
    key.as_ref()
        .map(|k| k.display().to_string())
        .unwrap_or_default()
}

/// libpq's name of a mode, for messages.
pub(crate) fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ConnectFailed, message).tls_misconfigured()
}

fn describe_roots(root: &RootCert) -> String {
    match root {
        RootCert::File(path) => format!("sslrootcert {}", path.display()),
        RootCert::System => "the operating system's trust store (sslrootcert=system)".to_string(),
    }
}

fn load_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            config_error(format!(
                "{setting} {}: cannot read PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{setting} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            for cert in load_certs(path, "sslrootcert")? {
                store.add(cert).map_err(|e| {
                    config_error(format!(
                        "sslrootcert {}: a certificate cannot be used as a CA: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(config_error(format!(
                    "sslrootcert=system: the operating system's trust store has no usable \
                     certificate{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked. Wraps the WebPKI
/// verifier and forgives only its name mismatch, which it reports after every other check of
/// the chain (validity, signatures, purpose) has passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without sslrootcert: any certificate is accepted (libpq's meaning:
/// encrypted, not authenticated). The handshake signature is still checked against the
/// presented certificate, so the server holds that certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls error as a sentence. `host` is the name or address connected to; `roots` the
/// trusted CAs in words.
pub(crate) fn describe(e: &rustls::Error, host: &str, roots: Option<&str>) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is not signed by a CA in {} (unknown CA)",
                roots.unwrap_or("the trusted CAs")
            ),
            CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => {
                format!(
                    "the server's certificate names no host (no subjectAltName), so it does not \
                     match host {host} (sslmode=verify-full)"
                )
            }
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is for {}, which does not match host {host} \
                 (sslmode=verify-full)",
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CertificateError::NotValidForName => {
                format!("the server's certificate does not match host {host} (sslmode=verify-full)")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the server's certificate has expired ({c})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the server's certificate is not valid yet; check the clocks ({c})")
            }
            CertificateError::Revoked => "the server's certificate has been revoked".to_string(),
            CertificateError::BadSignature => {
                "the server's certificate chain has a bad signature".to_string()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the server's certificate is not meant for a TLS server (extended key usage)"
                    .to_string()
            }
            other => format!("the server's certificate was rejected: {other}"),
        },
        E::AlertReceived(alert) => {
            let hint = match alert {
                AlertDescription::CertificateRequired => {
                    ": the server requires a client certificate (sslcert and sslkey)"
                }
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied => {
                    ": the server rejected the client certificate (sslcert)"
                }
                _ => "",
            };
            format!("the server ended the TLS session with the alert {alert:?}{hint}")
        }
        E::NoCertificatesPresented => "the server presented no certificate".to_string(),
        other => format!("TLS failed: {other}"),
    }
}

/// A subjectAltName as webpki lists it (`DnsName("db.example.com")`, `IpAddress(10.0.0.5)`),
/// without the wrapping.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// The `tls-server-end-point` channel binding data (RFC 5929 section 4.1): the hash of the
/// server's certificate (DER), with the hash function of the certificate's signature algorithm,
/// SHA-256 in place of MD5 and SHA-1. `None` for a signature algorithm without a defined hash
/// (Ed25519, for example): channel binding is then not possible, as with libpq.
pub(crate) fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    Some(match signature_hash(cert)? {
        Hash::Sha224 => sha2::Sha224::digest(cert).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// The hash for the channel binding, from the certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, ... }`.
fn signature_hash(cert: &[u8]) -> Option<Hash> {
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der(rest)? else {
        return None;
    };
    let (OID, oid, params) = der(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    const DSA_SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03]; // 2.16.840.1.101.3.4.3
    const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03]; // 1.2.840.10040.4.3
    const RSA_SHA1_OIW: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1d]; // 1.3.14.3.2.29
    if let Some(last) = oid.strip_prefix(RSA) {
        return match last {
            // md2, md4, md5, sha1: replaced by SHA-256.
            [0x02] | [0x03] | [0x04] | [0x05] => Some(Hash::Sha256),
            [0x0b] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            [0x0e] => Some(Hash::Sha224),
            // RSASSA-PSS: the hash is in the parameters.
            [0x0a] => pss_hash(params),
            _ => None,
        };
    }
    if let Some(last) = oid.strip_prefix(ECDSA) {
        return match last {
            [0x01] => Some(Hash::Sha256), // ecdsa-with-SHA1
            [0x03, 0x01] => Some(Hash::Sha224),
            [0x03, 0x02] => Some(Hash::Sha256),
            [0x03, 0x03] => Some(Hash::Sha384),
            [0x03, 0x04] => Some(Hash::Sha512),
            _ => None,
        };
    }
    if let Some(last) = oid.strip_prefix(DSA_SHA2) {
        return match last {
            [0x01] => Some(Hash::Sha224),
            [0x02] => Some(Hash::Sha256),
            [0x03] => Some(Hash::Sha384),
            [0x04] => Some(Hash::Sha512),
            _ => None,
        };
    }
    if oid == DSA_SHA1 || oid == RSA_SHA1_OIW {
        return Some(Hash::Sha256);
    }
    None
}

/// `RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... }`.
fn pss_hash(params: &[u8]) -> Option<Hash> {
    let (SEQUENCE, params, _) = der(params)? else {
        return None;
    };
    let Some((0xa0, hash, _)) = der(params) else {
        // Absent: SHA-1, replaced by SHA-256.
        return Some(Hash::Sha256);
    };
    let (SEQUENCE, hash, _) = der(hash)? else {
        return None;
    };
    let (OID, oid, _) = der(hash)? else {
        return None;
    };
    const SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02]; // 2.16.840.1.101.3.4.2
    const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a]; // 1.3.14.3.2.26
    const MD5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05]; // 1.2.840.113549.2.5
    if oid == SHA1 || oid == MD5 {
        return Some(Hash::Sha256);
    }
    match oid.strip_prefix(SHA2)? {
        [0x01] => Some(Hash::Sha256),
        [0x02] => Some(Hash::Sha384),
        [0x03] => Some(Hash::Sha512),
        [0x04] => Some(Hash::Sha224),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate-shaped DER: `SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID params }, BIT
    /// STRING }`.
    fn cert_with(algorithm: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x30, 0x00];
        inner.push(0x30);
        inner.push(algorithm.len() as u8);
        inner.extend_from_slice(algorithm);
        inner.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, 0x82, 0x00, inner.len() as u8];
        cert.extend_from_slice(&inner);
        cert
    }

    fn oid(bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![0x06, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn signature_algorithms_pick_the_rfc_5929_hash() {
        let rsa = |last: u8| oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last]);
        let ecdsa = |last: u8| oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, last]);
        let cases: &[(Vec<u8>, Option<Hash>)] = &[
            (rsa(0x04), Some(Hash::Sha256)), // md5WithRSAEncryption
            (rsa(0x05), Some(Hash::Sha256)), // sha1WithRSAEncryption
            (rsa(0x0b), Some(Hash::Sha256)),
            (rsa(0x0c), Some(Hash::Sha384)),
            (rsa(0x0d), Some(Hash::Sha512)),
            (rsa(0x0e), Some(Hash::Sha224)),
            (ecdsa(0x02), Some(Hash::Sha256)),
            (ecdsa(0x03), Some(Hash::Sha384)),
            (ecdsa(0x04), Some(Hash::Sha512)),
            (
                oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]),
                Some(Hash::Sha256),
            ),
            (oid(&[0x2b, 0x65, 0x70]), None), // Ed25519
        ];
        for (algorithm, want) in cases {
            assert_eq!(
                signature_hash(&cert_with(algorithm)),
                *want,
                "{algorithm:02x?}"
            );
        }
    }

    #[test]
    fn pss_takes_the_hash_from_its_parameters() {
        let pss = oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]);
        // SEQUENCE { [0] { SEQUENCE { sha384 } } }
        let sha384 = oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]);
        let mut hash_alg = vec![0x30, sha384.len() as u8];
        hash_alg.extend_from_slice(&sha384);
        let mut tagged = vec![0xa0, hash_alg.len() as u8];
        tagged.extend_from_slice(&hash_alg);
        let mut params = vec![0x30, tagged.len() as u8];
        params.extend_from_slice(&tagged);
        let mut with_params = pss.clone();
        with_params.extend_from_slice(&params);
        assert_eq!(signature_hash(&cert_with(&with_params)), Some(Hash::Sha384));
        // Empty parameters: the SHA-1 default, replaced by SHA-256.
        let mut default = pss;
        default.extend_from_slice(&[0x30, 0x00]);
        assert_eq!(signature_hash(&cert_with(&default)), Some(Hash::Sha256));
    }

    #[test]
    fn presented_names_lose_their_wrapping() {
        assert_eq!(plain_name("DnsName(\"db.example.com\")"), "db.example.com");
        assert_eq!(plain_name("IpAddress(10.0.0.5)"), "10.0.0.5");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn malformed_der_gives_none() {
        assert_eq!(signature_hash(&[]), None);
        assert_eq!(signature_hash(&[0x30, 0x05, 0x30]), None);
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(server_end_point(&[0x04, 0x00]), None);
    }
}
