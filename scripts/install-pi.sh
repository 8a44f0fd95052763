#!/usr/bin/env bash
# Install bin-agent on a Raspberry Pi (64-bit Raspberry Pi OS Bookworm or later)
# as a systemd service, from this checkout:
#
#   sudo bash scripts/install-pi.sh             # every step
#   bash scripts/install-pi.sh --dry-run        # print every step, change nothing
#   sudo bash scripts/install-pi.sh --only pip  # one step (again after a git pull)
#
# Steps, in order: apt, venv, pip, user, config, unit. Idempotent: a venv that
# exists is kept, an existing config file is never overwritten, the package and
# the units are installed again.
#
# The unit step reads the config: servo_drive = "kernel_pwm" gets a drop-in
# (bin-agent-kernel-pwm.conf: /sys writable for the PWM export) for the agent's
# unit and for bin-agent-doctor.service, the doctor inside the agent's sandbox.
# Run this step again after changing servo_drive.
#
# Options:
#   --dry-run          print the commands instead of running them
#   --only STEP[,STEP] run only these steps
#   --no-apt           skip the apt step (packages installed by other means)
#   --venv DIR         the virtualenv (default /opt/bin-agent/venv; keep it out
#                      of /home, which the unit's ProtectHome=yes hides)
#   --config FILE      the agent's config (default /etc/bin-agent/bin-agent.toml)
#   --python PY        the Python that makes the venv (default /usr/bin/python3:
#                      the OS's, which apt's picamera2 and lgpio are built for)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# What root installs (venv, package, unit) must be readable by the bin-agent user.
umask 022
ALL_STEPS="apt venv pip user config unit"
# python3-smbus2: servo_drive = "pca9685" (small, pure Python; the venv sees it).
# python3-tomlkit: `bin-agent calibrate` writes the chosen angles into the config with it.
APT_PACKAGES=(python3-venv python3-picamera2 python3-lgpio python3-smbus2 python3-tomlkit mosquitto-clients)
VENV=/opt/bin-agent/venv
CONFIG=/etc/bin-agent/bin-agent.toml
PYTHON=/usr/bin/python3
STATE_DIR=/var/lib/bin-agent
UNIT_DIR=/etc/systemd/system
SYSUSERS_CONF=/usr/lib/sysusers.d/bin-agent.conf
DRY_RUN=0
STEPS="$ALL_STEPS"
NO_APT=0

die() { echo "install-pi.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --only) [ $# -ge 2 ] || die "--only needs a step ($ALL_STEPS)"; STEPS="${2//,/ }"; shift ;;
        --no-apt) NO_APT=1 ;;
        --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV="$2"; shift ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG="$2"; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
for step in $STEPS; do
    case " $ALL_STEPS " in *" $step "*) ;; *) die "unknown step '$step' (steps: $ALL_STEPS)" ;; esac
done
[ "$NO_APT" = 1 ] && STEPS=" $STEPS " && STEPS="${STEPS// apt / }"

wanted() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Write stdin to a file (shown, not written, with --dry-run).
write() {
    local text
    text="$(cat)"
    echo "+ write $1:"
    printf '%s\n' "$text" | sed 's/^/    /'
    [ "$DRY_RUN" = 1 ] || printf '%s\n' "$text" >"$1"
}

# Print a command so it can be pasted into a shell; run it unless --dry-run.
run() {
    local arg shown=()
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then shown+=("$arg"); else shown+=("'${arg//\'/\'\\\'\'}'"); fi
    done
    echo "+ ${shown[*]}"
    [ "$DRY_RUN" = 1 ] || "$@"
}

step() { echo "== $1: $2"; }

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    for step in apt user config unit; do
        wanted "$step" && die "the $step step changes the system: run it as root (sudo)"
    done
fi

if [ "$DRY_RUN" = 0 ] && wanted pip && ! wanted venv && [ ! -x "$VENV/bin/python" ]; then
    die "no venv at $VENV: run the venv step first (or pass --venv)"
