"""The operator's scripts (``scripts/*.py``) end as the CLI's commands do: an input they
refuse is one line naming it and an exit status, never a traceback, and nothing the
script would have replaced is touched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bin_agent.errors import EX_CONFIG, BinAgentError, ConfigError, run_script

REPO = Path(__file__).resolve().parent.parent


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_run_script_turns_an_error_a_person_can_act_on_into_one_line_and_its_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["/somewhere/tool.py"])

    class Refused(BinAgentError):
        exit_code = 65

    def refuses() -> int:
        raise Refused("/photos: no such dataset folder")

    def misconfigured() -> int:
        raise ConfigError(["agent.bin_id: must not be empty"], "bin.toml")

    for main, status, line in (
        (refuses, 65, "tool.py: /photos: no such dataset folder"),
        (misconfigured, EX_CONFIG, "tool.py: config error: bin.toml: agent.bin_id: must not be empty"),
        (lambda: None, 0, ""),
        (lambda: 3, 3, ""),
    ):
        with pytest.raises(SystemExit) as ended:
            run_script(main)
        assert ended.value.code == status
        assert capsys.readouterr().err.strip() == line


@pytest.mark.parametrize("name", ["crop_shape.py", "bin_look_costs.py"])
def test_a_script_given_a_missing_dataset_names_it_in_one_line(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no-photos"
    done = script(name, str(missing))
    assert done.returncode == os.EX_DATAERR, done.stderr
    assert done.stderr.strip() == f"{name}: {missing}: no such dataset folder"


def test_build_memory_with_no_photos_writes_no_memory(tmp_path: Path) -> None:
    # all its datasets missing: a memory of nothing would replace the shipped one
    out = tmp_path / "model.memory.npz"
    done = script("build_memory.py", str(tmp_path / "no-photos"), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert "no train photos in" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_ship_model_with_a_missing_run_replaces_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shipped = models / "waste_mobilenetv2_int8.tflite"
    shipped.write_bytes(b"the shipped model")
    run = tmp_path / "runs" / "v9"
    done = script(
        "ship_model.py",
        str(run),
        "--version",
        "v9",
        "--val",
        str(tmp_path / "val.json"),
        "--test",
        str(tmp_path / "test.json"),
        "--out",
        str(models),
    )
    assert done.returncode == 2, done.stderr
    assert f"{run / 'waste_mobilenetv2_int8.json'}: not there" in done.stderr and "Traceback" not in done.stderr
    assert shipped.read_bytes() == b"the shipped model" and sorted(models.iterdir()) == [shipped]


def test_a_script_that_cannot_write_its_output_names_it_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``OSError`` about a named file ends a script as a line naming it (exit 74); one naming
    no file (a bug, a socket) keeps its traceback."""
    monkeypatch.setattr(sys, "argv", ["/somewhere/tool.py"])
    blocker = tmp_path / "notes.txt"
    blocker.write_text("in the way\n")

    def writes_under_a_file() -> int:
        (blocker / "figures.json").write_text("{}")
        return 0

    with pytest.raises(SystemExit) as ended:
        run_script(writes_under_a_file)
    assert ended.value.code == os.EX_IOERR
    assert capsys.readouterr().err.strip() == (
        f"tool.py: {blocker / 'figures.json'}: cannot be read or written (part of the path is a file, not a folder)"
    )

    def refused() -> int:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        run_script(refused)


@pytest.mark.parametrize(("save_every_change", "most_lost"), [(False, 240), (True, 3)])
def test_a_broker_killed_while_a_dashboard_is_away_keeps_what_it_acknowledged_only_when_it_saves_every_change(
    save_every_change: bool, most_lost: int
) -> None:
    """The premise of ``scripts/soak.py`` (its broker saves after every change, so the events it
    counts as lost are the agent's) and of ``config/mosquitto/bin-agent.conf``'s advice, with a
    real mosquitto: 240 QoS 1 messages, the broker SIGKILLed right after every 80th PUBACK while
    the dashboard is away. Saving every 1,800 s it loses every message (each SIGKILL comes before
    any save); saving after every change, at most the one acknowledged just before each SIGKILL
    (mosquitto answers PUBACK before its loop saves)."""
    done = script(
        "broker_ack_loss.py",
        "--messages",
        "240",
        "--kill-every",
        "80",
        "--dashboard",
        "away",
        *(["--save-every-change"] if save_every_change else []),
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"(\d+) broker SIGKILLs right after a PUBACK: (\d+) acknowledged and never received", done.stdout)
    assert found is not None and found[1] == "3", done.stdout
    lost = int(found[2])
    assert lost == 240 if not save_every_change else lost <= most_lost, done.stdout
