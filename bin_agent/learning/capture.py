"""Keep photos of sorted items, for relabelling and retraining (``[capture]``).

Each captured item is two files in the capture folder (under the state dir):
``<time>_<event id>.jpg``, the image the classifier saw, and a JSON sidecar
``<time>_<event id>.json`` with what the bin decided (event id, time, predicted
class, confidence, top-3, model version, compartment, fallback) and, when the
classifier read it, the item's embedding (float16, base64, 3.4 KB, with the
backbone's sha256: what ``bin-agent learn`` refits on, so it embeds no photo
whose embedding was kept here; it goes with the item under the size cap). The names
start with the item's UTC time, or, when that is not after the newest name in the folder,
1 ms after that name's (:func:`item_stem`): a Pi without a battery-backed clock boots at
the last time it saved, up to hours or months behind, and its photos must still sort after
those taken before the power cut. So sorting by name is sorting by the order the items were
written, across restarts: what the size cap deletes first at a start, what ``bin-agent
learn``'s folds follow. The sidecar's ``time`` is the event's, as stamped.

Capture never delays sorting: :meth:`Capture.offer` only puts the image on a
bounded queue; a writer thread encodes the JPEG and writes both files. When
the queue is full the item is not captured and :attr:`Capture.dropped` counts
it (``capture_dropped`` in the ``state`` message). After each write the
folder is brought back under ``max_mb`` by deleting the oldest items first,
so the SD card never fills. Other files in the folder (the label store) are
counted but never deleted. A folder that fails while the agent runs (the card
remounted read-only or full, the folder deleted or replaced by a file) costs
only the photos: after :data:`FAILURES_TO_REPORT` items in a row it is said once
(:attr:`Capture.problem`, ``state.capture_problem``), and the first item written
again clears it. :attr:`Capture.on_photo_done` tells, per item, once its photo is
written or will not be (what a correction held for it waits for).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..events import SortedItem
from .deploy import fsync_directory

if TYPE_CHECKING:
    from ..config import CaptureSection

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
IMAGE_SUFFIX = ".jpg"
PROBE_NAME = ".start-probe.json.tmp"
"""What :meth:`Capture.start` writes and removes to see that the folder takes a write."""
WRITER_LEFTOVER = re.compile(r"\.[^/]+\.(?:jpg|json)\.tmp")
"""``.<photo or sidecar>.tmp``: the writer's own temporary names (and the probe's)."""
PHOTO_NAME = re.compile(r"\d{8}T\d+Z_[A-Za-z0-9-]{1,64}\.jpg")
"""``<time>_<event id>.jpg``: a captured photo, the writer's naming (:func:`item_stem`)."""
CACHE_LEFTOVER = re.compile(r"\.embeddings-[0-9a-f]+\.npz\.tmp")
"""``.embeddings-<sha>.npz.tmp``: ``bin-agent learn``'s embedding cache being written."""
FAILURES_TO_REPORT = 3
"""Items in a row whose capture fails before the folder is reported (:attr:`Capture.problem`,
``state.capture_problem``): one failure may be one item's own, three in a row are the folder's
(the card remounted read-only or full, the folder deleted or replaced by a file). At one item
every few seconds the bin says it within a minute; the first item written again clears it."""


def capture_folder(state_dir: str | Path, folder: str | Path) -> Path:
    """The capture folder: ``folder`` relative to the state dir (or absolute)."""
    path = Path(folder).expanduser()
    return path if path.is_absolute() else Path(state_dir) / path


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be the capture folder, without touching it (check-config, doctor,
    :meth:`Capture.start`); None when it is a folder that this user may write in, or when it
    could be created there. Does not find a card that is read-only for root: the start's
    probe write does."""
    if folder.is_symlink() and not folder.exists():
        return f"{folder} is a link to {os.readlink(folder)}, which is not there"
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is not a folder"
        existing = folder
    else:
        existing = next((p for p in folder.parents if p.exists()), Path("/"))
        if not existing.is_dir():
            return f"{existing}, where {folder} would go, is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "it" if existing == folder else f"{existing}, where it would go"
        return f"{folder}: cannot write in {what} (permission denied or a read-only card)"
    return None


NAME_TIME = re.compile(r"(\d{8}T\d{9}Z)_")
"""The time a capture file's name starts with (:func:`item_stem`), ``20261123T100405123Z``."""


