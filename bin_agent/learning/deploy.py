"""Install a new model on the bin, switch the running agent to it, go back.

Layout under ``<state_dir>/models/``::

    <version>-<sha256[:8]>/<name>.tflite   one folder per installed model, with
                          <name>.labels.txt its labels and metadata beside it
                          <name>.json
    current  -> <version>-<sha8>           the model the agent uses
    previous -> <version>-<sha8>           the one before the last deploy

Each deploy keeps a whole copy of the model (2.7 MB for the shipped one), and
``bin-agent learn`` may deploy every day: after each deploy only the newest
``[learning] keep_models`` folders stay (newest: most recently deployed),
never ``current`` or ``previous``.

``current`` and ``previous`` are symbolic links, each replaced in one
``rename()``: after a power cut the agent finds either the old or the new
model, never half of one. While ``current`` exists the agent uses it instead
of ``model.path`` (the model that came with the installation); without it
(never deployed, or rolled back past the first deploy) ``model.path`` is used.

:func:`validate` refuses a candidate that the agent could not run: files
missing or corrupt (its metadata's ``sha256``), not loadable by LiteRT,
labels and metadata that disagree, an input other than ``[1, H, W, 3]``
uint8/int8/float32, classes that the ``[router]`` does not map (or maps but
the model lacks), or output that is not a probability distribution on a
reference photo.

The running agent switches on MQTT ``cmd/reload_model`` or ``SIGHUP``
(``systemctl reload bin-agent``): it builds the new classifier first, beside
the old one, and swaps them between two items (see ``Agent.reload_model``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..classify.classifier import Classifier, ModelFiles, ModelFilesError, read_metadata, recommended_threshold
from ..config import Config
from ..errors import BinAgentError
from ..router import confidence_threshold

log = logging.getLogger(__name__)

MODELS_FOLDER = "models"
CURRENT = "current"
PREVIOUS = "previous"
PARTIAL = re.compile(r"\.[A-Za-z0-9._-]+\.partial")
"""``.<folder>.partial``: a model folder :func:`install` was copying (a power cut left it)."""
SWAP_LEFTOVER = re.compile(r"\.(?:current|previous)\.tmp")
"""``.current.tmp``, ``.previous.tmp``: the new link :func:`_point` makes before renaming it into place."""
INPUT_DTYPES = ("uint8", "int8", "float32")


class DeployError(BinAgentError):
    """A candidate model is refused, or nothing can be rolled back; one line."""

    exit_code = os.EX_DATAERR


def models_dir(config: Config) -> Path:
    """``<state_dir>/models``: where deployed models are installed."""
    return Path(config.agent.state_dir) / MODELS_FOLDER


def installed_model(folder: Path) -> Path:
    """The ``.tflite`` of an installed model folder."""
    models = sorted(folder.glob("*.tflite"))
    if len(models) != 1:
        raise DeployError(f"{folder}: expected one .tflite model, found {len(models)}")
    return models[0]


def deployed_model(config: Config) -> Path | None:
    """The deployed model (``models/current``), or None when none is deployed.

    :raises DeployError: ``current`` points at a folder that is not there (a power cut, a
        folder deleted by hand) or that holds no single ``.tflite``: never silently ``model.path``.
    """
    current = models_dir(config) / CURRENT
    if not current.is_symlink() and not current.exists():
        return None
    if not current.exists():
        raise DeployError(
            f"{current} points at {os.readlink(current)}, which is not there (bin-agent deploy --rollback goes back)"
        )
    return installed_model(current.resolve())


def is_deployed(config: Config) -> bool:
    """Whether ``models/current`` exists as a link, whole or not (the agent then runs it, not ``model.path``)."""
    return _target(models_dir(config), CURRENT) is not None


def fallback_models(config: Config) -> list[tuple[str, Path]]:
    """What the agent may run when the deployed model cannot, in order: the one ``previous``
    points at (when it is there), then ``model.path``. Each as (what it is, its ``.tflite``)."""
    models = models_dir(config)
    choices: list[tuple[str, Path]] = []
    previous = _target(models, PREVIOUS)
    if previous is not None and previous != _target(models, CURRENT):
        try:
            choices.append((f"the previous model ({previous})", installed_model(models / previous)))
        except DeployError as exc:
            log.warning("the previous model cannot be a fallback: %s", exc)
    choices.append((f"model.path ({config.model.path})", Path(config.model.path)))
    return choices


def _in_use(config: Config) -> Path:
    """The model the agent is pointed at, even when it is broken (for messages): the deployed
    ``.tflite``, else its folder, else ``model.path``."""
    models = models_dir(config)
    target = _target(models, CURRENT)
    if target is None:
        return Path(config.model.path)
    try:
        return installed_model(models / target)
    except DeployError:
        return models / target


def active_model_path(config: Config) -> Path:
    """The model the agent runs: the deployed one, else ``model.path``."""
    try:
        deployed = deployed_model(config)
    except DeployError as exc:
        raise ModelFilesError(str(exc)) from None
    return deployed if deployed is not None else config.model.path


def threshold_in_force(config: Config, model: Path | None = None) -> tuple[float, str]:
    """The router's confidence threshold with ``model`` (default: the one the agent uses), and
    where it comes from: ``router.confidence_threshold`` when set, else the one ``bin-agent learn``
    fitted with the head beside the model, else the model's metadata.

    :raises ModelFilesError: the model's metadata cannot be read.
    """
    files = ModelFiles.beside(model if model is not None else active_model_path(config))
    recommended = recommended_threshold(read_metadata(files.metadata), files.metadata)
    fitted = None
    if files.head.is_file():
        from ..classify.head import Head, HeadError

        try:
            fitted = Head.load(files.head).threshold
        except HeadError as exc:
            raise ModelFilesError(str(exc)) from None
    return confidence_threshold(config.router.confidence_threshold, recommended, fitted)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- checking


def check_classes(classifier: Classifier, config: Config) -> None:
    """The model's classes must be exactly those the ``[router]`` maps."""
    mapped = set(config.router.compartments)
    labels = list(classifier.labels)
    unmapped = [c for c in labels if c not in mapped]
    missing = sorted(mapped - set(labels))
    if unmapped:
        raise DeployError(f"class(es) {', '.join(unmapped)} have no compartment in [router.compartments]")
    if missing:
        raise DeployError(f"the model lacks the class(es) {', '.join(missing)} that [router.compartments] maps")


