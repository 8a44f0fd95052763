#!/usr/bin/env bash
# Run bin-agent on Debian Bookworm arm64 (what Raspberry Pi OS 64-bit is built on)
# under qemu-user emulation, and compare its probabilities with this machine's.
#
#   sudo bash scripts/arm64-check.sh [WORKDIR]      # default /tmp/bin-agent-arm64
#
# Needs (Debian/Ubuntu host, as root): mmdebstrap, qemu-user-static; network to
# Debian's archive and to PyPI. A release check, not CI: the root takes minutes
# to build and every Python start under emulation takes seconds.
#
# What it does:
#  1. an arm64 root with Debian's python3 (3.11), python3-numpy (1.24),
#     python3-pil, python3-venv, python3-pip, extracted by mmdebstrap
#     (--variant=extract: no maintainer scripts run, so the host needs no
#     binfmt_misc registration: every arm64 program is started through
#     qemu-aarch64-static explicitly, inside a chroot of the root);
#  2. the wheels bin-agent needs for linux/aarch64 cp311, fetched here by pip
#     (pip download --platform), with the constraints scripts/install-pi.sh
#     writes (numpy<2 on Python < 3.12): the arm64 pip installs them offline;
#  3. a venv made the way scripts/install-pi.sh makes it (--system-site-packages,
#     the constraints file in the venv's pip.conf), bin-agent's wheel installed
#     (and lgpio's PyPI wheel for Raspberry Pi OS's python3-lgpio, not in Debian);
#  4. `bin-agent check-config` and `bin-agent classify --json` on the shipped
#     model and a few photos, under emulation and here; the probabilities are
#     compared (int8 model: both must give the same label; the largest
#     difference is printed).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/bin-agent-arm64}"
ROOT="$WORK/root"
SUITE=bookworm
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
HOST_PY="${HOST_PY:-python3}"
QEMU="$(command -v qemu-aarch64-static || true)"
[ -n "$QEMU" ] || { echo "arm64-check: needs qemu-user-static (apt install qemu-user-static)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "arm64-check: needs mmdebstrap (apt install mmdebstrap)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "arm64-check: run as root (chroot)" >&2; exit 2; }

t0=$(date +%s)
say() { echo "== [$(($(date +%s) - t0)) s] $*"; }
mkdir -p "$WORK"

# Every arm64 program runs as `chroot ROOT /qemu PROGRAM`: no binfmt_misc needed.
# A clean environment: the host's PIP_* settings (find-links, index) mean nothing there.
arm() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$ROOT" /qemu-aarch64-static "$@"; }

if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    say "1. Debian $SUITE arm64 root ($MIRROR)"
    rm -rf "$ROOT"
    mmdebstrap --variant=extract --architectures=arm64 --mode=root \
        --include=python3,python3.11,python3-numpy,python3-pil,python3-venv,python3-pip,libpython3.11-stdlib,ca-certificates \
        "$SUITE" "$ROOT" "$MIRROR" >"$WORK/mmdebstrap.log" 2>&1 ||
        { tail -20 "$WORK/mmdebstrap.log"; exit 1; }
fi
# extract ran no maintainer scripts: the links their postinst would make
# (update-alternatives picks the reference BLAS/LAPACK numpy links against).
ln -sf python3.11 "$ROOT/usr/bin/python3"
for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
    ln -sf "$lib" "$ROOT/usr/lib/aarch64-linux-gnu/$(basename "$lib")"
done
cp "$QEMU" "$ROOT/qemu-aarch64-static"
say "   $(arm /usr/bin/python3.11 -c 'import platform, numpy, PIL; print(platform.machine(), platform.python_version(), "numpy", numpy.__version__, "pillow", PIL.__version__)')"

say "2. bin-agent's wheel (here) and its dependencies for aarch64 cp311 (pip download)"
rm -rf "$WORK/wheels" && mkdir -p "$WORK/wheels"
"$HOST_PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WORK/wheels" "$SRC" >/dev/null
WHEEL="$(ls "$WORK"/wheels/bin_agent-*.whl)"
cp "$SRC/scripts/constraints-bookworm.txt" "$WORK/wheels/constraints.txt"
"$HOST_PY" -m pip download -q --only-binary=:all: --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 -c "$WORK/wheels/constraints.txt" \
    -d "$WORK/wheels" "$WHEEL"
