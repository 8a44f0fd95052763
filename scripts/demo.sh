#!/usr/bin/env bash
# Run the whole bin pipeline on a laptop: replayed photos -> motion trigger ->
# int8 MobileNetV2 -> router -> servo on gpiozero's MockFactory -> SQLite outbox
# -> MQTT. Prints one line per sorted item and stops when the replay ends.
#   bash scripts/demo.sh                  # config/demo.toml
#   bash scripts/demo.sh path/to.toml     # another config
# A local mosquitto is used if one runs on port 1883; if mosquitto is installed
# but not running, one is started for the demo and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-config/demo.toml}"

if [ ! -x .venv/bin/bin-agent ]; then
    echo "== installing bin-agent into .venv (once)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi

broker_pid=""
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    MOSQUITTO="$(command -v mosquitto || true)"
    [ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
    if [ -n "$MOSQUITTO" ]; then
        "$MOSQUITTO" -p 1883 >/dev/null 2>&1 &
        broker_pid=$!
        trap '[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true' EXIT
        sleep 0.5
        echo "== started a local mosquitto on port 1883 for the demo"
    else
        echo "== no MQTT broker on localhost:1883: events stay in the outbox (install mosquitto to see them published)"
    fi
fi

echo "== bin-agent run --config $CONFIG"
.venv/bin/bin-agent run --config "$CONFIG"
