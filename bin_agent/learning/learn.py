"""``bin-agent learn``: refit the classifier head on the bin's own labels, never worse.

No TensorFlow: the backbone stays as it is, and only the last dense layer (and
its calibration) is refitted, in NumPy (:mod:`bin_agent.classify.head`).

1. The labelled captures (``labels.jsonl`` beside the photos) come with the
   embedding the agent's classifier read when it sorted them (kept in the
   sidecar by :mod:`.capture`); those without it are embedded once by the
   model's backbone and cached in the capture folder
   (``embeddings-<backbone sha256[:12]>.npz``), so a later learn embeds only
   the newly labelled photos.
2. The bin's embeddings are first aligned with the training memory shipped
   beside the model (:mod:`.memory`): the bin's camera, floor and light shift
   every embedding the same way, so the bin's mean embedding is moved onto the
   memory's mean over the same mix of classes (a bin that has seen mostly paper
   is not pulled towards "paper-ness"). The head is then refitted on the
   aligned embeddings mixed with the memory: multinomial logistic regression,
   class-balanced, one bin label weighing ``bin_weight`` memory photos,
   warm-started from the model's own dense layer (which lives in the memory's
   space) and pulled towards it by L2. The shift is folded into the bias, so
   the head stays one dense layer on the raw embedding.
3. Verdict, cross-fitted over the bin's labels: each class's labels, in time
   order, are cut into ``verdict_blocks`` stretches; fold k is stretch k of
   every class (every fold has every class and is a stretch of time). Each fold
   is predicted by a head refitted without it (alignment included). On the
   labels the current head was not fitted on (all of them on a first learn; a
   learnt head lists its labels' event ids in its info, ``fitted_on``), those
   out-of-fold answers must be right where the current head is wrong more
   often than the reverse, with a one-sided exact sign test p ≤ ``max_p`` on
   the labels where they differ. No label is spent on a hold-out alone; the
   head deployed is the one refitted on all of them.
4. The temperature (negative log-likelihood) and the confidence threshold
   are fitted on the same out-of-fold logits: the threshold is the lowest at
   which the sorted items are right as often as the current head's are now (or
   ``target_accuracy`` if lower), so the share sent to the fallback falls as
   the bin learns and the sorted items get no worse. When the refit is not
   better but the current head's own threshold, fitted by that rule on the
   bin's labels, differs from the one in force, the current head is deployed
   again with it ("threshold only").
5. A better head is deployed through :mod:`.deploy` (a versioned folder,
   ``current``/``previous``, rollback) and the agent switches between two
   items (``cmd/reload_model``).

**Never worse after the deploy** (:func:`watch`): labels of items the new
head sorted are compared with what the previous head would have said; once
``watch_labels`` of them exist and the previous head is right where the new one
is wrong significantly more often (one-sided sign test, p < ``watch_max_p``),
the deploy is rolled back by itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..classify.classifier import Classifier, ModelFiles
from ..classify.head import (
    UNREADABLE_NPZ,
    Head,
    class_balanced_weights,
    fit_dense,
    fit_temperature,
    fit_threshold,
    softmax,
)
from ..classify.preprocess import ImageError, load_image
from ..config import Config
from ..events import utc_now_iso
from ..router import confidence_threshold
from . import deploy
from .capture import CapturedItem, capture_folder, captured_items, decode_embedding, replace_synced
from .labels import LabelStore
from .memory import Memory, TrainingMemoryError, memory_path

log = logging.getLogger(__name__)

FITTED_ON = "fitted_on"
"""In a learnt head's info: the event ids of the labels it was fitted on (not judged on)."""
LEARNING_FOLDER = "learning"
"""Under the state dir: the last result, the watch, the candidate being built."""
CACHE_PREFIX = "embeddings-"


