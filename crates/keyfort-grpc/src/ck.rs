//! PKCS#11 constants the GREP11 door speaks: return values (`CKR_*`, with the EP11 and GREP11
//! vendor values), mechanisms (`CKM_*`), attributes (`CKA_*`), object classes and key types.
//! Values from PKCS#11 v3.2 and the EP11/GREP11 headers (grep11 spec §8, §10).

/// PKCS#11 return values (`CK_RV`).
pub mod rv {
    pub const CKR_GENERAL_ERROR: u64 = 0x05;
    pub const CKR_FUNCTION_FAILED: u64 = 0x06;
    pub const CKR_ARGUMENTS_BAD: u64 = 0x07;
    pub const CKR_ACTION_PROHIBITED: u64 = 0x1B;
    pub const CKR_ATTRIBUTE_READ_ONLY: u64 = 0x10;
    pub const CKR_ATTRIBUTE_TYPE_INVALID: u64 = 0x12;
    pub const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
    pub const CKR_DATA_INVALID: u64 = 0x20;
    pub const CKR_DATA_LEN_RANGE: u64 = 0x21;
    pub const CKR_DEVICE_ERROR: u64 = 0x30;
    pub const CKR_DEVICE_MEMORY: u64 = 0x31;
    pub const CKR_ENCRYPTED_DATA_INVALID: u64 = 0x40;
    pub const CKR_ENCRYPTED_DATA_LEN_RANGE: u64 = 0x41;
    pub const CKR_FUNCTION_NOT_SUPPORTED: u64 = 0x54;
    pub const CKR_KEY_HANDLE_INVALID: u64 = 0x60;
    pub const CKR_KEY_SIZE_RANGE: u64 = 0x62;
    pub const CKR_KEY_TYPE_INCONSISTENT: u64 = 0x63;
    pub const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
    pub const CKR_KEY_NOT_WRAPPABLE: u64 = 0x69;
    pub const CKR_KEY_UNEXTRACTABLE: u64 = 0x6A;
    pub const CKR_MECHANISM_INVALID: u64 = 0x70;
    pub const CKR_MECHANISM_PARAM_INVALID: u64 = 0x71;
    pub const CKR_OBJECT_HANDLE_INVALID: u64 = 0x82;
    pub const CKR_OPERATION_NOT_INITIALIZED: u64 = 0x91;
    pub const CKR_SIGNATURE_INVALID: u64 = 0xC0;
    pub const CKR_SIGNATURE_LEN_RANGE: u64 = 0xC1;
    pub const CKR_TEMPLATE_INCOMPLETE: u64 = 0xD0;
    pub const CKR_TEMPLATE_INCONSISTENT: u64 = 0xD1;
    pub const CKR_TOKEN_NOT_PRESENT: u64 = 0xE0;
    pub const CKR_USER_NOT_LOGGED_IN: u64 = 0x101;
    pub const CKR_WRAPPED_KEY_INVALID: u64 = 0x110;
    pub const CKR_WRAPPING_KEY_TYPE_INCONSISTENT: u64 = 0x115;
    pub const CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: u64 = 0xF2;
    pub const CKR_SAVED_STATE_INVALID: u64 = 0x160;
    /// The wrapping key (master key) of the blob is not this instance's.
    pub const CKR_IBM_WKID_MISMATCH: u64 = 0x8001_0001;
    pub const CKR_IBM_INTERNAL_ERROR: u64 = 0x8001_0002;
    pub const CKR_IBM_BLOB_ERROR: u64 = 0x8001_0004;
    /// No wrapping key is loaded: the instance is sealed, uninitialized or zeroized.
    pub const CKR_IBM_WK_NOT_INITIALIZED: u64 = 0x8001_0009;
    pub const CKR_IBM_GREP11_NOT_AUTHENTICATED: u64 = 0x8004_0001;
    pub const CKR_IBM_GREP11_CANNOT_UNMARSHAL: u64 = 0x8004_0002;
    pub const CKR_IBM_GREP11_CONFLICT: u64 = 0x8004_0004;

