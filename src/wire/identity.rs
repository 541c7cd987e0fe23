//! Node identity: a persistent key pair, the self-signed certificate made from it, and the node id.
//!
//! The node id is the SHA-256 of the certificate's SubjectPublicKeyInfo, truncated to 128 bits and
//! written as 32 lowercase hex digits. It depends only on the key, so a node keeps its id across
//! restarts as long as its `--identity` file survives. This module owns no sockets.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::wire::proof::{KeyKind, Signer};

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

/// Largest identity file read: a PEM key is a few hundred bytes.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// What an identity file must hold, for error messages.
const EXPECTED_KEY: &str = "an unencrypted PKCS#8 PEM private key ('BEGIN PRIVATE KEY'): \
     ECDSA P-256 (what mux-bw creates when the file does not exist), ECDSA P-384 or Ed25519";

/// Key algorithms a node identity may use: ECDSA P-256 (what mux-bw generates), P-384 and
/// Ed25519, which rcgen and ring load and rustls verifies. RSA is refused.
fn usable(alg: &rcgen::SignatureAlgorithm) -> bool {
    [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ]
    .contains(&alg)
}

/// The key in a PEM file, or what the file holds instead (for the error message).
fn parse_key(pem: &[u8]) -> Result<rcgen::KeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "binary data, not PEM text".to_string())?;
    match rcgen::KeyPair::from_pem(text) {
        Ok(key) if usable(key.algorithm()) => Ok(key),
        _ => Err(describe_pem(text)),
    }
}

/// Names the first PEM block of `text` ("an RSA private key (PKCS#8)", "a certificate", ..).
fn describe_pem(text: &str) -> String {
    let Some(label) = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
    }) else {
        return "no PEM block".to_string();
    };
    match label {
        "PRIVATE KEY" => {
            use rustls::pki_types::pem::PemObject;
            match PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes()) {
                Ok(der) => format!("{} (PKCS#8)", pkcs8_algorithm(der.secret_pkcs8_der())),
                Err(_) => "a 'PRIVATE KEY' block that is not valid base64 DER".to_string(),
            }
        }
        "RSA PRIVATE KEY" => "an RSA private key (PKCS#1)".to_string(),
        "EC PRIVATE KEY" => "an EC private key in SEC1 form, not PKCS#8".to_string(),
        "ENCRYPTED PRIVATE KEY" => "an encrypted PKCS#8 private key".to_string(),
        "OPENSSH PRIVATE KEY" => "an OpenSSH private key".to_string(),
        "CERTIFICATE" => "a certificate, not a private key".to_string(),
        "PUBLIC KEY" => "a public key, not a private key".to_string(),
        other => format!("a PEM block '{other}'"),
    }
}

