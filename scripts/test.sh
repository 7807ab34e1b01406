#!/usr/bin/env bash
# Runs Keyfort's whole test suite on a fresh Debian machine, installing what the tests need
# (Debian packages, a Python venv with the real client SDKs) idempotently.
#
#   scripts/test.sh            everything: tidy, fmt, clippy, Rust tests, real-client tests
#   SKIP_LINT=1 scripts/test.sh  skip fmt and clippy (quicker local runs)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '\n==> %s\n' "$*"; }

# ---- system packages ------------------------------------------------------------------------
# Packages the tests need; installed only when missing.
apt_packages=(python3-venv ca-certificates curl softhsm2)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# ---- Python venv with the real clients ------------------------------------------------------
venv="$root/.venv"
req="$root/tests/python/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "preparing Python venv ($venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# ---- Rust -----------------------------------------------------------------------------------
log "cargo xtask tidy"
cargo xtask tidy

if [ -z "${SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

# ---- PostgreSQL for the PostgreSQL store and multi-node tests (stopped at exit) ---------------
source "$root/scripts/pg.sh"
start_test_postgres

log "cargo test"
cargo test --workspace --no-fail-fast

# ---- real clients against the built server --------------------------------------------------
log "building the keyfort binary for the real-client tests"
cargo build --quiet -p keyfort
export KEYFORT_BIN="$root/target/debug/keyfort"

log "pytest (real client SDKs)"
"$venv/bin/python" -m pytest -q "$root/tests/python"
