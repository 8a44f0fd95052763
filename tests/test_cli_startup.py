"""``bin-agent`` starts light: its help and its parser load neither numpy nor PIL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def _heavy_imports(*args: str) -> list[str]:
    """The numpy/PIL lines of ``python -X importtime ARGS`` (run in the repository, its own interpreter)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    return [name for name in modules if name.split(".")[0] in ("numpy", "PIL")]


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "import bin_agent.cli"),
        ("-m", "bin_agent", "--help"),
        ("-m", "bin_agent", "--version"),
        ("-m", "bin_agent", "report", "--help"),
    ],
    ids=["import", "help", "version", "report-help"],
)
def test_help_imports_neither_numpy_nor_pil(args: tuple[str, ...]) -> None:
    assert _heavy_imports(*args) == []


def test_the_training_commands_still_show_their_recipe_defaults() -> None:
    # Their arguments are added only when one of them is parsed: the help must still carry them.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "bin_agent", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert "--background-p" in out and "default 0.8" in out and "--qat-epochs" in out


@pytest.mark.parametrize("command", ["classify", "compare", "evaluate"])
def test_threads_zero_is_a_usage_error_naming_threads(command: str, tmp_path, capsys) -> None:
    from bin_agent.cli import main

    args = {
        "classify": ["classify", str(tmp_path / "x.jpg")],
        "compare": ["compare", str(tmp_path), "--model", "a", "--model", "b"],
        "evaluate": ["evaluate", str(tmp_path), "--model", "a"],
    }[command]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--threads", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "argument --threads: 0 must be at least 1" in err and "model" not in err.splitlines()[-1]


def test_loading_a_model_prints_no_runtime_banner(tmp_path) -> None:
    """LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate" line is not shown on every command;
    a real error the runtime prints still is."""
    from PIL import Image

    from tests.helpers import TINY_MODELS

    photo = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(photo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "classify", str(photo), "--model", str(TINY_MODELS / "tiny_uint8.tflite")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr and result.stderr == "", result.stderr
    assert "item.png: " in result.stdout


def test_what_else_the_runtime_writes_while_loading_still_reaches_stderr(capfd) -> None:
    import os as _os

    from bin_agent.classify.runtime import RUNTIME_BANNERS, _without_runtime_banners

    with _without_runtime_banners():
        _os.write(2, (RUNTIME_BANNERS[0] + "\n").encode())
        _os.write(2, b"ERROR: a real problem\n")
    assert capfd.readouterr().err == "ERROR: a real problem\n"
