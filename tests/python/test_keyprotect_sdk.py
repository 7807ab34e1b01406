"""IBM's own Key Protect SDK (`keyprotect==3.0.1`, `IbmKeyProtectApiV2` + `IAMAuthenticator`)
drives Keyfort's `/api/v2` over TLS, through a root key's whole life: create, wrap / unwrap,
rotate, unwrap of an old ciphertext, rewrap, disable / enable, dual-authorized deletion by two
principals, restore, purge by a KeyPurge holder. After each step the audit trail (admin API)
must hold the step's event, and the chain must verify at the end.

The dev server runs with shortened Key Protect waiting periods (conftest.SHORT_KMS_TIMINGS).
"""

import base64
import io
import json
import os
import time
import uuid

import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

from conftest import SHORT_KMS_TIMINGS

CHANGE_GUARD = float(os.environ.get("KEYFORT_KMS_CHANGE_GUARD_SECS", SHORT_KMS_TIMINGS["KEYFORT_KMS_CHANGE_GUARD_SECS"]))
PURGE_AFTER = float(os.environ.get("KEYFORT_KMS_PURGE_AFTER_SECS", SHORT_KMS_TIMINGS["KEYFORT_KMS_PURGE_AFTER_SECS"]))


def body(resource, collection_type="application/vnd.ibm.kms.key+json"):
    """A KP collection request body, as the SDK expects it: a binary stream."""
    doc = {"metadata": {"collectionType": collection_type, "collectionTotal": 1}, "resources": [resource]}
    return io.BytesIO(json.dumps(doc).encode())


def raw(obj):
    return io.BytesIO(json.dumps(obj).encode())


def result(response):
    """The SDK parses only `application/json` answers into a dict; vendor media types
    (`application/vnd.ibm.kms.*+json`, §15.2) come back as a `requests.Response`."""
    r = response.get_result()
    return r.json() if isinstance(r, requests.Response) else r


def kp_error(excinfo):
    """Status and first KP reason of an `ApiException`."""
    e = excinfo.value
    envelope = e.http_response.json()
    assert envelope["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json"
    reason = envelope["resources"][0]["reasons"][0]
    assert reason["status"] == e.status_code
    return e.status_code, reason["code"]


class Admin:
    """The admin API as the dev administrator."""

    def __init__(self, info):
        self.base = f"https://{info['http_addr']}"
        self.instance = info["instance_id"]
        self.auth = IAMAuthenticator(apikey=info["api_key"], url=self.base)

    def call(self, method, path, **kw):
        token = self.auth.token_manager.get_token()
        r = requests.request(method, f"{self.base}/api/keyfort/v1{path}", headers={"Authorization": f"Bearer {token}"}, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def principal_with_key(self, name, role, kind="user"):
        p = self.call(
            "POST",
            "/principals",
            json={"name": name, "kind": kind, "instance_id": self.instance, "roles": [{"role": role, "instance": self.instance}]},
        ).json()
        return self.call("POST", f"/principals/{p['id']}/api_keys", json={"name": f"{name}-key"}).json()["api_key"]

    def events(self, **filters):
        return self.call("GET", f"/instances/{self.instance}/audit", params=filters).json()["events"]

    def expect_event(self, action, correlation_id, outcome="success", actor=None):
        matching = [e for e in self.events(action=action, limit=10000) if e["correlation_id"] == correlation_id]
        assert matching, f"no {action} event with correlation id {correlation_id}"
        event = matching[-1]
        assert event["outcome"] == outcome, event
        if actor is not None:
            assert event["actor"] == actor, event
        return event


def client(base, api_key):
    kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=api_key, url=base))
    kp.set_service_url(base)
    return kp


def cid():
    return str(uuid.uuid4())


@pytest.fixture
def world(trust_dev_ca):
    admin = Admin(trust_dev_ca)
    suffix = uuid.uuid4().hex[:8]
    names = {"a": f"manager-a-{suffix}", "b": f"manager-b-{suffix}", "purger": f"purger-{suffix}"}
    keys = {
        "a": admin.principal_with_key(names["a"], "Manager"),
        "b": admin.principal_with_key(names["b"], "Manager"),
        "purger": admin.principal_with_key(names["purger"], "KeyPurge"),
    }
    clients = {who: client(admin.base, k) for who, k in keys.items()}
    return admin, clients, names


