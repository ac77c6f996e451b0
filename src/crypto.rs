//! At-rest encryption: key loading, key ids, seal and open.
//!
//! Everything a user wrote (message text and metadata, conversation subjects) is sealed with
//! XChaCha20-Poly1305 before it reaches the store. A sealed value is
//!
//! ```text
//! [format 1 byte = 1][key id u32 LE][nonce 24 bytes][ciphertext + 16-byte tag]
//! ```
//!
//! The key id is derived from the key itself, so rotating keys needs no bookkeeping: values keep
//! naming the key that sealed them, retired keys listed in the config still open them, and new
//! writes use the current key. The 5-byte header is authenticated as associated data.
//!
//! Messages are sealed under their sender's own *data key* instead ([`Key::wrap`]): a random
//! key per user, kept in the store sealed by the at-rest key. Erasing a user destroys theirs,
//! and every copy of what it sealed (in the journal, free pages, old backups without the key)
//! becomes noise. A data key's id is derived like any key's; the store knows which is which.
//!
//! Nonces are a 16-byte random prefix drawn once per [`Keyring`] plus a 64-bit counter: unique
//! without a system call per message (the 192-bit nonce makes the random prefix safe).
//!
//! XChaCha20-Poly1305 is computed as its draft (draft-irtf-cfrg-xchacha-03, section 2.3) defines
//! it: HChaCha20 of the key and the nonce's first 16 bytes gives a subkey, and the IETF
//! ChaCha20-Poly1305 under that subkey, with the nonce's last 8 bytes behind 4 zero bytes, seals.
//! HChaCha20 comes from the `chacha20` crate and the AEAD from `ring`, whose assembly is built for
//! short inputs: a message body is ~100–200 bytes, and the `chacha20poly1305` crate (kept as the
//! reference the tests check every value against) set up its AVX2 Poly1305 for each such value,
//! ~4× the CPU per seal (docs/PERFORMANCE.md, "The runtime side per message"). The bytes are the
//! same either way: the format did not change.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 24;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + 16;

/// 256 bits of key material, wiped from `Debug` output.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(id={:08x})", self.id())
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Parses 32 bytes written as 64 hex digits or as base64.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .ok()?
        };
        Some(Self(bytes.try_into().ok()?))
    }

    /// The key as 64 hex digits, the form `indaba keygen` prints.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Stable 32-bit id: the first bytes of a domain-separated SHA-256 of the key.
    pub fn id(&self) -> u32 {
        let digest = Sha256::new()
            .chain_update(b"indaba key id v1")
            .chain_update(self.0)
            .finalize();
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// Reads a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = read_secret_file(path)?;
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(Self::parse)
            .ok_or_else(|| KeyError::Malformed {
                path: path.to_owned(),
            })
    }

    /// This key sealed by `ring` (the at-rest key): how a user's data key is stored.
    pub fn wrap(&self, ring: &Keyring) -> Vec<u8> {
        ring.seal(&self.0)
    }

    /// A key [`Key::wrap`] sealed, opened with `ring`.
    pub fn unwrap(ring: &Keyring, wrapped: &[u8]) -> Result<Self, OpenError> {
        let bytes = ring.open(wrapped)?;
        bytes.try_into().map(Self).map_err(|_| OpenError::Format)
    }

    /// Creates `path` with mode 0600 holding a new key; fails if it exists.
    pub fn create_file(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate()?;
        write_secret_file(path, &format!("{}\n", key.to_hex()))?;
        Ok(key)
    }
}

/// Reads a secret file (a key, a JWT secret), refusing one that others can read. The mode is
/// checked on the opened file, so it is the file that was checked that gets read.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Writes a new file readable only by its owner; never overwrites.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:o}: it must be readable by its owner only (run `chmod 600 {path}`)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} does not hold 32 bytes as 64 hex digits or base64")]
    Malformed { path: PathBuf },
    #[error("storage.encryption_key does not hold 32 bytes as 64 hex digits or base64")]
    MalformedInline,
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed value is truncated or of an unknown format")]
    Format,
    #[error("sealed with key id {0:08x}, which is not configured")]
    UnknownKey(u32),
    #[error("authentication failed: wrong key or damaged data")]
    Tampered,
}