# The GPIO library the shipped config's pin factory (lgpio) imports: Raspberry Pi OS installs
# python3-lgpio from its own archive (install-pi.sh); Debian has no such package, so the same
# library's aarch64 wheel from PyPI stands in for it here (check-config imports it).
"$HOST_PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_36_aarch64 \
    --platform manylinux_2_34_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$WORK/wheels" "lgpio>=0.2"
ls "$WORK/wheels" | sed 's/^/   /'

say "3. venv as scripts/install-pi.sh makes it (system site packages, constraints in pip.conf)"
rm -rf "$ROOT/opt/bin-agent" "$ROOT/wheels"
cp -r "$WORK/wheels" "$ROOT/wheels"
arm /usr/bin/python3.11 -m venv --system-site-packages --without-pip /opt/bin-agent/venv
mkdir -p "$ROOT/etc/bin-agent"
cp "$SRC/scripts/constraints-bookworm.txt" "$ROOT/opt/bin-agent/venv/constraints.txt"
printf "[global]\nconstraint = /opt/bin-agent/venv/constraints.txt\n" >"$ROOT/opt/bin-agent/venv/pip.conf"
# Debian's pip (a system site package) runs inside the venv; installs offline.
arm /opt/bin-agent/venv/bin/python -m pip install -q --no-index --find-links /wheels \
    --disable-pip-version-check "/wheels/$(basename "$WHEEL")" lgpio
arm /opt/bin-agent/venv/bin/python -c 'import numpy, ai_edge_litert, bin_agent, lgpio; print("   venv: numpy", numpy.__version__, numpy.__file__, "| bin_agent", bin_agent.__version__, "| lgpio", lgpio.__file__)'

say "4. check-config and classify, arm64 (emulated) and $(uname -m)"
cp "$SRC/config/bin-agent.toml" "$ROOT/etc/bin-agent/bin-agent.toml"
# No camera under emulation: the shipped config with the replay source.
sed -i -e 's/^source = "picamera2"/source = "replay"/' -e 's#^path = "."$#path = "/photos"#' \
    "$ROOT/etc/bin-agent/bin-agent.toml"
# A few photos per class (TrashNet, not in the repository: PHOTOS=DIR/<class>/*.jpg).
PHOTOS="${PHOTOS:-${BIN_AGENT_SHARED:-$SRC/../shared}/data/trashnet}"
rm -rf "$ROOT/photos" && mkdir -p "$ROOT/photos"
for dir in "$PHOTOS"/*/; do
    find "$dir" -name "*.jpg" | sort | sed -n "1,${PER_CLASS:-2}p" | while read -r f; do
        cp "$f" "$ROOT/photos/$(basename "$dir")-$(basename "$f")"
    done
done
ls "$ROOT"/photos/*.jpg >/dev/null 2>&1 || { echo "arm64-check: no photos under $PHOTOS" >&2; exit 1; }
arm /opt/bin-agent/venv/bin/python -m bin_agent check-config /etc/bin-agent/bin-agent.toml
(cd "$ROOT" && arm /opt/bin-agent/venv/bin/python -m bin_agent classify --json --threads 1 photos/*.jpg) >"$WORK/arm64.json"
say "   classified under emulation"
(cd "$ROOT" && PYTHONPATH="$SRC" "$HOST_PY" -m bin_agent classify --json --threads 1 photos/*.jpg) >"$WORK/host.json"
"$HOST_PY" - "$WORK/arm64.json" "$WORK/host.json" <<'EOF'
import json
import sys

arm = {row["image"]: row for row in json.load(open(sys.argv[1]))}
host = {row["image"]: row for row in json.load(open(sys.argv[2]))}
worst, same = 0.0, 0
for name in sorted(host):
    a, h = arm[name], host[name]
    pa = {t["class"]: t["confidence"] for t in a["top3"]}
    ph = {t["class"]: t["confidence"] for t in h["top3"]}
    diff = max(abs(pa.get(k, 0.0) - p) for k, p in ph.items())
    worst = max(worst, diff)
    same += a["class"] == h["class"]
    print(f"   {name:<24} arm64 {a['class']:<9} {a['confidence']:.4f}  host {h['class']:<9} {h['confidence']:.4f}  max |dp| {diff:.4f}")
print(f"   {same}/{len(host)} same class; largest top-3 probability difference {worst:.4f}")
sys.exit(0 if same == len(host) else 1)
EOF
say "done"