fi

# The Python the agent will run on: the venv's if it exists, else the one that makes it.
AGENT_PYTHON="$PYTHON"
[ -x "$VENV/bin/python" ] && AGENT_PYTHON="$VENV/bin/python"
command -v "$AGENT_PYTHON" >/dev/null 2>&1 || die "no Python at $AGENT_PYTHON (see --python)"

# 64-bit only, asked of the interpreter itself: on a 32-bit OS with a 64-bit
# kernel `uname -m` says aarch64, and neither LiteRT nor tflite-runtime has a
# 32-bit ARM build.
BITS="$("$AGENT_PYTHON" -c 'import struct; print(struct.calcsize("P") * 8)')"
[ "$BITS" = 64 ] || die "$AGENT_PYTHON is a ${BITS}-bit Python: bin-agent needs a 64-bit OS (Raspberry Pi OS 64-bit)"
PY_VERSION="$("$AGENT_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
echo "== check: 64-bit Python $PY_VERSION ($AGENT_PYTHON)"

if wanted apt; then
    step apt "the OS's camera and GPIO libraries (the venv sees them), mosquitto clients"
    run apt-get update
    # --no-install-recommends: picamera2's recommends pull in a desktop (Qt, OpenGL).
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
fi

if wanted venv; then
    step venv "$VENV with --system-site-packages (sees apt's picamera2 and lgpio)"
    if [ -x "$VENV/bin/python" ]; then
        echo "   $VENV exists: kept"
        grep -qs '^include-system-site-packages = true' "$VENV/pyvenv.cfg" ||
            echo "   WARNING: $VENV was made without --system-site-packages: it cannot see apt's picamera2; remove it and run this step again"
    else
        run "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
fi

if wanted pip; then
    step pip "bin-agent from $SRC (not editable: the model ships inside the package)"
    # Built from a clean copy: pip builds in the source tree, where a stale
    # build/ would go into the wheel and a root-owned one would block the
    # checkout owner's next `pip install -e .`.
    copy="$(mktemp -d)"
    trap 'rm -rf "$copy"' EXIT
    run tar -C "$SRC" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ -cf "$copy/source.tar" .
    run mkdir "$copy/bin-agent"
    run tar -C "$copy/bin-agent" -xf "$copy/source.tar"
    # The OS's picamera2 (simplejpeg, av) is built against the OS's numpy: 1.24
    # on Bookworm (Python 3.11). LiteRT's newest dependencies would pull numpy 2,
    # and then `import picamera2` fails with "numpy.dtype size changed"
    # (picamera2 issues #1088, #1211). Not on one command line: a constraints
    # file the venv's pip reads on every install (its pip.conf), so a later
    # `pip install` in the venv keeps numpy 1 too. Newer OS releases ship numpy 2.
    if "$AGENT_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info < (3, 12) else 1)'; then
        run install -m 0644 "$SRC/scripts/constraints-bookworm.txt" "$VENV/constraints.txt"
        printf '[global]\nconstraint = %s\n' "$VENV/constraints.txt" | write "$VENV/pip.conf"
    fi
    run "$VENV/bin/python" -m pip install --disable-pip-version-check "$copy/bin-agent"
fi

if wanted user; then
    step user "the bin-agent system user, in groups video, gpio, i2c; its state directory"
    run install -m 0644 "$SRC/systemd/bin-agent.sysusers" "$SYSUSERS_CONF"
    run systemd-sysusers "$SYSUSERS_CONF"
    run install -d -o bin-agent -g bin-agent -m 0750 "$STATE_DIR"
fi

if wanted config; then
    step config "$CONFIG"
    if [ -e "$CONFIG" ]; then
        echo "   $CONFIG exists: kept (compare with $SRC/config/bin-agent.toml)"
    else
        run install -D -m 0640 -o root -g bin-agent "$SRC/config/bin-agent.toml" "$CONFIG"
    fi
fi

