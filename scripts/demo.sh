#!/usr/bin/env bash
# Run the whole bin pipeline on a laptop: replayed photos -> motion trigger ->
# int8 MobileNetV2 -> router -> servo on gpiozero's MockFactory -> SQLite outbox
# -> MQTT. Prints one line per sorted item and stops when the replay ends.
#   bash scripts/demo.sh                  # config/demo.toml
#   bash scripts/demo.sh path/to.toml     # another config
#   BIN_AGENT_SHARED=/data/shared bash scripts/demo.sh   # photos from another folder
#                                         # than ../shared beside the checkout
# What runs where: bin-agent runs in this terminal (Ctrl-C stops it; it flushes
# its outbox first). A local mosquitto is used if one runs on port 1883; if
# mosquitto is installed but not running, one is started in its own session and
# KEEPS RUNNING after the demo (so mosquitto_sub can read what the bin
# published); the demo prints its pid and how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-config/demo.toml}"

if [ ! -x .venv/bin/bin-agent ]; then
    echo "== installing bin-agent into .venv (once)"
    # A .venv without pip is made again: on Debian or Ubuntu without python3-venv,
    # `python3 -m venv` fails but leaves one behind, and the next run would stop at it.
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1 && ! python3 -m venv --clear .venv; then
        echo "== python3 -m venv failed: on Debian or Ubuntu, sudo apt install python3-venv; then run this again" >&2
        exit 1
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi

if [ -n "${BIN_AGENT_SHARED:-}" ] && [ "$CONFIG" = config/demo.toml ]; then
    # config/demo.toml names ../shared beside the checkout; this copy names $BIN_AGENT_SHARED.
    # It lies in state/ (ignored by git), so its relative state_dir is the same folder.
    shared="$(cd "$BIN_AGENT_SHARED" && pwd)"
    mkdir -p state
    sed "s|^path = \"../../shared/data/trashnet\"|path = \"$shared/data/trashnet\"|" config/demo.toml >state/demo.toml
    CONFIG=state/demo.toml
    echo "== photos from $shared/data/trashnet (BIN_AGENT_SHARED)"
fi

broker_pid=""
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    MOSQUITTO="$(command -v mosquitto || true)"
    [ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
    if [ -n "$MOSQUITTO" ]; then
        # Its own session: Ctrl-C on the demo reaches bin-agent, which flushes to the broker,
        # not the broker itself.
        if command -v setsid >/dev/null; then
            setsid "$MOSQUITTO" -p 1883 </dev/null >/dev/null 2>&1 &
        else
            "$MOSQUITTO" -p 1883 </dev/null >/dev/null 2>&1 &
        fi
        broker_pid=$!
        sleep 0.5
        echo "== started a local mosquitto on port 1883 (pid $broker_pid); it keeps running after the demo"
    else
        echo "== no MQTT broker on localhost:1883: events stay in the outbox (install mosquitto to see them published)"
    fi
fi

echo "== bin-agent run --config $CONFIG"
code=0
.venv/bin/bin-agent run --config "$CONFIG" || code=$?
if [ "$code" -ne 0 ]; then
    [ -z "$broker_pid" ] || echo "== the demo's broker still runs; stop it with: kill $broker_pid"
    exit "$code"
fi
echo
echo "== what next"
if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    echo "   the bin's retained state and status:  mosquitto_sub -h localhost -t 'smartbin/#' -v -W 2"
fi
[ -z "$broker_pid" ] || echo "   stop the demo's broker:               kill $broker_pid"
echo "   the composition report:               .venv/bin/bin-agent report --config $CONFIG"
echo "   every command (bin-agent is in .venv): .venv/bin/bin-agent --help"
exit "$code"
