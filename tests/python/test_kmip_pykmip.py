"""PyKMIP's own client (`PyKMIP==0.11.0`, `kmip.pie.client.ProxyKmipClient`, KMIP 1.2) drives
Keyfort's KMIP door over mutual TLS with the dev client certificate, as a new user would:
create, register, get, get attributes, locate, activate, encrypt / decrypt, sign / verify, MAC,
revoke, destroy. Keys made over KMIP are keys of the dev instance: they show in the admin
listing and in the audit trail. A client whose certificate the server does not know is refused
by the TLS handshake. Also: the Transparent RSA/EC key formats checked against `cryptography`,
and a 1.x custom attribute deleted over KMIP 2.0 by its Vendor Attribute Reference.
"""

import datetime
import json
import ssl
import socket
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding as asym_padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kmip.core import attributes as core_attributes
from kmip.core import enums
from kmip.core import exceptions as core_exceptions
from kmip.core import objects as cobjects
from kmip.core.messages import contents, messages, payloads
from kmip.core.factories import attributes as attribute_factory
from kmip.pie import client as kmip_client
from kmip.pie import exceptions as kmip_exceptions
from kmip.pie import objects

ATTRS = attribute_factory.AttributeFactory()


def write_config(path, info, cert, key):
    host, port = info["kmip_addr"].rsplit(":", 1)
    path.write_text(
        "[client]\n"
        f"host={host}\nport={port}\n"
        f"certfile={cert}\nkeyfile={key}\nca_certs={info['ca_cert']}\n"
        "cert_reqs=CERT_REQUIRED\nssl_version=PROTOCOL_SSLv23\n"
        "do_handshake_on_connect=True\nsuppress_ragged_eofs=True\n"
    )
    return path


@pytest.fixture
def kmip(dev_server, tmp_path):
    config = write_config(tmp_path / "pykmip.conf", dev_server, dev_server["client_cert"], dev_server["client_key"])
    c = kmip_client.ProxyKmipClient(config="client", config_file=str(config))
    c.open()
    try:
        yield c
    finally:
        c.close()


class Admin:
    """The admin API as the dev administrator (for the same-core checks)."""

    def __init__(self, info):
        self.base = f"https://{info['http_addr']}"
        self.ctx = ssl.create_default_context(cafile=info["ca_cert"])
        self.instance = info["instance_id"]
        body = f"grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey={info['api_key']}".encode()
        token = self._call("POST", "/identity/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
        self.token = token["access_token"]

    def _call(self, method, path, body=None, headers=None):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req, context=self.ctx) as resp:
            return json.loads(resp.read())

    def get(self, path):
        return self._call("GET", path, headers={"Authorization": f"Bearer {self.token}"})


def state_of(kmip, uid):
    _, attrs = kmip.get_attributes(uid, ["State"])
    assert len(attrs) == 1
    return attrs[0].attribute_value.value


