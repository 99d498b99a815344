//! How the coordinator reaches the regions: the cluster CA it trusts for `https://`
//! regions, the client certificate it presents, and the token it sends
//! (`geosaga serve --region-ca/--region-cert/--region-key/--region-token`, docs/security.md).

use std::time::Duration;

/// The coordinator's credentials towards the regions. The default trusts the usual web
/// roots, presents no certificate and sends no token (plain-HTTP development clusters).
#[derive(Clone, Default)]
pub struct RegionAccess {
    /// The cluster CA (PEM): with it, a region's certificate must chain to it and to
    /// nothing else.
    pub ca_pem: Option<Vec<u8>>,
    /// This coordinator's certificate chain and private key (PEM, concatenated), presented
    /// to the regions as its client certificate.
    pub identity_pem: Option<Vec<u8>>,
    /// Sent to every region as `Authorization: Bearer` (a token with the `write` role).
    pub token: Option<String>,
}

impl std::fmt::Debug for RegionAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionAccess")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RegionAccess {
    /// Whether the region client differs from the participants' (a CA or a certificate).
    pub fn has_tls(&self) -> bool {
        self.ca_pem.is_some() || self.identity_pem.is_some()
    }

    /// The HTTP client for the regions; `Err` says which PEM does not read.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("geosaga/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.ca_pem {
            let cas = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("the region CA: {e}"))?;
            if cas.is_empty() {
                return Err("the region CA holds no certificate".into());
            }
            builder = builder.tls_built_in_root_certs(false);
            for ca in cas {
                builder = builder.add_root_certificate(ca);
            }
        }
        if let Some(pem) = &self.identity_pem {
            let identity =
                reqwest::Identity::from_pem(pem).map_err(|e| format!("the region client certificate and key: {e}"))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|e| format!("the region client: {e}"))
    }
}
