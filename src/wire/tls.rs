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

use crate::wire::identity::{Identity, NodeId};

/// Start of the handshake error when a peer's key does not hash to the pinned id; the CLI
/// recognizes it to report a wrong URI as bad input.
pub const ID_MISMATCH: &str = "node id mismatch";

/// ALPN of the setup protocol since version 2. Later versions keep it: the setup header's version
/// field tells them apart, so a peer of another version gets a nack naming both versions rather
/// than a failed handshake. A peer speaking another ALPN fails the handshake.
pub const ALPN: &[u8] = b"mux-bw/2";

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

/// Suffix that makes the SNI a valid DNS name even when an id is all digits.
const SNI_SUFFIX: &str = ".mux-bw";

/// The SNI a client sends to reach `id`: `<id>.mux-bw`.
pub fn server_name(id: &NodeId) -> String {
    format!("{id}{SNI_SUFFIX}")
}

fn id_of_server_name(name: &ServerName<'_>) -> Option<NodeId> {
    match name {
        ServerName::DnsName(n) => n.as_ref().strip_suffix(SNI_SUFFIX)?.parse().ok(),
        _ => None,
    }
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
        let expected = id_of_server_name(server_name).ok_or_else(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_makes_a_valid_server_name() {
        // An all-digit id is not a valid DNS name on its own; the suffix fixes that.
        for id in [NodeId([0x11; 16]), NodeId([0xab; 16]), NodeId([0; 16])] {
            let name = ServerName::try_from(server_name(&id)).expect("valid server name");
            assert_eq!(id_of_server_name(&name), Some(id));
        }
    }
}
