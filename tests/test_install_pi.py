"""``scripts/install-pi.sh``: every step in ``--dry-run``, and its pip step for real.

The dry run changes nothing (it only prints); the pip step installs this
checkout, not editable, into a fresh venv that already holds numpy 1.24.2 (as
a ``--system-site-packages`` venv on Raspberry Pi OS Bookworm sees apt's
numpy), then classifies a photo with no model path given.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bin_agent import DEFAULT_MODEL_NAME
from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "install-pi.sh"


# The venv's Python must see the venv, not a checkout that PYTHONPATH may name.
CLEAN_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def install(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)


def commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path) -> None:
    venv = tmp_path / "venv"
    config = tmp_path / "etc" / "bin-agent.toml"
    result = install("--dry-run", "--venv", str(venv), "--config", str(config))
    assert result.returncode == 0, result.stderr
    steps = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == ["== check", "== apt", "== venv", "== pip", "== user", "== config", "== unit", "== next"]
    cmds = commands(result.stdout)
    apt = next(c for c in cmds if " apt-get install " in c)
    for package in ("python3-picamera2", "python3-lgpio", "mosquitto-clients", "python3-venv"):
        assert package in apt.split()
    assert "--no-install-recommends" in apt.split()
    assert f"/usr/bin/python3 -m venv --system-site-packages {venv}" in cmds
    pip = next(c for c in cmds if " -m pip install " in c)
    assert pip.startswith(f"{venv}/bin/python -m pip install ")
    # ... of a clean copy of this checkout (no stale build/, nothing written into it)
    source = next(c for c in cmds if c.startswith(f"tar -C {REPO} "))
    assert "--exclude=./build" in source.split()
    assert pip.split()[-1].endswith("/bin-agent")
    assert " -e " not in pip and "--editable" not in pip  # the model ships only in a real install
    bookworm_python = (
        subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info < (3, 12))"], capture_output=True, text=True
        ).stdout.strip()
        == "True"
    )
    # numpy<2 not on the command line but in a constraints file every later pip run reads.
    assert ("numpy<2" in pip) is False
    constraint = f"install -m 0644 {REPO}/scripts/constraints-bookworm.txt {venv}/constraints.txt"
    assert (constraint in cmds) == bookworm_python
    assert (f"+ write {venv}/pip.conf:\n    [global]\n    constraint = {venv}/constraints.txt\n" in result.stdout) == (
        bookworm_python
    )
    assert "python3-smbus2" in apt.split()  # servo_drive = "pca9685"
    assert "python3-tomlkit" in apt.split()  # bin-agent calibrate saves its angles
    assert any(
        c.startswith("install -m 0644 ") and c.endswith("/etc/systemd/system/bin-agent-doctor.service") for c in cmds
    )
    assert "systemd-sysusers /usr/lib/sysusers.d/bin-agent.conf" in cmds
    assert "install -d -o bin-agent -g bin-agent -m 0750 /var/lib/bin-agent" in cmds
    assert f"install -D -m 0640 -o root -g bin-agent {REPO}/config/bin-agent.toml {config}" in cmds
    assert "install -m 0644" in " ".join(c for c in cmds if c.endswith("/etc/systemd/system/bin-agent.service"))
    assert cmds[-2:] == ["systemctl daemon-reload", "systemctl enable bin-agent.service"]
    assert "bin-agent doctor --config" in result.stdout
    assert not venv.exists() and not config.exists()


@pytest.mark.parametrize(("servo_drive", "dropin"), [("kernel_pwm", True), ("gpiozero", False), ("pca9685", False)])
def test_kernel_pwm_in_the_config_gets_the_dropin_that_lets_it_write_sys(tmp_path, servo_drive, dropin) -> None:
    """ProtectKernelTunables=yes makes /sys read-only: the PWM export fails and the agent
    exits 78, never restarted (issue 23, item 1). The drop-in goes to the doctor's unit too."""
    config = tmp_path / "bin-agent.toml"
    config.write_text(
        (REPO / "config" / "bin-agent.toml")
        .read_text()
        .replace('servo_drive = "gpiozero"', f'servo_drive = "{servo_drive}"')
    )
    assert f'servo_drive = "{servo_drive}"' in config.read_text()
    result = install("--dry-run", "--only", "unit", "--config", str(config))
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    for unit in ("bin-agent", "bin-agent-doctor"):
        line = (
            f"install -D -m 0644 {REPO}/systemd/bin-agent-kernel-pwm.conf "
            f"/etc/systemd/system/{unit}.service.d/kernel-pwm.conf"
        )
        assert (line in cmds) == dropin, cmds


def test_numpy_below_2_is_in_the_package_metadata_where_apts_picamera2_needs_it() -> None:
    """A plain `pip install .` into a Bookworm venv with system site packages must not pull
    numpy 2 through ml_dtypes (ai-edge-litert 2.3.0 -> ml_dtypes 0.7.0 -> numpy >= 2)."""
    from packaging.requirements import Requirement
    from setuptools.config.setupcfg import read_configuration

    requirements = [Requirement(r) for r in read_configuration(REPO / "setup.cfg")["options"]["install_requires"]]

    def numpy_pins(python: str, machine: str) -> set[str]:
        env = {"python_version": python, "platform_machine": machine}
        return {
            str(r.specifier) for r in requirements if r.name == "numpy" and (not r.marker or r.marker.evaluate(env))
        }

    assert "<2" in numpy_pins("3.11", "aarch64")  # Raspberry Pi OS Bookworm
    assert numpy_pins("3.13", "aarch64") == {""}  # Trixie ships numpy 2
    assert numpy_pins("3.11", "x86_64") == {""}  # a development machine: no apt picamera2