def test_symmetric_key_life(kmip, dev_server):
    mask = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]
    uid = kmip.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-aes", cryptographic_usage_mask=mask)
    assert state_of(kmip, uid) == enums.State.PRE_ACTIVE

    uid_back, attrs = kmip.get_attributes(uid, ["Name", "Cryptographic Usage Mask", "Cryptographic Algorithm", "Cryptographic Length"])
    assert uid_back == uid
    by_name = {a.attribute_name.value: a.attribute_value for a in attrs}
    assert by_name["Name"].name_value.value == "pykmip-aes"
    assert by_name["Cryptographic Usage Mask"].value == 12
    assert by_name["Cryptographic Algorithm"].value == enums.CryptographicAlgorithm.AES
    assert by_name["Cryptographic Length"].value == 256
    names = kmip.get_attribute_list(uid)
    assert "State" in names and "Unique Identifier" in names and "Name" in names

    key = kmip.get(uid)
    assert isinstance(key, objects.SymmetricKey)
    assert key.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
    assert key.cryptographic_length == 256 and len(key.value) == 32

    # Pre-active keys do not encrypt; activation allows it.
    cbc = {
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "block_cipher_mode": enums.BlockCipherMode.CBC,
        "padding_method": enums.PaddingMethod.PKCS5,
    }
    with pytest.raises(kmip_exceptions.KmipOperationFailure):
        kmip.encrypt(b"too early", uid=uid, cryptographic_parameters=cbc)
    kmip.activate(uid)
    assert state_of(kmip, uid) == enums.State.ACTIVE

    plaintext = b"attack at dawn, from the KMIP door"
    ciphertext, iv = kmip.encrypt(plaintext, uid=uid, cryptographic_parameters=cbc)
    assert ciphertext != plaintext and len(iv) == 16
    assert kmip.decrypt(ciphertext, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv) == plaintext
    # The key material from Get is the key the server encrypted with (checked independently).
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    dec = Cipher(algorithms.AES(key.value), modes.CBC(iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    assert unpadder.update(dec.update(ciphertext) + dec.finalize()) + unpadder.finalize() == plaintext
    # A client-chosen IV is used as given.
    iv2 = bytes(range(16))
    ct2, returned_iv = kmip.encrypt(plaintext, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv2)
    assert returned_iv is None
    assert kmip.decrypt(ct2, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv2) == plaintext

    # Locate by name, by state, with maximum items and offset.
    located = kmip.locate(attributes=[ATTRS.create_attribute(enums.AttributeType.NAME, "pykmip-aes")])
    assert uid in located
    active = kmip.locate(attributes=[ATTRS.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE)])
    assert uid in active
    everything = kmip.locate()
    assert uid in everything
    assert len(kmip.locate(maximum_items=1)) == 1
    if len(everything) > 1:
        assert kmip.locate(maximum_items=1, offset_items=1) == everything[1:2]

    # Same core: the admin listing shows the key, its audit trail holds the KMIP operations.
    admin = Admin(dev_server)
    listed = admin.get(f"/api/keyfort/v1/instances/{admin.instance}/keys/{uid}")
    assert listed["id"] == uid and listed["name"] == "pykmip-aes"
    events = admin.get(f"/api/keyfort/v1/instances/{admin.instance}/audit?limit=1000")["events"]
    actions = {e["action"] for e in events if e["target"] == uid}
    assert {"key.create", "key.activate", "key.material.read", "key.encrypt", "key.decrypt"} <= actions

    # Revoke, then destroy: the object stays, destroyed.
    kmip.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    assert state_of(kmip, uid) == enums.State.DEACTIVATED
    kmip.destroy(uid)
    assert state_of(kmip, uid) == enums.State.DESTROYED
    with pytest.raises(kmip_exceptions.KmipOperationFailure):
        kmip.get(uid)


def test_register_every_object_type(kmip):
    material = bytes(range(32))
    sym = kmip.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material, name="registered-aes"))
    got = kmip.get(sym)
    assert got.value == material and got.cryptographic_length == 256

    secret = kmip.register(objects.SecretData(b"s3cr3t-password", enums.SecretDataType.PASSWORD))
    assert kmip.get(secret).value == b"s3cr3t-password"

    opaque = kmip.register(objects.OpaqueObject(b"\x00opaque\xff", enums.OpaqueDataType.NONE))
    assert kmip.get(opaque).value == b"\x00opaque\xff"

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    priv_uid = kmip.register(objects.PrivateKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs8, enums.KeyFormatType.PKCS_8))
    assert kmip.get(priv_uid).value == pkcs8
    pkcs1_public = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    pub_uid = kmip.register(objects.PublicKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs1_public, enums.KeyFormatType.PKCS_1))
    assert kmip.get(pub_uid).value == pkcs1_public
    spki = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kmip.get(pub_uid, key_wrapping_specification=None).value == pkcs1_public
    assert spki  # X.509 format is covered by the Rust tests

    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registered cert")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    cert_uid = kmip.register(objects.X509Certificate(der))
    got = kmip.get(cert_uid)
    assert isinstance(got, objects.X509Certificate) and got.value == der

    # A registered key works for crypto with the registered material (AES-GCM, checked locally).
    kmip.activate(sym)
    gcm = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES, "block_cipher_mode": enums.BlockCipherMode.GCM}
    nonce = bytes(12)
    ct, _ = kmip.encrypt(b"gcm data", uid=sym, cryptographic_parameters=gcm, iv_counter_nonce=nonce)
    # KMIP 1.2 has no Authenticated Encryption Tag field: the tag follows the ciphertext.
    assert ct == AESGCM(material).encrypt(nonce, b"gcm data", None)
    assert kmip.decrypt(ct, uid=sym, cryptographic_parameters=gcm, iv_counter_nonce=nonce) == b"gcm data"
    with pytest.raises(kmip_exceptions.KmipOperationFailure):
        kmip.decrypt(ct[:-1] + bytes([ct[-1] ^ 1]), uid=sym, cryptographic_parameters=gcm, iv_counter_nonce=nonce)


