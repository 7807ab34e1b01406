//! How to reach the token and which key on it protects the master keys.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// Where the wrapping key lives: a PKCS#11 module, a token in it, the user PIN and the key's
/// `CKA_LABEL`. `Debug` redacts the PIN.
#[derive(Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// `CKA_LABEL` of the token (`CK_TOKEN_INFO.label`, trailing blanks ignored).
    pub token_label: String,
    /// The token's user PIN (`CKU_USER`).
    pub pin: Zeroizing<String>,
    /// `CKA_LABEL` of the AES-256 secret key that wraps master keys.
    pub key_label: String,
    /// Generate the key on the token when no key carries `key_label`.
    pub create_key_if_missing: bool,
}

impl fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("key_label", &self.key_label)
            .field("create_key_if_missing", &self.create_key_if_missing)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_pin() {
        let config = HsmConfig {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "keyfort".into(),
            pin: Zeroizing::new("pin-that-must-not-leak".into()),
            key_label: "keyfort-mk-wrap".into(),
            create_key_if_missing: true,
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("pin-that-must-not-leak"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("keyfort-mk-wrap"), "{debug}");
    }
}
