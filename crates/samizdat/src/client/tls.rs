//! The client's outgoing TLS (rustls): `https://` list sources
//! ([`super::lists`]) and `wss://` fronts ([`super::connect::ws`]) trust the web's
//! roots plus, for tests and self-hosted servers, one extra PEM file of CAs.

use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Environment variable naming a PEM file of extra CAs trusted on top of
/// the web's roots, for `https://` list sources and `wss://` fronts. For
/// tests (a local nginx with a self-signed certificate) and private CAs;
/// real fronts have certificates from public CAs.
pub const TEST_CA_ENV: &str = "SAMIZDAT_TEST_CA";

/// The web's roots plus the CAs in [`TEST_CA_ENV`] if set, offering `alpn`.
/// Built once per ALPN list (errors too: the environment does not change).
pub fn client_config(alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    type Cache = Mutex<HashMap<Vec<Vec<u8>>, Result<Arc<ClientConfig>, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key)
        .or_insert_with(|| {
            let extra = std::env::var_os(TEST_CA_ENV);
            build(alpn, extra.as_deref().map(Path::new)).map_err(|e| format!("{TEST_CA_ENV}: {e}"))
        })
        .clone()
}

/// The web's roots plus the CAs in the PEM file `extra_ca`, offering
/// `alpn`. Not cached.
pub fn build(alpn: &[&[u8]], extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let what = |e: &dyn std::fmt::Display| format!("extra CA {}: {e}", path.display());
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
            roots
                .add(cert.map_err(|e| what(&e))?)
                .map_err(|e| what(&e))?;
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_and_cache() {
        let a = client_config(&[b"http/1.1"]).unwrap();
        let b = client_config(&[b"http/1.1"]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let c = client_config(&[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(c.alpn_protocols.len(), 2);
    }

    #[test]
    fn a_missing_extra_ca_is_named() {
        let e = build(&[], Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.starts_with("extra CA /nonexistent/ca.pem: "), "{e}");
    }
}