/// The key algorithm of a PKCS#8 DER key, from the object identifiers it contains.
fn pkcs8_algorithm(der: &[u8]) -> &'static str {
    // DER-encoded OBJECT IDENTIFIERs (tag, length, value).
    const RSA: &[u8] = &[6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 1];
    const RSA_PSS: &[u8] = &[6, 9, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 10];
    const EC: &[u8] = &[6, 7, 0x2a, 0x86, 0x48, 0xce, 0x3d, 2, 1];
    const P256: &[u8] = &[6, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 3, 1, 7];
    const P384: &[u8] = &[6, 5, 0x2b, 0x81, 4, 0, 0x22];
    const P521: &[u8] = &[6, 5, 0x2b, 0x81, 4, 0, 0x23];
    const ED25519: &[u8] = &[6, 3, 0x2b, 0x65, 0x70];
    const ED448: &[u8] = &[6, 3, 0x2b, 0x65, 0x71];
    const X25519: &[u8] = &[6, 3, 0x2b, 0x65, 0x6e];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let names: [(&[&[u8]], &str); 9] = [
        (&[RSA], "an RSA private key"),
        (&[RSA_PSS], "an RSA-PSS private key"),
        (
            &[EC, P256],
            "an ECDSA P-256 private key that cannot be used",
        ),
        (
            &[EC, P384],
            "an ECDSA P-384 private key that cannot be used",
        ),
        (&[EC, P521], "an ECDSA P-521 private key"),
        (&[EC], "an EC private key on an unsupported curve"),
        (&[ED25519], "an Ed25519 private key that cannot be used"),
        (&[ED448], "an Ed448 private key"),
        (&[X25519], "an X25519 key (for key agreement, not signing)"),
    ];
    names
        .iter()
        .find(|(oids, _)| oids.iter().all(|o| has(o)))
        .map_or("a private key of an unknown algorithm", |(_, name)| name)
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
    /// The file is larger than any key file (`MAX_KEY_FILE` bytes): not a key, maybe a device.
    #[error(
        "identity file '{path}' is larger than {}: expected a PEM key file of a few hundred bytes",
        crate::files::fmt_limit(MAX_KEY_FILE)
    )]
    TooLarge { path: String },
    /// The file does not hold a private key we can use; `holds` says what it holds instead.
    #[error("identity file '{path}' holds {holds}; expected {EXPECTED_KEY}")]
    BadKey { path: String, holds: String },
    /// The key is of a kind that cannot sign route proofs.
    #[error("identity key is {0}; expected {EXPECTED_KEY}")]
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
        match crate::files::read_bounded(path, MAX_KEY_FILE) {
            Ok(pem) => Self::from_key(parse_key(&pem).map_err(|holds| IdentityError::BadKey {
                path: display,
                holds,
            })?),
            Err(e) if e.is_not_found() => {
                let key = rcgen::KeyPair::generate()?;
                write_private(path, key.serialize_pem().as_bytes()).map_err(|source| {
                    IdentityError::Io {
                        path: display,
                        source,
                    }
                })?;
                Self::from_key(key)
            }
            Err(crate::files::ReadError::TooLarge(_)) => {
                Err(IdentityError::TooLarge { path: display })
            }
            Err(crate::files::ReadError::Io(source)) => Err(IdentityError::Io {
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
        assert!(err.to_string().contains("holds no PEM block"), "{err}");
    }

    fn load_err(pem: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem).unwrap();
        let err = Identity::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("k.pem"), "{err}");
        err
    }

    #[test]
    fn p384_and_ed25519_keys_are_accepted() {
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k.pem");
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            std::fs::write(&path, key.serialize_pem()).unwrap();
            let ident = Identity::load_or_create(&path).unwrap();
            assert_eq!(ident.id, NodeId::from_spki(&key.public_key_der()));
            assert_eq!(NodeId::from_cert(&ident.cert), Some(ident.id));
        }
    }

    #[test]
    fn unusable_keys_are_named_with_what_is_expected() {
        let cases: [(&[u8], &str); 5] = [
            (
                include_bytes!("../../tests/keys/rsa2048-pkcs8.pem"),
                "holds an RSA private key (PKCS#8); expected an unencrypted PKCS#8",
            ),
            (
                include_bytes!("../../tests/keys/p521-pkcs8.pem"),
                "holds an ECDSA P-521 private key (PKCS#8)",
            ),
            (
                include_bytes!("../../tests/keys/p256-sec1.pem"),
                "holds an EC private key in SEC1 form",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "holds a certificate",
            ),
            (b"\xff\xfe\x00", "holds binary data"),
        ];
        for (pem, needle) in cases {
            let err = load_err(pem);
            assert!(err.contains(needle), "{err} lacks {needle}");
            assert!(err.contains("ECDSA P-256"), "{err}");
        }
    }

    #[test]
    fn oversized_identity_files_are_refused_unread() {
        let err = load_err(&vec![b'A'; MAX_KEY_FILE as usize + 1]);
        assert!(err.contains("larger than 64 KiB"), "{err}");
        #[cfg(unix)]
        {
            let err = Identity::load_or_create(Path::new("/dev/zero"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("'/dev/zero' is larger than 64 KiB"), "{err}");
        }
    }
}