def test_sysusers_puts_the_user_in_every_group_the_unit_names() -> None:
    lines = (REPO / "systemd" / "bin-agent.sysusers").read_text().splitlines()
    groups = {ln.split()[2] for ln in lines if ln.startswith("m bin-agent ")}
    unit = (REPO / "systemd" / "bin-agent.service").read_text()
    named = next(ln for ln in unit.splitlines() if ln.startswith("SupplementaryGroups="))
    assert set(named.partition("=")[2].split()) <= groups
    assert {"video", "gpio", "i2c"} <= groups


def test_an_existing_config_is_kept(tmp_path) -> None:
    config = tmp_path / "bin-agent.toml"
    config.write_text("# mine\n")
    result = install("--dry-run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{config} exists: kept" in result.stdout
    assert not any(c.endswith(str(config)) for c in commands(result.stdout))


def test_only_and_no_apt_select_steps(tmp_path) -> None:
    result = install("--dry-run", "--only", "pip,unit", "--no-apt", "--venv", str(tmp_path / "v"))
    steps = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == ["== check", "== pip", "== unit", "== next"]
    result = install("--dry-run", "--no-apt")
    assert "apt-get" not in result.stdout and "== venv" in result.stdout


def test_a_custom_venv_gets_a_unit_that_runs_it() -> None:
    result = install("--dry-run", "--only", "unit", "--venv", "/srv/ba/venv", "--config", "/srv/ba/b.toml")
    assert result.returncode == 0, result.stderr
    assert "   ExecStart=/srv/ba/venv/bin/bin-agent run --config /srv/ba/b.toml\n" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "nope"], "unknown step 'nope'"),
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--venv"], "--venv needs a directory"),
        (["--only", "pip", "--venv", "/nonexistent/v"], "no venv at /nonexistent/v: run the venv step first"),
    ],
)
def test_bad_arguments_are_one_line(args, message) -> None:
    result = install(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"install-pi.sh: {message}"), lines


def test_a_32bit_python_is_refused_in_one_line(tmp_path) -> None:
    # A 32-bit interpreter cannot run here; this one answers the script's only
    # question to it (pointer size) the way a 32-bit Python does.
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\necho 32\n")
    python.chmod(0o755)
    result = install("--dry-run", "--python", str(python), "--venv", str(tmp_path / "none"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"install-pi.sh: {python} is a 32-bit Python: bin-agent needs a 64-bit OS (Raspberry Pi OS 64-bit)"
    ]
    assert "+ " not in result.stdout


def test_system_steps_need_root(tmp_path) -> None:
    command = ["bash", str(SCRIPT), "--only", "apt"]
    if os.geteuid() == 0:  # as nobody: the script must refuse before apt-get runs
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "the apt step changes the system: run it as root (sudo)" in result.stderr


# --------------------------------------------------------------------------- the real pip step


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info >= (3, 12), reason="numpy 1.24.2 (Bookworm's) needs Python < 3.12")
def test_pip_step_keeps_numpy_1_and_classifies_with_no_model_path(tmp_path, trashnet_dir) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "numpy==1.24.2"], check=True, timeout=300, env=CLEAN_ENV)

    for _ in range(2):  # the second run shows the step is idempotent
        result = install("--only", "pip", "--no-apt", "--venv", str(venv), timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr

    numpy_version = subprocess.run(
        [str(python), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        env=CLEAN_ENV,
    ).stdout.strip()
    assert numpy_version.startswith("1."), numpy_version
    # A later plain `pip install` in the venv reads the constraint from the venv's pip.conf.
    later = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", "numpy>=2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=CLEAN_ENV,
    )
    assert later.returncode != 0 and "numpy<2" in later.stdout + later.stderr, later.stdout + later.stderr
    # Not editable: the package, and the model in it, are inside the venv (out
    # of /home, readable under the unit's ProtectHome=yes).
    where = subprocess.run(
        [str(python), "-c", "import bin_agent; print(bin_agent.DEFAULT_MODEL.resolve())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=CLEAN_ENV,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv.resolve()) and Path(where).is_file(), where

    photo = trashnet_dir / "glass" / "glass1.jpg"
    result = subprocess.run(
        [str(venv / "bin" / "bin-agent"), "classify", str(photo)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=CLEAN_ENV,
    )
    assert result.returncode == 0, result.stderr
    label = result.stdout.split(": ", 1)[1].split()[0]
    assert label in {"cardboard", "glass", "metal", "paper", "plastic", "trash"}, result.stdout
    # A config without model.path (as the shipped one leaves it) finds the model too.
    config = tmp_path / "bin-agent.toml"
    config.write_text(f'[camera]\nsource = "replay"\n\n[camera.replay]\npath = "{photo}"\n')
    check = subprocess.run(
        [str(venv / "bin" / "bin-agent"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=CLEAN_ENV,
    )
    assert check.returncode == 0 and f"model {DEFAULT_MODEL_NAME}" in check.stdout, check.stdout + check.stderr
