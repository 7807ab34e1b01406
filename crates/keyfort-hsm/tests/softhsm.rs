//! `Pkcs11Protector` against a real SoftHSM2 token (Debian package `softhsm2`).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a PKCS#11 module is initialized
//! once per process. So each test creates a fresh token directory and re-runs itself in a
//! child process (this test binary, filtered to that one test) with `SOFTHSM2_CONF` pointing at
//! it: every test gets its own token and its own module instance, and no test mutates the
//! environment of a running process. Without SoftHSM2 the tests fail; they never skip.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use keyfort_core::{CoreError, MasterKeyProtector};
use keyfort_hsm::{HsmConfig, HsmError, MASTER_KEY_LEN, Pkcs11Protector, WRAPPED_LEN};
use zeroize::Zeroizing;

const TOKEN_LABEL: &str = "keyfort";
const SO_PIN: &str = "1234";
/// Distinctive, so that a leak into a message cannot be missed or matched by accident.
const USER_PIN: &str = "5678-keyfort-user-pin";
const KEY_LABEL: &str = "keyfort-mk-wrap";

/// Set in the child process; names the token directory of the test.
const CHILD_DIR_ENV: &str = "KEYFORT_HSM_TEST_TOKEN_DIR";
/// Set in the child process; which run of a multi-process test this is (1, 2, …).
const CHILD_PHASE_ENV: &str = "KEYFORT_HSM_TEST_PHASE";

const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// What a test body sees, inside its child process.
struct Ctx {
    dir: PathBuf,
    module: PathBuf,
    phase: u32,
}

impl Ctx {
    fn config(&self, create_key_if_missing: bool) -> HsmConfig {
        HsmConfig {
            module: self.module.clone(),
            token_label: TOKEN_LABEL.into(),
            pin: Zeroizing::new(USER_PIN.into()),
            key_label: KEY_LABEL.into(),
            create_key_if_missing,
        }
    }
}

/// Defines a test whose body runs in a child process on a fresh SoftHSM2 token, once per
/// phase (the phases share the token).
macro_rules! softhsm_test {
    ($(#[doc = $doc:literal])* $name:ident, phases = $phases:literal, |$ctx:ident| $body:block) => {
        $(#[doc = $doc])*
        #[test]
        fn $name() {
            match std::env::var_os(CHILD_DIR_ENV) {
                Some(dir) => {
                    let $ctx = Ctx {
                        dir: PathBuf::from(dir),
                        module: softhsm_module(),
                        phase: std::env::var(CHILD_PHASE_ENV).unwrap().parse().unwrap(),
                    };
                    $body
                }
                None => run_on_fresh_token(stringify!($name), $phases),
            }
        }
    };
    ($(#[doc = $doc:literal])* $name:ident, |$ctx:ident| $body:block) => {
        softhsm_test!($(#[doc = $doc])* $name, phases = 1, |$ctx| $body);
    };
}

fn softhsm_module() -> PathBuf {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "SoftHSM2 PKCS#11 module not found (looked at {MODULE_CANDIDATES:?}); \
                 install the Debian package `softhsm2` (apt-get install -y softhsm2)"
            )
        })
}

/// Creates a token directory with a `softhsm2.conf` and an initialized token, then runs the
/// test `name` of this binary in a child process once per phase.
fn run_on_fresh_token(name: &str, phases: u32) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Fail early, and clearly, when the module is missing.
    softhsm_module();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN_LABEL])
        .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run softhsm2-util ({e}); install the Debian package `softhsm2` \
                 (apt-get install -y softhsm2)"
            )
        });
    assert!(
        init.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );

    for phase in 1..=phases {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("SOFTHSM2_CONF", &conf)
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_PHASE_ENV, phase.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{name} (phase {phase}) failed in its child process:\n{stdout}\n{stderr}"
        );
    }
}

/// The error, its sources and its `Debug`, for "says X, never says Y" assertions.
fn full_text(e: &HsmError) -> String {
    let mut text = format!("{e:?}\n{e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!("\n{s}"));
        source = s.source();
    }
    text
}

