//! End-to-end proof of the destination's figures. Every relay terminates QUIC, so a relay can
//! read, drop and write anything on the datagrams it forwards; the delivery reports and probe
//! answers that every figure comes from must therefore be authenticated by the destination
//! itself, under a key no relay knows.
//!
//! Per route, at setup (docs/PROTOCOL.md, "Route proof"):
//! 1. the client sends a fresh X25519 public key in its setup header;
//! 2. the destination answers, in its ack, with its own fresh X25519 public key, its identity
//!    public key, and a signature by its identity key over both keys, the route index, mode and stripe field;
//! 3. the client checks that the identity key hashes to the destination id it pinned and that the
//!    signature verifies, then both derive the route's report key with HKDF-SHA256 from the X25519
//!    shared secret;
//! 4. the destination MACs every report and pong with HMAC-SHA256 under that key, each with a
//!    sequence number the client checks for replays.
//!
//! A relay that replaces the client's key cannot produce the destination's signature; one that
//! passes it on learns only public keys. Pure computation, no I/O.

use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use ring::{agreement, digest, hkdf, hmac};

use crate::wire::datagram::Datagram;
use crate::wire::identity::NodeId;
use crate::wire::mode::Mode;

/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;
/// Length of a report or pong MAC (HMAC-SHA256, untruncated).
pub const TAG_LEN: usize = 32;

const SIGNED_LABEL: &[u8] = b"mux-bw route proof v3";
const KEY_LABEL: &[u8] = b"mux-bw report key v2";

/// Why a proof could not be made or checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof bytes do not parse.
    #[error("malformed route proof: {0}")]
    Malformed(&'static str),
    /// The identity key in the proof is not the pinned destination's.
    #[error("route proof names key {actual}, not the destination {expected}")]
    WrongKey { expected: NodeId, actual: NodeId },
    /// The signature does not verify.
    #[error("route proof signature does not verify")]
    BadSignature,
    /// A cryptographic primitive failed (no randomness, invalid peer key).
    #[error("route key agreement failed")]
    Crypto,
}

/// The identity key algorithms a node can sign route proofs with: the ones whose public key DER
/// (`SubjectPublicKeyInfo`, hashed into the node id) is a fixed prefix and the raw key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256 with SHA-256: what mux-bw generates.
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    fn code(self) -> u8 {
        match self {
            KeyKind::EcdsaP256 => 1,
            KeyKind::EcdsaP384 => 2,
            KeyKind::Ed25519 => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(KeyKind::EcdsaP256),
            2 => Some(KeyKind::EcdsaP384),
            3 => Some(KeyKind::Ed25519),
            _ => None,
        }
    }

    /// DER of the SubjectPublicKeyInfo up to the raw key (algorithm identifier, bit string
    /// header).
    fn spki_prefix(self) -> &'static [u8] {
        match self {
            KeyKind::EcdsaP256 => &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
            KeyKind::EcdsaP384 => &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
            KeyKind::Ed25519 => &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ],
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyKind::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyKind::Ed25519 => &signature::ED25519,
        }
    }
}

/// The node id of a raw public key of kind `kind`: the hash of its SubjectPublicKeyInfo.
fn id_of(kind: KeyKind, raw: &[u8]) -> NodeId {
    let mut spki = kind.spki_prefix().to_vec();
    spki.extend_from_slice(raw);
    NodeId::from_spki(&spki)
}

enum SigningKey {
    Ecdsa(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

/// A destination's identity key, ready to sign route proofs.
pub struct Signer {
    kind: KeyKind,
    key: SigningKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?})", self.kind)
    }
}

/// The key that authenticates one route's reports and pongs.
pub struct ReportKey(hmac::Key);

impl std::fmt::Debug for ReportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportKey(..)")
    }
}

impl ReportKey {
    /// `d` with its MAC set (reports, stripe reports and pongs; any other datagram is returned as
    /// it is).
    pub fn seal(&self, mut d: Datagram) -> Datagram {
        let mac = self.tag(&d.mac_input());
        if let Some(tag) = d.tag_mut() {
            *tag = mac;
        }
        d
    }

    /// Whether `d` is a report, stripe report or pong whose MAC is right.
    pub fn opens(&self, d: &Datagram) -> bool {
        d.tag().is_some_and(|tag| self.verify(&d.mac_input(), tag))
    }

    /// The seed of the route's striped payload pattern (`stripe::fill`): derived from the
    /// route's key, so only the client and the destination can make bytes that verify.
    pub fn stripe_seed(&self) -> u64 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.tag(b"mux-bw stripe pattern seed")[..8]);
        u64::from_le_bytes(s)
    }

    /// The MAC of `msg`.
    pub fn tag(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(hmac::sign(&self.0, msg).as_ref());
        out
    }

    /// Whether `tag` is the MAC of `msg` (constant time).
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, msg, tag).is_ok()
    }
}