def one_sided_sign_test(wins: int, losses: int) -> float:
    """P(at least ``wins`` of ``wins + losses`` fair coin flips): how likely a lead
    this large is by chance when neither side is better."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def learning_dir(config: Config) -> Path:
    return Path(config.agent.state_dir) / LEARNING_FOLDER


# --------------------------------------------------------------------------- embeddings


class EmbeddingCache:
    """Embeddings of captured photos by event id, for one backbone, in the capture folder."""

    def __init__(self, folder: Path, backbone_sha256: str) -> None:
        self.path = folder / f"{CACHE_PREFIX}{backbone_sha256[:12]}.npz"
        self.backbone_sha256 = backbone_sha256
        self.vectors: dict[str, np.ndarray] = {}
        self.computed = 0
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self.vectors = dict(zip((str(i) for i in data["ids"]), data["embeddings"].astype(np.float32)))
        except FileNotFoundError:
            pass
        except UNREADABLE_NPZ as exc:
            self.vectors = {}
            log.warning("%s: unreadable embedding cache (%s: %s); recomputing", self.path, type(exc).__name__, exc)

    def get(self, item: CapturedItem, classifier: Classifier) -> np.ndarray | None:
        """The item's embedding: kept by capture in its sidecar, else cached, else
        computed from its photo (and cached); None if unreadable."""
        width = (classifier.embedding_width,)
        kept = decode_embedding(item.info, self.backbone_sha256)
        if kept is not None and kept.shape == width and np.all(np.isfinite(kept)):
            return kept  # not cached again: the sidecar holds it, and goes with the photo
        vector = self.vectors.get(item.event_id)
        if vector is None or vector.shape != width or not np.all(np.isfinite(vector)):
            try:
                vector = classifier.embed(load_image(item.image)).astype(np.float32)
            except (ImageError, OSError) as exc:
                log.warning("%s: cannot embed (%s); skipped", item.image, exc)
                return None
            self.vectors[item.event_id] = vector
            self.computed += 1
        return vector

    def save(self, keep: set[str]) -> None:
        """Write the cache (only the ``keep`` ids: photos deleted by the size cap go)."""
        ids = sorted(i for i in self.vectors if i in keep)
        if not ids:
            return
        data = io.BytesIO()
        np.savez(data, ids=np.array(ids), embeddings=np.asarray([self.vectors[i] for i in ids], np.float16))
        replace_synced(self.path, data.getvalue())  # a power cut leaves the old cache or the new one


@dataclass
class Labelled:
    """The bin's labelled captures as arrays, oldest first."""

    items: list[CapturedItem]
    embeddings: np.ndarray
    labels: np.ndarray


def labelled_captures(
    config: Config, classifier: Classifier, *, only_version: str | None = None
) -> tuple[Labelled, EmbeddingCache]:
    """Every captured item with a label of a known class, embedded (cache first).
    ``only_version``: only items sorted by that model version."""
    folder = capture_folder(config.agent.state_dir, config.capture.folder)
    labels = LabelStore(folder).all()
    from .deploy import sha256

    cache = EmbeddingCache(folder, sha256(classifier.files.model))
    items, vectors, classes = [], [], []
    present: set[str] = set()
    for item in captured_items(folder):
        present.add(item.event_id)
        entry = labels.get(item.event_id)
        if entry is None or entry.get("label") not in classifier.labels:
            continue
        if only_version is not None and item.info.get("model_version") != only_version:
            continue
        vector = cache.get(item, classifier)
        if vector is None:
            continue
        items.append(item)
        vectors.append(vector)
        classes.append(classifier.labels.index(entry["label"]))
    cache.save(present)
    width = classifier.head.weights.shape[1] if classifier.head is not None else 0
    embeddings = np.asarray(vectors, np.float32) if vectors else np.zeros((0, width), np.float32)
    return Labelled(items, embeddings, np.asarray(classes, np.int64)), cache


def embedding_classifier(model: Path, config: Config) -> Classifier:
    """A classifier of ``model`` that reads embeddings, on one thread (learning must
    leave the other cores to sorting)."""
    return Classifier(ModelFiles.beside(model), num_threads=1, views=config.model.views or None, embeddings=True)


def head_of(classifier: Classifier) -> Head:
    """The head a classifier applies: its refitted one, else the model's own dense layer."""
    return classifier.head if classifier.head is not None else classifier.builtin_head()


