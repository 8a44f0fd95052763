"""The manual trigger: fires only when asked (MQTT ``cmd/classify``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..geometry import NormBox
from ..sources.base import Frame
from .base import Request

if TYPE_CHECKING:
    from ..config import TriggerSection


class ManualTrigger:
    """Fires only when asked: :meth:`update` returns ``True`` on the first frame
    after each :meth:`request` (several requests between two frames count once).

    ``state`` is ``"requested"`` while a request waits for a frame, else ``"idle"``.
    It never knows where the item is (``item_boxes`` is empty).
    """

    def __init__(self) -> None:
        self._request = Request()

    @classmethod
    def from_config(cls, section: TriggerSection | None = None) -> ManualTrigger:
        """``[trigger]`` has nothing for the manual trigger; taken for symmetry."""
        return cls()

    @property
    def state(self) -> str:
        return "requested" if self._request.pending else "idle"

    @property
    def item_boxes(self) -> tuple[NormBox, ...]:
        return ()

    def update(self, frame: Frame) -> bool:
        return self._request.take()

    def request(self) -> None:
        self._request.set()

    def item_taken_away(self) -> None:
        pass  # nothing watched

    def close(self) -> None:
        pass