    /// The name of a return value, for the gRPC status message.
    pub fn name(rv: u64) -> &'static str {
        match rv {
            CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
            CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
            CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
            CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
            CKR_ATTRIBUTE_READ_ONLY => "CKR_ATTRIBUTE_READ_ONLY",
            CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
            CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
            CKR_DATA_INVALID => "CKR_DATA_INVALID",
            CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
            CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
            CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
            CKR_ENCRYPTED_DATA_INVALID => "CKR_ENCRYPTED_DATA_INVALID",
            CKR_ENCRYPTED_DATA_LEN_RANGE => "CKR_ENCRYPTED_DATA_LEN_RANGE",
            CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
            CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
            CKR_KEY_SIZE_RANGE => "CKR_KEY_SIZE_RANGE",
            CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
            CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
            CKR_KEY_NOT_WRAPPABLE => "CKR_KEY_NOT_WRAPPABLE",
            CKR_KEY_UNEXTRACTABLE => "CKR_KEY_UNEXTRACTABLE",
            CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
            CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
            CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
            CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
            CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
            CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
            CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
            CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
            CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
            CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
            CKR_WRAPPED_KEY_INVALID => "CKR_WRAPPED_KEY_INVALID",
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT => "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
            CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT => "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
            CKR_SAVED_STATE_INVALID => "CKR_SAVED_STATE_INVALID",
            CKR_IBM_WKID_MISMATCH => "CKR_IBM_WKID_MISMATCH",
            CKR_IBM_INTERNAL_ERROR => "CKR_IBM_INTERNAL_ERROR",
            CKR_IBM_BLOB_ERROR => "CKR_IBM_BLOB_ERROR",
            CKR_IBM_WK_NOT_INITIALIZED => "CKR_IBM_WK_NOT_INITIALIZED",
            CKR_IBM_GREP11_NOT_AUTHENTICATED => "CKR_IBM_GREP11_NOT_AUTHENTICATED",
            CKR_IBM_GREP11_CANNOT_UNMARSHAL => "CKR_IBM_GREP11_CANNOT_UNMARSHAL",
            CKR_IBM_GREP11_CONFLICT => "CKR_IBM_GREP11_CONFLICT",
            _ => "CKR_VENDOR_DEFINED",
        }
    }
}

/// Mechanisms (`CK_MECHANISM_TYPE`).
pub mod mech {
    pub const RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
    pub const RSA_PKCS: u64 = 0x1;
    pub const RSA_PKCS_OAEP: u64 = 0x9;
    pub const RSA_PKCS_PSS: u64 = 0xD;
    pub const ML_KEM_KEY_PAIR_GEN: u64 = 0xF;
    pub const ML_KEM: u64 = 0x17;
    pub const ML_DSA_KEY_PAIR_GEN: u64 = 0x1C;
    pub const ML_DSA: u64 = 0x1D;
    pub const SHA256_RSA_PKCS: u64 = 0x40;
    pub const SHA384_RSA_PKCS: u64 = 0x41;
    pub const SHA512_RSA_PKCS: u64 = 0x42;
    pub const SHA256_RSA_PKCS_PSS: u64 = 0x43;
    pub const SHA384_RSA_PKCS_PSS: u64 = 0x44;
    pub const SHA512_RSA_PKCS_PSS: u64 = 0x45;
    pub const SHA256: u64 = 0x250;
    pub const SHA256_HMAC: u64 = 0x251;
    pub const SHA224: u64 = 0x255;
    pub const SHA384: u64 = 0x260;
    pub const SHA384_HMAC: u64 = 0x261;
    pub const SHA512: u64 = 0x270;
    pub const SHA512_HMAC: u64 = 0x271;
    pub const SHA3_256: u64 = 0x2B0;
    pub const SHA3_224: u64 = 0x2B5;
    pub const SHA3_384: u64 = 0x2C0;
    pub const SHA3_512: u64 = 0x2D0;
    pub const GENERIC_SECRET_KEY_GEN: u64 = 0x350;
    pub const EC_KEY_PAIR_GEN: u64 = 0x1040;
    pub const ECDSA: u64 = 0x1041;
    pub const ECDSA_SHA256: u64 = 0x1044;
    pub const ECDSA_SHA384: u64 = 0x1045;
    pub const ECDSA_SHA512: u64 = 0x1046;
    pub const ECDH1_DERIVE: u64 = 0x1050;
    pub const EC_EDWARDS_KEY_PAIR_GEN: u64 = 0x1055;
    pub const EDDSA: u64 = 0x1057;
    pub const AES_KEY_GEN: u64 = 0x1080;
    pub const AES_ECB: u64 = 0x1081;
    pub const AES_CBC: u64 = 0x1082;
    pub const AES_CBC_PAD: u64 = 0x1085;
    pub const AES_CTR: u64 = 0x1086;
    pub const AES_GCM: u64 = 0x1087;
    pub const AES_KEY_WRAP: u64 = 0x2109;
    pub const AES_KEY_WRAP_KWP: u64 = 0x210B;
    pub const IBM_SHA3_224: u64 = 0x8001_0001;
    pub const IBM_SHA3_256: u64 = 0x8001_0002;
    pub const IBM_SHA3_384: u64 = 0x8001_0003;
    pub const IBM_SHA3_512: u64 = 0x8001_0004;
    pub const IBM_ECDSA_SHA256: u64 = 0x8001_0009;
    pub const IBM_ECDSA_SHA384: u64 = 0x8001_000A;
    pub const IBM_ECDSA_SHA512: u64 = 0x8001_000B;
    pub const IBM_ED25519_SHA512: u64 = 0x8001_001C;
    pub const IBM_TRANSPORTKEY: u64 = 0x8002_0005;
}