def load_memory(config: Config, backbone_sha256: str, width: int = 0) -> Memory | None:
    """The training memory (``learning.memory``, else beside ``model.path``); None when
    there is none or it is damaged; refused when it belongs to another backbone or (``width``:
    the model's embedding features, 0: not checked) its embeddings have another width."""
    path = config.resolve(config.learning.memory) if config.learning.memory else memory_path(config.model.path)
    try:
        memory = Memory.load(path)
    except TrainingMemoryError as exc:
        log.warning("%s; learning from the bin's labels alone", exc)
        return None
    if memory.backbone_sha256 and memory.backbone_sha256 != backbone_sha256:
        log.warning("%s was built for another model; learning from the bin's labels alone", path)
        return None
    if width and memory.embeddings.shape[1] != width:
        log.warning(
            "%s: its embeddings have %d features, the model's %d; learning from the bin's labels alone",
            path,
            memory.embeddings.shape[1],
            width,
        )
        return None
    return memory


# --------------------------------------------------------------------------- learn


@dataclass
class LearnResult:
    """What a learn did (``bin-agent learn --json`` prints it; the agent publishes it)."""

    time: str
    labels: int = 0
    used: int = 0
    held_out: int = 0
    folds: int = 0
    memory: int = 0
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    fixes: int = 0
    breaks: int = 0
    p_value: float | None = None
    deployed: bool = False
    threshold_only: bool = False  # deployed the current head's weights with a new calibration
    version: str = ""
    previous_version: str = ""
    temperature: float | None = None
    threshold: float | None = None
    target_accuracy: float | None = None
    embedded: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0
    reason: str = ""
    per_class: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("accuracy_before", "accuracy_after", "p_value", "temperature", "target_accuracy"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        out["seconds"], out["fit_seconds"] = round(self.seconds, 2), round(self.fit_seconds, 2)
        return out


def alignment(bin_embeddings: np.ndarray, bin_labels: np.ndarray, memory: Memory) -> np.ndarray:
    """The shift per feature moving the bin's mean embedding onto the memory's, the
    memory's mean taken over the bin's mix of classes (each memory class weighted by
    its share of the bin's labels): ``aligned = embedding + shift``. A pure shift: the
    bin's camera and light move every embedding alike; scaling each feature by its
    spread also stretched what tells the classes apart."""
    n_classes = len(memory.classes)
    share = np.bincount(bin_labels, minlength=n_classes).astype(np.float64) / max(len(bin_labels), 1)
    present = np.bincount(memory.labels, minlength=n_classes) > 0
    share = np.where(present, share, 0.0)
    if share.sum() == 0:
        return np.zeros(bin_embeddings.shape[1], np.float32)
    memory_mean = (share / share.sum()) @ memory.class_means
    return (memory_mean - bin_embeddings.mean(axis=0)).astype(np.float32)


def refit(
    classifier: Classifier,
    x_bin: np.ndarray,
    y_bin: np.ndarray,
    memory: Memory | None,
    config: Config,
) -> tuple[np.ndarray, np.ndarray]:
    """The refitted dense layer (weights, bias) on the raw embedding: the bin's labelled
    embeddings aligned with the memory, mixed with it, fitted from the model's own
    dense layer; the shift folded into the bias."""
    section = config.learning
    origin = classifier.builtin_head()
    if memory is not None:
        shift = alignment(x_bin, y_bin, memory)
        x = np.concatenate([memory.embeddings, x_bin + shift])
        y = np.concatenate([memory.labels, y_bin])
        extra = np.concatenate([np.ones(len(memory.labels)), np.full(len(y_bin), section.bin_weight)])
    else:
        shift = np.zeros(x_bin.shape[1], np.float32)
        x, y, extra = x_bin, y_bin, np.ones(len(y_bin))
    weights, bias = fit_dense(
        x, y, class_balanced_weights(y, len(classifier.labels), extra), origin, l2=section.l2, steps=section.steps
    )
    # Fold the shift in: W·(e + shift) + b = W·e + (b + W·shift).
    return weights, bias + weights @ shift


def verdict_folds(labels: np.ndarray, blocks: int) -> list[np.ndarray]:
    """Indexes of the ``blocks`` folds (oldest first, ``labels`` in time order): each
    class's labels cut into ``blocks`` contiguous stretches, fold k = stretch k of every
    class. So every fold holds every class with at least ``blocks`` labels, and the head
    that predicts a fold has seen earlier and later items of each class, never these."""
    folds: list[list[int]] = [[] for _ in range(blocks)]
    for c in np.unique(labels):
        for k, stretch in enumerate(np.array_split(np.flatnonzero(labels == c), blocks)):
            folds[k] += stretch.tolist()
    return [np.asarray(sorted(f), np.int64) for f in folds if f]


def cross_fitted_logits(
    classifier: Classifier,
    x: np.ndarray,
    y: np.ndarray,
    memory: Memory | None,
    config: Config,
    folds: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Logits of every bin label from a head refitted without its fold (``folds``, default
    :func:`verdict_folds` of ``y``): what a refitted head says about items it has not
    seen, for the verdict and the calibration."""
    logits = np.zeros((len(y), len(classifier.labels)), np.float32)
    everything = np.arange(len(y))
    for fold in folds if folds is not None else verdict_folds(y, config.learning.verdict_blocks):
        keep = np.setdiff1d(everything, fold)
        weights, bias = refit(classifier, x[keep], y[keep], memory, config)
        logits[fold] = x[fold] @ weights.T + bias
    return logits


def accuracy_to_keep(current: Head, x: np.ndarray, y: np.ndarray, threshold_now: float, config: Config) -> float:
    """How often the ``current`` head's sorted items (confidence ≥ ``threshold_now``) are
    right on labels it was not fitted on, or ``target_accuracy`` if that is lower: the bar
    a fitted threshold must keep."""
    now = current.probabilities(x)
    sorted_now = now.max(axis=1) >= threshold_now
    target = config.learning.target_accuracy
    if sorted_now.any():
        target = min(target, float((now.argmax(axis=1) == y)[sorted_now].mean()))
    return target


def calibrate(head: Head, logits: np.ndarray, labels: np.ndarray, target: float) -> None:
    """Set ``head``'s temperature (negative log-likelihood of ``logits``, its predictions of
    items it was not fitted on) and threshold: the lowest at which the sorted items are
    right at least ``target`` of the time (None: none qualifies)."""
    head.temperature = fit_temperature(logits, labels)
    probs = softmax(logits / head.temperature)
    head.threshold = fit_threshold(probs.max(axis=1), probs.argmax(axis=1) == labels, target)


def learn(config: Config) -> LearnResult:
    """Refit, judge, and deploy when better (see the module doc). Never raises for a
    verdict: the result says what happened and why."""
    started = time.perf_counter()
    result = LearnResult(time=utc_now_iso())
    _learn(config, result)
    result.seconds = time.perf_counter() - started
    return result


def _learn(config: Config, result: LearnResult) -> None:
    """:func:`learn`'s work, filling ``result``."""
    section = config.learning
    active = deploy.active_model_path(config)
    classifier = embedding_classifier(active, config)
    current = head_of(classifier)
    result.version = result.previous_version = classifier.version
    data, cache = labelled_captures(config, classifier)
    result.labels, result.embedded = len(data.labels), cache.computed
    result.per_class = {c: int(np.sum(data.labels == i)) for i, c in enumerate(classifier.labels)}
    if len(data.labels) < section.min_labels:
        result.reason = f"{len(data.labels)} labelled capture(s); a learn needs {section.min_labels}"
        return
    memory = load_memory(config, deploy.sha256(classifier.files.model), classifier.embedding_width)
    if memory is not None and memory.classes != list(classifier.labels):
        log.warning(
            "the training memory's classes %s are not the model's; learning from the bin's labels alone", memory.classes
        )
        memory = None
    result.memory = len(memory.labels) if memory is not None else 0
    x, y = data.embeddings, data.labels
    ids = [item.event_id for item in data.items]
    # The current head is judged only on labels it was not fitted on (a head a learn
    # deployed is right on nearly all of its own): on a first learn all of them, later the
    # labels that came since.
    listed = current.info.get(FITTED_ON)
    fitted_on = {str(event_id) for event_id in listed} if isinstance(listed, list) else set()
    unseen = np.array([event_id not in fitted_on for event_id in ids], bool)
    result.used, result.held_out = len(y), int(unseen.sum())
    if not unseen.any():
        result.reason = (
            f"the current head was fitted on all {len(y)} labels; the next learn judges it on the labels that "
            "come after"
        )
        return
    folds = verdict_folds(y, section.verdict_blocks)
    result.folds = len(folds)
    fit_started = time.perf_counter()
    out_of_fold = cross_fitted_logits(classifier, x, y, memory, config, folds)
    weights, bias = refit(classifier, x, y, memory, config)
    result.fit_seconds = time.perf_counter() - fit_started
    x_unseen, y_unseen = x[unseen], y[unseen]
    before = current.predict(x_unseen) == y_unseen
    after = out_of_fold[unseen].argmax(axis=1) == y_unseen
    result.accuracy_before, result.accuracy_after = float(before.mean()), float(after.mean())
    result.fixes, result.breaks = int(np.sum(after & ~before)), int(np.sum(before & ~after))
    result.p_value = one_sided_sign_test(result.fixes, result.breaks)
    configured = config.router.confidence_threshold
    threshold_now, _ = confidence_threshold(configured, classifier.recommended_threshold, classifier.threshold)
    version = (
        f"{classifier.metadata.get('version', 'unknown')}-bin.{result.time[:19].replace('-', '').replace(':', '')}"
    )
    backbone = deploy.sha256(classifier.files.model)
    better = result.fixes > result.breaks and result.p_value <= section.max_p
    result.target_accuracy = accuracy_to_keep(current, x_unseen, y_unseen, threshold_now, config)
    judged = (
        f"the {result.held_out} labels the current head was not fitted on (each judged by a head refitted without it)"
    )
    if better:
        candidate = Head(weights, bias, list(classifier.labels), version, backbone_sha256=backbone)
        candidate.info[FITTED_ON] = sorted(ids)
        # Calibrated on the out-of-fold logits: what the refit says about items it has not seen.
        calibrate(candidate, out_of_fold, y, result.target_accuracy)
        why = f"better on {judged}: {result.fixes} fixes, {result.breaks} breaks, p = {result.p_value:.3f}"
    else:
        not_better = (
            f"the refitted head is not better on {judged}: right on {result.fixes} the current head gets wrong, "
            f"wrong on {result.breaks} it gets right (one-sided sign test p = {result.p_value:.3f}, "
            f"needs <= {section.max_p})"
        )
        # The current head's own answers on labels it was not fitted on may still show its
        # threshold sends right answers to the fallback, or wrong ones through.
        candidate = Head(current.weights, current.bias, list(classifier.labels), version, backbone_sha256=backbone)
        candidate.info[FITTED_ON] = sorted(fitted_on)
        calibrate(candidate, current.logits(x_unseen), y_unseen, result.target_accuracy)
        if configured is not None or candidate.threshold is None or candidate.threshold == threshold_now:
            result.reason = not_better
            result.temperature, result.threshold = candidate.temperature, candidate.threshold
            return
        why = f"threshold only: {not_better}; its threshold on the bin's labels is {candidate.threshold} (was {threshold_now})"
        result.threshold_only = True
    result.temperature, result.threshold = candidate.temperature, candidate.threshold
    candidate.info |= {k: v for k, v in result.as_dict().items() if k not in ("version", "per_class")}
    try:
        installed = install_head(config, classifier, candidate)
    except (deploy.DeployError, OSError) as exc:
        result.reason = f"{why}; not deployed: {exc}"
        return
    result.deployed, result.version = True, candidate.version
    result.reason = f"{why}: deployed {installed.parent.name}"
    if better:  # a threshold-only deploy answers as the previous head does: nothing to watch
        start_watch(config, candidate.version, classifier.version)


def install_head(config: Config, classifier: Classifier, head: Head) -> Path:
    """Deploy the backbone with ``head`` beside it (validated, versioned, ``current``)."""
    staging = learning_dir(config) / "candidate"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = classifier.files
    try:
        for path in (files.model, files.labels, files.metadata):
            shutil.copyfile(path, staging / path.name)
        model = staging / files.model.name
        head.save(ModelFiles.beside(model).head)
        validation = deploy.validate(model, config)
        return deploy.install(model, config, validation)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- never worse


WATCH_FILE = "watch.json"


def start_watch(config: Config, version: str, previous_version: str) -> None:
    path = learning_dir(config) / WATCH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": version, "previous_version": previous_version, "since": utc_now_iso()}
    # Synced: a watch file that a power cut left empty would end the watch of this deploy.
    replace_synced(path, (json.dumps(body) + "\n").encode("utf-8"))


def read_watch(config: Config) -> dict[str, Any] | None:
    """The watch a learn started, or None when there is none. A watch file that is damaged
    (a power cut, the card) ends the watch: said, not silent, as the deploy is then no longer
    compared with the model before it."""
    path = learning_dir(config) / WATCH_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        body = exc
    if isinstance(body, dict) and isinstance(body.get("version"), str):
        return body
    damaged = path.with_name(f"{WATCH_FILE}.damaged")  # kept to look at; said once, not at every label
    with contextlib.suppress(OSError):
        os.replace(path, damaged)
    log.warning(
        "%s: unreadable (%s), moved to %s; the deployed head is no longer watched (bin-agent deploy --rollback "
        "goes back by hand)",
        path,
        body if isinstance(body, Exception) else "no version",
        damaged.name,
    )
    return None


def stop_watch(config: Config) -> None:
    (learning_dir(config) / WATCH_FILE).unlink(missing_ok=True)


def previous_classifier(config: Config) -> Classifier:
    """The model ``previous`` points at (``model.path`` when none), reading embeddings."""
    target = deploy.models_dir(config) / deploy.PREVIOUS
    model = deploy.installed_model(target.resolve()) if target.exists() else config.model.path
    return embedding_classifier(model, config)


def watch(config: Config) -> dict[str, Any]:
    """Compare the head a learn deployed with the previous one on the labels of items it
    sorted since; roll back when it is worse (see the module doc). Returns what it found:
    ``watching`` (the version), ``labels``, ``fixes``, ``breaks``, ``p_value``,
    ``rolled_back`` (and ``reason``)."""
    section = config.learning
    state = read_watch(config)
    if state is None:
        return {"watching": None}
    active = deploy.active_model_path(config)
    classifier = embedding_classifier(active, config)
    if classifier.version != state["version"]:  # rolled back or replaced by hand: nothing to watch
        stop_watch(config)
        return {"watching": None}
    previous_link = deploy.models_dir(config) / deploy.PREVIOUS
    if previous_link.is_symlink() and not previous_link.exists():
        # Its folder is gone: comparing with model.path instead would judge against the wrong
        # head, and there is nothing to roll back onto. Said once; the watch ends.
        log.warning(
            "%s points at %s, which is not there: model %s is no longer watched",
            previous_link,
            os.readlink(previous_link),
            state["version"],
        )
        stop_watch(config)
        return {"watching": None}
    data, _ = labelled_captures(config, classifier, only_version=state["version"])
    previous = previous_classifier(config)
    now_right = head_of(classifier).predict(data.embeddings) == data.labels
    then_right = head_of(previous).predict(data.embeddings) == data.labels
    fixes, breaks = int(np.sum(now_right & ~then_right)), int(np.sum(then_right & ~now_right))
    p_worse = one_sided_sign_test(breaks, fixes)
    report: dict[str, Any] = {
        "watching": state["version"],
        "labels": len(data.labels),
        "accuracy": round(float(now_right.mean()), 4) if len(data.labels) else None,
        "previous_accuracy": round(float(then_right.mean()), 4) if len(data.labels) else None,
        "fixes": fixes,
        "breaks": breaks,
        "p_value": round(p_worse, 4),
        "rolled_back": False,
    }
    if len(data.labels) >= section.watch_labels and breaks > fixes and p_worse < section.watch_max_p:
        deploy.rollback(config)
        stop_watch(config)
        report["rolled_back"] = True
        report["reason"] = (
            f"model {state['version']} was worse than {previous.version} on {len(data.labels)} new labels "
            f"(wrong on {breaks} the previous head got right, right on {fixes} it got wrong; one-sided "
            f"sign test p = {p_worse:.3f} < {section.watch_max_p}): rolled back to {previous.version}"
        )
        log.warning("%s", report["reason"])
    return report
