//! TLS for the webhook listener: the served certificate sits behind an `ArcSwap`, so a rotation
//! reaches the next handshake without a restart, and only a pair that parses is ever swapped in.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the certificate file")]
    NoCertificate,
    #[error("the certificate file is not PEM: {0}")]
    Certificate(String),
    #[error("no private key in the key file, or it is not PEM")]
    Key,
    #[error("the key does not fit the certificate: {0}")]
    Mismatch(String),
    #[error("cannot make a development certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error(transparent)]
    Unreadable(#[from] crate::source::file::ReadError),
}

/// Parses a PEM certificate chain and key into what rustls serves; refuses a pair that disagrees.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Key)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch(e.to_string()))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Serves whatever certificate was swapped in last.
pub struct Resolver(ArcSwap<CertifiedKey>);

impl Resolver {
    pub fn new(key: CertifiedKey) -> Self {
        Resolver(ArcSwap::from_pointee(key))
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.0.store(Arc::new(key));
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS 1.2 and 1.3, HTTP/2 preferred over HTTP/1.1; with `client_ca` (PEM), only clients with a
/// certificate that CA signed get through the handshake.
pub fn server_config(
    resolver: Arc<Resolver>,
    client_ca: Option<&[u8]>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::ClientCa(format!("not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::ClientCa("no certificate in the file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A development CA and a serving certificate it signed, all PEM.
pub struct DevCertificate {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a CA and a serving certificate for `names` (DNS names or IP addresses), valid for a year.
pub fn generate(names: &[&str]) -> Result<DevCertificate, TlsError> {
    generate_valid(names, std::time::Duration::from_secs(365 * 24 * 3600))
}

/// Makes a CA and a serving certificate for `names`, both valid from now for `validity`.
pub fn generate_valid(
    names: &[&str],
    validity: std::time::Duration,
) -> Result<DevCertificate, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "image-mirror-webhook development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Backdated a little, so clocks that disagree by a minute still accept it.
    let now = time::OffsetDateTime::now_utc();
    ca_params.not_before = now - time::Duration::minutes(5);
    ca_params.not_after = now + validity;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(err)?;
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "image-mirror-webhook");
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok(DevCertificate {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// When the first certificate of a PEM chain expires, and the names it covers.
pub fn inspect(cert_pem: &[u8]) -> Result<(std::time::SystemTime, Vec<String>), TlsError> {
    use x509_parser::extensions::GeneralName;
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or(TlsError::NoCertificate)?
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let not_after = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(
            u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        );
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => {
                        names.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string())
                    }
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(ip);
                        names.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok((not_after, names))
}
