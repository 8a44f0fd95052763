"""Triggers: decide on which frame there is a new item to classify.

The main loop calls :meth:`Trigger.update` for **every** frame; it returns
``True`` exactly once per new item, on the frame that should be classified,
and :attr:`Trigger.item_boxes` then say where the items lie (one box each), if
the trigger knows. :meth:`Trigger.request` (thread-safe) forces the next ``update`` to
return ``True`` whatever the mode, for ``cmd/classify`` over MQTT.

One module per variant, each built from the config's ``[trigger]`` section by
its ``from_config``:

* ``motion.py`` — :class:`MotionTrigger` watches the camera's low-resolution
  stream inside the drop zone against a slowly adapting model of the empty bin.
* ``gpio.py`` — :class:`GpioTrigger` wraps a gpiozero sensor (break-beam,
  button, PIR, ultrasonic distance sensor) and fires a settle time after it
  sees an item.
* ``manual.py`` — :class:`ManualTrigger` fires only on request.

:func:`build_trigger` is the one place that picks the variant from
``trigger.mode``. Hardware libraries are imported only where a GPIO device is
actually built, so the package imports on any machine.
"""

from __future__ import annotations

from typing import Any

from ..config import TriggerMode, TriggerSection
from ..geometry import FULL_FRAME, NormBox
from .base import Trigger
from .gpio import GpioTrigger
from .manual import ManualTrigger
from .motion import MotionTrigger

__all__ = ["GpioTrigger", "ManualTrigger", "MotionTrigger", "Trigger", "build_trigger"]


def build_trigger(section: TriggerSection, *, drop_zone: NormBox = FULL_FRAME, pin_factory: Any = None) -> Trigger:
    """The trigger that ``section.mode`` names, built from ``section``
    (``config.TriggerSection``, validated).

    :param drop_zone: the part of the frame the motion trigger watches.
    :param pin_factory: the gpiozero pin factory of the GPIO trigger
        (``None``: gpiozero's default).
    """
    if section.mode == "motion":
        return MotionTrigger.from_config(section, drop_zone)
    if section.mode == "gpio":
        return GpioTrigger.from_config(section, pin_factory)
    if section.mode == "manual":
        return ManualTrigger.from_config(section)
    raise ValueError(f"trigger.mode: unknown mode {section.mode!r}")


def switchable_trigger_modes(section: TriggerSection) -> list[TriggerMode]:
    """The trigger modes ``cmd/trigger_mode`` may switch to at run time: motion and manual
    (the camera is always there), and gpio only where the config's own mode is gpio (only
    then is a sensor known to be fitted on its pins)."""
    return ["motion", "gpio", "manual"] if section.mode == "gpio" else ["motion", "manual"]