@dataclass
class Validation:
    """What :func:`validate` found out about a candidate."""

    classifier: Classifier
    sha256: str
    checks: list[str] = field(default_factory=list)


def validate(candidate: str | Path, config: Config, references: Sequence[Path] = ()) -> Validation:
    """Check that the agent can run ``candidate`` with this config; raise :class:`DeployError`."""
    from ..classify.preprocess import ImageError, load_image

    files = ModelFiles.beside(candidate)
    for name, path in (("model", files.model), ("labels", files.labels), ("metadata", files.metadata)):
        if not path.is_file():
            raise DeployError(f"{candidate}: the {name} file {path.name} is missing beside it")
    digest = sha256(files.model)
    try:
        classifier = Classifier(files, num_threads=1, views=config.model.views or None)  # views 0: the metadata's
    except ModelFilesError as exc:
        raise DeployError(str(exc)) from None
    height, width = classifier.spec.input_size
    checks = [
        (
            f"loads in the interpreter: input [1, {height}, {width}, 3] {classifier.input_dtype}, "
            f"{len(classifier.labels)} classes, {classifier.views} view(s)"
        )
    ]
    expected = classifier.metadata.get("sha256")
    if expected is not None and expected != digest:
        raise DeployError(
            f"{files.model}: sha256 {digest[:12]}… differs from its metadata's "
            f"{str(expected)[:12]}… (corrupt or partly copied)"
        )
    if expected is not None:
        checks.append("sha256 matches the metadata")
    if str(classifier.input_dtype) not in INPUT_DTYPES:
        raise DeployError(f"{files.model}: input type {classifier.input_dtype} is not one of {', '.join(INPUT_DTYPES)}")
    check_classes(classifier, config)
    checks.append(f"classes match [router.compartments]: {', '.join(classifier.labels)}")
    images: list[tuple[str, np.ndarray]] = []
    for path in references:
        try:
            images.append((str(path), load_image(path)))
        except ImageError as exc:
            raise DeployError(str(exc)) from None
    if not images:
        # No photo to hand: a plain grey frame still runs the whole path.
        images.append(("a grey frame", np.full((480, 640, 3), 128, np.uint8)))
    for name, image in images:
        result = classifier.classify(image)
        total = float(sum(result.probabilities))
        if not np.all(np.isfinite(result.probabilities)) or abs(total - 1.0) > 0.05:
            raise DeployError(
                f"{files.model}: output on {name} is not a probability distribution (sums to {total:.3f})"
            )
        checks.append(
            f"classifies {name}: {result.label} {result.confidence:.2f} "
            f"in {result.preprocess_ms + result.inference_ms:.0f} ms"
        )
    return Validation(classifier, digest, checks)


# --------------------------------------------------------------------------- installing


