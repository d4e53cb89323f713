//! Secrets at rest: AES-256-GCM with a fresh random 96-bit nonce per seal (the library draws it;
//! callers cannot supply one) and associated data that binds each ciphertext to its place —
//! table, column, user, provider and key id — so a ciphertext copied to another row or column
//! does not open. Stored form: `version(1) | key_id_len(1) | key_id | nonce(12) | ct+tag`.
//! Keys come from `CONNECT_ENCRYPTION_KEYS` (`id:base64,…`, first active) or a file. Nothing
//! here logs or formats key material or plaintext; errors never say which check failed.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::model::UserId;
use crate::provider::ProviderId;

const FORMAT_VERSION: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("CONNECT_ENCRYPTION_KEYS is invalid: {0}")]
    Config(String),
    /// Opaque on purpose: wrong key, wrong place, tampering and truncation look the same.
    #[error("ciphertext does not open")]
    Open,
    #[error("the ciphertext's key {0:?} is not in the key ring")]
    UnknownKey(String),
    #[error("encryption failed")]
    Seal,
}

/// Where a ciphertext lives; it opens only there.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    pub table: &'static str,
    pub column: &'static str,
    pub user: UserId,
    pub provider: ProviderId,
}

impl Place {
    fn aad(&self, key_id: &str) -> Vec<u8> {
        format!(
            "celeste-connect/v{FORMAT_VERSION}|{}|{}|{}|{}|{key_id}",
            self.table, self.column, self.user, self.provider
        )
        .into_bytes()
    }
}

struct Key {
    id: String,
    key: RandomizedNonceKey,
}

