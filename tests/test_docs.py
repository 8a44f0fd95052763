"""The docs tell the truth: the laptop guide's runnable commands run as written, and the
configuration reference is the schema's."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

RUNNABLE = re.compile(r"<!-- runnable -->\n```(?:bash|sh)\n(.*?)```", re.S)
INSTALL_EXTRA = re.compile(r"\.venv/bin/pip install -e '\.\[(\w+)\]'")
"""A runnable line that installs one of the package's extras into the checkout's venv."""
EXTRA_MODULES = {"calibrate": "tomlkit", "report": "matplotlib", "train": "tensorflow"}
"""What each optional extra brings that the package's own requirements (what ``scripts/demo.sh``
installs) do not."""


def laptop_commands() -> list[str]:
    text = (REPO / "docs" / "laptop.md").read_text()
    return [line for block in RUNNABLE.findall(text) for line in block.splitlines() if line.strip()]


def test_the_laptop_guide_has_runnable_commands_on_the_laptop_config() -> None:
    commands = laptop_commands()
    assert len(commands) >= 6
    assert all(command.startswith(".venv/bin/bin-agent ") or INSTALL_EXTRA.fullmatch(command) for command in commands)
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / "docs" / "laptop.md").read_text(), re.S)
    assert blocks and not any("bin-agent.toml" in block for block in blocks), "the Pi's config exits 78 on a laptop"


def without_modules(folder: Path, modules: list[str]) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import`` of each of ``modules`` fail as
    if it were not installed."""
    for module in modules:
        (folder / module).mkdir(parents=True, exist_ok=True)
        message = f"No module named {module!r}"
        (folder / module / "__init__.py").write_text(f"raise ModuleNotFoundError({message!r}, name={module!r})\n")
    return folder


def test_the_laptop_guides_commands_run(tmp_path: Path, trashnet_dir: Path) -> None:
    """Each runnable command of docs/laptop.md, in order, exits 0 in a venv that has what
    ``scripts/demo.sh`` installed (the package without extras) and the extras the guide installed
    before it: an extra's modules are hidden until its ``pip install`` line. The one change: the
    copy of config/demo.toml names the photos where they are here and keeps its state in tmp_path,
    and replays on a virtual clock (the same items, without waiting for them)."""
    setup = (REPO / "setup.cfg").read_text()
    for extra, module in EXTRA_MODULES.items():
        assert re.search(rf"^{extra} =\n(    .*\n)*?    {module}", setup, re.M), f"setup.cfg: [{extra}] has {module}"
    installed: set[str] = set()
    shared = trashnet_dir.parent.parent
    text = (REPO / "config" / "demo.toml").read_text()
    assert 'path = "../../shared/data/trashnet"' in text and 'state_dir = "../state/demo"' in text
    text = text.replace('path = "../../shared/data/trashnet"', f'path = "{trashnet_dir}"\nrealtime = false')
    config = tmp_path / "demo.toml"
    config.write_text(text.replace('state_dir = "../state/demo"', f'state_dir = "{tmp_path / "state"}"'))
    for command in laptop_commands():
        extra = INSTALL_EXTRA.fullmatch(command)
        if extra:
            assert extra[1] in EXTRA_MODULES, command
            installed.add(extra[1])
            continue
        hidden = [module for name, module in EXTRA_MODULES.items() if name not in installed]
        hiding = without_modules(tmp_path / "not-installed" / "-".join(sorted(installed) or ["none"]), hidden)
        env = {**os.environ, "PYTHONPATH": f"{hiding}{os.pathsep}{REPO}"}
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


def test_the_install_hints_name_what_pip_can_install() -> None:
    """bin-agent is not on PyPI, so a hint ``pip install 'bin-agent[calibrate]'`` installs
    nothing (or somebody else's package): the hints a person is shown name the package itself
    or the checkout's extra (``pip install -e '.[calibrate]'``), and that extra exists."""
    extras_section = (REPO / "setup.cfg").read_text().partition("[options.extras_require]")[2]
    extras = set(re.findall(r"^(\w+) =$", extras_section, re.M))
    texts = {path: path.read_text() for path in (REPO / "bin_agent").rglob("*.py")}
    texts |= {path: path.read_text() for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]}
    for path, text in texts.items():
        if path.name == "pi-notes.md":  # a measured history: it quotes an old hint to say it was wrong
            continue
        assert not re.search(r"pip install ['\"]?bin-agent\[", text), path
        for extra in re.findall(r"pip install -e '\.\[(\w+)\]'", text):
            assert extra in extras, f"{path}: no [{extra}] extra in setup.cfg"


def test_the_commands_reference_is_the_parsers() -> None:
    """docs/commands.md lists every argument of every command with its help, as ``--help`` does."""
    from scripts.commands_reference import PAGE, page_with_section

    text = PAGE.read_text()
    assert page_with_section(text) == text, "run: python scripts/commands_reference.py --write"