@pytest.mark.parametrize(
    "algorithm,length,params",
    [
        (enums.CryptographicAlgorithm.RSA, 2048,
         {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA, "padding_method": enums.PaddingMethod.PSS,
          "hashing_algorithm": enums.HashingAlgorithm.SHA_256}),
        (enums.CryptographicAlgorithm.RSA, 2048,
         {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA, "padding_method": enums.PaddingMethod.PKCS1v15,
          "hashing_algorithm": enums.HashingAlgorithm.SHA_256}),
        (enums.CryptographicAlgorithm.EC, 256,
         {"cryptographic_algorithm": enums.CryptographicAlgorithm.EC, "hashing_algorithm": enums.HashingAlgorithm.SHA_256}),
    ],
)
def test_key_pair_sign_and_verify(kmip, algorithm, length, params):
    public_uid, private_uid = kmip.create_key_pair(algorithm, length)
    kmip.activate(private_uid)
    kmip.activate(public_uid)
    data = b"a message to sign over KMIP"
    signature = kmip.sign(data, uid=private_uid, cryptographic_parameters=params)
    assert kmip.signature_verify(data, signature, uid=public_uid, cryptographic_parameters=params) == enums.ValidityIndicator.VALID
    assert kmip.signature_verify(data + b"!", signature, uid=public_uid, cryptographic_parameters=params) == enums.ValidityIndicator.INVALID
    # Checked independently with the public key from Get.
    public = kmip.get(public_uid)
    if algorithm == enums.CryptographicAlgorithm.RSA:
        key = serialization.load_der_public_key(public.value) if public.key_format_type == enums.KeyFormatType.X_509 \
            else serialization.load_der_public_key(_pkcs1_to_spki(public.value))
        pad = asym_padding.PSS(asym_padding.MGF1(hashes.SHA256()), asym_padding.PSS.MAX_LENGTH) \
            if params["padding_method"] == enums.PaddingMethod.PSS else asym_padding.PKCS1v15()
        key.verify(signature, data, pad, hashes.SHA256())
    else:
        key = serialization.load_der_public_key(public.value)
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    # The halves are linked (PyKMIP 0.11 cannot decode Link values; their presence is listed).
    assert "Link" in kmip.get_attribute_list(private_uid)
    assert "Link" in kmip.get_attribute_list(public_uid)


def _pkcs1_to_spki(pkcs1):
    key = serialization.load_der_public_key(
        b"\x30" + _der_len(len(_RSA_ALG) + len(_bitstring(pkcs1))) + _RSA_ALG + _bitstring(pkcs1)
    )
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_RSA_ALG = bytes.fromhex("300d06092a864886f70d0101010500")


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _bitstring(data):
    return b"\x03" + _der_len(len(data) + 1) + b"\x00" + data


