"""Ask a person when the bin is unsure (``[ask]``), at the bin and remotely.

When the router would send an item to the fallback compartment (its top class
is below ``router.confidence_threshold``), the loop does not drop it at once:
:meth:`Asker.ask` shows the two most probable compartments, waits up to
``timeout_seconds`` for an answer, and routes the item by it. No answer: the
item goes to the fallback as before. A share of the confident items
(``confirm_share``) is asked about too, so the bin also learns where it is
confidently wrong; unanswered, those go where the model said.

Candidates are *compartments*, because that is what a bin can show (a lamp per
compartment) and what a person answers at it (a button per compartment). Their
probability is the sum of their classes'. The answer's class (the label) is the
most probable class of the chosen compartment; it is ``exact`` only when the
compartment takes one class. A remote answer names the class itself.

Answers come from:

* gpiozero ``Button``\\ s on the agent's one pin factory: one per compartment
  (``mode = "buttons"``), or a yes/next pair (``mode = "yes_next"``: yes takes
  the compartment shown, next shows the following candidate and restarts the
  timeout, up to :data:`MAX_WAIT_FACTOR` times ``timeout_seconds`` in all);
* MQTT: ``cmd/correct {"event_id", "label"}`` for the item being asked about
  (:meth:`Asker.answer_remote`; Home Assistant's select sends it).

What the lamps show (``[ask] leds``, or the guidance LEDs of
``actuator.kind = "leds"``): the most probable compartment steady, the second
blinking; in yes/next mode only the compartment on offer, steady.

Debouncing: gpiozero's ``bounce_time`` is handed to the pin factory; on lgpio
(the Pi 5 default) it is lg's debounce, a glitch filter: an edge is reported
only once the level has been stable for that long, so contact bounce never
arrives and a press arrives ``bounce_seconds`` late. Other factories differ
(RPi.GPIO ignores edges for that long after one, pigpio caps its glitch
filter; gpiozero's ``MockPin`` does nothing), so :class:`Asker` also drops an
edge that comes within ``bounce_seconds`` of the previous edge of the same
button. A person's press (some 100 ms) and the gap between two presses are far
longer than either.

Remotely (``remote = true``, MQTT on): the question is published retained on
``<topic_prefix>/<bin_id>/unsure`` (JSON, see :meth:`Asker.question`) and the
crop as a JPEG of at most ``image_max_bytes`` on ``.../unsure/image``; when the
wait ends the question is published again with ``waiting: false`` and the
answer. The answer is written to the label store (``labels.jsonl`` of the
capture folder, ``source``: ``button`` or ``mqtt``) when capture is on.

Several items at once (one trigger fire, several boxes): nothing at the bin says which
of them the lamps would ask about, so a button answer could be the other item's and
would become this one's label. Each is asked remotely only (``at_the_bin=False``: no
lamps, presses not taken; the question says ``at_the_bin: false``), where the crop on
``unsure/image`` shows which item it is.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classify.classifier import Classification
from .config import AskSection, RouterSection
from .events import utc_now_iso
from .router import Route

log = logging.getLogger(__name__)

UNSURE = "unsure"
"""Asked because the top class is below the router's threshold."""
CONFIRM = "confirm"
"""Asked although confident: one of the ``confirm_share`` samples."""
MAX_WAIT_FACTOR = 3.0
"""yes/next: "next" restarts the timeout, but one item never waits longer than
this many ``timeout_seconds`` (the watchdog is fed for that long)."""

Publish = Callable[[dict[str, Any], bytes | None], None]
"""Publishes the question (JSON) and, when given, the crop (JPEG bytes)."""


@dataclass(frozen=True)
class Answer:
    """What a person said about an item.

    :param label: the class (empty when the chosen compartment takes no class).
    :param compartment: where the item goes.
    :param source: ``button`` or ``mqtt``.
    :param exact: the class was named (a remote answer, or a compartment of one class).
    """

    label: str
    compartment: str
    source: str
    exact: bool

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "compartment": self.compartment, "source": self.source, "exact": self.exact}