def test_root_key_life_with_the_official_sdk(world):
    admin, kp, names = world
    inst = admin.instance
    a, b, purger = kp["a"], kp["b"], kp["purger"]

    # Create a root key (vendor media type: the SDK hands back the raw response).
    c = cid()
    created = a.create_key(
        bluemix_instance=inst,
        key_create_body=body({"type": "application/vnd.ibm.kms.key+json", "name": "sdk-root", "extractable": False}),
        prefer="return=representation",
        correlation_id=c,
    )
    assert created.get_status_code() == 201
    assert created.get_headers()["Content-Type"].startswith("application/vnd.ibm.kms.key+json")
    key = result(created)["resources"][0]
    key_id = key["id"]
    assert key["state"] == 1 and key["extractable"] is False and "payload" not in key
    assert key["keyRingID"] == "default"
    assert key["crn"].endswith(f":{inst}:key:{key_id}")
    first_version = key["keyVersion"]["id"]
    admin.expect_event("key.create", c, actor=names["a"])

    # Wrap and unwrap a DEK.
    dek = os.urandom(32)
    c = cid()
    wrapped = result(
        a.wrap_key(
            id=key_id,
            bluemix_instance=inst,
            key_action_wrap_body=raw({"plaintext": base64.b64encode(dek).decode()}),
            correlation_id=c,
        )
    )
    old_ciphertext = wrapped["ciphertext"]
    assert wrapped["keyVersion"]["id"] == first_version
    admin.expect_event("key.wrap", c)
    c = cid()
    unwrapped = result(
        a.unwrap_key(id=key_id, bluemix_instance=inst, key_action_unwrap_body=raw({"ciphertext": old_ciphertext}), correlation_id=c)
    )
    assert base64.b64decode(unwrapped["plaintext"]) == dek
    assert "rewrappedKeyVersion" not in unwrapped
    admin.expect_event("key.unwrap", c)

    # Rotate: a new version becomes current.
    c = cid()
    rotated = a.rotate_key(id=key_id, bluemix_instance=inst, key_action_rotate_body=raw({}), correlation_id=c)
    assert rotated.get_status_code() == 204
    admin.expect_event("key.rotate", c)
    meta = a.get_key_metadata(id=key_id, bluemix_instance=inst).get_result()["resources"][0]
    new_version = meta["keyVersion"]["id"]
    assert new_version != first_version and "lastRotateDate" in meta

    # Unwrapping the old ciphertext also returns it rewrapped under the new version.
    c = cid()
    unwrapped = result(
        a.unwrap_key(id=key_id, bluemix_instance=inst, key_action_unwrap_body=raw({"ciphertext": old_ciphertext}), correlation_id=c)
    )
    assert base64.b64decode(unwrapped["plaintext"]) == dek
    assert unwrapped["keyVersion"]["id"] == first_version
    assert unwrapped["rewrappedKeyVersion"]["id"] == new_version
    assert unwrapped["ciphertext"] != old_ciphertext
    admin.expect_event("key.unwrap", c)

    # Rewrap.
    c = cid()
    rewrapped = result(
        a.rewrap_key(id=key_id, bluemix_instance=inst, key_action_rewrap_body=raw({"ciphertext": old_ciphertext}), correlation_id=c)
    )
    assert rewrapped["keyVersion"]["id"] == first_version
    assert rewrapped["rewrappedKeyVersion"]["id"] == new_version
    again = result(
        a.unwrap_key(id=key_id, bluemix_instance=inst, key_action_unwrap_body=raw({"ciphertext": rewrapped["ciphertext"]}))
    )
    assert base64.b64decode(again["plaintext"]) == dek and "rewrappedKeyVersion" not in again
    admin.expect_event("key.rewrap", c)

    # Disable: wrap is refused with KEY_ACTION_INVALID_STATE_ERR.
    c = cid()
    assert a.disable_key(id=key_id, bluemix_instance=inst, correlation_id=c).get_status_code() == 204
    admin.expect_event("key.disable", c)
    assert a.get_key_metadata(id=key_id, bluemix_instance=inst).get_result()["resources"][0]["state"] == 2
    c = cid()
    with pytest.raises(ApiException) as excinfo:
        a.wrap_key(id=key_id, bluemix_instance=inst, key_action_wrap_body=raw({}), correlation_id=c)
    assert kp_error(excinfo) == (409, "KEY_ACTION_INVALID_STATE_ERR")
    admin.expect_event("key.wrap", c, outcome="failure")

    # Enable right away is too early; after the change guard it works.
    c = cid()
    with pytest.raises(ApiException) as excinfo:
        a.enable_key(id=key_id, bluemix_instance=inst, correlation_id=c)
    assert kp_error(excinfo) == (409, "REQ_TOO_EARLY_ERR")
    admin.expect_event("key.enable", c, outcome="failure")
    time.sleep(CHANGE_GUARD + 0.2)
    c = cid()
    assert a.enable_key(id=key_id, bluemix_instance=inst, correlation_id=c).get_status_code() == 204
    admin.expect_event("key.enable", c)
    generated = result(a.wrap_key(id=key_id, bluemix_instance=inst, key_action_wrap_body=raw({})))
    assert len(base64.b64decode(generated["plaintext"])) == 32

    # Dual authorization: a key policy, an approval by A, the deletion by B.
    c = cid()
    policy = a.put_policy(
        id=key_id,
        bluemix_instance=inst,
        # Policy bodies are dicts (the SDK serialises them itself).
        key_policy_put_body={
            "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": True}}],
        },
        policy="dualAuthDelete",
        correlation_id=c,
    )
    assert result(policy)["resources"][0]["dualAuthDelete"]["enabled"] is True
    admin.expect_event("key.policies.set", c)

    with pytest.raises(ApiException) as excinfo:
        b.delete_key(id=key_id, bluemix_instance=inst)
    assert kp_error(excinfo) == (409, "AUTHORIZATIONS_NOT_MET")

    c = cid()
    assert a.set_key_for_deletion(id=key_id, bluemix_instance=inst, correlation_id=c).get_status_code() == 204
    admin.expect_event("key.set_for_deletion", c, actor=names["a"])
    meta = a.get_key_metadata(id=key_id, bluemix_instance=inst).get_result()["resources"][0]
    assert meta["dualAuthDelete"]["keySetForDeletion"] is True and "authExpiration" in meta["dualAuthDelete"]

    # The approver cannot also be the deleter.
    c = cid()
    with pytest.raises(ApiException) as excinfo:
        a.delete_key(id=key_id, bluemix_instance=inst, correlation_id=c)
    assert kp_error(excinfo) == (409, "AUTHORIZATIONS_NOT_MET")
    admin.expect_event("key.delete", c, outcome="failure", actor=names["a"])

    c = cid()
    deleted = b.delete_key(id=key_id, bluemix_instance=inst, prefer="return=representation", correlation_id=c)
    assert deleted.get_status_code() == 200
    gone = result(deleted)["resources"][0]
    assert gone["state"] == 5 and gone["deleted"] is True and gone["deletedBy"] == names["b"]
    assert gone["restoreAllowed"] is True
    admin.expect_event("key.delete", c, actor=names["b"])

    # Destroyed keys only show up when asked for.
    listed = a.get_keys(bluemix_instance=inst, state=[5]).get_result()
    assert key_id in [k["id"] for k in listed["resources"]]
    listed = a.get_keys(bluemix_instance=inst).get_result()
    assert key_id not in [k["id"] for k in listed["resources"]]

    # Restore (after the change guard), then delete once more with two principals.
    time.sleep(CHANGE_GUARD + 0.2)
    c = cid()
    restored = a.restore_key(id=key_id, bluemix_instance=inst, correlation_id=c)
    assert restored.get_status_code() == 201
    assert result(restored)["resources"][0]["state"] == 1
    admin.expect_event("key.restore", c)
    unwrapped = result(
        a.unwrap_key(id=key_id, bluemix_instance=inst, key_action_unwrap_body=raw({"ciphertext": rewrapped["ciphertext"]}))
    )
    assert base64.b64decode(unwrapped["plaintext"]) == dek

    a.set_key_for_deletion(id=key_id, bluemix_instance=inst)
    assert b.delete_key(id=key_id, bluemix_instance=inst).get_status_code() == 204

    # Purge: a Manager may not; the KeyPurge holder may, once the purge delay has passed.
    with pytest.raises(ApiException) as excinfo:
        a.purge_key(id=key_id, bluemix_instance=inst)
    assert kp_error(excinfo) == (401, "UNAUTHORIZED_ERR")
    time.sleep(PURGE_AFTER + 0.2)
    c = cid()
    purged = purger.purge_key(id=key_id, bluemix_instance=inst, correlation_id=c)
    assert purged.get_status_code() == 200
    admin.expect_event("key.purge", c, actor=names["purger"])
    with pytest.raises(ApiException) as excinfo:
        a.get_key_metadata(id=key_id, bluemix_instance=inst)
    assert kp_error(excinfo) == (404, "KEY_NOT_FOUND_ERR")

    # The whole chain of audit events is intact.
    verdict = admin.call("GET", f"/instances/{inst}/audit/verify").json()
    assert verdict["ok"] is True, verdict
    assert verdict["events"] > 20
    export = admin.call("GET", f"/instances/{inst}/audit/export", params={"target": key_id}).text.splitlines()
    cadf = [json.loads(line) for line in export]
    assert {"key.purge", "key.restore", "key.rotate"} <= {e["action"] for e in cadf}
    assert all(e["typeURI"] == "http://schemas.dmtf.org/cloud/audit/1.0/event" for e in cadf)


