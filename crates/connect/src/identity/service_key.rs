//! Service keys: the credential of trusted backends and workflow engines (n8n). Keys are random
//! 256-bit strings handed out once; the configuration holds only their SHA-256 hashes, by name,
//! several at a time so keys can be rotated. Presented keys are compared in constant time. The
//! key itself is never logged or written anywhere; its name is. A key that verified is kept in
//! the process's memory, so that its next request needs no hash (see [`ServiceKeys::verify`]).

use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::{constant_time, digest, rand::SecureRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

const PREFIX: &str = "ccsk_";

/// One configured key: its name (for logs and audit) and the SHA-256 of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceKeyEntry {
    pub name: String,
    pub hash: [u8; 32],
}

/// Parses `name:sha256hex,name:sha256hex`.
pub fn parse_service_keys(list: &str) -> Result<Vec<ServiceKeyEntry>, String> {
    let mut entries = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, hex) = item
            .split_once(':')
            .ok_or_else(|| format!("entry {:?} is not name:sha256hex", redact(item)))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("key name {name:?} must be letters, digits, - or _"));
        }
        let hash = decode_hex32(hex).ok_or_else(|| {
            format!(
                "the hash of key {name:?} must be 64 hex digits (use `celeste-connect keygen service {name}`)"
            )
        })?;
        if entries.iter().any(|e: &ServiceKeyEntry| e.name == name) {
            return Err(format!("key name {name:?} appears twice"));
        }
        entries.push(ServiceKeyEntry {
            name: name.to_owned(),
            hash,
        });
    }
    Ok(entries)
}

/// What is printed for an entry that failed to parse: never the whole value, which might be a
/// key pasted where its hash belongs.
fn redact(item: &str) -> String {
    let head: String = item.chars().take(4).collect();
    format!("{head}…")
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hash_key(key: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The configuration entry (`name:sha256hex`) that accepts `key`.
pub fn entry(name: &str, key: &str) -> String {
    format!("{name}:{}", hex(&hash_key(key)))
}

/// A new key and the configuration entry that accepts it.
pub fn generate(name: &str) -> Result<(String, String), String> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| "no randomness".to_owned())?;
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let entry = entry(name, &key);
    parse_service_keys(&entry)?;
    Ok((key, entry))
}

/// The configured keys; answers which one (by name) a presented key is.
#[derive(Clone, Debug, Default)]
pub struct ServiceKeys {
    /// Names shared, so each request (and the activity log) holds a name without copying it.
    entries: Vec<(Arc<str>, [u8; 32])>,
    verified: Arc<Verified>,
}

/// Keys that already matched an entry, so the same key presented again costs a constant-time
/// comparison with each of them instead of a SHA-256 (about 2 100 instructions, an eighth of
/// what a token request does beyond a health check). Only a key that matched an entry gets in,
/// so it holds at most one key per entry. They stay for the life of the process (zeroed if the
/// state is dropped, as at shutdown) and are never printed.
#[derive(Default)]
struct Verified(RwLock<Vec<VerifiedKey>>);

/// A presented key that matched an entry, and the entry's name.
type VerifiedKey = (Zeroizing<Vec<u8>>, Arc<str>);

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verified(..)")
    }
}

impl Verified {
    /// The name of `presented` if it was verified before. Every remembered key is compared, in
    /// constant time, whatever matched earlier.
    fn find(&self, presented: &str) -> Option<Arc<str>> {
        let keys = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for (key, name) in keys.iter() {
            if constant_time::verify_slices_are_equal(key, presented.as_bytes()).is_ok() {
                found = Some(name);
            }
        }
        found.cloned()
    }

    fn remember(&self, key: &str, name: &Arc<str>, at_most: usize) {
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() < at_most && !keys.iter().any(|(k, _)| k.as_slice() == key.as_bytes()) {
            keys.push((Zeroizing::new(key.as_bytes().to_vec()), name.clone()));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl ServiceKeys {
    pub fn new(entries: Vec<ServiceKeyEntry>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| (Arc::from(e.name), e.hash))
                .collect(),
            verified: Arc::default(),
        }
    }

    /// The name of the key, if `presented` is one of ours. Every entry is compared, in constant
    /// time, whatever matched earlier.
    pub fn verify(&self, presented: &str) -> Option<Arc<str>> {
        if !presented.starts_with(PREFIX) {
            return None;
        }
        if let Some(name) = self.verified.find(presented) {
            return Some(name);
        }
        let hash = hash_key(presented);
        let mut found = None;
        for (name, entry_hash) in &self.entries {
            if constant_time::verify_slices_are_equal(&hash, entry_hash).is_ok() {
                found = Some(name);
            }
        }
        if let Some(name) = found {
            self.verified.remember(presented, name, self.entries.len());
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_verifies_under_its_name_only() {
        let (key, entry) = generate("n8n").unwrap();
        let (other_key, other_entry) = generate("backend").unwrap();
        let keys = ServiceKeys::new(parse_service_keys(&format!("{entry},{other_entry}")).unwrap());
        assert_eq!(keys.verify(&key).as_deref(), Some("n8n"));
        assert_eq!(keys.verify(&other_key).as_deref(), Some("backend"));
        assert_eq!(keys.verify(&format!("{key}x")), None);
        assert_eq!(keys.verify("ccsk_"), None);
    }

    #[test]
    fn a_key_verified_before_is_recognised_and_nothing_else_is() {
        let (key, entry) = generate("n8n").unwrap();
        let (other_key, other_entry) = generate("backend").unwrap();
        let keys = ServiceKeys::new(parse_service_keys(&format!("{entry},{other_entry}")).unwrap());
        assert_eq!(keys.verify(&key).as_deref(), Some("n8n"));
        assert_eq!(keys.verified.len(), 1);
        // Clones share what was verified (each request's state is a clone).
        let clone = keys.clone();
        assert_eq!(clone.verify(&key).as_deref(), Some("n8n"));
        assert_eq!(keys.verified.len(), 1, "remembered once");

        // The same length, one character off: refused, and not remembered.
        let last = key.chars().last().unwrap();
        let altered = format!(
            "{}{}",
            &key[..key.len() - 1],
            if last == 'A' { 'B' } else { 'A' }
        );
        assert_eq!(keys.verify(&altered), None);
        assert_eq!(keys.verify(&key[..key.len() - 1]), None);
        assert_eq!(keys.verify(&format!("{key}x")), None);

        assert_eq!(keys.verify(&other_key).as_deref(), Some("backend"));
        assert_eq!(keys.verify(&key).as_deref(), Some("n8n"));
        assert_eq!(keys.verified.len(), 2, "one per entry at most");
        assert!(!format!("{keys:?}").contains(&key), "never printed");
    }

    #[test]
    fn malformed_entries_are_rejected_without_echoing_them() {
        let err = parse_service_keys("ccsk_secretsecretsecret").unwrap_err();
        assert!(!err.contains("secretsecret"));
        assert!(parse_service_keys("n8n:abcd").is_err());
        assert!(parse_service_keys(&format!("a:{0},a:{0}", "0".repeat(64))).is_err());
    }
}
