//! A throwaway public-key infrastructure for loopback TLS in tests: a CA
//! and a leaf certificate for `localhost` and `127.0.0.1` it signed, made
//! fresh (rcgen, P-256) each time, so no test ships a private key or shells
//! out to `openssl`.

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::io;
use std::path::Path;

/// A fresh CA and the `localhost` leaf it signed, in DER and PEM.
pub struct Pki {
    /// The CA certificate (the trust anchor to hand to clients).
    pub ca_der: Vec<u8>,
    /// The leaf certificate, for `localhost` and `127.0.0.1`.
    pub cert_der: Vec<u8>,
    /// The leaf's private key, PKCS#8.
    pub key_der: Vec<u8>,
}

/// A CA and a leaf for `localhost` and `127.0.0.1` signed by it.
pub fn localhost_ca() -> Pki {
    ca_for(&["localhost", "127.0.0.1"])
}

/// A CA and a leaf for `names` (DNS names or IP addresses) signed by it.
///
/// Panics if rcgen refuses a name or fails to sign: a test set-up fault.
pub fn ca_for(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "samizdat test CA");
    let ca_key = KeyPair::generate().expect("a P-256 key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a self-signed CA");
    let leaf_key = KeyPair::generate().expect("a P-256 key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).expect("valid names for the leaf");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .expect("the CA signs the leaf");
    Pki {
        ca_der: ca.der().to_vec(),
        cert_der: leaf.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    }
}

impl Pki {
    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> String {
        pem("CERTIFICATE", &self.ca_der)
    }

    /// The leaf certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The leaf's key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_der)
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir` (for programs
    /// that take files: `redis-server --tls-*`, `SAMIZDAT_TEST_CA`).
    pub fn write_to(&self, dir: &Path) -> io::Result<()> {
        std::fs::write(dir.join("ca.pem"), self.ca_pem())?;
        std::fs::write(dir.join("cert.pem"), self.cert_pem())?;
        std::fs::write(dir.join("key.pem"), self.key_pem())
    }

    /// A rustls server configuration presenting the leaf.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let cert = rustls::pki_types::CertificateDer::from(self.cert_der.clone());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("the provider's default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("the leaf and its key match")
    }
}

/// PEM armour: base64 in lines of 64 characters (OpenSSL reads no longer).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_at_most_64_characters_and_decode_back() {
        let pki = localhost_ca();
        let text = pki.ca_pem();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(der, pki.ca_der);
        assert!(pki.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn each_call_makes_a_new_ca() {
        assert_ne!(localhost_ca().ca_der, localhost_ca().ca_der);
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_completes_a_handshake_with_the_leaf() {
        use std::sync::Arc;
        let pki = localhost_ca();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let _ = acceptor.accept(s).await;
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone().into()).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, s).await.expect("the leaf verifies");
    }
}
