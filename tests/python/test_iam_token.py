"""IBM's own SDK core authenticates against Keyfort's IAM-compatible token endpoint, over TLS
with the dev CA, exactly as it would against IBM Cloud IAM."""

import time

import jwt  # PyJWT, a dependency of ibm-cloud-sdk-core
import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator


def test_iam_authenticator_gets_a_token_and_it_works(trust_dev_ca):
    info = trust_dev_ca
    base = f"https://{info['http_addr']}"
    auth = IAMAuthenticator(apikey=info["api_key"], url=base)
    token = auth.token_manager.get_token()

    # The SDK decodes the JWT without verifying it and needs iat/exp.
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] > 60
    assert claims["exp"] > time.time()

    # The token works as a bearer token on the admin API.
    r = requests.get(f"{base}/api/keyfort/v1/instances", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["instances"]] == [info["instance_id"]]


def test_iam_authenticator_with_a_wrong_api_key_fails(trust_dev_ca):
    base = f"https://{trust_dev_ca['http_addr']}"
    auth = IAMAuthenticator(apikey="kf-not-a-real-key", url=base)
    with pytest.raises(ApiException) as excinfo:
        auth.token_manager.get_token()
    assert excinfo.value.status_code == 400


def test_health_over_tls_with_the_generated_ca(trust_dev_ca):
    base = f"https://{trust_dev_ca['http_addr']}"
    r = requests.get(f"{base}/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    # Without the CA the server's certificate is not trusted.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{base}/healthz", verify="/etc/ssl/certs/ca-certificates.crt")