def fsync_directory(path: Path) -> None:
    """Make the renames in folder ``path`` durable (raises :class:`OSError`)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point(models: Path, name: str, target: str | None) -> None:
    """Make ``models/<name>`` point at ``target`` (a folder name) in one rename; None removes it."""
    link = models / name
    if target is None:
        link.unlink(missing_ok=True)
    else:
        tmp = models / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)  # relative: the state dir may move
        os.replace(tmp, link)
    fsync_directory(models)


def _target(models: Path, name: str) -> str | None:
    link = models / name
    return os.readlink(link) if link.is_symlink() else None


def remove_interrupted(config: Config) -> list[str]:
    """Delete what interrupted deploys left in ``models/`` (before a deploy, and when the agent
    starts): ``.<folder>.partial`` staging folders and ``.current.tmp``/``.previous.tmp`` links
    that were never renamed into place, once old enough that no deploy or rollback beside may
    still be writing them; never an entry of another name. Returns their names. Never raises."""
    from .leftovers import MIN_AGE_SECONDS, remove_leftovers

    models = models_dir(config)
    return remove_leftovers(
        models, PARTIAL, min_age_s=MIN_AGE_SECONDS, what="model folder(s) of an interrupted deploy"
    ) + remove_leftovers(models, SWAP_LEFTOVER, min_age_s=MIN_AGE_SECONDS, what="link(s) of an interrupted deploy")


def install(candidate: str | Path, config: Config, validation: Validation) -> Path:
    """Copy a validated candidate into ``models/<version>-<sha8>/`` (fsynced), then point
    ``current`` at it and ``previous`` at what was current. Returns the installed .tflite."""
    files = ModelFiles.beside(candidate)
    models = models_dir(config)
    models.mkdir(parents=True, exist_ok=True)
    remove_interrupted(config)
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", validation.classifier.version)[:80] or "unknown"
    name = f"{version}-{validation.sha256[:8]}"
    folder = models / name
    if not folder.is_dir():
        staging = models / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        extra = [files.head] if files.head.is_file() else []  # a head refitted by `bin-agent learn`
        for path in (files.model, files.labels, files.metadata, *extra):
            shutil.copyfile(path, staging / path.name)
            with (staging / path.name).open("rb") as f:
                os.fsync(f.fileno())
        fsync_directory(staging)
        os.replace(staging, folder)
        fsync_directory(models)
    before = _target(models, CURRENT)
    if before != name:
        # previous first: a crash in between leaves previous == current, both whole.
        _point(models, PREVIOUS, before)
        _point(models, CURRENT, name)
    # Its age is its last deploy: a redeployed old version is new again. Never older than another
    # folder's: a clock that booted behind (a Pi without an RTC) must not make this deploy the
    # "oldest" that prune deletes first.
    others = [row["modified"] + 1.0 for row in installed(config) if row["folder"] != name]
    stamp = max([time.time(), *others])
    os.utime(folder, (stamp, stamp))
    prune(config)
    return folder / files.model.name


def prune(config: Config) -> list[str]:
    """Delete installed model folders beyond the newest ``[learning] keep_models``
    (by last deploy: folder times that :func:`install` never lets go back), never ``current`` or ``previous``. Returns the deleted names."""
    models = models_dir(config)
    for leftover in models.glob(".*.deleting"):  # a power cut during an earlier prune
        shutil.rmtree(leftover, ignore_errors=True)
    keep = {_target(models, CURRENT), _target(models, PREVIOUS)}
    folders = [row["folder"] for row in sorted(installed(config), key=lambda row: row["modified"], reverse=True)]
    room = max(config.learning.keep_models - len(keep - {None}), 0)
    deleted = []
    for name in folders:
        if name in keep:
            continue
        if room > 0:
            room -= 1
            continue
        # Renamed first, then removed: a power cut leaves a hidden folder, never half a model that is listed.
        doomed = models / f".{name}.deleting"
        os.replace(models / name, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(name)
    if deleted:
        log.info(
            "deleted %d old model version(s) (keep_models %d): %s", len(deleted), config.learning.keep_models, deleted
        )
    return deleted


def rollback(config: Config) -> tuple[Path, Path]:
    """Return to the model before the last deploy (``previous``; with none, the
    configured ``model.path``). Rolling back twice goes forward again.
    Returns (model in use before, model in use now)."""
    models = models_dir(config)
    current, previous = _target(models, CURRENT), _target(models, PREVIOUS)
    if current is None and previous is None:
        raise DeployError(
            f"nothing to roll back: no model was deployed in {models} (the agent uses model.path {config.model.path})"
        )
    if previous is not None:
        try:
            installed_model(models / previous)
        except DeployError as exc:
            raise DeployError(
                f"cannot roll back onto {previous}: {exc}; nothing changed (deploy a model, or delete the link "
                f"{models / PREVIOUS} and roll back to model.path)"
            ) from None
    # Whole or not: rolling back is how a person leaves a deployed model that cannot run.
    before = _in_use(config)
    _point(models, PREVIOUS, current)
    _point(models, CURRENT, previous)
    return before, _in_use(config)


def installed(config: Config) -> list[dict[str, Any]]:
    """Every installed model folder, with which one is current / previous."""
    models = models_dir(config)
    if not models.is_dir():
        return []
    current, previous = _target(models, CURRENT), _target(models, PREVIOUS)
    rows = []
    for folder in sorted(
        p for p in models.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ):
        role = "current" if folder.name == current else "previous" if folder.name == previous else ""
        rows.append({"folder": folder.name, "role": role, "modified": folder.stat().st_mtime})
    return rows
