//! Authenticated, encrypted traffic between regions: TLS with the cluster's own
//! certificates (rustls), mutual for the internal routes.
//!
//! A cluster has a CA of its own; each region has a certificate it signed, naming the
//! region (and the hosts it is reached at) in its subject alternative names
//! ([`generate`] writes them; `geosaga region certs` calls it). A region serves one TLS
//! port: a client certificate is optional at the TLS layer, but one that is presented must
//! chain to the cluster CA, or the handshake fails. The server crate (`http_server::serve`)
//! hands the certificate a connection presented to every request, the API turns it into a
//! [`PeerIdentity`], and its gate (`crate::api::tls`) lets a request reach `/internal/...`
//! only if that certificate names a member region (401 without a certificate, 403 with one
//! naming no member); a message in a member's name must come with that member's
//! certificate. Public routes take clients without certificates (they need tokens:
//! `crate::api::auth`). Every refusal is logged. Regions call each other with their own
//! certificate as the client certificate and trust only the cluster CA.
//!
//! Without a `[tls]` section the region serves plain HTTP and checks nothing (dev mode).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regions_core::config::{Config, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};

use crate::{Error, Result};

/// The certificate the client of a connection presented (`None`: it presented none).
/// Present in every request's extensions when the region serves TLS.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub Option<CertificateDer<'static>>);

impl PeerIdentity {
    /// Whether the certificate names `region` (its subject alternative names hold it). The
    /// certificate was already checked to chain to the cluster CA during the handshake.
    pub fn names(&self, region: &str) -> bool {
        let (Some(der), Ok(name)) = (&self.0, ServerName::try_from(region)) else {
            return false;
        };
        ParsedCertificate::try_from(der).is_ok_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("tls: reading the {what} {}: {e}", path.display())))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("tls: the {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("tls: no certificate in {}", path.display())));
    }
    Ok(certs)
}

fn roots(tls: &TlsConfig) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&tls.ca, "CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| Error::Config(format!("tls: the CA certificate {}: {e}", tls.ca.display())))?;
    }
    Ok(roots)
}

fn identity(tls: &TlsConfig) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = certs(&tls.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key, "private key")?)
        .map_err(|e| Error::Config(format!("tls: the private key {}: {e}", tls.key.display())))?;
    Ok((chain, key))
}

/// The server side: this region's certificate; client certificates optional, but checked
/// against the cluster CA when presented.
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(tls)?), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Config(format!("tls: client verifier: {e}")))?;
    let (chain, key) = identity(tls)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("tls: this region's certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The client side: trusts the cluster CA only and presents this region's certificate.
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig> {
    let (chain, key) = identity(tls)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_root_certificates(roots(tls)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Config(format!("tls: this region's certificate and key: {e}")))
}

/// The HTTP client a region calls its peers with: mutual TLS when configured.
pub fn http_client(config: &Config) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(1_000))
        .timeout(Duration::from_millis(config.strong_timeout_ms + 5_000))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(tls) = &config.tls {
        builder = builder.use_preconfigured_tls(client_config(tls)?);
    }
    builder.build().map_err(|e| Error::Config(format!("HTTP client: {e}")))
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    /// The CA's certificate (`ca.pem`) and key (`ca.key`, keep it private).
    pub ca: (PathBuf, PathBuf),
    /// Per region: its name, certificate (`NAME.pem`) and key (`NAME.key`).
    pub regions: Vec<(String, PathBuf, PathBuf)>,
}

fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "geosaga cluster CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Config(format!("certificates: {e}"))
}

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Config(format!("writing {}: {e}", path.display())))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// Writes a cluster CA (`ca.pem`, `ca.key`) into `out`, or reuses the one there, and a
/// certificate and key per region signed by it (`NAME.pem`, `NAME.key`), valid for client
/// and server use, naming the region and each of `hosts` (DNS names or IP addresses).
pub fn generate(out: &Path, regions: &[String], hosts: &[String]) -> Result<GeneratedCerts> {
    std::fs::create_dir_all(out).map_err(|e| Error::Config(format!("creating {}: {e}", out.display())))?;
    let (ca_pem, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    let ca_key = if ca_key_path.exists() && ca_pem.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", ca_key_path.display())))?;
        rcgen::KeyPair::from_pem(&pem).map_err(cert_error)?
    } else {
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let cert = ca_params()?.self_signed(&key).map_err(cert_error)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        key
    };
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let mut written = Vec::new();
    for name in regions {
        if ServerName::try_from(name.as_str()).is_err() || name.parse::<std::net::IpAddr>().is_ok() {
            return Err(Error::Config(format!(
                "certificates: region name {name:?} is not a valid DNS name (letters, digits, '-' and '.')"
            )));
        }
        let mut names = vec![name.clone()];
        names.extend(hosts.iter().filter(|h| *h != name).cloned());
        let mut params = rcgen::CertificateParams::new(names).map_err(cert_error)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        let (cert_path, key_path) = (out.join(format!("{name}.pem")), out.join(format!("{name}.key")));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        written.push((name.clone(), cert_path, key_path));
    }
    Ok(GeneratedCerts {
        ca: (ca_pem, ca_key_path),
        regions: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_name_their_region() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = generate(dir.path(), &["us-east".to_owned(), "eu-west".to_owned()], &hosts).unwrap();
        assert_eq!(made.regions.len(), 2);
        let tls = TlsConfig {
            ca: made.ca.0.clone(),
            cert: made.regions[0].1.clone(),
            key: made.regions[0].2.clone(),
        };
        server_config(&tls).unwrap();
        client_config(&tls).unwrap();
        let cert = certs(&tls.cert, "certificate").unwrap().remove(0);
        let id = PeerIdentity(Some(cert));
        assert!(id.names("us-east") && id.names("localhost"));
        assert!(!id.names("eu-west"));
        assert!(!PeerIdentity(None).names("us-east"));

        // Running it again reuses the CA: a new region's certificate chains to the same one.
        let ca_before = std::fs::read(&made.ca.0).unwrap();
        let again = generate(dir.path(), &["sa-east".to_owned()], &hosts).unwrap();
        assert_eq!(std::fs::read(&again.ca.0).unwrap(), ca_before);
        let roots = Arc::new(roots(&tls).unwrap());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .unwrap();
        let sa = certs(&again.regions[0].1, "certificate").unwrap().remove(0);
        let now = rustls::pki_types::UnixTime::now();
        assert!(verifier.verify_client_cert(&sa, &[], now).is_ok());

        // ... and a certificate of another CA does not.
        let other = tempfile::tempdir().unwrap();
        let theirs = generate(other.path(), &["us-east".to_owned()], &hosts).unwrap();
        let foreign = certs(&theirs.regions[0].1, "certificate").unwrap().remove(0);
        assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());
    }

    #[test]
    fn one_tls_section_serves_every_region() {
        let tls = TlsConfig {
            ca: "certs/ca.pem".into(),
            cert: "certs/{name}.pem".into(),
            key: "certs/{name}.key".into(),
        };
        let mine = tls.for_region("eu-west");
        assert_eq!(
            (mine.ca, mine.cert, mine.key),
            (
                "certs/ca.pem".into(),
                "certs/eu-west.pem".into(),
                "certs/eu-west.key".into()
            )
        );
    }

    #[test]
    fn names_that_are_no_dns_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(dir.path(), &["us_east!".to_owned()], &[]).unwrap_err();
        assert!(err.to_string().contains("not a valid DNS name"), "{err}");
    }
}
