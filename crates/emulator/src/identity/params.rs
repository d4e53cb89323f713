//! Form and query parameters as Microsoft reads them: `application/x-www-form-urlencoded`
//! pairs, order kept (the consent page replays them), a repeated name refused. It must not
//! interpret any parameter.

use crate::identity::error::AadError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(encoded: &[u8]) -> Result<Self, AadError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(encoded) {
            if pairs.iter().any(|(seen, _)| *seen == name) {
                // Two values for one name is ambiguous, and ambiguity in a security
                // parameter is how mix-ups happen.
                return Err(AadError::malformed());
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    /// The value, with an empty one treated as absent (as Microsoft does for required ones).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The raw value even when empty (for `scope=`, which has its own error).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &str) -> Result<&str, AadError> {
        self.get(name)
            .ok_or_else(|| AadError::missing_parameter(name))
    }

    /// Removes and returns a parameter (the consent form's own fields).
    pub fn take(&mut self, name: &str) -> Option<String> {
        let index = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(index).1)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}
