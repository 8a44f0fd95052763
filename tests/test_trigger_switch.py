"""``cmd/trigger_mode``: the agent swaps its trigger between two frames, releasing and
re-claiming a GPIO sensor's pin (gpiozero MockFactory)."""

from __future__ import annotations

import threading

from PIL import Image

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.triggers import GpioTrigger, ManualTrigger, MotionTrigger, switchable_trigger_modes
from tests.helpers import base_config, wait_for


def test_switch_gpio_to_motion_to_manual_and_back(tmp_path):
    image = tmp_path / "item.png"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(image)
    data = base_config(tmp_path, image, mqtt=False)
    data["trigger"] = {"mode": "gpio", "settle_seconds": 0.0, "gpio": {"kind": "beam", "pin": 17}}
    data["camera"]["replay"].update({"loop": True, "realtime": True, "fps": 50.0})
    config = preflight.load_dict(data, base_dir=tmp_path)
    assert switchable_trigger_modes(config.trigger) == ["motion", "gpio", "manual"]
    agent = build_agent(config)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert isinstance(agent.trigger, GpioTrigger)
        for mode, kind in (("motion", MotionTrigger), ("manual", ManualTrigger), ("gpio", GpioTrigger)):
            assert agent.handle_command("trigger_mode", f'{{"mode": "{mode}"}}'.encode())["ok"]
            assert wait_for(lambda kind=kind: isinstance(agent.trigger, kind)), mode
            assert agent.state()["trigger_mode"] == mode
        # The beam on GPIO17 was closed and built again: it still fires.
        agent.pin_factory.pin(17).drive_low()  # pull-up: low = beam broken
        assert wait_for(lambda: agent.items_sorted == 1)
        refused = agent.handle_command("trigger_mode", b'{"mode": "laser"}')
        assert not refused["ok"] and refused["reason"] == "'mode' must be one of motion, gpio, manual"
    finally:
        agent.stop()
        runner.join(30)


def test_gpio_is_offered_only_where_configured(tmp_path):
    config = preflight.load_dict(base_config(tmp_path), base_dir=tmp_path)
    assert switchable_trigger_modes(config.trigger) == ["motion", "manual"]