if wanted unit; then
    step unit "the systemd unit, installed and enabled (not started)"
    unit="$SRC/systemd/bin-agent.service"
    if [ "$VENV" != /opt/bin-agent/venv ] || [ "$CONFIG" != /etc/bin-agent/bin-agent.toml ]; then
        # The unit names the default paths; point its ExecStart at these.
        unit="$(mktemp)"
        trap 'rm -f "$unit"; [ -z "${copy:-}" ] || rm -rf "$copy"' EXIT
        sed -e "s#/opt/bin-agent/venv/bin/bin-agent #$VENV/bin/bin-agent #" \
            -e "s# --config /etc/bin-agent/bin-agent.toml# --config $CONFIG#" \
            "$SRC/systemd/bin-agent.service" >"$unit"
        echo "   $(grep '^ExecStart=' "$unit")"
    fi
    run install -m 0644 "$unit" "$UNIT_DIR/bin-agent.service"
    doctor_unit="$SRC/systemd/bin-agent-doctor.service"
    if [ "$unit" != "$SRC/systemd/bin-agent.service" ]; then
        doctor_unit="$(mktemp)"
        trap 'rm -f "$unit" "$doctor_unit"; [ -z "${copy:-}" ] || rm -rf "$copy"' EXIT
        sed -e "s#/opt/bin-agent/venv/bin/bin-agent #$VENV/bin/bin-agent #" \
            -e "s# --config /etc/bin-agent/bin-agent.toml# --config $CONFIG#" \
            "$SRC/systemd/bin-agent-doctor.service" >"$doctor_unit"
    fi
    run install -m 0644 "$doctor_unit" "$UNIT_DIR/bin-agent-doctor.service"
    # The config decides the drop-ins: the installed one, else the shipped one.
    config_read="$CONFIG"
    [ -e "$config_read" ] || config_read="$SRC/config/bin-agent.toml"
    servo_drive="$("$AGENT_PYTHON" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("actuator", {}).get("servo_drive", "gpiozero"))' "$config_read")" ||
        die "cannot read actuator.servo_drive from $config_read"
    for name in bin-agent bin-agent-doctor; do
        if [ "$servo_drive" = kernel_pwm ]; then
            echo "   servo_drive = kernel_pwm ($config_read): /sys/class/pwm writable for $name"
            run install -D -m 0644 "$SRC/systemd/bin-agent-kernel-pwm.conf" "$UNIT_DIR/$name.service.d/kernel-pwm.conf"
        elif [ -e "$UNIT_DIR/$name.service.d/kernel-pwm.conf" ]; then
            run rm -f "$UNIT_DIR/$name.service.d/kernel-pwm.conf"
        fi
    done
    # Growing restart delays need systemd 254 (RestartSteps=); Bookworm has 252,
    # where the unit's start limit stops the restarts instead.
    systemd_version="$(systemctl --version 2>/dev/null | awk 'NR == 1 {print $2}')"
    if [ "${systemd_version:-0}" -ge 254 ] 2>/dev/null; then
        run install -D -m 0644 "$SRC/systemd/bin-agent-restart-backoff.conf" \
            "$UNIT_DIR/bin-agent.service.d/restart-backoff.conf"
    else
        echo "   systemd ${systemd_version:-?} < 254: no growing restart delay (the start limit applies)"
    fi
    run systemctl daemon-reload
    run systemctl enable bin-agent.service
fi

cat <<EOF
== next
   edit $CONFIG (camera, trigger, pins, broker), then check this machine with it,
   inside the agent's sandbox (after changing servo_drive, run --only unit again):
     sudo systemctl start bin-agent-doctor; journalctl -u bin-agent-doctor -o cat -n 40
   (by hand it cannot see what the sandbox hides:
     sudo -u bin-agent $VENV/bin/bin-agent doctor --config $CONFIG)
   and start the service:
     sudo systemctl start bin-agent && journalctl -u bin-agent -f
EOF
