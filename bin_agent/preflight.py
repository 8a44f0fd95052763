"""Opening what the config names, before anything is started: the model and its labels, the
broker's password and TLS files, the replay images, the state directory.

``check-config``, ``run`` and ``doctor`` load a config through :func:`load`, so a missing file
and a relation problem are reported together, each naming its key (exit 78).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import CLASSES
from .config import Config
from .config.load import config_from_dict, load_config
from .errors import ConfigError


def load(path: str | Path, *, model: bool = True) -> Config:
    """Load ``path`` (schema, relations) and open the files it names.

    :param model: also open the model files (their labels are the classes every compartment
        and fill table is checked against).
    :raises ConfigError: with every problem found.
    """
    return load_config(path, extra_checks=checks(model=model))


def load_dict(raw: dict, *, base_dir: Path = Path("."), source: Path | str | None = None, model: bool = True) -> Config:
    """:func:`load` for parsed TOML."""
    return config_from_dict(raw, base_dir=base_dir, source=source, extra_checks=checks(model=model))


def checks(*, model: bool = True) -> Callable[[Config, list[str]], list[str] | None]:
    """The preflight as a load hook: adds the problems, returns the model's labels (None: not read)."""

    def run(config: Config, problems: list[str]) -> list[str] | None:
        labels = _check_model(config, problems) if model else None
        _check_credentials(config, problems)
        _check_state_dir(config, problems)
        if config.camera.source == "replay":
            _check_replay_files(config, problems)
        return labels

    return run


def _check_credentials(config: Config, problems: list[str]) -> None:
    from .mqtt.credentials import broker_password, broker_tls_context

    for opener in (broker_password, broker_tls_context):
        try:
            opener(config)
        except ConfigError as exc:
            problems.extend(exc.problems)


def _check_state_dir(config: Config, problems: list[str]) -> None:
    state_dir = config.agent.state_dir
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        problems.append(f"agent.state_dir: {existing} is not a directory")


def _check_replay_files(config: Config, problems: list[str]) -> None:
    from .classify.preprocess import ImageError, load_image
    from .sources.replay import IMAGE_SUFFIXES, find_images

    replay = config.camera.replay
    if not replay.path.exists():
        problems.append(f"camera.replay.path: {replay.path} does not exist; point it at an image or a folder of images")
    elif replay.path.is_file() and replay.path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(f"camera.replay.path: {replay.path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif replay.path.is_dir():
        try:
            images = find_images(replay.path)
        except OSError as exc:
            problems.append(f"camera.replay.path: cannot list {replay.path} ({exc})")
        else:
            if not images:
                problems.append(f"camera.replay.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {replay.path}")
    if replay.empty_frame:
        # Decoded now (it is small and used for every item): a bad one fails here, not mid-run.
        try:
            load_image(config.resolve(replay.empty_frame), replay.max_pixels)
        except ImageError as exc:
            problems.append(f"camera.replay.empty_frame: {exc}")


def _check_model(config: Config, problems: list[str]) -> list[str]:
    from .classify.classifier import ModelFiles, ModelFilesError, read_labels, read_metadata, recommended_threshold

    files = ModelFiles.beside(config.model.path)
    for name, path in (("model", files.model), ("labels", files.labels), ("metadata", files.metadata)):
        if not path.is_file():
            problems.append(f"model.path: {name} file {path} not found")
            return list(CLASSES)  # the first missing file says it: no list of its siblings
    try:
        labels = read_labels(files.labels)
        recommended_threshold(read_metadata(files.metadata), files.metadata)
    except ModelFilesError as exc:
        problems.append(f"model.path: {exc}")
        return list(CLASSES)
    return labels
