"""IBM's Key Protect SDK (`keyprotect==3.0.1`) manages KMIP adapters on Keyfort, and PyKMIP
(`PyKMIP==0.11.0`) connects with a certificate registered to one: create an adapter on a root
key, add a client certificate, create a key over KMIP, see it in `get_kmip_objects` (and not
among the Key Protect keys), delete the certificate, see the next KMIP connection refused, destroy
the object, delete the adapter; a KmipAdapterManager manages adapters and lists keys, nothing more.
"""

import datetime
import io
import json
import uuid
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import (
    CollectionMetadata,
    CreateKMIPAdapterObject,
    CreateKMIPClientCertificateObject,
    IbmKeyProtectApiV2,
    KMIPProfileDataBodyKMIPProfileDataNative,
)
from kmip.core import enums
from kmip.pie import client as kmip_client
from kmip.pie import exceptions as kmip_exceptions

from test_keyprotect_sdk import Admin
from test_kmip_pykmip import write_config


def result(response):
    """Dicts for `application/json`, parsed by hand for vendor media types (§15.2)."""
    r = response.get_result()
    return r.json() if isinstance(r, requests.Response) else r


def kp_error(excinfo):
    e = excinfo.value
    reason = e.http_response.json()["resources"][0]["reasons"][0]
    assert reason["status"] == e.status_code
    return e.status_code, reason["code"]


def dev_signed_client_cert(info, tmp_path):
    """A client certificate signed by the dev server's CA, and its key, as PEM files."""
    tls = Path(info["ca_cert"]).parent
    ca_cert = x509.load_pem_x509_certificate(Path(info["ca_cert"]).read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sdk adapter client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path = tmp_path / "adapter-client.pem"
    key_path = tmp_path / "adapter-client-key.pem"
    cert_path.write_text(cert_pem)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_pem, cert_path, key_path


def test_kmip_adapter_life_with_the_official_sdk_and_pykmip(trust_dev_ca, tmp_path):
    info = trust_dev_ca
    base = f"https://{info['http_addr']}"
    instance = info["instance_id"]
    kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=info["api_key"], url=base))
    kp.set_service_url(base)

    key_body = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "adapter-crk", "extractable": False}],
    }
    crk = result(kp.create_key(bluemix_instance=instance, key_create_body=io.BytesIO(json.dumps(key_body).encode())))
    crk_id = crk["resources"][0]["id"]

    name = f"sdk-{uuid.uuid4().hex[:8]}"
    meta = CollectionMetadata(collection_type="application/vnd.ibm.kms.kmip_adapter+json", collection_total=1)
    adapter_req = CreateKMIPAdapterObject(
        profile="native_1.0",
        name=name,
        description="driven by the SDK",
        profile_data=KMIPProfileDataBodyKMIPProfileDataNative(crk_id=crk_id),
    )
    created = kp.create_kmip_adapter(bluemix_instance=instance, metadata=meta, resources=[adapter_req])
    assert created.get_status_code() == 201
    adapter = result(created)["resources"][0]
    assert adapter["name"] == name and adapter["profile_data"]["crk_id"] == crk_id

    # A second one with the same name is refused with Key Protect's reason.
    with pytest.raises(ApiException) as e:
        kp.create_kmip_adapter(bluemix_instance=instance, metadata=meta, resources=[adapter_req])
    assert kp_error(e) == (409, "KMIP_ADAPTER_DUPLICATE_NAME_ERR")

    listed = result(kp.get_kmip_adapters(bluemix_instance=instance, total_count=True, crk_id=crk_id))
    assert [a["id"] for a in listed["resources"]] == [adapter["id"]]
    assert listed["metadata"]["totalCount"] == 1
    assert result(kp.get_kmip_adapter(id=name, bluemix_instance=instance))["resources"][0]["id"] == adapter["id"]

    cert_pem, cert_path, key_path = dev_signed_client_cert(info, tmp_path)
    cert_meta = CollectionMetadata(
        collection_type="application/vnd.ibm.kms.kmip_client_certificate+json", collection_total=1
    )
    added = kp.add_kmip_client_certificate(
        adapter_id=adapter["id"],
        bluemix_instance=instance,
        metadata=cert_meta,
        resources=[CreateKMIPClientCertificateObject(certificate=cert_pem, name="node-1")],
    )
    assert added.get_status_code() == 201
    cert = result(added)["resources"][0]
    certs = result(kp.get_kmip_client_certificates(adapter_id=name, bluemix_instance=instance, total_count=True))
    assert [c["id"] for c in certs["resources"]] == [cert["id"]]

    # The certificate's holder connects over KMIP and creates a key: the adapter's object.
    config = write_config(tmp_path / "adapter.conf", info, cert_path, key_path)
    client = kmip_client.ProxyKmipClient(config="client", config_file=str(config))
    client.open()
    try:
        uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="from-adapter-client")
        assert len(client.get(uid).value) == 32
    finally:
        client.close()
    objects = result(kp.get_kmip_objects(adapter_id=adapter["id"], bluemix_instance=instance, total_count=True))
    assert objects["metadata"]["totalCount"] == 1
    obj = objects["resources"][0]
    assert obj["id"] == uid and obj["kmip_object_type"] == 2 and obj["state"] == 1
    assert obj["created_by_kmip_client_cert_id"] == cert["id"]

    # It is not a Key Protect key: not listed, counted, searched or found by id.
    listed_keys = result(kp.get_keys(bluemix_instance=instance, state=[0, 1, 2, 3, 5], limit=5000))
    listed_ids = [k["id"] for k in listed_keys["resources"]]
    assert crk_id in listed_ids and uid not in listed_ids
    total = kp.get_key_collection_metadata(bluemix_instance=instance, state=[0, 1, 2, 3, 5])
    assert int(total.get_headers()["Key-Total"]) == len(listed_ids)
    searched = result(kp.get_keys(bluemix_instance=instance, search="from-adapter-client"))
    assert uid not in [k["id"] for k in searched.get("resources", [])]
    for call in (kp.get_key, kp.get_key_metadata):
        with pytest.raises(ApiException) as e:
            call(id=uid, bluemix_instance=instance)
        assert kp_error(e) == (404, "KEY_NOT_FOUND_ERR")

    # An adapter with live objects cannot be deleted.
    with pytest.raises(ApiException) as e:
        kp.delete_kmip_adapter(id=adapter["id"], bluemix_instance=instance)
    assert kp_error(e) == (409, "KMIP_ADAPTER_HAS_OBJECTS_ERR")

    # Deleting the certificate refuses the client's next connection.
    kp.delete_kmip_client_certificate(adapter_id=adapter["id"], id=cert["id"], bluemix_instance=instance)
    client = kmip_client.ProxyKmipClient(config="client", config_file=str(config))
    client.open()
    try:
        with pytest.raises(kmip_exceptions.KmipOperationFailure) as refused:
            client.create(enums.CryptographicAlgorithm.AES, 256)
        assert refused.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
    finally:
        client.close()

    # Destroying the object, then deleting the adapter.
    deleted = kp.delete_kmip_object(adapter_id=adapter["id"], bluemix_instance=instance, id=uid)
    assert deleted.get_status_code() == 204
    got = result(kp.get_kmip_object(adapter_id=adapter["id"], bluemix_instance=instance, id=uid))
    assert got["resources"][0]["state"] == 5
    assert kp.delete_kmip_adapter(id=adapter["id"], bluemix_instance=instance).get_status_code() == 204
    with pytest.raises(ApiException) as e:
        kp.get_kmip_adapter(id=adapter["id"], bluemix_instance=instance)
    assert kp_error(e) == (404, "KMIP_ADAPTER_NOT_FOUND_ERR")