/// Attributes (`CK_ATTRIBUTE_TYPE`).
pub mod attr {
    pub const CLASS: u64 = 0x0;
    pub const TOKEN: u64 = 0x1;
    pub const PRIVATE: u64 = 0x2;
    pub const LABEL: u64 = 0x3;
    pub const VALUE: u64 = 0x11;
    pub const CHECK_VALUE: u64 = 0x90;
    pub const TRUSTED: u64 = 0x86;
    pub const KEY_TYPE: u64 = 0x100;
    pub const ID: u64 = 0x102;
    pub const SENSITIVE: u64 = 0x103;
    pub const ENCRYPT: u64 = 0x104;
    pub const DECRYPT: u64 = 0x105;
    pub const WRAP: u64 = 0x106;
    pub const UNWRAP: u64 = 0x107;
    pub const SIGN: u64 = 0x108;
    pub const VERIFY: u64 = 0x10A;
    pub const DERIVE: u64 = 0x10C;
    pub const MODULUS: u64 = 0x120;
    pub const MODULUS_BITS: u64 = 0x121;
    pub const PUBLIC_EXPONENT: u64 = 0x122;
    pub const PRIVATE_EXPONENT: u64 = 0x123;
    pub const PRIME_1: u64 = 0x124;
    pub const PRIME_2: u64 = 0x125;
    pub const EXPONENT_1: u64 = 0x126;
    pub const EXPONENT_2: u64 = 0x127;
    pub const COEFFICIENT: u64 = 0x128;
    pub const VALUE_LEN: u64 = 0x161;
    pub const EXTRACTABLE: u64 = 0x162;
    pub const LOCAL: u64 = 0x163;
    pub const NEVER_EXTRACTABLE: u64 = 0x164;
    pub const ALWAYS_SENSITIVE: u64 = 0x165;
    pub const KEY_GEN_MECHANISM: u64 = 0x166;
    pub const MODIFIABLE: u64 = 0x170;
    pub const EC_PARAMS: u64 = 0x180;
    pub const EC_POINT: u64 = 0x181;
    pub const WRAP_WITH_TRUSTED: u64 = 0x210;
    pub const WRAP_TEMPLATE: u64 = 0x4000_0211;
    pub const UNWRAP_TEMPLATE: u64 = 0x4000_0212;
    pub const DERIVE_TEMPLATE: u64 = 0x4000_0213;
    pub const ALLOWED_MECHANISMS: u64 = 0x4000_0600;
    pub const PARAMETER_SET: u64 = 0x61D;
    pub const ENCAPSULATE: u64 = 0x633;
    pub const DECAPSULATE: u64 = 0x634;
    pub const IBM_PQC_PARAMS: u64 = 0x8001_000E;
}

/// Object classes (`CKO_*`) and key types (`CKK_*`).
pub mod obj {
    pub const CKO_PUBLIC_KEY: i64 = 2;
    pub const CKO_PRIVATE_KEY: i64 = 3;
    pub const CKO_SECRET_KEY: i64 = 4;
    pub const CKK_RSA: i64 = 0x0;
    pub const CKK_EC: i64 = 0x3;
    pub const CKK_GENERIC_SECRET: i64 = 0x10;
    pub const CKK_AES: i64 = 0x1F;
    pub const CKK_EC_EDWARDS: i64 = 0x40;
    pub const CKK_ML_KEM: i64 = 0x49;
    pub const CKK_ML_DSA: i64 = 0x4A;
    pub const CKP_ML_DSA_44: i64 = 1;
    pub const CKP_ML_DSA_65: i64 = 2;
    pub const CKP_ML_DSA_87: i64 = 3;
    pub const CKP_ML_KEM_768: i64 = 2;
    pub const CKP_ML_KEM_1024: i64 = 3;
}

/// Mechanism flags (`CKF_*` of `CK_MECHANISM_INFO`).
pub mod flag {
    pub const HW: u64 = 0x1;
    pub const ENCRYPT: u64 = 0x100;
    pub const DECRYPT: u64 = 0x200;
    pub const DIGEST: u64 = 0x400;
    pub const SIGN: u64 = 0x800;
    pub const VERIFY: u64 = 0x2000;
    pub const GENERATE: u64 = 0x8000;
    pub const GENERATE_KEY_PAIR: u64 = 0x10000;
    pub const WRAP: u64 = 0x20000;
    pub const UNWRAP: u64 = 0x40000;
    pub const DERIVE: u64 = 0x80000;
    pub const EC_F_P: u64 = 0x10_0000;
    pub const EC_NAMEDCURVE: u64 = 0x80_0000;
    pub const EC_UNCOMPRESS: u64 = 0x100_0000;
}