/// What the destination signs: both exchange keys, bound to the route, its mode and its stripe
/// field (`stripe::spec_bytes`: the transfer a route joins cannot be changed on the way).
fn transcript(route: &RouteTerms<'_>, client: &[u8], dst: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(SIGNED_LABEL.len() + 5 + 2 * KEY_LEN + route.stripe.len());
    t.extend_from_slice(SIGNED_LABEL);
    t.extend_from_slice(&route.index.to_be_bytes());
    t.push(route.mode.code());
    t.extend_from_slice(route.stripe);
    t.extend_from_slice(client);
    t.extend_from_slice(dst);
    t
}

fn report_key(secret: &[u8], transcript: &[u8]) -> Result<ReportKey, ProofError> {
    let salt = digest::digest(&digest::SHA256, transcript);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt.as_ref()).extract(secret);
    let okm = prk
        .expand(&[KEY_LABEL], hmac::HMAC_SHA256)
        .map_err(|_| ProofError::Crypto)?;
    Ok(ReportKey(hmac::Key::from(okm)))
}

impl Signer {
    /// A signer for a PKCS#8 private key of kind `kind`.
    pub fn new(kind: KeyKind, pkcs8: &[u8]) -> Result<Self, ProofError> {
        let rng = SystemRandom::new();
        let ecdsa = |alg| {
            signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng)
                .map(SigningKey::Ecdsa)
                .map_err(|_| ProofError::Crypto)
        };
        let key = match kind {
            KeyKind::EcdsaP256 => ecdsa(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)?,
            KeyKind::EcdsaP384 => ecdsa(&signature::ECDSA_P384_SHA384_ASN1_SIGNING)?,
            KeyKind::Ed25519 => signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .map(SigningKey::Ed25519)
                .map_err(|_| ProofError::Crypto)?,
        };
        Ok(Signer { kind, key, rng })
    }

    fn public(&self) -> &[u8] {
        match &self.key {
            SigningKey::Ecdsa(k) => k.public_key().as_ref(),
            SigningKey::Ed25519(k) => k.public_key().as_ref(),
        }
    }

    /// The id of this key (the same as the node's certificate gives).
    pub fn id(&self) -> NodeId {
        id_of(self.kind, self.public())
    }

    /// The destination's answer to a client's exchange key: the proof for the ack, and the
    /// route's report key.
    pub fn answer(
        &self,
        route: &RouteTerms<'_>,
        client_key: &[u8; KEY_LEN],
    ) -> Result<(Vec<u8>, ReportKey), ProofError> {
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &self.rng)
            .map_err(|_| ProofError::Crypto)?;
        let ours = private
            .compute_public_key()
            .map_err(|_| ProofError::Crypto)?;
        let t = transcript(route, client_key, ours.as_ref());
        let sig = match &self.key {
            SigningKey::Ecdsa(k) => k
                .sign(&self.rng, &t)
                .map_err(|_| ProofError::Crypto)?
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(k) => k.sign(&t).as_ref().to_vec(),
        };
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, client_key);
        let key = agreement::agree_ephemeral(private, &peer, |secret| report_key(secret, &t))
            .map_err(|_| ProofError::Crypto)??;
        let public = self.public();
        let mut proof = Vec::with_capacity(4 + public.len() + KEY_LEN + sig.len());
        proof.push(self.kind.code());
        proof.push(public.len() as u8);
        proof.extend_from_slice(public);
        proof.extend_from_slice(ours.as_ref());
        proof.push(sig.len() as u8);
        proof.extend_from_slice(&sig);
        Ok((proof, key))
    }
}

/// What a route proof binds besides the keys: the route's index, mode and stripe field
/// (`stripe::spec_bytes`), as the destination received them.
#[derive(Clone, Copy, Debug)]
pub struct RouteTerms<'a> {
    pub index: u32,
    pub mode: Mode,
    pub stripe: &'a [u8],
}

/// The client's half of one route's key agreement.
pub struct ClientHalf {
    private: agreement::EphemeralPrivateKey,
    public: [u8; KEY_LEN],
}

impl ClientHalf {
    /// A fresh exchange key.
    pub fn new() -> Result<Self, ProofError> {
        let private =
            agreement::EphemeralPrivateKey::generate(&agreement::X25519, &SystemRandom::new())
                .map_err(|_| ProofError::Crypto)?;
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(
            private
                .compute_public_key()
                .map_err(|_| ProofError::Crypto)?
                .as_ref(),
        );
        Ok(ClientHalf { private, public })
    }

