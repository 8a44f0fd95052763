"""The systemd unit: directives present, and ``systemd-analyze verify`` clean.

``verify`` runs on a copy whose ``ExecStart=`` names an executable that exists
here (the venv's ``bin-agent`` script if installed, else this Python), because
verify fails on a missing binary. Nothing is created system-wide: ``verify``
does not resolve ``User=``, ``Group=`` or ``SupplementaryGroups=`` (that
happens when the service starts), so the unit verifies on a machine without
a ``bin-agent`` user or ``gpio`` group; ``systemd/bin-agent.sysusers`` creates
them on the Pi.

``verify`` exits 0 even when it ignores an invalid line (it only warns), so
the test also requires an empty stderr; nothing is filtered.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "bin-agent.service"
SYSUSERS = UNIT.with_name("bin-agent.sysusers")
ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists; repeated keys
    (DeviceAllow=, Environment=) are kept, comments dropped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"unexpected continuation line: {raw!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"assignment outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


@pytest.fixture(scope="module")
def service() -> list[tuple[str, str]]:
    return parse_unit(UNIT.read_text())["Service"]


REQUIRED = {
    "Type": "notify",
    "ExecStart": "/opt/bin-agent/venv/bin/bin-agent run --config /etc/bin-agent/bin-agent.toml",
    "NotifyAccess": "main",
    "WatchdogSec": "30s",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "78",
    "User": "bin-agent",
    "Group": "bin-agent",
    "SupplementaryGroups": "video gpio",
    "StateDirectory": "bin-agent",
    "ConfigurationDirectory": "bin-agent",
    "KillSignal": "SIGTERM",
    "UMask": "0027",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize(("key", "expected"), sorted(REQUIRED.items()))
def test_required_directive(service, key: str, expected: str) -> None:
    assert values(service, key) == [expected]


def test_timing_directives_present(service) -> None:
    for key in ("RestartSec", "TimeoutStopSec", "TimeoutStartSec"):
        assert len(values(service, key)) == 1, key
    assert "@system-service" in values(service, "SystemCallFilter")


def test_devices_the_camera_and_gpio_need_are_allowed(service) -> None:
    allowed = {v.split()[0]: v.split()[1] for v in values(service, "DeviceAllow")}
    for device in ("char-gpiochip", "char-video4linux", "char-media", "char-dma_heap"):
        assert allowed.get(device) == "rw", device
    # systemd does not glob device paths: /dev/dma_heap/* would be a literal
    # (missing) node and silently allow nothing.
    assert not any("*" in d for d in allowed if d.startswith("/dev/"))
    assert values(service, "PrivateDevices") == []  # would hide them all


def test_sysusers_creates_the_user_and_groups() -> None:
    lines = [ln.split() for ln in SYSUSERS.read_text().splitlines() if ln and not ln.startswith("#")]
    assert ["u", "bin-agent", "-"] == lines[0][:3]
    assert ["m", "bin-agent", "video"] in lines and ["m", "bin-agent", "gpio"] in lines


def _test_copy(tmp_path: Path) -> Path:
    script = Path(sys.executable).with_name("bin-agent")
    executable = script if script.is_file() else Path(sys.executable)
    text = UNIT.read_text().replace(
        "ExecStart=/opt/bin-agent/venv/bin/bin-agent ", f"ExecStart={executable} ", 1
    )
    assert str(executable) in text
    copy = tmp_path / "bin-agent.service"
    copy.write_text(text)
    return copy


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    copy = _test_copy(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_catches_a_bad_line(tmp_path: Path) -> None:
    """The check above can fail: a bad value is reported on stderr."""
    copy = _test_copy(tmp_path)
    copy.write_text(copy.read_text().replace("DevicePolicy=closed", "DevicePolicy=closd"))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert "closd" in result.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_report_security_exposure(tmp_path: Path, record_property) -> None:
    """The exposure score of ``systemd-analyze security --offline=true``
    (systemd >= 250) stays at the README's 1.5: a hardening line dropped from
    the unit raises it (e.g. without ``ProtectSystem=strict`` it is 1.7)."""
    copy = _test_copy(tmp_path)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True, text=True, timeout=60,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"systemd-analyze too old for --offline: {result.stderr.strip()}")
    summary = [ln for ln in result.stdout.splitlines() if "Overall exposure" in ln]
    assert summary, f"no score: rc={result.returncode} {result.stderr.strip()}"
    report = summary[0].strip()
    record_property("systemd_security", report)
    print(f"\nsystemd-analyze security: {report}")
    score = float(re.search(r"service: (\d+\.\d+)", report).group(1))
    assert score <= 1.5, f"{report}: the unit lost hardening (README says 1.5)"