/// The `HsmError` inside the `CoreError::Hsm` that a protector call returned.
fn hsm(e: CoreError) -> HsmError {
    match e {
        CoreError::Hsm { what, source } => {
            let inner = *source.downcast::<HsmError>().unwrap();
            assert_eq!(what, inner.what());
            inner
        }
        other => panic!("expected CoreError::Hsm, got {other:?}"),
    }
}

fn random_master_key() -> Zeroizing<Vec<u8>> {
    keyfort_crypto::rng::random_bytes(MASTER_KEY_LEN).unwrap()
}

/// A logged-in session on the test token through cryptoki directly, not through the protector.
fn raw_session(ctx: &Ctx) -> Session {
    let pkcs11 = Pkcs11::new(&ctx.module).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == TOKEN_LABEL)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

fn raw_find_key(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

softhsm_test!(
    /// Creates the key when missing; wrap/unwrap round trip; a second `open` still unwraps.
    creates_key_and_round_trips,
    |ctx| {
        let protector = Pkcs11Protector::open(&ctx.config(true)).unwrap();
        assert_eq!(
            protector.describe(),
            "PKCS#11 token 'keyfort' key 'keyfort-mk-wrap'"
        );
        let debug = format!("{protector:?}");
        assert!(!debug.contains(USER_PIN), "{debug}");

        let master_key = random_master_key();
        let wrapped = protector.wrap("instance-1", &master_key).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(wrapped[0], 0x01);
        assert!(
            !wrapped.windows(8).any(|w| master_key.windows(8).any(|m| m == w)),
            "the master key shows through"
        );
        let again = protector.wrap("instance-1", &master_key).unwrap();
        assert_ne!(wrapped, again, "each wrap draws a fresh IV");

        assert_eq!(*protector.unwrap("instance-1", &wrapped).unwrap(), *master_key);
        assert_eq!(*protector.unwrap("instance-1", &again).unwrap(), *master_key);
        drop(protector);

        let reopened = Pkcs11Protector::open(&ctx.config(false)).unwrap();
        assert_eq!(*reopened.unwrap("instance-1", &wrapped).unwrap(), *master_key);
        // Exactly one key: the reopen found the key rather than making another.
        assert_eq!(raw_find_key(&raw_session(&ctx), KEY_LABEL).len(), 1);
    }
);

softhsm_test!(
    /// Wrong instance, any altered byte, a truncated blob, a wrong-length master key: errors.
    unwrap_rejects_other_instance_and_tampering,
    |ctx| {
        let protector = Pkcs11Protector::open(&ctx.config(true)).unwrap();
        let master_key = random_master_key();
        let wrapped = protector.wrap("instance-1", &master_key).unwrap();

        let e = hsm(protector.unwrap("instance-2", &wrapped).unwrap_err());
        assert!(matches!(e, HsmError::Rejected { .. }), "{e:?}");
        assert!(e.to_string().contains("instance-2"), "{e}");
        assert!(e.to_string().contains("'keyfort'"), "{e}");
        assert_eq!(e.what(), "wrapped master key rejected");

        let e = hsm(protector.unwrap("", &wrapped).unwrap_err());
        assert!(matches!(e, HsmError::Rejected { .. }), "{e:?}");

        // Version byte, first and last IV byte, ciphertext, first and last tag byte.
        for index in [0, 1, 12, 13, 30, 44, 45, WRAPPED_LEN - 1] {
            let mut tampered = wrapped.clone();
            tampered[index] ^= 0x01;
            let e = hsm(protector.unwrap("instance-1", &tampered).unwrap_err());
            if index == 0 {
                assert!(matches!(e, HsmError::MalformedWrappedKey { .. }), "{e:?}");
            } else {
                assert!(matches!(e, HsmError::Rejected { .. }), "byte {index}: {e:?}");
            }
        }
        for len in [0, 1, WRAPPED_LEN - 1] {
            let e = hsm(protector.unwrap("instance-1", &wrapped[..len]).unwrap_err());
            assert!(matches!(e, HsmError::MalformedWrappedKey { .. }), "{e:?}");
        }
        let mut longer = wrapped.clone();
        longer.push(0);
        assert!(matches!(
            hsm(protector.unwrap("instance-1", &longer).unwrap_err()),
            HsmError::MalformedWrappedKey { .. }
        ));

        for len in [0, 16, 31, 33, 64] {
            let e = hsm(protector.wrap("instance-1", &vec![7u8; len]).unwrap_err());
            assert!(matches!(e, HsmError::MasterKeyLength { .. }), "{e:?}");
        }

        // The protector is still usable after all those failures.
        assert_eq!(*protector.unwrap("instance-1", &wrapped).unwrap(), *master_key);
    }
);

softhsm_test!(
    /// A blob wrapped under one token key does not unwrap under another.
    unwrap_rejects_another_wrapping_key,
    |ctx| {
        let first = Pkcs11Protector::open(&ctx.config(true)).unwrap();
        let second = Pkcs11Protector::open(&HsmConfig {
            key_label: "keyfort-mk-wrap-2".into(),
            ..ctx.config(true)
        })
        .unwrap();
        let master_key = random_master_key();
        let wrapped = first.wrap("instance-1", &master_key).unwrap();
        let e = hsm(second.unwrap("instance-1", &wrapped).unwrap_err());
        assert!(matches!(e, HsmError::Rejected { .. }), "{e:?}");
        assert_eq!(*first.unwrap("instance-1", &wrapped).unwrap(), *master_key);
    }
);

softhsm_test!(
    /// The key persists on the token: another process, with a freshly initialized module,
    /// unwraps what the first one wrapped, without creating a key.
    key_persists_across_processes,
    phases = 2,
    |ctx| {
        let blob_path = ctx.dir.join("wrapped.bin");
        let key_path = ctx.dir.join("master-key.bin");
        match ctx.phase {
            1 => {
                let protector = Pkcs11Protector::open(&ctx.config(true)).unwrap();
                let master_key = random_master_key();
                let wrapped = protector.wrap("instance-p", &master_key).unwrap();
                std::fs::write(&blob_path, &wrapped).unwrap();
                std::fs::write(&key_path, &*master_key).unwrap();
            }
            2 => {
                let protector = Pkcs11Protector::open(&ctx.config(false)).unwrap();
                let wrapped = std::fs::read(&blob_path).unwrap();
                let master_key = std::fs::read(&key_path).unwrap();
                assert_eq!(*protector.unwrap("instance-p", &wrapped).unwrap(), master_key);
                assert!(protector.unwrap("instance-q", &wrapped).is_err());
            }
            phase => panic!("unexpected phase {phase}"),
        }
    }
);

softhsm_test!(
    /// A wrong PIN is a login error that names the token and never shows either PIN.
    wrong_pin_is_a_clear_error,
    |ctx| {
        let wrong_pin = "wrong-pin-31415926";
        let e = Pkcs11Protector::open(&HsmConfig {
            pin: Zeroizing::new(wrong_pin.into()),
            ..ctx.config(true)
        })
        .unwrap_err();
        assert!(matches!(e, HsmError::Login { .. }), "{e:?}");
        assert_eq!(e.to_string(), "cannot log in to PKCS#11 token 'keyfort' as user");
        assert_eq!(e.what(), "PKCS#11 login failed");
        let text = full_text(&e);
        assert!(text.contains("PinIncorrect") || text.contains("PIN is incorrect"), "{text}");
        assert!(!text.contains(wrong_pin), "{text}");
        assert!(!text.contains(USER_PIN), "{text}");
        // The right PIN still works (SoftHSM2 does not lock the PIN after one failure).
        Pkcs11Protector::open(&ctx.config(true)).unwrap();
    }
);

softhsm_test!(
    /// An unknown token label is a clear error naming the label.
    unknown_token_is_a_clear_error,
    |ctx| {
        let e = Pkcs11Protector::open(&HsmConfig {
            token_label: "no-such-token".into(),
            ..ctx.config(true)
        })
        .unwrap_err();
        assert!(matches!(e, HsmError::TokenNotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("no PKCS#11 token labelled 'no-such-token'"), "{e}");
        assert!(!full_text(&e).contains(USER_PIN));
    }
);

softhsm_test!(
    /// A missing module is a clear error naming the path.
    missing_module_is_a_clear_error,
    |ctx| {
        let e = Pkcs11Protector::open(&HsmConfig {
            module: ctx.dir.join("no-such-module.so"),
            ..ctx.config(true)
        })
        .unwrap_err();
        assert!(matches!(e, HsmError::ModuleMissing { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-module.so"), "{e}");
    }
);

softhsm_test!(
    /// With `create_key_if_missing = false`, a missing key is an error, and none is created.
    missing_key_without_create_is_a_clear_error,
    |ctx| {
        let e = Pkcs11Protector::open(&ctx.config(false)).unwrap_err();
        assert!(matches!(e, HsmError::KeyNotFound { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "no AES secret key labelled 'keyfort-mk-wrap' on PKCS#11 token 'keyfort', \
             and creating it is not allowed"
        );
        assert!(raw_find_key(&raw_session(&ctx), KEY_LABEL).is_empty());
    }
);

softhsm_test!(
    /// The generated key is a sensitive, non-extractable, private token object, as the token
    /// itself reports (C_GetAttributeValue through cryptoki, not through the protector).
    key_is_not_extractable,
    |ctx| {
        let protector = Pkcs11Protector::open(&ctx.config(true)).unwrap();
        let session = raw_session(&ctx);
        let keys = raw_find_key(&session, KEY_LABEL);
        assert_eq!(keys.len(), 1);
        let attributes = session
            .get_attributes(
                keys[0],
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        let expected = [
            Attribute::Extractable(false),
            Attribute::Sensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::AlwaysSensitive(true),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(Ulong::from(32)),
        ];
        for want in &expected {
            assert!(attributes.contains(want), "missing {want:?} in {attributes:?}");
        }
        assert!(
            !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
            "the token revealed CKA_VALUE: {attributes:?}"
        );

        let properties = protector.key_properties().unwrap();
        assert!(!properties.extractable && properties.sensitive && properties.token);
        assert_eq!(properties.value_len, 32);
    }
);

softhsm_test!(
    /// A pre-existing key that could leave the token is refused.
    extractable_key_is_refused,
    |ctx| {
        let session = raw_session(&ctx);
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Label(b"weak".to_vec()),
                    Attribute::ValueLen(Ulong::from(32)),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let e = Pkcs11Protector::open(&HsmConfig {
            key_label: "weak".into(),
            ..ctx.config(false)
        })
        .unwrap_err();
        assert!(matches!(e, HsmError::UnfitKey { .. }), "{e:?}");
        assert!(e.to_string().contains("extractable"), "{e}");
    }
);

softhsm_test!(
    /// One protector serves several threads.
    concurrent_use,
    |ctx| {
        let protector = std::sync::Arc::new(Pkcs11Protector::open(&ctx.config(true)).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let protector = protector.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let instance = format!("instance-{t}-{i}");
                        let master_key = random_master_key();
                        let wrapped = protector.wrap(&instance, &master_key).unwrap();
                        assert_eq!(*protector.unwrap(&instance, &wrapped).unwrap(), *master_key);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
);

softhsm_test!(
    /// When the token drops the login (here: another session of the process logs out, which
    /// logs out every session), the protector logs in again and carries on.
    recovers_after_logout,
    |ctx| {
        let protector = Pkcs11Protector::open(&ctx.config(true)).unwrap();
        let master_key = random_master_key();
        let wrapped = protector.wrap("instance-1", &master_key).unwrap();
        raw_session(&ctx).logout().unwrap();
        assert_eq!(*protector.unwrap("instance-1", &wrapped).unwrap(), *master_key);
        raw_session(&ctx).logout().unwrap();
        let again = protector.wrap("instance-1", &master_key).unwrap();
        assert_eq!(*protector.unwrap("instance-1", &again).unwrap(), *master_key);
    }
);