def bin_agent_commands() -> dict[str, argparse.ArgumentParser]:
    """Each ``bin-agent`` command's parser, by name."""
    from bin_agent.cli import build_parser

    commands = next(a for a in build_parser(None)._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def test_every_option_the_docs_and_the_helps_name_exists() -> None:
    """An option a page shows with a command (``bin-agent report ... --png F``), or a command's
    help names (``--copies``: "... unless --online"), is one that command takes: a renamed or
    removed option leaves no instruction that fails."""
    commands = bin_agent_commands()
    options = {
        name: {o for action in parser._actions for o in action.option_strings} for name, parser in commands.items()
    }
    names = "|".join(sorted(options, key=len, reverse=True))
    pages = [REPO / "README.md", REPO / "models" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    wrong = [
        f"{page.relative_to(REPO)}: bin-agent {use[1]} {option}"
        for page in pages
        for use in re.finditer(rf"bin-agent ({names})\b([^`|#\n]*)", page.read_text())
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", use[2])
        if option not in options[use[1]]
    ]
    wrong += [
        f"bin-agent {name} --help: {option}"
        for name, parser in commands.items()
        for action in parser._actions
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", action.help or "")
        if option not in options[name]
    ]
    assert not wrong, wrong


def mqtt_table_row(topic: str) -> str:
    """The row of docs/mqtt.md's topic table that starts with ``topic``."""
    rows = [line for line in (REPO / "docs" / "mqtt.md").read_text().splitlines() if line.startswith(f"| `{topic}`")]
    assert len(rows) == 1, f"docs/mqtt.md: one row for {topic}"
    return rows[0]


def test_the_mqtt_page_names_every_topic_and_command() -> None:
    """Every topic the agent publishes or subscribes to and every command its gate accepts has
    its row in docs/mqtt.md, and every command the page names is one the gate accepts."""
    from bin_agent.mqtt.commands import SCHEMAS
    from bin_agent.mqtt.link import Topics

    text = (REPO / "docs" / "mqtt.md").read_text()
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    topics = Topics("BASE")
    suffixes = {getattr(topics, name) for name, value in vars(Topics).items() if isinstance(value, property)}
    suffixes = {topic.removeprefix("BASE/") for topic in suffixes} - {"cmd/+"} | {"full"}
    assert not [s for s in sorted(suffixes) if f"`{s}`" not in table], "topics without a row"
    assert not [c for c in SCHEMAS if f"`cmd/{c}`" not in table], "commands without a row"
    named = set(re.findall(r"`cmd/(\w+)`", text)) - {"result"}
    assert named <= set(SCHEMAS), f"not commands: {named - set(SCHEMAS)}"


def test_the_mqtt_page_names_every_key_of_state_and_event(tmp_path: Path) -> None:
    """The retained ``state`` of a bin with every optional part on (capture, learning, asking,
    fill) and an asked item's ``event``: each key is in its row of docs/mqtt.md."""
    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from bin_agent.classify.classifier import Classification
    from bin_agent.events import SortedItem
    from bin_agent.router import Route
    from tests.helpers import base_config

    data = base_config(tmp_path, mqtt=False)
    data["capture"] = {"enabled": True}
    data["ask"] = {"enabled": True, "mode": "yes_next", "yes_pin": 5, "next_pin": 6}
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path))
    try:
        state = agent.state()
    finally:
        agent.close()
    assert {"ask", "learning", "fill"} <= set(state)
    row = mqtt_table_row("state")
    assert not [key for key in state if f"`{key}`" not in row], "state keys the page does not name"

    classification = Classification("paper", 0.5, (("paper", 0.5), ("cardboard", 0.4)), (0.4, 0.5), 1.0, 2.0)
    event = SortedItem("bin-01", classification, Route("residual", True), "v1", {"total": 3.0}, asked="unsure")
    row = mqtt_table_row("event")
    assert not [key for key in event.payload() if f'"{key}"' not in row], "event keys the page does not name"


@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_the_readmes_commands_on_a_python_without_venv_name_the_fix(tmp_path: Path, script: str) -> None:
    """Debian's python3 without python3-venv fails ``python3 -m venv`` and leaves a .venv without
    pip behind. The README's two commands then say what to install, on the first run and on
    the next, instead of stopping at "No module named pip" in the half-made .venv."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / script, checkout / "scripts" / script)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(checkout / ".venv")], check=True, timeout=120)
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text(
        "#!/bin/sh\necho 'The virtual environment was not created successfully because ensurepip is not available.' >&2\n"
        "exit 1\n"
    )
    stub.chmod(0o755)
    for present in (
        "mosquitto",
        "mosquitto_pub",
        "openssl",
        "strace",
        "systemd-analyze",
    ):  # test.sh's apt step: nothing to install
        (stub.parent / present).symlink_to("/bin/true")
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode != 0
    assert "sudo apt install python3-venv" in result.stderr, result.stdout + result.stderr
    assert "No module named pip" not in result.stderr
