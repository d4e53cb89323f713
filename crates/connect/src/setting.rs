//! Reading one setting: a secret from its variable or its `_FILE` twin, telling a template
//! placeholder from a real value, and [`ConfigError`], which says what to set. A leaf module:
//! `config` and each provider's arguments (in `provider/`) use it, and it uses neither.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// Keeps a secret argument out of `Debug` output from the moment clap reads it.
pub fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// A configuration problem, worded as what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set. {hint}")]
    Missing { name: &'static str, hint: String },
    #[error("{name} looks like a placeholder ({why}). {hint}")]
    Placeholder {
        name: &'static str,
        why: &'static str,
        hint: String,
    },
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("both {name} and {name}_FILE are set; set only one")]
    Both { name: &'static str },
    #[error("cannot read {name}_FILE ({path}): {source}")]
    File {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Reads a secret from its variable or its `_FILE` twin (trailing newline trimmed).
pub fn resolve_secret(
    name: &'static str,
    value: Option<SecretString>,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Both { name }),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                name,
                path: path.display().to_string(),
                source,
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// Why a value looks like a template placeholder rather than a real secret, if it does.
pub fn placeholder_reason(value: &str) -> Option<&'static str> {
    let lower = value.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Some("it is empty");
    }
    if lower.contains('<') && lower.contains('>') {
        return Some("it contains <...>");
    }
    const MARKERS: [&str; 6] = [
        "your-",
        "your_",
        "changeme",
        "change-me",
        "replace-me",
        "xxxxxx",
    ];
    if MARKERS.iter().any(|m| lower.contains(m)) {
        return Some("it reads like template text");
    }
    None
}

pub fn require_real(
    name: &'static str,
    value: Option<SecretString>,
    hint: impl Fn() -> String,
) -> Result<SecretString, ConfigError> {
    let value = value.ok_or_else(|| ConfigError::Missing { name, hint: hint() })?;
    if let Some(why) = placeholder_reason(value.expose_secret()) {
        return Err(ConfigError::Placeholder {
            name,
            why,
            hint: hint(),
        });
    }
    Ok(value)
}
