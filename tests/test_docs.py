"""The docs tell the truth: the laptop guide's runnable commands run as written, and the
configuration reference is the schema's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

RUNNABLE = re.compile(r"<!-- runnable -->\n```(?:bash|sh)\n(.*?)```", re.S)


def laptop_commands() -> list[str]:
    text = (REPO / "docs" / "laptop.md").read_text()
    return [line for block in RUNNABLE.findall(text) for line in block.splitlines() if line.strip()]


def test_the_laptop_guide_has_runnable_commands_on_the_laptop_config() -> None:
    commands = laptop_commands()
    assert len(commands) >= 6
    assert all(command.startswith(".venv/bin/bin-agent ") for command in commands)
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / "docs" / "laptop.md").read_text(), re.S)
    assert blocks and not any("bin-agent.toml" in block for block in blocks), "the Pi's config exits 78 on a laptop"


def test_the_laptop_guides_commands_run(tmp_path: Path, trashnet_dir: Path) -> None:
    """Each runnable command of docs/laptop.md, in order, exits 0. The one change: the copy of
    config/demo.toml names the photos where they are here and keeps its state in tmp_path, and
    replays on a virtual clock (the same items, without waiting for them)."""
    shared = trashnet_dir.parent.parent
    text = (REPO / "config" / "demo.toml").read_text()
    assert 'path = "../../shared/data/trashnet"' in text and 'state_dir = "../state/demo"' in text
    text = text.replace('path = "../../shared/data/trashnet"', f'path = "{trashnet_dir}"\nrealtime = false')
    config = tmp_path / "demo.toml"
    config.write_text(text.replace('state_dir = "../state/demo"', f'state_dir = "{tmp_path / "state"}"'))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in laptop_commands():
        words = [
            str(config) if word == "config/demo.toml" else word.replace("../shared/", f"{shared}/")
            for word in shlex.split(command)
        ]
        words = [sys.executable, "-m", "bin_agent", *words[1:]]
        result = subprocess.run(words, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
        assert "Traceback" not in result.stderr, command
        if command.endswith("--since 1d"):
            assert " 12 items" in result.stdout, result.stdout


def test_the_configuration_reference_is_the_schemas() -> None:
    from scripts.config_reference import PAGE, page_with_table

    text = PAGE.read_text()
    assert page_with_table(text) == text, "run: python scripts/config_reference.py --write"


def test_the_readme_fits_a_screen_and_its_links_exist() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)", text):
        if "://" not in target:
            assert (REPO / target).exists(), target


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_every_doc_page_links_to_pages_that_exist(page: str) -> None:
    text = (REPO / "docs" / page).read_text()
    for target in re.findall(r"\]\(([^)#]+)", text):
        if "://" not in target:
            assert (REPO / "docs" / target).exists(), f"{page}: {target}"