    /// The public key to send in the setup header.
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// Checks the destination's proof (from its ack) against the pinned destination id, and
    /// derives the route's report key.
    pub fn finish(
        self,
        dst: NodeId,
        route: &RouteTerms<'_>,
        proof: &[u8],
    ) -> Result<ReportKey, ProofError> {
        let mut r = proof;
        let mut take = |n: usize, what: &'static str| -> Result<&[u8], ProofError> {
            if r.len() < n {
                return Err(ProofError::Malformed(what));
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        let kind = KeyKind::from_code(take(1, "key kind")?[0])
            .ok_or(ProofError::Malformed("unknown key kind"))?;
        let len = take(1, "key length")?[0] as usize;
        let public = take(len, "identity key")?;
        let theirs = take(KEY_LEN, "exchange key")?;
        let sig_len = take(1, "signature length")?[0] as usize;
        let sig = take(sig_len, "signature")?;
        if !r.is_empty() {
            return Err(ProofError::Malformed("trailing bytes"));
        }
        let actual = id_of(kind, public);
        if actual != dst {
            return Err(ProofError::WrongKey {
                expected: dst,
                actual,
            });
        }
        let t = transcript(route, &self.public, theirs);
        signature::UnparsedPublicKey::new(kind.verification(), public)
            .verify(&t, sig)
            .map_err(|_| ProofError::BadSignature)?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, theirs);
        agreement::agree_ephemeral(self.private, &peer, |secret| report_key(secret, &t))
            .map_err(|_| ProofError::Crypto)?
    }
}

/// Replay detection over sequence numbers, as IPsec does: datagrams may arrive out of order, but
/// none twice, and none older than the last `WINDOW`.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    /// Highest sequence number accepted, plus one (0 = none yet).
    next: u64,
    /// Bit i set: `next - 1 - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    const WINDOW: u64 = 64;

    /// Accepts `seq` if it is new; `false` for a replay or one too old to tell.
    pub fn accept(&mut self, seq: u32) -> bool {
        let seq = u64::from(seq);
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.seen = if shift >= Self::WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.next = seq + 1;
            return true;
        }
        let age = self.next - 1 - seq;
        if age >= Self::WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(kind: KeyKind) -> Signer {
        let alg = match kind {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        };
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let s = Signer::new(kind, &key.serialize_der()).unwrap();
        // The id the proof derives is the one the certificate's key gives.
        assert_eq!(s.id(), NodeId::from_spki(&key.public_key_der()));
        s
    }

    /// The terms of route `index`, upload, no stripe.
    fn t(index: u32) -> RouteTerms<'static> {
        RouteTerms {
            index,
            mode: Mode::Up,
            stripe: &[0],
        }
    }

    #[test]
    fn both_ends_derive_the_same_key_for_every_key_kind() {
        for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Ed25519] {
            let s = signer(kind);
            let client = ClientHalf::new().unwrap();
            let (proof, dst_key) = s.answer(&t(7), &client.public()).unwrap();
            let client_key = client.finish(s.id(), &t(7), &proof).unwrap();
            let tag = dst_key.tag(b"report");
            assert!(client_key.verify(b"report", &tag), "{kind:?}");
            assert!(!client_key.verify(b"rep0rt", &tag));
        }
    }

    #[test]
    fn a_relay_cannot_substitute_keys_or_replay_a_proof() {
        let s = signer(KeyKind::EcdsaP256);
        let client = ClientHalf::new().unwrap();
        // A relay swaps in its own exchange key: the destination signs that one, and the proof
        // does not verify for the client's.
        let relay = ClientHalf::new().unwrap();
        let (proof, _) = s.answer(&t(1), &relay.public()).unwrap();
        assert_eq!(
            client.finish(s.id(), &t(1), &proof).unwrap_err(),
            ProofError::BadSignature
        );
        // A proof made by another key is refused by the pin.
        let other = signer(KeyKind::EcdsaP256);
        let client = ClientHalf::new().unwrap();
        let (proof, _) = other.answer(&t(1), &client.public()).unwrap();
        assert!(matches!(
            client.finish(s.id(), &t(1), &proof),
            Err(ProofError::WrongKey { .. })
        ));
        // Another route index or mode, and every truncation, fail.
        let client = ClientHalf::new().unwrap();
        let (proof, _) = s.answer(&t(1), &client.public()).unwrap();
        for cut in 0..proof.len() {
            let c = ClientHalf::new().unwrap();
            assert!(c.finish(s.id(), &t(1), &proof[..cut]).is_err());
        }
        assert!(client.finish(s.id(), &t(2), &proof).is_err());
        // A relay that moved the route into another transfer (or out of one) is caught.
        let client = ClientHalf::new().unwrap();
        let (proof, _) = s.answer(&t(1), &client.public()).unwrap();
        let moved = RouteTerms {
            stripe: &[1; 21],
            ..t(1)
        };
        assert!(client.finish(s.id(), &moved, &proof).is_err());
    }

    #[test]
    fn replay_window_accepts_reordering_but_not_repeats() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(w.accept(2));
        assert!(w.accept(1), "late but new");
        assert!(!w.accept(1), "repeat");
        assert!(!w.accept(2), "repeat");
        assert!(w.accept(100));
        assert!(!w.accept(30), "older than the window");
        assert!(w.accept(99));
        assert!(!w.accept(100));
    }
}
