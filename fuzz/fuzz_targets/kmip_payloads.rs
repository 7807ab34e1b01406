//! KMIP request payloads come from any registered client. After TTLV decoding (`ttlv_decode`)
//! our code reads them into typed values: templates and attributes in the 1.x and 2.x
//! encodings, Attribute References, Locate filters, Register's objects (Key Blocks, Key Values),
//! Key Wrapping Specifications, Cryptographic Parameters, Discover Versions, batch items. Each
//! reader runs on the decoded item, on every structure inside it and on every batch item's
//! payload; none may panic. What they accept must also come back: an attribute re-read from its
//! response encoding is the same attribute, client attributes kept with a key are read back
//! unchanged, Attribute References and offered versions re-read as themselves.
#![no_main]

use keyfort_core::{Key, KeyState};
use keyfort_kmip::attributes::{self, Attr, MAX_VALUES};
use keyfort_kmip::message::{ProtocolVersion, RequestMessage, SUPPORTED_VERSIONS, Struct};
use keyfort_kmip::ops::{attributes as attribute_ops, create, crypto, discover, get, locate, undo};
use keyfort_kmip::ttlv::{self, Item, Limits, Tag, Value};
use keyfort_kmip::{BlockCipherMode, ObjectType, WrappingMethod};
use libfuzzer_sys::fuzz_target;

/// How deep structures are visited as payloads of their own.
const MAX_VISIT_DEPTH: usize = 6;

const TEMPLATES: [(Tag, Tag); 4] = [
    (Tag::TEMPLATE_ATTRIBUTE, Tag::ATTRIBUTES),
    (Tag::COMMON_TEMPLATE_ATTRIBUTE, Tag::COMMON_ATTRIBUTES),
    (
        Tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
        Tag::PRIVATE_KEY_ATTRIBUTES,
    ),
    (
        Tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
        Tag::PUBLIC_KEY_ATTRIBUTES,
    ),
];

/// A stored key of `algorithm` with the given KMIP attribute map.
fn key(algorithm: &str, attributes: serde_json::Map<String, serde_json::Value>) -> Key {
    Key {
        instance_id: "i".into(),
        id: "k".into(),
        key_ring_id: "default".into(),
        name: "k".into(),
        description: None,
        tags: Vec::new(),
        aliases: Vec::new(),
        object_type: "symmetric_key".into(),
        algorithm: algorithm.into(),
        bit_length: 256,
        extractable: true,
        imported: false,
        state: KeyState::Active,
        created_at: 1_700_000_000_000,
        created_by: "c".into(),
        updated_at: 1_700_000_000_000,
        activation_at: None,
        expires_at: None,
        deactivated_at: None,
        deleted_at: None,
        deleted_by: None,
        last_rotated_at: None,
        current_version_id: "v".into(),
        attributes,
        row_version: 1,
    }
}

/// One attribute in the 1.x and 2.x encodings, and as an Attribute Reference.
fn attribute(item: &Item) {
    if let Ok(a) = attributes::read_attribute(item) {
        let encoded = attributes::encode_attrs(std::slice::from_ref(&a), false);
        let [again] = encoded.as_slice() else {
            panic!("one attribute encodes as one item");
        };
        let again = attributes::read_attribute(again).expect("1.x attribute round trip");
        assert_eq!(again.name, a.name);
        assert_eq!(again.value, a.value);
        assert_eq!(again.index, a.index.filter(|i| *i > 0));
    }
    if let Ok(a) = attributes::from_v2_item(item) {
        // Only a 1.x Attribute structure carries an Attribute Index.
        assert!(a.index.is_none() || item.tag == Tag::ATTRIBUTE);
        // A tagged attribute or a Vendor Attribute has a canonical name: its 2.x encoding reads
        // back as the same attribute.
        let canonical = item.tag != Tag::ATTRIBUTE || attributes::vendor_parts(&a.name).is_some();
        if canonical {
            let encoded = attributes::encode_attrs(std::slice::from_ref(&a), true);
            if let [again] = encoded.as_slice() {
                let again = attributes::from_v2_item(again).expect("2.x attribute round trip");
                assert_eq!(again, Attr { index: None, ..a });
            }
        }
    }
    if let Ok(name) = attributes::reference_name(item) {
        if let Some(r) = attributes::reference_item(&name) {
            if let Ok(n2) = attributes::reference_name(&r) {
                let r2 = attributes::reference_item(&n2).expect("a read name has a reference");
                assert_eq!(attributes::reference_name(&r2).as_ref(), Ok(&n2));
            }
        }
    }
}

/// A template's attributes: the create readers, the stored form, Locate matching.
fn template(attrs: &[Attr]) {
    assert!(attrs.len() <= MAX_VALUES);
    let _ = (
        create::algorithm(attrs),
        create::length(attrs),
        create::curve(attrs),
    );
    let _ = attributes::first_name(attrs);
    let _ = locate::matches(&key("AES", serde_json::Map::new()), attrs);
    let Ok(map) = attributes::initial(attrs, &create::DESCRIBES) else {
        return;
    };
    let k = key("AES", map);
    for (name, values) in attributes::stored(&k) {
        let given: Vec<&Value> = attrs
            .iter()
            .filter(|a| a.name == name)
            .map(|a| &a.value)
            .collect();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            given,
            "{name} kept unchanged"
        );
    }
    let _ = locate::matches(&k, attrs);
}

