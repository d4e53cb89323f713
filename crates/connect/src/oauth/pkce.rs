//! PKCE (RFC 7636) with S256 only: a 256-bit random verifier (43 base64url characters) and its
//! SHA-256 challenge. The verifier never leaves the server except to the token endpoint.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use super::state::random_token;

pub struct Pkce {
    pub verifier: SecretString,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let verifier = random_token()?;
        let challenge = challenge_s256(verifier.expose_secret());
        Ok(Self {
            verifier,
            challenge,
        })
    }
}

pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifier_has_the_length_rfc7636_requires() {
        let p = Pkce::new().unwrap();
        assert_eq!(p.verifier.expose_secret().len(), 43);
        assert_eq!(p.challenge.len(), 43);
    }
}