def test_mac(kmip):
    import hmac
    import hashlib
    uid = kmip.create(enums.CryptographicAlgorithm.HMAC_SHA256, 256)
    kmip.activate(uid)
    _, mac = kmip.mac(b"mac me", uid=uid, algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
    key = kmip.get(uid).value
    assert mac == hmac.new(key, b"mac me", hashlib.sha256).digest()


def _ttlv_children(data):
    """The (tag, type, value bytes) of the TTLV items in `data` (KMIP 1.4 §9.1)."""
    out, i = [], 0
    while i < len(data):
        tag, typ = int.from_bytes(data[i:i + 3], "big"), data[i + 3]
        length = int.from_bytes(data[i + 4:i + 8], "big")
        out.append((tag, typ, bytes(data[i + 8:i + 8 + length])))
        i += 8 + (length + 7) // 8 * 8
    return out


def _find(data, path):
    """The value bytes of the item at a path of tags in TTLV `data`."""
    for tag in path:
        data = next(v for t, _, v in _ttlv_children(data) if t == tag.value)
    return data


def _transparent(kmip, uid, key_format_type):
    """Get in a Transparent format over PyKMIP's connection: the key material's items by tag
    (Big Integers as ints, others as bytes). PyKMIP 0.11 sends the request but cannot decode
    structured key material, so the response's TTLV is read here."""
    proxy = kmip.proxy
    item = messages.RequestBatchItem(
        operation=contents.Operation(enums.Operation.GET),
        request_payload=payloads.GetRequestPayload(unique_identifier=uid, key_format_type=key_format_type),
    )
    proxy._send_message(proxy._build_request_message(None, [item]))
    response = proxy._receive_message().buffer
    T = enums.Tags
    batch = _find(response, [T.RESPONSE_MESSAGE, T.BATCH_ITEM])
    status = _find(batch, [T.RESULT_STATUS])
    assert int.from_bytes(status[:4], "big") == enums.ResultStatus.SUCCESS.value, batch
    payload = _find(batch, [T.RESPONSE_PAYLOAD])
    kinds = {t for t, _, _ in _ttlv_children(payload)}
    obj = T.PRIVATE_KEY if T.PRIVATE_KEY.value in kinds else T.PUBLIC_KEY
    block = _find(payload, [obj, T.KEY_BLOCK])
    assert int.from_bytes(_find(block, [T.KEY_FORMAT_TYPE])[:4], "big") == key_format_type.value
    items = {}
    for tag, typ, value in _ttlv_children(_find(block, [T.KEY_VALUE, T.KEY_MATERIAL])):
        items[tag] = int.from_bytes(value, "big", signed=True) if typ == 0x04 else value
    return items


def test_transparent_key_formats_match_cryptography(kmip):
    # RSA: every component of the Transparent RSA Private Key is the PKCS #8 key's.
    public_uid, private_uid = kmip.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048)
    key = serialization.load_der_private_key(kmip.get(private_uid).value, password=None)
    numbers = key.private_numbers()
    t = _transparent(kmip, private_uid, enums.KeyFormatType.TRANSPARENT_RSA_PRIVATE_KEY)
    assert t[enums.Tags.MODULUS.value] == numbers.public_numbers.n
    assert t[enums.Tags.PUBLIC_EXPONENT.value] == numbers.public_numbers.e == 65537
    assert t[enums.Tags.PRIVATE_EXPONENT.value] == numbers.d
    assert t[enums.Tags.P.value] == numbers.p
    assert t[enums.Tags.Q.value] == numbers.q
    assert t[enums.Tags.PRIME_EXPONENT_P.value] == numbers.dmp1
    assert t[enums.Tags.PRIME_EXPONENT_Q.value] == numbers.dmq1
    assert t[enums.Tags.CRT_COEFFICIENT.value] == numbers.iqmp
    t = _transparent(kmip, public_uid, enums.KeyFormatType.TRANSPARENT_RSA_PUBLIC_KEY)
    assert (t[enums.Tags.MODULUS.value], t[enums.Tags.PUBLIC_EXPONENT.value]) == (numbers.public_numbers.n, 65537)

    # EC P-256: D is the private value and the Q String the uncompressed public point; KMIP 1.2
    # names them Transparent ECDSA, KMIP 1.3+ Transparent EC.
    public_uid, private_uid = kmip.create_key_pair(enums.CryptographicAlgorithm.EC, 256)
    key = serialization.load_der_private_key(kmip.get(private_uid).value, password=None)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    p256 = enums.RecommendedCurve.P_256.value.to_bytes(4, "big")
    for version, private_format, public_format in [
        (enums.KMIPVersion.KMIP_1_2, enums.KeyFormatType.TRANSPARENT_ECDSA_PRIVATE_KEY,
         enums.KeyFormatType.TRANSPARENT_ECDSA_PUBLIC_KEY),
        (enums.KMIPVersion.KMIP_1_4, enums.KeyFormatType.TRANSPARENT_EC_PRIVATE_KEY,
         enums.KeyFormatType.TRANSPARENT_EC_PUBLIC_KEY),
    ]:
        kmip.kmip_version = version
        t = _transparent(kmip, private_uid, private_format)
        assert t[enums.Tags.D.value] == key.private_numbers().private_value
        assert t[enums.Tags.RECOMMENDED_CURVE.value] == p256
        t = _transparent(kmip, public_uid, public_format)
        assert t[enums.Tags.Q_STRING.value] == point
        assert t[enums.Tags.RECOMMENDED_CURVE.value] == p256