@dataclass(frozen=True)
class Asked:
    """The outcome of asking about one item: its route and the answer, if any."""

    event_id: str
    reason: str
    route: Route
    answer: Answer | None

    def event_fields(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~bin_agent.events.SortedItem` that say so."""
        return {
            "event_id": self.event_id,
            "asked": self.reason,
            "answer": None if self.answer is None else self.answer.as_dict(),
        }

    def counted_label(self, predicted: str) -> str:
        """The class the counts take: the answer's, else the prediction."""
        return self.answer.label if self.answer is not None and self.answer.label else predicted


@dataclass
class _Pending:
    event_id: str
    predicted: str
    ranking: list[str]
    deadline: float
    last_call: float
    probabilities: dict[str, float] = field(default_factory=dict)
    shown: int = 0
    answer: Answer | None = None
    at_the_bin: bool = True
    press_logged: bool = False


class CandidateLights:
    """One lamp per compartment showing the candidates.

    :param leds: compartment → gpiozero ``LED`` (anything with ``on``, ``off``, ``blink``).
    :param owned: close the LEDs with :meth:`close` (False: they belong to the sorter).
    """

    def __init__(self, leds: Mapping[str, Any], owned: bool) -> None:
        self.leds = dict(leds)
        self.owned = owned

    def show(self, steady: str, blinking: str | None = None) -> None:
        self.clear()
        if steady in self.leds:
            self.leds[steady].on()
        if blinking is not None and blinking in self.leds:
            self.leds[blinking].blink(on_time=0.25, off_time=0.25)

    def clear(self) -> None:
        for led in self.leds.values():
            led.off()

    def close(self) -> None:
        if self.owned:
            for led in self.leds.values():
                led.off()
                led.close()


class Asker:
    """Asks about unsure items and waits for an answer.

    :param mode: ``buttons``, ``yes_next`` or ``remote``.
    :param compartments: class → compartment (the router's table).
    :param all_compartments: every compartment, fallback included.
    :param buttons: ``buttons``: compartment → gpiozero ``Button``; ``yes_next``:
        ``{"yes": Button, "next": Button}``; ``remote``: none.
    :param lights: the lamps that show the candidates, or None.
    :param timeout_seconds: how long an item waits for an answer.
    :param confirm_share: share of confident items asked about too.
    :param bounce_seconds: an edge this close to the previous one of the same button is dropped.
    :param label_folder: the capture folder whose label store takes the answers (None: not stored).
    :param image_max_bytes: largest JPEG of the crop handed to ``publish``.
    :param rng: draws the confirmation samples (seed it in tests).
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        mode: str,
        compartments: Mapping[str, str],
        all_compartments: Sequence[str],
        buttons: Mapping[str, Any] | None = None,
        lights: CandidateLights | None = None,
        timeout_seconds: float = 10.0,
        confirm_share: float = 0.0,
        bounce_seconds: float = 0.02,
        label_folder: Path | None = None,
        image_max_bytes: int = 20000,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.compartments = dict(compartments)
        self.all_compartments = list(all_compartments)
        self.buttons = dict(buttons or {})
        self.lights = lights
        self.timeout_seconds = timeout_seconds
        self.confirm_share = confirm_share
        self.bounce_seconds = bounce_seconds
        self.label_folder = label_folder
        self.image_max_bytes = image_max_bytes
        self.publish: Publish | None = None
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._pending: _Pending | None = None
        # The question last published (and its JPEG): sent again on a reconnect, so an
        # item asked about while the link was down still reaches the dashboard.
        self._latest: tuple[dict[str, Any], bytes | None] | None = None
        # A reconnect's resend and the loop's answer must not cross: the last one sent is the latest.
        self._publish_lock = threading.Lock()
        self._last_edge: dict[str, float] = {}
        self.asked = 0
        self.answered = 0
        for name, button in self.buttons.items():
            # Default arguments bind the name now (a closure would see the last one).
            button.when_pressed = lambda _device=None, name=name: self._pressed(name)
            button.when_released = lambda _device=None, name=name: self._edge(name)

    @classmethod
    def from_config(
        cls,
        section: AskSection,
        router: RouterSection,
        all_compartments: Sequence[str],
        pin_factory: Any,
        *,
        guidance_leds: Mapping[str, Any] | None = None,
        label_folder: Path | None = None,
        rng: random.Random | None = None,
    ) -> Asker:
        """From the ``[ask]`` section; the buttons and lamps on ``pin_factory``.

        :param guidance_leds: the sorter's LEDs (``actuator.kind = "leds"``), shown
            on when ``[ask] leds`` is empty.
        """
        buttons: dict[str, Any] = {}
        pins: dict[str, int] = {}
        if section.mode == "buttons":
            pins = dict(section.buttons)
        elif section.mode == "yes_next":
            # Both are set: check_relations refuses yes_next without them.
            given = {"yes": section.yes_pin, "next": section.next_pin}
            pins = {name: pin for name, pin in given.items() if pin is not None}
        lights = None
        created: list[Any] = []
        try:
            if pins:
                from gpiozero import Button

                for name, pin in pins.items():
                    buttons[name] = Button(
                        pin,
                        pull_up=section.pull_up,
                        bounce_time=section.bounce_seconds or None,
                        pin_factory=pin_factory,
                    )
                    created.append(buttons[name])
            if section.leds:
                from gpiozero import LED

                leds = {}
                for name, pin in section.leds.items():
                    leds[name] = LED(pin, pin_factory=pin_factory)
                    created.append(leds[name])
                lights = CandidateLights(leds, owned=True)
            elif guidance_leds:
                lights = CandidateLights(guidance_leds, owned=False)
        except Exception:
            for device in created:  # a later pin failed: free the earlier ones
                device.close()
            raise
        return cls(
            mode=section.mode,
            compartments=router.compartments,
            all_compartments=all_compartments,
            buttons=buttons,
            lights=lights,
            timeout_seconds=section.timeout_seconds,
            confirm_share=section.confirm_share,
            bounce_seconds=section.bounce_seconds,
            label_folder=label_folder,
            image_max_bytes=section.image_max_bytes,
            rng=rng,
        )

    # ------------------------------------------------------------------ the loop's side

    @property
    def longest_wait_seconds(self) -> float:
        """The longest one item may wait (the watchdog is fed for it)."""
        return MAX_WAIT_FACTOR * self.timeout_seconds

    def reason_to_ask(self, route: Route) -> str | None:
        """``unsure`` for an item bound for the fallback, ``confirm`` for one confident
        item in ``1 / confirm_share`` (drawn at random), else None."""
        if route.fallback:
            return UNSURE
        if self.confirm_share > 0 and self._rng.random() < self.confirm_share:
            return CONFIRM
        return None

    def rank(self, classification: Classification, labels: Sequence[str]) -> list[str]:
        """Every compartment, most probable first (the sum of its classes' probabilities)."""
        sums = dict.fromkeys(self.all_compartments, 0.0)
        for label, probability in zip(labels, classification.probabilities, strict=False):
            compartment = self.compartments.get(label)
            if compartment is not None:
                sums[compartment] = sums.get(compartment, 0.0) + probability
        return sorted(sums, key=lambda c: -sums[c])  # stable: ties keep the config's order

    def ask(
        self,
        image: Any,
        classification: Classification,
        route: Route,
        reason: str,
        labels: Sequence[str],
        stop: threading.Event,
        event_id: str | None = None,
        *,
        at_the_bin: bool = True,
    ) -> Asked:
        """Show the candidates, publish the question, wait for an answer (or the
        timeout, or ``stop``) and return the item's route. Blocks the loop.
        ``event_id``: the item's (default: a new one).

        ``at_the_bin=False``: the item is one of several in view, and the lamps cannot
        say which one they ask about: it is asked remotely only (no lamps, button presses
        not taken, as in ``mode = "remote"``), where the question's crop says which. Without
        a remote side (``publish`` unset) nobody could answer: it is not waited for."""
        event_id = event_id if event_id is not None else str(uuid.uuid4())
        if not at_the_bin and self.publish is None:
            log.info("asked about %s: several items in view and no remote side to ask: no answer", event_id)
            self.asked += 1
            return Asked(event_id, reason, route, None)
        ranking = self.rank(classification, labels)
        probabilities = dict(zip(labels, classification.probabilities, strict=False))
        now = self._clock()
        pending = _Pending(
            event_id=event_id,
            predicted=classification.label,
            ranking=ranking,
            deadline=now + self.timeout_seconds,
            last_call=now + self.longest_wait_seconds,
            probabilities=probabilities,
            at_the_bin=at_the_bin,
        )
        question = self.question(event_id, classification, reason, ranking, at_the_bin=at_the_bin)
        with self._lock:
            self._answered.clear()
            self._pending = pending
            self._show(pending)
        self.asked += 1
        self._publish(question, image)
        try:
            while not stop.is_set():
                with self._lock:
                    if pending.answer is not None:
                        break
                    remaining = min(pending.deadline, pending.last_call) - self._clock()
                if remaining <= 0:
                    break
                self._answered.wait(min(remaining, 0.1))
        finally:
            with self._lock:
                self._pending = None
                answer = pending.answer
            if self.lights is not None:
                self.lights.clear()
        if answer is not None:
            self.answered += 1
            self._store_label(event_id, answer, classification.label)
            route = Route(answer.compartment, fallback=False)
        question.update(
            {"waiting": False, "needs_label": answer is None, "answer": None if answer is None else answer.as_dict()}
        )
        self._publish(question, None)
        log.info(
            "asked about %s (%s %.2f): %s",
            event_id,
            classification.label,
            classification.confidence,
            f"{answer.source} says {answer.label or answer.compartment}" if answer else "no answer",
        )
        return Asked(event_id, reason, route, answer)

    def question(
        self,
        event_id: str,
        classification: Classification,
        reason: str,
        ranking: Sequence[str],
        *,
        at_the_bin: bool = True,
    ) -> dict[str, Any]:
        """The retained ``unsure`` payload while the item waits. ``at_the_bin``: the lamps
        and buttons ask too (false: several items in view, only a remote answer counts)."""
        return {
            "event_id": event_id,
            "time": utc_now_iso(),
            "reason": reason,
            "class": classification.label,
            "confidence": round(classification.confidence, 4),
            "top3": [{"class": c, "confidence": round(p, 4)} for c, p in classification.top[:3]],
            "candidates": list(ranking[:2]),
            "waiting": True,
            "timeout_seconds": self.timeout_seconds,
            "needs_label": True,
            "answer": None,
            "at_the_bin": at_the_bin,
        }

    # ------------------------------------------------------------------ answers

    def answer_remote(self, event_id: str, label: str) -> Answer | None:
        """``cmd/correct`` for the item being asked about: it answers it (the first
        answer wins). None when that item is not waiting, or ``label`` is no class."""
        if label not in self.compartments:
            return None
        with self._lock:
            pending = self._pending
            if pending is None or pending.event_id != event_id:
                return None
            if pending.answer is None:
                pending.answer = Answer(label, self.compartments[label], "mqtt", exact=True)
                self._answered.set()
            return pending.answer

    def state(self) -> dict[str, Any]:
        """``ask`` in the ``state`` message: items asked about and answered since the start
        (the item waiting now is on the ``unsure`` topic)."""
        return {"asked": self.asked, "answered": self.answered}

    def waiting_for(self) -> str | None:
        """The event id of the item waiting for an answer, if any."""
        with self._lock:
            return None if self._pending is None else self._pending.event_id

    def _edge(self, name: str) -> bool:
        """Note an edge of a button; False when it is a bounce of the previous one."""
        now = self._clock()
        with self._lock:
            last = self._last_edge.get(name)
            self._last_edge[name] = now
        return last is None or now - last >= self.bounce_seconds

    def _pressed(self, name: str) -> None:
        """A button went down (gpiozero's callback thread)."""
        if not self._edge(name):
            return
        with self._lock:
            pending = self._pending
            if pending is None or pending.answer is not None:
                return  # nothing asked: a press between items means nothing
            if not pending.at_the_bin:
                # Several items in view: the press may mean the other one, and would become
                # this item's label. Said once per item, not once per press.
                tell, pending.press_logged = not pending.press_logged, True
                if tell:
                    log.info(
                        "button %s pressed while %s waits: not taken, several items in view "
                        "(answer from Home Assistant, cmd/correct)",
                        name,
                        pending.event_id,
                    )
                return
            if name == "next":
                pending.shown = (pending.shown + 1) % len(pending.ranking)
                pending.deadline = self._clock() + self.timeout_seconds
                self._show(pending)
                return
            compartment = pending.ranking[pending.shown] if name == "yes" else name
            pending.answer = self._compartment_answer(compartment, pending)
            self._answered.set()

    def _compartment_answer(self, compartment: str, pending: _Pending) -> Answer:
        classes = [c for c, target in self.compartments.items() if target == compartment]
        # A button names a compartment: its class is the model's most probable among the compartment's.
        label = max(classes, key=lambda c: pending.probabilities.get(c, 0.0)) if classes else ""
        return Answer(label, compartment, "button", exact=len(classes) == 1)

    def _show(self, pending: _Pending) -> None:
        if self.lights is None:
            return
        if not pending.at_the_bin:
            self.lights.clear()  # the lamps cannot say which of the items they would mean
            return
        ranking = pending.ranking
        if self.mode == "yes_next":
            self.lights.show(ranking[pending.shown])
        else:
            self.lights.show(ranking[0], ranking[1] if len(ranking) > 1 else None)

    # ------------------------------------------------------------------ storage and publishing

    def _store_label(self, event_id: str, answer: Answer, predicted: str) -> None:
        if self.label_folder is None or not answer.label:
            return
        from .learning.labels import LabelStore

        try:
            LabelStore(self.label_folder).add(event_id, answer.label, predicted, answer.source, {"exact": answer.exact})
        except OSError as exc:  # a full card must not stop sorting
            log.error("cannot store the label of %s: %s", event_id, exc)

    def _publish(self, question: dict[str, Any], image: Any) -> None:
        if self.publish is None:
            return
        try:
            jpeg = small_jpeg(image, self.image_max_bytes) if image is not None else None
            photo = jpeg
            if photo is None and self._latest is not None and self._latest[0]["event_id"] == question["event_id"]:
                photo = self._latest[1]  # the answer to a question: its photo stays the same
            with self._publish_lock:
                self._latest = (dict(question), photo)
                self.publish(question, jpeg)
        except Exception:  # the remote side is a bonus: never let it stop sorting
            log.exception("cannot publish the unsure item")

    def republish(self) -> None:
        """Send the latest question again (the MQTT link calls this on every connect):
        one asked while offline is then seen, and one answered or timed out while
        offline no longer shows as waiting."""
        if self.publish is None:
            return
        try:
            with self._publish_lock:
                if self._latest is not None:
                    self.publish(*self._latest)
        except Exception:
            log.exception("cannot publish the unsure item")

    def close(self) -> None:
        """Release the buttons and the lamps."""
        for button in self.buttons.values():
            button.close()
        if self.lights is not None:
            self.lights.close()


def small_jpeg(image: Any, max_bytes: int, max_side: int = 320) -> bytes:
    """``image`` (an RGB array) as a JPEG of at most ``max_bytes``: at most
    ``max_side`` pixels a side, the quality lowered, then the size halved, until it fits."""
    from PIL import Image

    picture = Image.fromarray(image).convert("RGB")
    picture.thumbnail((max_side, max_side))
    while True:
        for quality in (85, 70, 55, 40, 25):
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        if min(picture.size) <= 16:
            return buffer.getvalue()  # tiny and still too big: a limit below any photo
        picture = picture.resize((max(1, picture.width // 2), max(1, picture.height // 2)))
