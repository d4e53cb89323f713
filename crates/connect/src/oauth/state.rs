//! The per-flow secrets: the `state` sent through the provider and the browser-binding secret
//! kept in an HttpOnly cookie. Both are 256-bit random strings; the database holds only their
//! SHA-256 hashes, so a database reader cannot complete or forge a flow.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

/// Name of the browser-binding cookie. The `__Host-` prefix makes browsers accept it only with
/// `Secure`, `Path=/` and no `Domain`, so a sibling subdomain cannot plant or shadow it.
pub const BINDING_COOKIE: &str = "__Host-cc_flow_binding";

/// 32 random bytes as 43 base64url characters.
pub fn random_token() -> Result<SecretString, aws_lc_rs::error::Unspecified> {
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw)?;
    Ok(SecretString::from(URL_SAFE_NO_PAD.encode(raw)))
}

pub fn sha256(value: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, value.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `presented` hashes to `expected`, compared in constant time.
pub fn matches(presented: &str, expected: &[u8; 32]) -> bool {
    verify_slices_are_equal(&sha256(presented), expected).is_ok()
}

/// A value that could be one of our tokens (43 base64url characters); anything else is refused
/// before it reaches the database.
pub fn well_formed(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
