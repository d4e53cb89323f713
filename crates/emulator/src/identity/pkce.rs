//! PKCE (RFC 7636) as Microsoft applies it: `S256` or `plain`, plain assumed when the method is
//! omitted, challenge length checked at `/authorize`. It must not look at anything but the
//! challenge and the verifier.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::identity::error::AadError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Plain,
    S256,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub value: String,
    pub method: Method,
}

impl Challenge {
    /// `None` when no challenge was sent (a method alone is ignored).
    pub fn from_request(
        challenge: Option<&str>,
        method: Option<&str>,
    ) -> Result<Option<Self>, AadError> {
        let Some(value) = challenge.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let method = match method {
            None | Some("") | Some("plain") => Method::Plain,
            Some("S256") => Method::S256,
            Some(_) => {
                return Err(AadError::invalid_request(
                    50149,
                    "Invalid Code_Challenge_method parameter.",
                ));
            }
        };
        // A SHA-256 digest in base64url is exactly 43 characters; a plain verifier is 43–128.
        let size_ok = match method {
            Method::S256 => value.len() == 43,
            Method::Plain => (43..=128).contains(&value.len()),
        };
        if !size_ok {
            return Err(AadError::invalid_request(
                501491,
                "Invalid size of Code_Challenge parameter.",
            ));
        }
        Ok(Some(Self {
            value: value.to_owned(),
            method,
        }))
    }

    pub fn is_satisfied_by(&self, verifier: &str) -> bool {
        let expected = match self.method {
            Method::Plain => verifier.to_owned(),
            Method::S256 => s256(verifier),
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            self.value.as_bytes(),
        )
        .is_ok()
    }
}

/// BASE64URL(SHA256(verifier)), the S256 transform.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}