def test_count_list_standard_key_and_errors(world):
    admin, kp, _ = world
    inst = admin.instance
    a = kp["a"]

    created = a.create_key(
        bluemix_instance=inst,
        key_create_body=body({"type": "application/vnd.ibm.kms.key+json", "name": "sdk-std", "extractable": True}),
        prefer="return=representation",
    )
    std = result(created)["resources"][0]
    assert std["extractable"] is True and len(base64.b64decode(std["payload"])) == 32
    fetched = a.get_key(id=std["id"], bluemix_instance=inst).get_result()["resources"][0]
    assert fetched["payload"] == std["payload"]
    assert "payload" not in a.get_key_metadata(id=std["id"], bluemix_instance=inst).get_result()["resources"][0]

    # HEAD /keys: Key-Total; the SDK sends `state=` when no state is given.
    head = a.get_key_collection_metadata(bluemix_instance=inst)
    assert head.get_status_code() == 200 and head.get_result() is None
    total = int(head.get_headers()["Key-Total"])
    assert total >= 1
    listed = a.get_keys(bluemix_instance=inst, limit=5000).get_result()
    assert listed["metadata"]["collectionTotal"] == len(listed["resources"]) == total
    only_standard = a.get_keys(bluemix_instance=inst, extractable=True).get_result()["resources"]
    assert std["id"] in [k["id"] for k in only_standard] and all(k["extractable"] for k in only_standard)

    # Wrapping with a standard key needs a root key.
    with pytest.raises(ApiException) as excinfo:
        a.wrap_key(id=std["id"], bluemix_instance=inst, key_action_wrap_body=raw({}))
    assert kp_error(excinfo) == (400, "KEY_ROOT_REQ_ERR")

    # Unknown key: 404 in the KP envelope.
    with pytest.raises(ApiException) as excinfo:
        a.get_key(id=str(uuid.uuid4()), bluemix_instance=inst)
    assert kp_error(excinfo) == (404, "KEY_NOT_FOUND_ERR")

    # Aliases and key rings through the SDK.
    alias = f"std-{uuid.uuid4().hex[:8]}"
    assert a.create_key_alias(id=std["id"], alias=alias, bluemix_instance=inst).get_status_code() == 201
    assert a.get_key_metadata(id=alias, bluemix_instance=inst).get_result()["resources"][0]["id"] == std["id"]
    ring = f"ring-{uuid.uuid4().hex[:8]}"
    assert a.create_key_ring(key_ring_id=ring, bluemix_instance=inst).get_status_code() == 201
    rings = a.list_key_rings(bluemix_instance=inst).get_result()["resources"]
    assert {"default", ring} <= {r["id"] for r in rings}


