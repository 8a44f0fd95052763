#!/usr/bin/env bash
# Install everything the tests need and run them.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k mqtt    # extra arguments go to pytest
# Needs: python3 (3.11+) with venv (Debian/Ubuntu: python3-venv), and root or sudo the
# first time (to apt-get mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."

# mosquitto (a real broker), its clients (mosquitto_pub) and openssl (a test CA).
missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v mosquitto_pub >/dev/null 2>&1 || missing="$missing mosquitto-clients"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v strace >/dev/null 2>&1 || missing="$missing strace"  # counts the store's fsyncs
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"  # verifies the unit
if [ -n "$missing" ]; then
    echo "== installing$missing (the tests start a real broker with TLS)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# A .venv without pip is made again: on Debian or Ubuntu without python3-venv,
# `python3 -m venv` fails but leaves one behind, and the next run would stop at it.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "== creating .venv"
    if ! python3 -m venv --clear .venv; then
        echo "== python3 -m venv failed: on Debian or Ubuntu, sudo apt install python3-venv; then run this again" >&2
        exit 1
    fi
fi
echo "== installing bin-agent with its test and training extras (TensorFlow: a few minutes the first time)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,train]'

echo "== code health: ruff (lint and format) and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== running the tests"
# One test process per core, at most 4 (pytest-xdist): the suite waits on brokers, sleeps
# and subprocesses as much as it computes. Every test makes its own broker, port and
# folders, so none depends on another's order. `-n 0` (after the other arguments) runs
# them in this process, e.g. to debug one test with pdb.
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 "$@"