/// The current key and any retired ones, ready to seal and open.
pub struct Keyring {
    current: u32,
    /// The current key first, then the retired ones. Kept as key bytes: XChaCha derives a key
    /// of its own for every nonce (HChaCha20), so there is no per-key schedule to keep.
    keys: Vec<(u32, Key)>,
    nonce_prefix: [u8; 16],
    counter: AtomicU64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &format_args!("{:08x}", self.current))
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keyring {
    pub fn new(current: &Key, retired: &[Key]) -> Result<Self, KeyError> {
        let mut nonce_prefix = [0u8; 16];
        getrandom::fill(&mut nonce_prefix).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut keys = vec![(current.id(), current.clone())];
        for key in retired {
            if keys.iter().all(|(id, _)| *id != key.id()) {
                keys.push((key.id(), key.clone()));
            }
        }
        Ok(Self {
            current: current.id(),
            keys,
            nonce_prefix,
            counter: AtomicU64::new(0),
        })
    }

    /// Id of the key new values are sealed with.
    pub fn current_key_id(&self) -> u32 {
        self.current
    }

    /// Ids of every key this ring can open.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// Seals `plaintext` under the current key.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[16..].copy_from_slice(&n.to_le_bytes());
        let mut header = [0u8; HEADER_LEN];
        header[0] = FORMAT;
        header[1..].copy_from_slice(&self.current.to_le_bytes());
        // Encrypted in place, in the buffer that is returned: one allocation and one copy of
        // the plaintext per seal.
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (aead, nonce) = xchacha(&self.keys[0].1, &nonce);
        let tag = aead
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(&header),
                &mut out[HEADER_LEN + NONCE_LEN..],
            )
            // Only fails for plaintexts over 256 GiB, far beyond any body limit: never store an
            // empty ciphertext in its place.
            .expect("ChaCha20-Poly1305 seals any plaintext under 256 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a value sealed by any key of this ring.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || sealed[0] != FORMAT {
            return Err(OpenError::Format);
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key_id = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
            .ok_or(OpenError::UnknownKey(key_id))?;
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Format)?;
        let (aead, nonce) = xchacha(key, nonce);
        let mut plain = body.to_vec();
        let len = aead
            .open_in_place(nonce, Aad::from(header), &mut plain)
            .map_err(|_| OpenError::Tampered)?
            .len();
        plain.truncate(len);
        Ok(plain)
    }

    /// The key id a sealed value names, without opening it.
    pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
        (sealed.len() >= HEADER_LEN && sealed[0] == FORMAT)
            .then(|| u32::from_le_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]))
    }
}