def b64(data):
    return base64.b64encode(data).decode()


def test_imported_material_key_rings_listing_and_instance_endpoints(world, trust_dev_ca):
    """Rotate and restore with imported material, X-Kms-Key-Ring on key calls, sort / filter /
    search of GET /keys, GET /instance/allowed_ip_port and POST /event_ack, through the SDK
    where it has the call (3.0.1 restores with material only through the deprecated
    `?action=restore` form, and has no event acknowledgement call)."""
    admin, kp, names = world
    inst = admin.instance
    a = kp["a"]

    # An imported root key rotates only with new material of its length.
    m1, m2 = os.urandom(32), os.urandom(32)
    created = a.create_key(
        bluemix_instance=inst,
        key_create_body=body({"type": "application/vnd.ibm.kms.key+json", "name": "sdk-imported", "extractable": False, "payload": b64(m1)}),
    )
    key = result(created)["resources"][0]
    key_id = key["id"]
    assert key["imported"] is True
    c = cid()
    with pytest.raises(ApiException) as excinfo:
        a.rotate_key(id=key_id, bluemix_instance=inst, key_action_rotate_body=raw({}), correlation_id=c)
    assert kp_error(excinfo) == (400, "KEY_PAYLOAD_REQ_ERR")
    admin.expect_event("key.rotate", c, outcome="failure")
    c = cid()
    rotated = a.rotate_key(id=key_id, bluemix_instance=inst, key_action_rotate_body=raw({"payload": b64(m2)}), correlation_id=c)
    assert rotated.get_status_code() == 204
    admin.expect_event("key.rotate", c)
    assert len(a.get_key_versions(id=key_id, bluemix_instance=inst).get_result()["resources"]) == 2

    # Restore with material: the rotated-away material is refused, the current one accepted.
    assert a.delete_key(id=key_id, bluemix_instance=inst).get_status_code() == 204
    time.sleep(CHANGE_GUARD + 0.2)
    c = cid()
    with pytest.raises(ApiException) as excinfo:
        a.action_on_key(id=key_id, bluemix_instance=inst, action="restore", key_action_body=body({"payload": b64(m1)}), correlation_id=c)
    assert kp_error(excinfo) == (400, "INVALID_FIELD_ERR")
    admin.expect_event("key.restore", c, outcome="failure")
    c = cid()
    restored = a.action_on_key(id=key_id, bluemix_instance=inst, action="restore", key_action_body=body({"payload": b64(m2)}), correlation_id=c)
    assert restored.get_status_code() == 201
    assert result(restored)["resources"][0]["state"] == 1
    assert admin.expect_event("key.restore", c)["details"]["payload"] is True

    # X-Kms-Key-Ring: a key outside the named ring is not found, and nothing changes.
    ring = f"ring-{uuid.uuid4().hex[:8]}"
    assert a.create_key_ring(key_ring_id=ring, bluemix_instance=inst).get_status_code() == 201
    in_ring = result(
        a.create_key(
            bluemix_instance=inst,
            key_create_body=body({"type": "application/vnd.ibm.kms.key+json", "name": "sdk-in-ring", "extractable": False}),
            x_kms_key_ring=ring,
        )
    )["resources"][0]
    assert in_ring["keyRingID"] == ring
    got = a.get_key_metadata(id=in_ring["id"], bluemix_instance=inst, x_kms_key_ring=ring).get_result()["resources"][0]
    assert got["id"] == in_ring["id"]
    for call in (
        lambda: a.get_key_metadata(id=in_ring["id"], bluemix_instance=inst, x_kms_key_ring="default"),
        lambda: a.disable_key(id=in_ring["id"], bluemix_instance=inst, x_kms_key_ring="default"),
        lambda: a.wrap_key(id=in_ring["id"], bluemix_instance=inst, key_action_wrap_body=raw({}), x_kms_key_ring="default"),
    ):
        with pytest.raises(ApiException) as excinfo:
            call()
        assert kp_error(excinfo) == (404, "KEY_NOT_FOUND_ERR")
    assert a.get_key_metadata(id=in_ring["id"], bluemix_instance=inst).get_result()["resources"][0]["state"] == 1
    listed = a.get_keys(bluemix_instance=inst, x_kms_key_ring=ring).get_result()["resources"]
    assert [k["id"] for k in listed] == [in_ring["id"]]
    head = a.get_key_collection_metadata(bluemix_instance=inst, x_kms_key_ring=ring)
    assert head.get_headers()["Key-Total"] == "1"

    # Sort, filter and search.
    prefix = f"sdk-search-{uuid.uuid4().hex[:8]}"
    made = []
    for n in range(3):
        made.append(
            result(
                a.create_key(
                    bluemix_instance=inst,
                    key_create_body=body({"type": "application/vnd.ibm.kms.key+json", "name": f"{prefix}-{n}", "extractable": n == 1}),
                )
            )["resources"][0]
        )
        time.sleep(0.02)
    ids = [k["id"] for k in made]
    found = a.get_keys(bluemix_instance=inst, search=prefix, sort="-creationDate").get_result()
    assert [k["id"] for k in found["resources"]] == ids[::-1]
    assert found["metadata"]["searchQuery"] == {"query": prefix, "scopes": ["name", "alias"], "not": False, "exact": False}
    assert found["metadata"]["incompleteSearch"] is False
    found = a.get_keys(bluemix_instance=inst, search=f"exact:{prefix}-2").get_result()["resources"]
    assert [k["id"] for k in found] == [ids[2]]
    since = made[1]["creationDate"]
    found = a.get_keys(bluemix_instance=inst, search=prefix, filter=f'creationDate=gte:"{since}" extractable=false').get_result()
    assert [k["id"] for k in found["resources"]] == [ids[2]]
    found = a.get_keys(bluemix_instance=inst, search=prefix, sort="extractable,creationDate", filter="lastRotateDate=none").get_result()
    assert [k["id"] for k in found["resources"]] == [ids[0], ids[2], ids[1]]
    count = a.get_key_collection_metadata(bluemix_instance=inst, filter=f'creationDate=gte:"{since}" lastRotateDate=none')
    assert int(count.get_headers()["Key-Total"]) >= 2
    with pytest.raises(ApiException) as excinfo:
        a.get_keys(bluemix_instance=inst, sort="color")
    assert kp_error(excinfo) == (400, "INVALID_QUERY_PARAM_ERR")

    # The allowedIP port: none without a policy; with one, the port this client reached.
    port = a.get_allowed_ip_port(bluemix_instance=inst)
    assert port.get_status_code() == 200
    assert port.get_result()["metadata"]["collectionType"] == "application/vnd.ibm.kms.allowed_ip_metadata+json"
    assert port.get_result()["resources"] == []
    policy = lambda enabled: {  # noqa: E731
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [
            {"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": ["127.0.0.0/8", "::1/128"]}}}
            if enabled
            else {"policy_type": "allowedIP", "policy_data": {"enabled": False}}
        ],
    }
    assert a.put_instance_policy(bluemix_instance=inst, instance_policy_put_body=policy(True), policy="allowedIP").get_status_code() == 204
    try:
        port = a.get_allowed_ip_port(bluemix_instance=inst).get_result()
        assert port["resources"] == [{"private_endpoint_port": int(trust_dev_ca["http_addr"].rsplit(":", 1)[1])}]
    finally:
        a.put_instance_policy(bluemix_instance=inst, instance_policy_put_body=policy(False), policy="allowedIP")

    # Event acknowledgement: service identities only.
    service_key = admin.principal_with_key(f"svc-{uuid.uuid4().hex[:8]}", "Reader", kind="service")
    ack = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.event_acknowledge+json", "collectionTotal": 1},
        "resources": [{"eventId": f"ev-{uuid.uuid4().hex}", "adopterKeyState": "DEK_DELETED", "timestamp": "2026-01-02T03:04:05Z"}],
    }

    def post_ack(api_key):
        token = IAMAuthenticator(apikey=api_key, url=admin.base).token_manager.get_token()
        return requests.post(
            f"{admin.base}/api/v2/event_ack",
            headers={"Authorization": f"Bearer {token}", "Bluemix-Instance": inst, "Content-Type": "application/json"},
            json=ack,
        )

    answer = post_ack(service_key)
    assert answer.status_code == 204, answer.text
    events = admin.events(action="event.acknowledge", target=ack["resources"][0]["eventId"])
    assert [e["outcome"] for e in events] == ["success"]
    user_key = admin.principal_with_key(f"user-{uuid.uuid4().hex[:8]}", "Manager")
    answer = post_ack(user_key)
    assert answer.status_code == 403
    assert answer.json()["resources"][0]["reasons"][0]["code"] == "SERVICE_ONLY_ERR"

    verdict = admin.call("GET", f"/instances/{inst}/audit/verify").json()
    assert verdict["ok"] is True, verdict
