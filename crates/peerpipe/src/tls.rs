//! TLS to the server (`wss://`): the system's root certificates plus any the
//! caller trusts (a private CA, or a self-signed server certificate).

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::BindError;

/// Reads every certificate of a PEM text (`-----BEGIN CERTIFICATE-----`
/// blocks), for [`NodeBuilder::trust_certificates`](crate::NodeBuilder::trust_certificates).
/// Fails on malformed PEM or when there is no certificate in it.
pub fn certificates_from_pem(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no PEM certificate in it",
        ));
    }
    Ok(certs)
}

/// The client TLS configuration: system roots and `extra`.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, BindError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("reading the system's root certificates: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| BindError::Tls(format!("a trusted certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(BindError::Tls(
            "no root certificates: the system has none (install ca-certificates) and none was given to trust".into(),
        ));
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BindError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(certificates_from_pem(b"hello").is_err());
        assert!(certificates_from_pem(b"").is_err());
    }

    #[test]
    fn a_generated_certificate_reads_back_and_is_trusted() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let certs = certificates_from_pem(cert.cert.pem().as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_ref(), cert.cert.der().as_ref());
        client_config(&certs).unwrap();
    }
}