def test_custom_attribute_is_a_kmip_2_vendor_attribute(kmip):
    # KMIP 1.2: Create with a custom attribute x-Owner in the template (PyKMIP's KMIPProxy).
    owner = cobjects.Attribute(
        attribute_name=cobjects.Attribute.AttributeName("x-Owner"),
        attribute_value=core_attributes.CustomAttribute("pykmip-owner"),
    )
    template = cobjects.TemplateAttribute(attributes=[
        ATTRS.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
        ATTRS.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, 256),
        owner,
    ])
    result = kmip.proxy.create(enums.ObjectType.SYMMETRIC_KEY, template)
    assert result.result_status.value == enums.ResultStatus.SUCCESS, result.result_message
    uid = result.uuid
    _, attributes = kmip.get_attributes(uid, ["x-Owner"])
    assert [(a.attribute_name.value, a.attribute_value.value) for a in attributes] == [("x-Owner", "pykmip-owner")]
    # KMIP 2.0: Delete Attribute by the Vendor Attribute Reference {x, Owner} removes it.
    kmip.kmip_version = enums.KMIPVersion.KMIP_2_0
    deleted_uid, _ = kmip.delete_attribute(
        uid, attribute_reference=cobjects.AttributeReference(vendor_identification="x", attribute_name="Owner")
    )
    assert deleted_uid == uid
    with pytest.raises(core_exceptions.OperationFailure, match="no such value"):
        kmip.delete_attribute(
            uid, attribute_reference=cobjects.AttributeReference(vendor_identification="x", attribute_name="Owner")
        )
    kmip.kmip_version = enums.KMIPVersion.KMIP_1_2
    _, attributes = kmip.get_attributes(uid, ["x-Owner"])
    assert attributes == []


def test_unknown_client_certificate_is_refused_by_tls(dev_server, tmp_path):
    # A client certificate from a CA the server does not trust.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "stranger.pem"
    key_path = tmp_path / "stranger-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    ctx = ssl.create_default_context(cafile=dev_server["ca_cert"])
    ctx.load_cert_chain(str(cert_path), str(key_path))
    host, port = dev_server["kmip_addr"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                # TLS 1.3 reports the refused certificate on the first read.
                tls.sendall(b"\x42\x00\x78\x01\x00\x00\x00\x00")
                tls.recv(8)

    # And PyKMIP with that certificate cannot do anything.
    config = write_config(tmp_path / "stranger.conf", dev_server, cert_path, key_path)
    c = kmip_client.ProxyKmipClient(config="client", config_file=str(config))
    with pytest.raises(Exception):
        c.open()
        c.create(enums.CryptographicAlgorithm.AES, 128)