/// XChaCha20-Poly1305 for one 24-byte nonce, as the IETF ChaCha20-Poly1305 it reduces to: the
/// HChaCha20 subkey of `key` and the nonce's first 16 bytes, and the 12-byte nonce made of 4
/// zero bytes and the nonce's last 8. `ring`'s "less safe" key is the one that takes the nonce
/// from its caller; [`Keyring::seal`] makes every nonce unique.
fn xchacha(key: &Key, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let (prefix, tail) = nonce.split_at(16);
    let prefix: &[u8; 16] = prefix.try_into().expect("16 of 24 bytes");
    let subkey = chacha20::hchacha::<chacha20::R20>(&key.0.into(), &(*prefix).into());
    let aead = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("a ChaCha20 key is 32 bytes"),
    );
    let mut ietf = [0u8; 12];
    ietf[4..].copy_from_slice(tail);
    (aead, Nonce::assume_unique_for_key(ietf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};

    #[test]
    fn seal_open_round_trip_and_no_plaintext() {
        let key = Key::generate().expect("key");
        let ring = Keyring::new(&key, &[]).expect("ring");
        let sealed = ring.seal(b"hello marker 1234");
        assert!(
            !sealed
                .windows(b"marker".len())
                .any(|w| w == b"marker".as_slice())
        );
        assert_eq!(ring.open(&sealed).expect("open"), b"hello marker 1234");
        assert_ne!(ring.seal(b"same"), ring.seal(b"same"), "nonces must differ");
    }

    /// Values sealed before (and stored in every data file and journal) must keep opening,
    /// and new ones must be what the format says: the header, the nonce, then exactly what
    /// `Aead::encrypt` gives for them (ciphertext, then the tag).
    #[test]
    fn sealed_layout_is_header_nonce_then_aead_ciphertext_and_tag() {
        let key = Key::generate().expect("key");
        let ring = Keyring::new(&key, &[]).expect("ring");
        for plaintext in [&b""[..], b"x", &[7u8; 1000][..]] {
            let sealed = ring.seal(plaintext);
            assert_eq!(sealed.len(), OVERHEAD + plaintext.len());
            let (header, rest) = sealed.split_at(HEADER_LEN);
            let (nonce, body) = rest.split_at(NONCE_LEN);
            assert_eq!(header[0], FORMAT);
            assert_eq!(Keyring::key_id_of(&sealed), Some(key.id()));
            let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("nonce");
            let expected = XChaCha20Poly1305::new(&key.0.into())
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: plaintext,
                        aad: header,
                    },
                )
                .expect("encrypt");
            assert_eq!(body, expected.as_slice());
            assert_eq!(ring.open(&sealed).expect("open"), plaintext);
        }
    }

    /// Values sealed by the `chacha20poly1305` crate (everything written before the seal moved
    /// to `ring`) open, at every length around ChaCha's 64-byte blocks and Poly1305's 16.
    #[test]
    fn values_sealed_by_the_reference_crate_open() {
        let key = Key::generate().expect("key");
        let ring = Keyring::new(&key, &[]).expect("ring");
        let reference = XChaCha20Poly1305::new(&key.0.into());
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 150, 200, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut sealed = vec![FORMAT];
            sealed.extend_from_slice(&key.id().to_le_bytes());
            let nonce = [len as u8 ^ 0x5a; NONCE_LEN];
            sealed.extend_from_slice(&nonce);
            let body = reference
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: &plaintext,
                        aad: &sealed[..HEADER_LEN],
                    },
                )
                .expect("encrypt");
            sealed.extend_from_slice(&body);
            assert_eq!(ring.open(&sealed).expect("open"), plaintext, "{len} bytes");
            let new = ring.seal(&plaintext);
            let (header, rest) = new.split_at(HEADER_LEN);
            let (nonce, body) = rest.split_at(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("nonce");
            let opened = reference
                .decrypt(
                    &nonce.into(),
                    Payload {
                        msg: body,
                        aad: header,
                    },
                )
                .expect("the reference opens what the ring sealed");
            assert_eq!(opened, plaintext, "{len} bytes");
        }
    }

    /// The construction itself against the XChaCha20-Poly1305 draft's test vector
    /// (draft-irtf-cfrg-xchacha-03, appendix A.3.1), independent of either crate.
    #[test]
    fn xchacha_matches_the_drafts_test_vector() {
        let key = Key((0x80u8..=0x9f).collect::<Vec<_>>().try_into().expect("32"));
        let nonce: [u8; NONCE_LEN] = (0x40u8..=0x57).collect::<Vec<_>>().try_into().expect("24");
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").expect("hex");
        let mut buffer = b"Ladies and Gentlemen of the class of '99: If I could offer you only \
            one tip for the future, sunscreen would be it."
            .to_vec();
        let (aead, ietf_nonce) = xchacha(&key, &nonce);
        let tag = aead
            .seal_in_place_separate_tag(ietf_nonce, Aad::from(&aad), &mut buffer)
            .expect("seal");
        assert_eq!(
            hex::encode(&buffer),
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e"
        );
        assert_eq!(
            hex::encode(tag.as_ref()),
            "c0875924c1c7987947deafd8780acf49"
        );
    }

    #[test]
    fn retired_key_still_opens_new_writes_use_current() {
        let old = Key::generate().expect("key");
        let new = Key::generate().expect("key");
        let old_ring = Keyring::new(&old, &[]).expect("ring");
        let sealed_old = old_ring.seal(b"written long ago");

        let ring = Keyring::new(&new, std::slice::from_ref(&old)).expect("ring");
        assert_eq!(ring.open(&sealed_old).expect("open"), b"written long ago");
        let fresh = ring.seal(b"x");
        assert_eq!(Keyring::key_id_of(&fresh), Some(new.id()));

        let only_new = Keyring::new(&new, &[]).expect("ring");
        assert_eq!(
            only_new.open(&sealed_old),
            Err(OpenError::UnknownKey(old.id()))
        );
    }

    #[test]
    fn a_wrapped_data_key_opens_only_with_the_ring_that_wrapped_it() {
        let ring = Keyring::new(&Key::generate().expect("key"), &[]).expect("ring");
        let data = Key::generate().expect("key");
        let wrapped = data.wrap(&ring);
        assert!(!wrapped.windows(32).any(|w| w == data.0.as_slice()));
        assert_eq!(
            Key::unwrap(&ring, &wrapped).expect("unwrap").id(),
            data.id()
        );
        let other = Keyring::new(&Key::generate().expect("key"), &[]).expect("ring");
        assert!(Key::unwrap(&other, &wrapped).is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new(&Key::generate().expect("key"), &[]).expect("ring");
        let mut sealed = ring.seal(b"payload");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(ring.open(&sealed), Err(OpenError::Tampered));
        assert_eq!(ring.open(&sealed[..10]), Err(OpenError::Format));
    }

    #[test]
    fn key_parsing_and_file_modes() {
        let key = Key::generate().expect("key");
        assert_eq!(Key::parse(&key.to_hex()).expect("hex").id(), key.id());
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.0);
        assert_eq!(Key::parse(&b64).expect("b64").id(), key.id());
        assert!(Key::parse("too short").is_none());

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let made = Key::create_file(&path).expect("create");
        assert_eq!(Key::load(&path).expect("load").id(), made.id());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Key::load(&path).expect_err("world-readable key refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
