//! The `{tenant}` path segment: `common`, `organizations`, `consumers`, a tenant GUID or a
//! verified domain, and which kind of account each admits. It must not know about clients.

use uuid::Uuid;

use crate::config::AccountKind;
use crate::identity::error::AadError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tenant {
    /// The segment as sent, lower-cased: codes are bound to it.
    pub path: String,
    audience: Audience,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audience {
    Everyone,
    WorkOnly,
    PersonalOnly,
}

impl Tenant {
    pub fn parse(segment: &str) -> Result<Self, AadError> {
        let path = segment.to_ascii_lowercase();
        let audience = match path.as_str() {
            "common" => Audience::Everyone,
            "consumers" => Audience::PersonalOnly,
            // A GUID or a verified domain names one work/school directory.
            "organizations" => Audience::WorkOnly,
            _ if Uuid::parse_str(&path).is_ok() => Audience::WorkOnly,
            _ if is_domain(&path) => Audience::WorkOnly,
            _ => {
                return Err(AadError::invalid_request(
                    90002,
                    format!(
                        "Tenant '{segment}' not found. Check to make sure you have the correct \
                         tenant ID and are signing into the correct cloud."
                    ),
                ));
            }
        };
        Ok(Self { path, audience })
    }

    pub fn admits(&self, kind: AccountKind) -> bool {
        match self.audience {
            Audience::Everyone => true,
            Audience::WorkOnly => kind == AccountKind::Work,
            Audience::PersonalOnly => kind == AccountKind::Personal,
        }
    }
}

fn is_domain(path: &str) -> bool {
    path.contains('.')
        && !path.starts_with('.')
        && !path.ends_with('.')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}
