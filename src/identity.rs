//! Node identity: a persistent key pair, the self-signed certificate made from it, and the node id.
//!
//! The node id is the SHA-256 of the certificate's SubjectPublicKeyInfo, truncated to 128 bits and
//! written as 32 lowercase hex digits. It depends only on the key, so a node keeps its id across
//! restarts as long as its `--identity` file survives. This module owns no sockets.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::proof::{KeyKind, Signer};

/// Length of a node id in bytes (32 hex digits when written).
pub const NODE_ID_LEN: usize = 16;

/// The identity of a mux-bw node: the hash of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// Derives the id from a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..NODE_ID_LEN]);
        NodeId(id)
    }

    /// Derives the id of whoever presented this certificate; `None` if it is not X.509 we can read.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Option<Self> {
        let ee = webpki::EndEntityCert::try_from(cert).ok()?;
        Some(Self::from_spki(ee.subject_public_key_info().as_ref()))
    }

    /// The first 8 hex digits, for human output.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid node id '{0}': expected {len} hex digits", len = NODE_ID_LEN * 2)]
pub struct NodeIdError(pub String);

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NodeIdError(s.to_string());
        if s.len() != NODE_ID_LEN * 2 || !s.is_ascii() {
            return Err(err());
        }
        let mut id = [0u8; NODE_ID_LEN];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(NodeId(id))
    }
}

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The identity file exists but could not be read or written.
    #[error("identity file '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a PEM private key we can use.
    #[error("identity file '{path}' does not hold a PKCS#8 PEM private key: {reason}")]
    BadKey { path: String, reason: String },
    /// The key is of a kind that cannot sign route proofs.
    #[error(
        "identity key is {0}; expected an ECDSA P-256 (what mux-bw creates), P-384 or Ed25519 key"
    )]
    Unsupported(String),
    /// Key generation or self-signing failed (should not happen with ring).
    #[error("cannot create certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A node's key pair, certificate and id, ready for a TLS server config.
pub struct Identity {
    /// Derived from `cert`'s public key; what peers pin.
    pub id: NodeId,
    /// Self-signed, regenerated at every start from the persistent key.
    pub cert: CertificateDer<'static>,
    key_der: Vec<u8>,
    kind: KeyKind,
}

impl Identity {
    /// A fresh identity that lives only in memory (the lab, tests).
    pub fn ephemeral() -> Result<Self, IdentityError> {
        Self::from_key(rcgen::KeyPair::generate()?)
    }

    /// Loads the key from `path`, or creates it (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let display = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| IdentityError::BadKey {
                    path: display,
                    reason: e.to_string(),
                })?;
                Self::from_key(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate()?;
                write_private(path, key.serialize_pem().as_bytes()).map_err(|source| {
                    IdentityError::Io {
                        path: display,
                        source,
                    }
                })?;
                Self::from_key(key)
            }
            Err(source) => Err(IdentityError::Io {
                path: display,
                source,
            }),
        }
    }

    fn from_key(key: rcgen::KeyPair) -> Result<Self, IdentityError> {
        let alg = key.algorithm();
        let kind = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            KeyKind::EcdsaP256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            KeyKind::EcdsaP384
        } else if alg == &rcgen::PKCS_ED25519 {
            KeyKind::Ed25519
        } else {
            return Err(IdentityError::Unsupported(format!("{alg:?}")));
        };
        let params = rcgen::CertificateParams::new(vec!["mux-bw".to_string()])?;
        let cert = params.self_signed(&key)?;
        let id = NodeId::from_spki(&key.public_key_der());
        Ok(Identity {
            id,
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
            kind,
        })
    }

    /// The key as a signer of route proofs (a destination proves its reports with it).
    pub fn signer(&self) -> Result<Signer, IdentityError> {
        Signer::new(self.kind, &self.key_der).map_err(|e| IdentityError::Unsupported(e.to_string()))
    }

    /// The private key in the form rustls wants.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_text() {
        let id = NodeId([0xab; NODE_ID_LEN]);
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn bad_ids_are_rejected_with_the_value() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"a".repeat(33),
            "ééééééééééééééééé",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn cert_id_matches_key_id() {
        let ident = Identity::ephemeral().unwrap();
        assert_eq!(NodeId::from_cert(&ident.cert), Some(ident.id));
    }

    #[test]
    fn identity_file_is_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.id, b.id);
        std::fs::write(&path, "not a key").unwrap();
        let err = Identity::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("node.key"), "{err}");
    }
}