/// One attribute a client adds, modifies or sets: kept and read back unchanged.
fn edited(a: &Attr) {
    let _ = attribute_ops::multi_valued(&a.name);
    if attribute_ops::check_settable(&a.name).is_err() {
        return;
    }
    let mut k = key("AES", serde_json::Map::new());
    if attributes::set_stored(&mut k, &a.name, std::slice::from_ref(&a.value)).is_ok() {
        assert_eq!(
            attributes::stored_values(&k, &a.name),
            vec![a.value.clone()]
        );
    }
}

/// Every reader of a request payload.
fn payload(item: &Item, version: ProtocolVersion) {
    for c in match &item.value {
        Value::Structure(items) => items.as_slice(),
        _ => &[],
    } {
        attribute(c);
        let _ = ProtocolVersion::from_item(c);
    }
    let Ok(p) = Struct::of(item) else {
        return;
    };
    for c in p.items {
        let _ = (
            p.opt_integer(c.tag),
            p.opt_enumeration(c.tag),
            p.opt_text(c.tag),
        );
        let _ = (p.opt_bytes(c.tag), p.opt_bool(c.tag), p.child(c.tag));
    }
    for (v1, v2) in TEMPLATES {
        if let Ok(attrs) = attributes::read_template(&p, v1, v2) {
            template(&attrs);
        }
    }
    // Locate's filters.
    let wanted: Result<Vec<Attr>, _> = p
        .all(Tag::ATTRIBUTE)
        .map(attributes::read_attribute)
        .collect();
    if let Ok(wanted) = wanted {
        let _ = locate::matches(&key("RSA", serde_json::Map::new()), &wanted);
    }
    // Get Attributes / Add, Modify, Delete, Set Attribute.
    if let Ok(names) = attribute_ops::requested_names(&p) {
        for n in names {
            let _ = attributes::reference_item(&n);
        }
    }
    for tag in [Tag::NEW_ATTRIBUTE, Tag::CURRENT_ATTRIBUTE] {
        if let Ok(Some(a)) = attribute_ops::payload_attr(&p, tag) {
            edited(&a);
        }
    }
    // Register / Import objects.
    let _ = create::object_type(&p);
    // Every type the server stores, and one it does not.
    for t in discover::OBJECT_TYPES
        .into_iter()
        .chain([ObjectType(0xFFFF)])
    {
        if let Ok(o) = get::read_object(&p, t, version) {
            if matches!(t, ObjectType::SYMMETRIC_KEY | ObjectType::SECRET_DATA) && o.bits.is_none()
            {
                panic!("a symmetric object always has a length");
            }
        }
    }
    // Get's Key Wrapping Specification.
    if let Ok(Some(spec)) = p.child(Tag::KEY_WRAPPING_SPECIFICATION) {
        if let Ok(w) = get::wrapping_spec(&spec) {
            assert_eq!(w.method, WrappingMethod::ENCRYPT);
            assert_eq!(
                w.padded,
                w.mode == Some(BlockCipherMode::AES_KEY_WRAP_PADDING)
            );
        }
    }
    // Encrypt, Decrypt, Sign, Signature Verify, MAC.
    let _ = crypto::single_part(&p);
    if let Ok(params) = crypto::params(&p) {
        let _ = (
            crypto::cipher(false, &params),
            crypto::cipher(true, &params),
        );
        for alg in ["RSA", "EC", "AES", "HMAC-SHA256", "HMAC-SHA1"] {
            let k = key(alg, serde_json::Map::new());
            let _ = (crypto::scheme(&k, &params), crypto::hmac(&k, &params));
        }
    }
    // Discover Versions: what it answers reads back as supported versions.
    if let Ok(items) = discover::discover_versions(&p) {
        for i in items {
            let v = ProtocolVersion::from_item(&i).expect("answered version reads back");
            assert!(SUPPORTED_VERSIONS.contains(&v));
        }
    }
}

fn visit(item: &Item, version: ProtocolVersion, depth: usize) {
    payload(item, version);
    if depth < MAX_VISIT_DEPTH {
        if let Value::Structure(children) = &item.value {
            for c in children {
                visit(c, version, depth + 1);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let Ok(item) = ttlv::decode(bytes, &Limits::default()) else {
        return;
    };
    let version = SUPPORTED_VERSIONS[usize::from(selector) % SUPPORTED_VERSIONS.len()];
    if let Ok(message) = RequestMessage::from_item(&item) {
        for b in &message.items {
            let _ = undo::undoable(b.operation, &b.payload);
            payload(&b.payload, message.header.version);
        }
    }
    visit(&item, version, 0);
});
