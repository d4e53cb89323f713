//! An access token as the service holds it: once, in the form it is sent in (`Bearer <token>`),
//! in memory that is zeroed when the last reference to it goes. The proxy's `Authorization`
//! value and the token API's body share that memory instead of copying the token (a kilobyte
//! or more for Microsoft) on every request, and both were checked once, when the token was
//! opened. (The HTTP layers below may still copy it into buffers of their own: hyper's client
//! writes header values into its write buffer.)

use bytes::Bytes;
use http::HeaderValue;
use zeroize::Zeroizing;

const PREFIX: &[u8] = b"Bearer ";

#[derive(Clone)]
pub struct AccessToken {
    /// `Bearer <token>`, in zeroizing memory that every clone shares.
    bearer: Bytes,
    /// `bearer` as a sensitive header value (the same memory), when the token can be one.
    authorization: Option<HeaderValue>,
    /// Whether the token goes between JSON quotes as it is (see [`needs_no_escaping`]).
    plain_json: bool,
}

impl AccessToken {
    pub fn new(token: &str) -> Self {
        // Sized once, so no reallocation leaves an unzeroed copy behind.
        let mut text = Zeroizing::new(Vec::with_capacity(PREFIX.len() + token.len()));
        text.extend_from_slice(PREFIX);
        text.extend_from_slice(token.as_bytes());
        let bearer = Bytes::from_owner(text);
        let authorization = HeaderValue::from_maybe_shared(bearer.clone())
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Self {
            bearer,
            authorization,
            plain_json: needs_no_escaping(token),
        }
    }

    /// The token itself.
    pub fn expose_secret(&self) -> &str {
        // Built from a `&str` and cut after the ASCII prefix, so always UTF-8.
        std::str::from_utf8(self.token_bytes()).unwrap_or_default()
    }

    /// `Bearer <token>` as a header value, or `None` for a token no header can carry (a
    /// control character, say).
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The token's text for a JSON string, shared rather than copied, when it needs no
    /// escaping (what providers issue).
    pub fn json_text(&self) -> Option<Bytes> {
        self.plain_json.then(|| self.bearer.slice(PREFIX.len()..))
    }

    fn token_bytes(&self) -> &[u8] {
        self.bearer.get(PREFIX.len()..).unwrap_or_default()
    }
}

impl From<String> for AccessToken {
    fn from(token: String) -> Self {
        let token = Zeroizing::new(token);
        Self::new(&token)
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// Whether serde_json would write `value` between quotes unchanged: no control character, no
/// quote, no backslash. Written without an early exit, so the compiler vectorises it.
pub fn needs_no_escaping(value: &str) -> bool {
    value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_and_the_json_text_share_the_tokens_one_copy() {
        let token = AccessToken::new("eyJ0eXAi.access-token");
        assert_eq!(token.expose_secret(), "eyJ0eXAi.access-token");
        let header = token.authorization().unwrap();
        assert_eq!(header.as_bytes(), b"Bearer eyJ0eXAi.access-token");
        assert!(header.is_sensitive());
        let text = token.json_text().unwrap();
        assert_eq!(&text[..], b"eyJ0eXAi.access-token");
        assert_eq!(
            text.as_ptr(),
            token.bearer.get(PREFIX.len()..).unwrap().as_ptr()
        );
        assert_eq!(header.as_bytes().as_ptr(), token.bearer.as_ptr());
        assert_eq!(format!("{token:?}"), "AccessToken([REDACTED])");
    }

    #[test]
    fn a_token_no_header_or_json_string_can_carry_as_it_is_says_so() {
        let control = AccessToken::new("line\nbreak");
        assert!(control.authorization().is_none());
        assert!(control.json_text().is_none());
        assert_eq!(control.expose_secret(), "line\nbreak");
        let quoted = AccessToken::from("a\"b".to_owned());
        assert!(quoted.authorization().is_some());
        assert!(quoted.json_text().is_none());
    }

    #[test]
    fn plain_json_is_exactly_what_serde_leaves_alone() {
        let mut plain = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.".repeat(30);
        plain.push_str("~._-+/=\u{7f}é");
        for (text, unchanged) in [
            (plain.as_str(), true),
            ("", true),
            ("quote\"inside", false),
            ("back\\slash", false),
            ("tab\tand\u{1}control", false),
        ] {
            assert_eq!(needs_no_escaping(text), unchanged, "{text:?}");
            let serde = serde_json::to_string(text).unwrap();
            assert_eq!(serde == format!("\"{text}\""), unchanged, "{text:?}");
        }
    }
}