/// The encryption keys; the first is the one new seals use.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Keyring {
    /// Parses `id:base64key,…` (32-byte keys, standard base64).
    pub fn parse(list: &str) -> Result<Self, VaultError> {
        let mut keys: Vec<Key> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = item
                .split_once(':')
                .ok_or_else(|| VaultError::Config("each entry must be id:base64key".into()))?;
            if !valid_key_id(id) {
                return Err(VaultError::Config(format!(
                    "key id {id:?} must be 1–32 letters, digits, - or _"
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(VaultError::Config(format!("key id {id:?} appears twice")));
            }
            let raw = Zeroizing::new(
                STANDARD
                    .decode(b64.trim())
                    .map_err(|_| VaultError::Config(format!("key {id:?} is not valid base64")))?,
            );
            if raw.len() != KEY_LEN {
                return Err(VaultError::Config(format!(
                    "key {id:?} must be {KEY_LEN} bytes, it has {}",
                    raw.len()
                )));
            }
            let key = RandomizedNonceKey::new(&AES_256_GCM, &raw)
                .map_err(|_| VaultError::Config(format!("key {id:?} is unusable")))?;
            keys.push(Key {
                id: id.to_owned(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(VaultError::Config("no key given".into()));
        }
        Ok(Self { keys })
    }

    pub fn active_key_id(&self) -> &str {
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` for `place` with the active key.
    pub fn seal(&self, place: &Place, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let key = self.keys.first().ok_or(VaultError::Seal)?;
        let mut buf = plaintext.to_vec();
        let nonce = key
            .key
            .seal_in_place_append_tag(Aad::from(place.aad(&key.id)), &mut buf)
            .map_err(|_| VaultError::Seal)?;
        let id = key.id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + NONCE_LEN + buf.len());
        out.push(FORMAT_VERSION);
        out.push(u8::try_from(id.len()).map_err(|_| VaultError::Seal)?);
        out.extend_from_slice(id);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a ciphertext sealed for `place` by any key of the ring.
    pub fn open(&self, place: &Place, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (key_id, nonce, body) = split(sealed).ok_or(VaultError::Open)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_owned()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Open)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = key
            .key
            .open_in_place(nonce, Aad::from(place.aad(key_id)), buf.as_mut_slice())
            .map_err(|_| VaultError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a UTF-8 secret (a token) as a [`SecretString`].
    pub fn open_string(&self, place: &Place, sealed: &[u8]) -> Result<SecretString, VaultError> {
        let bytes = self.open(place, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Open)?;
        Ok(SecretString::from(text.to_owned()))
    }
}

/// The key id a stored ciphertext names, without opening it.
pub fn sealed_key_id(sealed: &[u8]) -> Option<&str> {
    split(sealed).map(|(id, _, _)| id)
}

fn split(sealed: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let (&version, rest) = sealed.split_first()?;
    if version != FORMAT_VERSION {
        return None;
    }
    let (&id_len, rest) = rest.split_first()?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN + 16 {
        return None;
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    Some((std::str::from_utf8(id).ok()?, nonce, body))
}

/// A new random key as a `CONNECT_ENCRYPTION_KEYS` entry (`id:base64`).
pub fn generate_entry(id: &str) -> Result<SecretString, VaultError> {
    if !valid_key_id(id) {
        return Err(VaultError::Config(format!(
            "key id {id:?} must be 1–32 letters, digits, - or _"
        )));
    }
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::SystemRandom::new()
        .fill(raw.as_mut())
        .map_err(|_| VaultError::Seal)?;
    Ok(SecretString::from(format!(
        "{id}:{}",
        STANDARD.encode(raw.as_ref())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use uuid::Uuid;

    fn ring(ids: &[&str]) -> Keyring {
        let entries: Vec<String> = ids
            .iter()
            .map(|id| generate_entry(id).unwrap().expose_secret().to_owned())
            .collect();
        Keyring::parse(&entries.join(",")).unwrap()
    }

    fn place(column: &'static str, user: Uuid) -> Place {
        Place {
            table: "integration_tokens",
            column,
            user: UserId(user),
            provider: ProviderId::Microsoft,
        }
    }

    #[test]
    fn sealed_token_opens_in_its_place_only() {
        let keys = ring(&["k1"]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = keys
            .seal(&place("refresh_token", a), b"TOKMARK-rt-1")
            .unwrap();
        assert_eq!(
            &keys.open(&place("refresh_token", a), &sealed).unwrap()[..],
            b"TOKMARK-rt-1"
        );
        assert!(
            keys.open(&place("access_token", a), &sealed).is_err(),
            "other column"
        );
        assert!(
            keys.open(&place("refresh_token", b), &sealed).is_err(),
            "other user"
        );
        assert!(
            !sealed.windows(7).any(|w| w == b"TOKMARK"),
            "no plaintext in the stored form"
        );
    }

    #[test]
    fn every_flipped_bit_fails_to_open() {
        let keys = ring(&["k1"]);
        let p = place("access_token", Uuid::new_v4());
        let sealed = keys.seal(&p, b"TOKMARK-at-xyz").unwrap();
        for i in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            assert!(
                keys.open(&p, &tampered).is_err(),
                "bit {i} flipped still opened"
            );
        }
    }

    #[test]
    fn nonces_never_repeat() {
        let keys = ring(&["k1"]);
        let p = place("access_token", Uuid::new_v4());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let sealed = keys.seal(&p, b"same").unwrap();
            let (_, nonce, _) = split(&sealed).unwrap();
            assert!(seen.insert(nonce.to_vec()));
        }
    }

    #[test]
    fn old_keys_open_and_new_seals_use_the_first() {
        let e1 = generate_entry("k1").unwrap();
        let e2 = generate_entry("k2").unwrap();
        let p = place("access_token", Uuid::new_v4());
        let sealed = Keyring::parse(e1.expose_secret())
            .unwrap()
            .seal(&p, b"t")
            .unwrap();

        let rotated =
            Keyring::parse(&format!("{},{}", e2.expose_secret(), e1.expose_secret())).unwrap();
        assert_eq!(rotated.active_key_id(), "k2");
        assert_eq!(&rotated.open(&p, &sealed).unwrap()[..], b"t");
        assert_eq!(sealed_key_id(&rotated.seal(&p, b"t").unwrap()), Some("k2"));

        let without_k1 = Keyring::parse(e2.expose_secret()).unwrap();
        assert!(
            matches!(without_k1.open(&p, &sealed), Err(VaultError::UnknownKey(id)) if id == "k1")
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("k1:c2hvcnQ=").is_err());
        assert!(Keyring::parse("k 1:AAAA").is_err());
    }
}
