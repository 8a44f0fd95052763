"""[capture]: photos of sorted items with a sidecar, a size cap, a bounded queue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent
from bin_agent.classify.classifier import Classification
from bin_agent.config import ConfigError
from bin_agent.events import SortedItem
from bin_agent.geometry import to_pixels
from bin_agent.learning.capture import Capture, captured_items, decode_embedding
from bin_agent.router import Route
from tests.helpers import SHIPPED_MODEL, TINY_MODELS, base_config

_clock = iter(range(10**6))


def make_item(label: str = "glass", confidence: float = 0.9, fallback: bool = False) -> SortedItem:
    """An item one second after the previous one (capture names sort by time)."""
    seconds = next(_clock)
    others = [c for c in CLASSES if c != label]
    top = ((label, confidence), (others[0], (1 - confidence) / 2), (others[1], (1 - confidence) / 2))
    classification = Classification(
        label=label,
        confidence=confidence,
        top=top,
        probabilities=tuple(0.0 for _ in CLASSES),
        preprocess_ms=1.0,
        inference_ms=2.0,
    )
    return SortedItem(
        bin_id="b",
        classification=classification,
        route=Route("residual" if fallback else "glass", fallback),
        model_version="v-test",
        latency_ms={},
        time=f"2026-11-24T{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000Z",
    )


def noise(seed: int, size: int = 96) -> np.ndarray:
    # Noise compresses badly: every photo is a few KB, like real ones relative to a tiny cap.
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def photo_dir(tmp_path: Path, trashnet_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n, label in enumerate(("glass", "paper", "metal", "cardboard")):
        photo = sorted((trashnet_dir / label).glob("*.jpg"))[0]
        (folder / f"{n:02d}_{photo.name}").symlink_to(photo)
    return folder


def test_capture_during_a_replay_saves_each_item_with_its_sidecar(tmp_path, photo_dir):
    data = base_config(tmp_path, photo_dir, mqtt=False, model=SHIPPED_MODEL)
    data["capture"] = {"enabled": True, "mode": "all"}
    config = preflight.load_dict(data, base_dir=tmp_path)
    agent = build_agent(config)
    assert agent.state()["capture_dropped"] == 0
    assert agent.run() == 0

    events = {
        json.loads(e.payload)["id"]: json.loads(e.payload)
        for e in _outbox(Path(config.agent.state_dir) / "bin-agent.db")
    }
    assert len(events) == 4
    folder = Path(config.agent.state_dir) / "capture"
    captured = list(captured_items(folder))
    assert len(captured) == 4, "one photo per sorted item"
    for item in captured:
        event = events[item.event_id]
        for key in ("time", "class", "confidence", "top3", "model_version", "compartment", "fallback"):
            assert item.info[key] == event[key], key
        assert item.info["model_version"] == agent.classifier.version
        # ... and the embedding the classifier read, for `bin-agent learn`.
        kept = decode_embedding(item.info, agent.classifier.backbone_sha256)
        assert kept is not None and kept.shape == (1280,) and np.isfinite(kept).all()
        with Image.open(item.image) as saved:
            assert saved.format == "JPEG"
            pixels = np.asarray(saved.convert("RGB"), dtype=np.int16)
        # The image the classifier saw: the region of the replayed photo it classified
        # (the event's box: the item's box from the motion mask), re-encoded as JPEG.
        shown = [p for p in photo_dir.iterdir() if p.name in item.info["source"]]
        assert len(shown) == 1, item.info["source"]
        original = np.asarray(Image.open(shown[0]).convert("RGB"), dtype=np.int16)
        left, top, right, bottom = to_pixels(tuple(event["box"]), (original.shape[1], original.shape[0]))
        region = original[top:bottom, left:right]
        assert pixels.shape == region.shape
        assert np.abs(pixels - region).mean() < 4.0
    assert agent.capture is not None and agent.capture.saved == 4 and agent.capture.dropped == 0


def test_unsure_mode_keeps_only_fallback_items_and_sample_one_in_n(tmp_path):
    unsure = Capture(tmp_path / "u", mode="unsure")
    assert not unsure.offer(noise(0), make_item(fallback=False))
    assert unsure.offer(noise(1), make_item(confidence=0.4, fallback=True))
    sample = Capture(tmp_path / "s", mode="sample", sample_every=3, queue_size=100)
    kept = [sample.offer(noise(i), make_item()) for i in range(7)]
    assert kept == [True, False, False, True, False, False, True]


def test_a_tiny_cap_keeps_the_folder_under_it_oldest_deleted_first(tmp_path):
    folder = tmp_path / "capture"
    folder.mkdir()
    labels = folder / "labels.jsonl"
    labels.write_text('{"event_id": "x", "label": "glass"}\n')
    cap = 120 * 1024
    capture = Capture(folder, max_bytes=cap, queue_size=100)
    capture.start()
    items = [make_item() for _ in range(30)]
    for seed, item in enumerate(items):
        capture.offer(noise(seed), item)
    capture.close()

    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= cap
    assert capture.saved == 30 and capture.deleted > 0 and capture.dropped == 0
    kept = [c.event_id for c in captured_items(folder)]
    assert kept == [i.event_id for i in items[-len(kept) :]], "the newest are kept, the oldest deleted"
    assert labels.exists(), "the label store is never deleted"
    assert not [p for p in folder.iterdir() if p.suffix == ".jpg" and not p.with_suffix(".json").exists()]

    # A restart measures what is there and keeps the cap with a smaller one.
    again = Capture(folder, max_bytes=cap // 2)
    again.start()
    again.close()
    assert sum(p.stat().st_size for p in folder.iterdir()) <= cap // 2


def test_the_cap_deletes_in_write_order_when_the_clock_went_back_across_a_restart(tmp_path, monkeypatch):
    """A Pi without a battery-backed clock boots an hour behind after a power cut (fake-hwclock):
    the items written then are stamped before those written before the cut, yet the cap at the
    next start deletes the older ones first: names sort in write order, the sidecars keep the
    events' own times."""
    from datetime import UTC, datetime, timedelta

    from bin_agent import events
    from bin_agent.learning.capture import sidecars_by_event

    now = [datetime(2030, 1, 1, 10, 0, tzinfo=UTC)]

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return now[0]

    monkeypatch.setattr(events, "datetime", Clock)  # what SortedItem's time is read from
    folder = tmp_path / "capture"

    def a_life(first_seed: int) -> list:
        """A start of the writer, three items a second apart, a stop."""
        capture = Capture(folder)
        capture.start()
        items = []
        for seed in range(first_seed, first_seed + 3):
            now[0] += timedelta(seconds=1)
            items.append(make_item_at_now())
            capture.offer(noise(seed), items[-1])
        capture.close()
        return items

    before_the_cut = a_life(0)
    now[0] -= timedelta(hours=1)  # the power cut; the clock boots an hour behind
    after_the_cut = a_life(3)
    assert after_the_cut[0].time < before_the_cut[-1].time, "stamped before the items written before them"

    written = [*before_the_cut, *after_the_cut]
    assert [c.event_id for c in captured_items(folder)] == [i.event_id for i in written], "by name: write order"
    assert {c.event_id: c.info["time"] for c in captured_items(folder)} == {i.event_id: i.time for i in written}
    sidecars = sidecars_by_event(folder)
    newest_bytes = sum(
        path.stat().st_size
        for i in after_the_cut
        for path in (sidecars[i.event_id], sidecars[i.event_id].with_suffix(".jpg"))
    )
    capped = Capture(folder, max_bytes=newest_bytes)  # room for the three newest only
    capped.start()
    capped.close()
    assert [c.event_id for c in captured_items(folder)] == [i.event_id for i in after_the_cut]


