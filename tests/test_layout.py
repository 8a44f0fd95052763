"""The tree keeps its architecture: no import cycles between the package's units."""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers import REPO


def _picture():
    spec = importlib.util.spec_from_file_location("import_picture", REPO / "scripts" / "import_picture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_between_units():
    picture = _picture()
    assert picture.cycles(picture.arrows(REPO)) == []


def test_the_cycle_check_sees_a_cycle():
    picture = _picture()
    edges = {("bin_agent.agent", "bin_agent.mqtt.discovery"), ("bin_agent.mqtt.discovery", "bin_agent.agent")}
    assert picture.cycles(edges) == [["bin_agent.agent", "bin_agent.mqtt"]]