def name_time(name: str) -> str | None:
    """The time at the start of a capture file's name (``20261123T100405123Z``), None for a name
    of another form. Such times sort as text in the order of time."""
    match = NAME_TIME.match(name)
    return match.group(1) if match else None


def item_stem(item: SortedItem, after: str | None = None) -> str:
    """``20261123T100405123Z_<event id>``: unique by event; its time is the item's, or 1 ms after
    ``after`` (the newest name's time in the folder) when the item's is not later, so that names
    sort in the order they were written even when the clock went back (booted behind)."""
    compact = item.time.replace("-", "").replace(":", "").replace(".", "")
    if after is not None and NAME_TIME.fullmatch(f"{compact}_") and compact <= after:
        try:
            later = datetime.strptime(after, "%Y%m%dT%H%M%S%fZ") + timedelta(milliseconds=1)
        except ValueError:  # not a time (a name edited by hand): the item's own
            pass
        else:
            compact = f"{later:%Y%m%dT%H%M%S}{later.microsecond // 1000:03d}Z"
    return f"{compact}_{item.event_id}"


def encode_embedding(embedding: np.ndarray, backbone_sha256: str) -> dict[str, Any]:
    """The sidecar's ``embedding``: float16 little-endian in base64 (JSON stays one
    file per item, deleted with it), keyed by the backbone that computed it."""
    raw = np.asarray(embedding, dtype="<f2").tobytes()
    return {"backbone_sha256": backbone_sha256, "float16": base64.b64encode(raw).decode("ascii")}


def decode_embedding(info: dict[str, Any], backbone_sha256: str) -> np.ndarray | None:
    """The embedding kept in a sidecar (float32), or None when it has none, it is
    unreadable, or another backbone computed it."""
    kept = info.get("embedding")
    if not isinstance(kept, dict) or kept.get("backbone_sha256") != backbone_sha256:
        return None
    try:
        return np.frombuffer(base64.b64decode(kept["float16"], validate=True), dtype="<f2").astype(np.float32)
    except (KeyError, TypeError, ValueError):
        return None


def sidecar(item: SortedItem, image_name: str, backbone_sha256: str = "") -> dict[str, Any]:
    """What the bin decided about a captured item (with its embedding when the
    classifier read one and ``backbone_sha256`` names the model that did)."""
    c = item.classification
    info: dict[str, Any] = {
        "event_id": item.event_id,
        "time": item.time,
        "bin_id": item.bin_id,
        "class": c.label,
        "confidence": round(c.confidence, 4),
        "top3": [{"class": label, "confidence": round(p, 4)} for label, p in c.top[:3]],
        "model_version": item.model_version,
        "compartment": item.route.compartment,
        "fallback": item.route.fallback,
        "image": image_name,
        "source": item.source,
    }
    if c.embedding is not None and backbone_sha256:
        info["embedding"] = encode_embedding(c.embedding, backbone_sha256)
    return info


@dataclass(frozen=True)
class CapturedItem:
    """One captured item as found on disk."""

    image: Path
    info: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.info["event_id"])


def sidecars_by_event(folder: Path) -> dict[str, Path]:
    """Event id -> sidecar of every captured item whose photo is there too, from one listing
    of ``folder`` and no file read (names are :func:`item_stem`'s)."""
    names = set(os.listdir(folder))
    found: dict[str, Path] = {}
    for name in names:
        if name.endswith(SIDECAR_SUFFIX) and not name.startswith("."):
            stem = name[: -len(SIDECAR_SUFFIX)]
            _, sep, event_id = stem.partition("_")
            if sep and f"{stem}{IMAGE_SUFFIX}" in names:
                found[event_id] = folder / name
    return found


_STEM_SECOND = re.compile(r"\d{8}T\d{6}")


def named_before(name: str, since: str) -> bool:
    """Whether a capture file's name (:func:`item_stem`: its time first) says its item is from a
    second before ``since`` (an ISO time), so that its sidecar need not be read."""
    reset = since.replace("-", "").replace(":", "")[:15]
    return bool(_STEM_SECOND.fullmatch(name[:15]) and _STEM_SECOND.fullmatch(reset)) and name[:15] < reset


