//! The `store` setting: where a node's database is, when it is not SQLite in the data directory.

use std::fmt;

use crate::config::ConfigError;

/// A `postgres://` URL. It may hold a password: `Debug` and `Display` leave it out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Accepts `postgres://…` and `postgresql://…`.
    pub fn parse(value: String) -> Result<StoreUrl, ConfigError> {
        let trimmed = value.trim();
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            Ok(StoreUrl(trimmed.to_owned()))
        } else {
            Err(ConfigError::Store {
                shown: keyfort_store::postgres::redact_url(trimmed),
            })
        }
    }

    /// The URL itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&keyfort_store::postgres::redact_url(&self.0))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_and_never_their_password() {
        let url = StoreUrl::parse(" postgres://kf:pw@db/keyfort ".to_owned()).expect("valid");
        assert_eq!(url.expose(), "postgres://kf:pw@db/keyfort");
        assert_eq!(url.to_string(), "postgres://kf:***@db/keyfort");
        assert!(!format!("{url:?}").contains("pw"));
        assert!(StoreUrl::parse("postgresql://db/k".to_owned()).is_ok());
        for bad in ["mysql://u:pw@h/d", "keyfort.db", ""] {
            let e = StoreUrl::parse(bad.to_owned()).expect_err(bad);
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }
}
