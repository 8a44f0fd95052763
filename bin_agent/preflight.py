"""Opening what the config names, before anything is started: the model and its labels, the
broker's password and TLS files, the replay images, the state directory.

``check-config``, ``run`` and ``doctor`` load a config through :func:`load`, so a missing file
and a relation problem are reported together, each naming its key (exit 78).
"""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import CLASSES
from .config import Config
from .config.load import config_from_dict, load_config
from .errors import ConfigError


def load(path: str | Path, *, model: bool = True, host: bool = False) -> Config:
    """Load ``path`` (schema, relations) and open the files it names.

    :param model: also open the model files (their labels are the classes every compartment
        and fill table is checked against).
    :param host: also check what this machine must provide to ``run`` it: the pin
        factory's library and a writable state directory (``check-config`` and
        ``run`` ask for it, so the two agree; ``doctor`` reports these itself).
    :raises ConfigError: with every problem found.
    """
    return load_config(path, extra_checks=checks(model=model, host=host))


def load_dict(raw: dict, *, base_dir: Path = Path("."), source: Path | str | None = None, model: bool = True) -> Config:
    """:func:`load` for parsed TOML."""
    return config_from_dict(raw, base_dir=base_dir, source=source, extra_checks=checks(model=model))


def checks(*, model: bool = True, host: bool = False) -> Callable[[Config, list[str]], list[str] | None]:
    """The preflight as a load hook: adds the problems, returns the model's labels (None: not read)."""

    def run(config: Config, problems: list[str]) -> list[str] | None:
        labels = _check_model(config, problems) if model else None
        _check_credentials(config, problems)
        _check_state_dir(config, problems, writable=host)
        if host:
            _check_pin_factory(config, problems)
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


def _check_state_dir(config: Config, problems: list[str], *, writable: bool) -> None:
    """``run`` creates the directory and writes the database there: a file in the
    way, or a directory that cannot be written (read-only file system, permissions),
    is said here too, not only by ``run``."""
    state_dir = config.agent.state_dir
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        problems.append(f"agent.state_dir: {existing} is not a directory")
        return
    if not writable:
        return
    try:  # a real write: access() says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=existing, prefix=".bin-agent-check-"):
            pass
    except OSError as exc:
        what = "the state directory" if existing == state_dir else f"{existing}, where the state directory would go,"
        problems.append(f"agent.state_dir: cannot write in {what} ({exc.strerror or exc})")


def _check_pin_factory(config: Config, problems: list[str]) -> None:
    """The pin factory's library can be imported (what ``run`` needs first; only
    the board itself can tell whether the factory then reaches the GPIO chip)."""
    import importlib

    from .actuators.sorter import PIN_FACTORIES

    name = config.actuator.pin_factory
    if name not in PIN_FACTORIES:
        return  # "default" and "mock": nothing to import
    module, _, fix = PIN_FACTORIES[name]
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or gpiozero's own refusal at import
        problems.append(
            f"actuator.pin_factory: pin factory {name!r} cannot load ({type(exc).__name__}: {exc}). Fix: {fix}; "
            'or set actuator.pin_factory = "mock" to run without GPIO'
        )


def _regular_file(key: str, path: Path, problems: list[str]) -> bool:
    """A FIFO, a device or a socket would block (or never end) when read: refused."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return True  # missing or unreadable: the reader says it
    if stat.S_ISREG(mode):
        return True
    problems.append(f"{key}: {path} is not a regular file (a FIFO, device or socket would block the agent)")
    return False


def _check_replay_files(config: Config, problems: list[str]) -> None:
    from .classify.preprocess import ImageError, load_image
    from .sources.replay import IMAGE_SUFFIXES, find_images

    replay = config.camera.replay
    if not replay.path.exists():
        problems.append(f"camera.replay.path: {replay.path} does not exist; point it at an image or a folder of images")
    elif not replay.path.is_dir() and not _regular_file("camera.replay.path", replay.path, problems):
        pass
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
    if replay.empty_frame and _regular_file("camera.replay.empty_frame", config.resolve(replay.empty_frame), problems):
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
