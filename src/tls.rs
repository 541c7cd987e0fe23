//! TLS for QUIC links: servers present their identity, clients pin the peer's node id.
//!
//! There is no CA. The client puts the expected node id in the SNI field and the verifier checks
//! that the presented certificate's key hashes to it (and that the handshake signature is valid for
//! that key). One client config therefore serves every destination.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::identity::{Identity, NodeId};

/// Start of the handshake error when a peer's key does not hash to the pinned id; the CLI
/// recognizes it to report a wrong URI as bad input.
pub const ID_MISMATCH: &str = "node id mismatch";

/// ALPN of protocol version 1. A peer speaking another ALPN fails the handshake.
pub const ALPN: &[u8] = b"mux-bw/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls server config presenting `identity`.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// rustls client config that accepts a server only if its key hashes to the id given as SNI.
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedId { provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The SNI a client sends to reach `id`: the id itself, which is a valid DNS label.
pub fn server_name(id: &NodeId) -> String {
    id.to_string()
}

#[derive(Debug)]
struct PinnedId {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedId {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref().parse::<NodeId>().ok(),
            _ => None,
        };
        let expected = expected.ok_or_else(|| {
            rustls::Error::General(format!("server name {server_name:?} is not a node id"))
        })?;
        let actual = NodeId::from_cert(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if actual != expected {
            return Err(rustls::Error::General(format!(
                "{ID_MISMATCH}: expected {expected}, peer is {actual}"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