def captured_items(folder: str | Path) -> Iterator[CapturedItem]:
    """Every complete captured item in ``folder`` (a sidecar and its image), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"*{SIDECAR_SUFFIX}")):
        item = read_captured(path)
        if item is not None:
            yield item


def read_captured(sidecar_path: Path) -> CapturedItem | None:
    """The captured item of a sidecar, or None if it or its image is missing or unreadable."""
    image = sidecar_path.with_suffix(IMAGE_SUFFIX)
    if not image.is_file():
        return None
    try:
        info = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:  # the size cap deleted the item since it was listed: gone, not damaged
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("%s: unreadable capture sidecar; skipped", sidecar_path)
        return None
    if not isinstance(info, dict) or "event_id" not in info or "class" not in info:
        return None
    confidence = info.get("confidence", 0.0)
    if (
        not isinstance(info["event_id"], str)
        or not isinstance(info["class"], str)
        or isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
    ):
        # Damaged on the card, or edited by hand: what it says cannot be trusted or shown.
        log.warning("%s: capture sidecar with a bad event_id, class or confidence; skipped", sidecar_path)
        return None
    return CapturedItem(image, info)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (before the caller renames it into place)."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_synced(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old file or the new one,
    never an empty or half one: written to ``.<name>.tmp`` beside it, fsynced, renamed, and the
    folder fsynced (the card may otherwise write the rename before the data)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_synced(tmp, data)
    os.replace(tmp, path)
    fsync_directory(path.parent)


class Capture:
    """The capture queue and its writer thread.

    :param folder: where the photos go (created if missing).
    :param mode: ``all``, ``unsure`` (items sent to the fallback compartment
        or asked about, see ``[ask]``) or ``sample`` (one item in ``sample_every``).
    :param max_bytes: size cap of the folder.
    :param queue_size: items that may wait for the writer.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        mode: str = "all",
        sample_every: int = 10,
        max_bytes: int = 500 * 1024 * 1024,
        queue_size: int = 8,
        jpeg_quality: int = 90,
    ) -> None:
        if mode not in ("all", "unsure", "sample"):
            raise ValueError(f"capture mode {mode!r}")
        self.folder = Path(folder)
        self.mode = mode
        self.sample_every = max(1, int(sample_every))
        self.max_bytes = int(max_bytes)
        self.jpeg_quality = int(jpeg_quality)
        self.saved = 0
        self.dropped = 0
        self.deleted = 0
        self.failed = 0
        self.problem: str | None = None
        """Why the last :data:`FAILURES_TO_REPORT` or more captures in a row failed; None once one
        is written again (set and cleared by the writer thread)."""
        self.on_problem: Callable[[str | None], None] | None = None
        """Called by the writer thread when :attr:`problem` changes (the agent republishes its state)."""
        self.on_photo_done: Callable[[str], None] | None = None
        """Called with an item's event id once its photo is written (both files renamed into place
        and the folder synced) or will not be (not kept by the mode, the queue full, the write
        failed): by :meth:`offer` or by the writer thread (the agent's held corrections run then)."""
        self._failing = 0  # captures failed in a row
        self._seen = 0
        self._queue: queue.Queue[tuple[np.ndarray, SortedItem, str] | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        # (stem, bytes of image + sidecar), oldest first; touched only by the writer.
        self._items: deque[tuple[str, int]] = deque()
        self._bytes = 0
        # The newest time a name in the folder starts with: the next name's is later (item_stem).
        self._newest_name_time: str | None = None

    @classmethod
    def from_config(cls, section: CaptureSection, state_dir: str | Path) -> Capture:
        """From the ``[capture]`` config section."""
        return cls(
            capture_folder(state_dir, section.folder),
            mode=section.mode,
            sample_every=section.sample_every,
            max_bytes=int(section.max_mb * 1024 * 1024),
            queue_size=section.queue_size,
            jpeg_quality=section.jpeg_quality,
        )

    # ------------------------------------------------------------------ the sorting side

    def wanted(self, item: SortedItem) -> bool:
        """Whether the mode keeps this item."""
        if self.mode == "unsure":  # an item a person was asked about was unsure too (or a confirmation sample)
            return item.route.fallback or bool(item.asked)
        if self.mode == "sample":
            self._seen += 1
            return (self._seen - 1) % self.sample_every == 0
        return True

    def offer(self, image: np.ndarray, item: SortedItem, backbone: str = "") -> bool:
        """Queue the image of a sorted item; never blocks. False when not queued
        (not wanted by the mode, or dropped because the writer is behind).

        :param backbone: sha256 of the model whose embedding the item's
            classification carries (``Classifier.backbone_sha256``); empty: the
            embedding is not kept.
        """
        if not self.wanted(item):
            self._photo_done(item.event_id)
            return False
        try:
            # A copy: a camera may reuse the frame's buffer for the next frame.
            self._queue.put_nowait((np.array(image, dtype=np.uint8, copy=True), item, backbone))
        except queue.Full:
            self.dropped += 1
            self._photo_done(item.event_id)
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "saved": self.saved,
            "dropped": self.dropped,
            "deleted": self.deleted,
            "folder_mb": round(self._bytes / (1024 * 1024), 2),
        }

    # ------------------------------------------------------------------ the writer

    def start(self) -> None:
        """Create the folder, check that it takes a write, measure what is in it, start the
        writer thread.

        :raises OSError: the folder cannot be used (see :func:`folder_problem`), or takes no
            write (no permission, a read-only card): the agent then sorts without capture.
        """
        problem = folder_problem(self.folder)
        if problem is not None:
            raise OSError(problem)
        self.folder.mkdir(parents=True, exist_ok=True)
        probe = self.folder / PROBE_NAME  # a leftover of it has the writer's .tmp naming
        write_synced(probe, b"bin-agent capture\n")
        probe.unlink()
        self._remove_leftovers()
        self._scan()
        self._enforce_cap()
        self._thread = threading.Thread(target=self._write_loop, name="capture-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop the writer."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("capture writer is stuck; %d photo(s) not written", self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    def _write_loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            image, item, backbone = entry
            try:
                self._write(image, item, backbone)
                self._enforce_cap()
            except Exception as exc:
                # A full or read-only card must never stop the bin; count, say it, and go on.
                self.failed += 1
                self._write_failed(item, exc)
            else:
                if self._failing:
                    self._writes_work_again()
            self._photo_done(item.event_id)  # written, or failed: either way no photo comes later

    def _write_failed(self, item: SortedItem, exc: Exception) -> None:
        """One line for the first failure in a row (a traceback only for what is not the disk's:
        a bug), one error line and :attr:`problem` at :data:`FAILURES_TO_REPORT`, then silence:
        a card that stays full would otherwise write a line per item for days."""
        self._failing += 1
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        if self._failing == 1:
            if isinstance(exc, OSError):
                log.warning("cannot write the capture of event %s in %s (%s)", item.event_id, self.folder, why)
            else:
                log.exception("cannot write the capture of event %s", item.event_id)
        if self._failing == FAILURES_TO_REPORT:
            self.problem = (
                f"capture.folder: cannot write in {self.folder} ({why}) for {self._failing} items in a row; "
                "sorting goes on without keeping photos, and each next item tries again"
            )[:500]
            log.error("%s", self.problem)
            self._tell(self.problem)

    def _writes_work_again(self) -> None:
        failed, self._failing = self._failing, 0
        log.info("capture writes work again in %s after %d failed item(s)", self.folder, failed)
        if self.problem is not None:
            self.problem = None
            self._tell(None)

    def _tell(self, problem: str | None) -> None:
        if self.on_problem is None:
            return
        try:
            self.on_problem(problem)
        except Exception:  # the writer must go on
            log.exception("reporting the capture folder's state failed")

    def _photo_done(self, event_id: str) -> None:
        if self.on_photo_done is None:
            return
        try:
            self.on_photo_done(event_id)
        except Exception:  # the writer (or the sort) must go on
            log.exception("telling that the photo of event %s is done failed", event_id)

    def _write(self, image: np.ndarray, item: SortedItem, backbone: str = "") -> None:
        from PIL import Image

        stem = item_stem(item, after=self._newest_name_time)
        image_path = self.folder / f"{stem}{IMAGE_SUFFIX}"
        info_path = self.folder / f"{stem}{SIDECAR_SUFFIX}"
        # Written under a temporary name, fsynced and renamed: a reader (or a crash) never sees
        # half a file, and a power cut right after the rename cannot leave an empty photo or
        # sidecar (the card may write the rename before the data otherwise); the sidecar comes
        # last and marks the item complete. On the writer thread: sorting never waits for it.
        photo = io.BytesIO()
        Image.fromarray(image).save(photo, format="JPEG", quality=self.jpeg_quality)
        info = (json.dumps(sidecar(item, image_path.name, backbone), indent=1) + "\n").encode("utf-8")
        tmp_image = image_path.with_name(f".{image_path.name}.tmp")
        tmp_info = info_path.with_name(f".{info_path.name}.tmp")
        try:
            write_synced(tmp_image, photo.getvalue())
            os.replace(tmp_image, image_path)
            write_synced(tmp_info, info)
            os.replace(tmp_info, info_path)
            fsync_directory(self.folder)  # both renames: the item is on the card once the sidecar is listed
        except OSError:
            # A full card keeps no part of the item: its temporary files, and a photo without its
            # sidecar (never listed, never counted against max_mb, never deleted), would stay.
            for path in (tmp_image, tmp_info) if info_path.exists() else (tmp_image, tmp_info, image_path):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        self._newest_name_time = max(self._newest_name_time or "", name_time(stem) or "") or None
        size = image_path.stat().st_size + info_path.stat().st_size
        self._items.append((stem, size))
        self._bytes += size
        self.saved += 1

    def _remove_leftovers(self) -> None:
        """A power cut during a write leaves ``.<name>.tmp``: never renamed, never listed, yet
        counted against ``max_mb`` by :meth:`_other_bytes` forever. The writer's own go at once
        (it does not run yet; the state database's lock keeps a second agent away); the
        embedding cache's once old enough that no ``bin-agent learn`` may still be writing it."""
        from .leftovers import MIN_AGE_SECONDS, remove_leftovers

        remove_leftovers(self.folder, WRITER_LEFTOVER, what="capture file(s)")
        remove_leftovers(self.folder, CACHE_LEFTOVER, min_age_s=MIN_AGE_SECONDS, what="embedding cache file(s)")
        self._remove_photos_without_sidecar()

    def _remove_photos_without_sidecar(self) -> None:
        """A power cut after a photo's rename and before its sidecar's (:meth:`_write`), or between
        the cap's deletion of a sidecar and of its photo, leaves a photo without its sidecar: not
        an item (never listed), not counted against ``max_mb`` (:meth:`_other_bytes` skips photos),
        so never deleted: one more on the card per power cut, for as long as the bin runs. The
        writer does not run yet, so every photo of its naming without a sidecar is one of these."""
        removed: list[str] = []
        for image in sorted(self.folder.glob(f"*{IMAGE_SUFFIX}")):
            if not PHOTO_NAME.fullmatch(image.name) or image.with_suffix(SIDECAR_SUFFIX).exists():
                continue
            try:
                image.unlink()
            except OSError as exc:
                log.warning("%s: cannot remove this photo without its sidecar (%s)", image, exc.strerror or exc)
                continue
            removed.append(image.name)
        if removed:
            log.warning(
                "%s: removed %d photo(s) whose sidecar an interrupted write never wrote (a power cut?): %s",
                self.folder,
                len(removed),
                ", ".join(removed[:10]) + (", ..." if len(removed) > 10 else ""),
            )

    def _scan(self) -> None:
        self._items.clear()
        self._bytes = 0
        for path in sorted(self.folder.glob(f"*{SIDECAR_SUFFIX}")):
            self._newest_name_time = name_time(path.name) or self._newest_name_time  # sorted: the last is the newest
            image = path.with_suffix(IMAGE_SUFFIX)
            try:
                size = path.stat().st_size + (image.stat().st_size if image.exists() else 0)
            except OSError as exc:
                # One entry the card cannot stat (a dangling link, an I/O error) must not keep
                # the bin from starting: it is left where it is, neither counted nor deleted.
                log.warning("%s: cannot read this capture entry (%s); left alone", path, exc.strerror or exc)
                continue
            self._items.append((path.stem, size))
            self._bytes += size

    def _other_bytes(self) -> int:
        """Files that are not captured items (label store, stray files): counted, never deleted."""
        total = 0
        for path in self.folder.iterdir():
            if path.is_file() and path.suffix not in (IMAGE_SUFFIX, SIDECAR_SUFFIX):
                with contextlib.suppress(OSError):  # gone meanwhile, or unreadable: not counted
                    total += path.stat().st_size
        return total

    def _enforce_cap(self) -> None:
        other = self._other_bytes()
        while self._items and self._bytes + other > self.max_bytes:
            stem, size = self._items.popleft()
            for suffix in (SIDECAR_SUFFIX, IMAGE_SUFFIX):  # sidecar first: no half-item is listed
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)
            self._bytes -= size
            self.deleted += 1
