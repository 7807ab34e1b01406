"""Starts a real `keyfort server --dev` for the real-client tests and stops it afterwards."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

# `[kms]` waiting periods of the dev server under test, in seconds (server env variables).
SHORT_KMS_TIMINGS = {
    "KEYFORT_KMS_CHANGE_GUARD_SECS": "1",
    "KEYFORT_KMS_ROTATE_GUARD_SECS": "1",
    "KEYFORT_KMS_PURGE_AFTER_SECS": "2",
}


def _binary() -> str:
    path = os.environ.get("KEYFORT_BIN")
    if not path or not Path(path).is_file():
        raise RuntimeError("KEYFORT_BIN must point at the built keyfort binary (scripts/test.sh sets it)")
    return path


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory):
    """A dev server on a fresh data dir, HTTP on an ephemeral port; yields its dev.json."""
    data_dir = tmp_path_factory.mktemp("keyfort-data")
    log = open(data_dir / "server.log", "wb")
    # Key Protect's waiting periods (30 s before enable/restore, 4 h before purge) shortened so
    # that the SDK tests can walk a key through its whole life; a caller's values win.
    env = dict(os.environ)
    for name, secs in SHORT_KMS_TIMINGS.items():
        env.setdefault(name, secs)
    proc = subprocess.Popen(
        [_binary(), "server", "--dev", "--data-dir", str(data_dir), "--http-addr", "127.0.0.1:0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    dev_json = data_dir / "dev.json"
    deadline = time.monotonic() + 60
    while not dev_json.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"keyfort exited early: {(data_dir / 'server.log').read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("keyfort did not write dev.json within 60 s")
        time.sleep(0.05)
    info = json.loads(dev_json.read_text())
    try:
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
        assert code == 0, f"keyfort exited with {code} on SIGTERM"


@pytest.fixture
def trust_dev_ca(dev_server, monkeypatch):
    """Makes `requests` (used by IBM's SDKs) trust only the dev server's generated CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", dev_server["ca_cert"])
    return dev_server
