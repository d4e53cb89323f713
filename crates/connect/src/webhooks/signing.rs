//! Standard Webhooks signatures: `webhook-signature: v1,<base64(HMAC-SHA256(secret,
//! "{id}.{timestamp}.{body}"))>`, one per secret of the endpoint, space-separated, so a receiver
//! rotating its secret accepts either. Secrets are `whsec_<base64>` of 24 to 64 random bytes,
//! as the specification asks; they never leave memory (no `Debug`, no `Display`).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The prefix of a serialized signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest and longest secret, in bytes (the specification's 192 to 512 bits).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// One endpoint signing secret, as the HMAC key it is.
#[derive(Clone)]
pub struct SigningSecret(hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    /// Reads `whsec_<base64>`; the error says what is wrong without echoing the value.
    pub fn parse(value: &str) -> Result<Self, String> {
        let encoded = value
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a signing secret must start with {SECRET_PREFIX}"))?;
        let bytes = zeroize::Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| format!("a signing secret is {SECRET_PREFIX} and base64"))?,
        );
        if !SECRET_BYTES.contains(&bytes.len()) {
            return Err(format!(
                "a signing secret must hold 24 to 64 bytes (this one holds {}); \
                 `celeste-connect keygen webhook NAME` prints one",
                bytes.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated, in order.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new random secret of 32 bytes, serialized (`celeste-connect keygen webhook`).
pub fn generate_secret() -> Result<String, String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::SystemRandom::new()
        .fill(raw.as_mut())
        .map_err(|_| "no randomness".to_owned())?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(raw.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector every Standard Webhooks library tests its `sign` with (libraries/*/tests in
    /// github.com/standard-webhooks/standard-webhooks: Go, Python, JavaScript, Ruby, Java).
    #[test]
    fn signs_the_specifications_published_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_sends_one_signature_per_secret_in_order() {
        let old = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = SigningSecret::parse(&generate_secret().unwrap()).unwrap();
        let header = signature_header(
            &[new.clone(), old],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            parts[0],
            new.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            )
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
            "whsec_",
        ] {
            let error = SigningSecret::parse(bad).unwrap_err();
            assert!(
                !error.contains(bad.trim_start_matches("whsec_")) || bad == "whsec_",
                "{error}"
            );
        }
        assert!(SigningSecret::parse(&generate_secret().unwrap()).is_ok());
    }
}