def test_kmip_adapter_manager_role_with_the_official_sdk(trust_dev_ca):
    """Key Protect's KmipAdapterManager: KMIP adapters, their certificates and objects, and the
    key and key ring listings; no key reads, no wrap, no key creation."""
    info = trust_dev_ca
    base = f"https://{info['http_addr']}"
    instance = info["instance_id"]
    admin_kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=info["api_key"], url=base))
    admin_kp.set_service_url(base)
    key_body = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "kam-crk", "extractable": False}],
    }
    crk = result(
        admin_kp.create_key(bluemix_instance=instance, key_create_body=io.BytesIO(json.dumps(key_body).encode()))
    )
    crk_id = crk["resources"][0]["id"]

    admin = Admin(info)
    suffix = uuid.uuid4().hex[:8]
    api_key = admin.principal_with_key(f"kmip-manager-{suffix}", "KmipAdapterManager")
    principals = admin.call("GET", "/principals").json()["principals"]
    shown = [p for p in principals if p["name"] == f"kmip-manager-{suffix}"]
    assert shown[0]["roles"] == [{"role": "KmipAdapterManager", "instance": instance}]
    kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=api_key, url=base))
    kp.set_service_url(base)

    # Adapters: create, list, read, delete.
    meta = CollectionMetadata(collection_type="application/vnd.ibm.kms.kmip_adapter+json", collection_total=1)
    created = kp.create_kmip_adapter(
        bluemix_instance=instance,
        metadata=meta,
        resources=[
            CreateKMIPAdapterObject(
                profile="native_1.0",
                name=f"kam-{suffix}",
                profile_data=KMIPProfileDataBodyKMIPProfileDataNative(crk_id=crk_id),
            )
        ],
    )
    assert created.get_status_code() == 201
    adapter_id = result(created)["resources"][0]["id"]
    listed = result(kp.get_kmip_adapters(bluemix_instance=instance, crk_id=crk_id))
    assert [a["id"] for a in listed["resources"]] == [adapter_id]
    assert result(kp.get_kmip_objects(adapter_id=adapter_id, bluemix_instance=instance))["resources"] == []

    # Keys and key rings: listed and counted, never read or used.
    assert crk_id in [k["id"] for k in result(kp.get_keys(bluemix_instance=instance))["resources"]]
    assert kp.get_key_collection_metadata(bluemix_instance=instance).get_status_code() == 200
    assert kp.list_key_rings(bluemix_instance=instance).get_status_code() == 200
    for call in (
        lambda: kp.get_key(id=crk_id, bluemix_instance=instance),
        lambda: kp.get_key_metadata(id=crk_id, bluemix_instance=instance),
        lambda: kp.wrap_key(id=crk_id, bluemix_instance=instance, key_action_wrap_body=io.BytesIO(b"{}")),
        lambda: kp.create_key(bluemix_instance=instance, key_create_body=io.BytesIO(json.dumps(key_body).encode())),
    ):
        with pytest.raises(ApiException) as e:
            call()
        assert kp_error(e) == (401, "UNAUTHORIZED_ERR")

    assert kp.delete_kmip_adapter(id=adapter_id, bluemix_instance=instance).get_status_code() == 204
