#!/usr/bin/env bash
# Install everything the tests need and run them.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k mqtt    # extra arguments go to pytest
# Needs: python3 (3.11+), and root or sudo the first time (to apt-get mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "== installing mosquitto (the tests start a real broker)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing bin-agent with its test and training extras (TensorFlow: a few minutes the first time)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,train]'

echo "== running the tests"
exec .venv/bin/python -m pytest "$@"