def make_item_at_now():
    """An item stamped by the clock (SortedItem's own time), not make_item's."""
    item = make_item()
    fields = {k: getattr(item, k) for k in ("bin_id", "classification", "route", "model_version", "latency_ms")}
    return SortedItem(**fields)


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    capture = Capture(tmp_path / "capture", queue_size=2)
    # The writer is not started yet: nothing leaves the queue.
    results = [capture.offer(noise(i), make_item()) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert capture.dropped == 3
    capture.start()
    capture.close()
    assert capture.saved == 2 and len(list(captured_items(tmp_path / "capture"))) == 2


def test_capture_tells_once_per_item_when_its_photo_is_written_or_will_not_be(tmp_path):
    """What a correction held for an item waits for (bin_agent.learning.pending): told once the
    photo is listed in the folder, or at once when the mode or a full queue does not keep it, or
    when its write fails (the folder replaced by a file)."""
    folder = tmp_path / "capture"
    capture = Capture(folder, mode="sample", sample_every=2, queue_size=2)
    told: list[tuple[str, bool]] = []
    capture.on_photo_done = lambda event_id: told.append(
        (event_id, any(c.event_id == event_id for c in captured_items(folder)))
    )
    kept, skipped, queued, dropped = make_item(), make_item(), make_item(), make_item()
    # The writer is not started yet: the queue fills. One in two is kept: the 1st, 3rd, 5th.
    assert capture.offer(noise(0), kept) and not capture.offer(noise(1), skipped)
    assert told == [(skipped.event_id, False)], "not kept by the mode: told at once"
    assert capture.offer(noise(2), queued) and not capture.offer(noise(3), make_item())
    assert not capture.offer(noise(4), dropped) and capture.dropped == 1
    assert told[-1] == (dropped.event_id, False), "the queue full: told at once"
    capture.start()
    capture.close()
    assert told[3:] == [(kept.event_id, True), (queued.event_id, True)], "written: told once listed"

    assert len(told) == 5, "once per item"

    failing = Capture(folder)  # mode "all"
    failing.on_photo_done = capture.on_photo_done
    failing.start()
    folder.rename(tmp_path / "gone")
    folder.write_text("not a folder")
    failed = make_item()
    assert failing.offer(noise(5), failed)
    failing.close()
    assert failing.failed == 1 and told[5:] == [(failed.event_id, False)], "a failed write: told too"


def test_capture_options_are_checked(tmp_path):
    data = base_config(tmp_path, mqtt=False)
    data["capture"] = {"mode": "sometimes", "max_mb": 0, "sample_every": 0}
    with pytest.raises(ConfigError) as err:
        preflight.load_dict(data, base_dir=tmp_path)
    text = str(err.value)
    assert "capture.mode" in text and "capture.max_mb" in text and "capture.sample_every" in text
    data["capture"] = {"folder": " "}
    with pytest.raises(ConfigError, match="capture.folder"):
        preflight.load_dict(data, base_dir=tmp_path)


def _outbox(db: Path):
    from bin_agent.store import Store

    store = Store(db)
    try:
        return store.pending(0, 1000)
    finally:
        store.close()


def test_a_model_without_a_readable_embedding_is_still_captured_without_one(tmp_path, photo_dir):
    # Capture keeps the embedding when the model has one to read; a model that has none
    # (here: its metadata names a tensor that is not there) still sorts and is captured.
    models = tmp_path / "models"
    models.mkdir()
    for path in TINY_MODELS.glob("tiny_uint8.*"):
        (models / path.name).write_bytes(path.read_bytes())
    metadata = models / "tiny_uint8.json"
    metadata.write_text(json.dumps(json.loads(metadata.read_text()) | {"embedding_tensor": "not/there"}))
    data = base_config(tmp_path, photo_dir, mqtt=False, model=models / "tiny_uint8.tflite")
    data["capture"] = {"enabled": True, "mode": "all"}
    agent = build_agent(preflight.load_dict(data, base_dir=tmp_path))
    assert not agent.classifier.reads_embedding
    assert agent.run() == 0
    captured = list(captured_items(Path(agent.config.agent.state_dir) / "capture"))
    assert len(captured) == 4 and all("embedding" not in item.info for item in captured)
