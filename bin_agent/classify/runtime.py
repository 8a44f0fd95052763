"""The one place that chooses a TensorFlow Lite interpreter.

LiteRT (``ai_edge_litert``) is the maintained runtime and works with NumPy 2;
``tflite_runtime`` is the older package still found on some Pis (it needs
NumPy < 2). Nothing else in bin-agent imports either: ask this module for an
interpreter instead.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BinAgentError

RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
)
"""(name, module) pairs in order of preference."""


class RuntimeUnavailable(BinAgentError, RuntimeError):
    """No TensorFlow Lite runtime can be imported."""

    exit_code = os.EX_UNAVAILABLE


class ModelLoadError(BinAgentError, ValueError):
    """The model file exists but the interpreter cannot load it."""

    exit_code = os.EX_CONFIG


def interpreter_class() -> tuple[str, Callable[..., Any]]:
    """Return ``(runtime_name, Interpreter)`` for the first importable runtime."""
    reasons = []
    for name, module_name in RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        return name, module.Interpreter
    raise RuntimeUnavailable(
        "no TensorFlow Lite runtime found (" + "; ".join(reasons) + "). Fix: pip install ai-edge-litert"
    )


def runtime_name() -> str:
    """Name of the runtime :func:`load_interpreter` would use."""
    return interpreter_class()[0]


RUNTIME_BANNERS = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
"""Lines the C++ runtime prints on standard error whenever it loads a model. They come from
TFLite's MinimalLogger, which neither TF_CPP_MIN_LOG_LEVEL nor any Python option of LiteRT's
Interpreter silences; turning the default delegate off would silence it but lose XNNPACK."""


@contextlib.contextmanager
def _without_runtime_banners() -> Iterator[None]:
    """Hold what is written on file descriptor 2 while the runtime loads a model, then write it
    back without :data:`RUNTIME_BANNERS`: every other line (a real runtime error, another
    thread's log line) still reaches standard error, only later."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a closed stderr): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            rest = "".join(line for line in lines if not line.startswith(RUNTIME_BANNERS))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


def load_interpreter(model_path: str | Path, num_threads: int | None = None, *, keep_tensors: bool = False) -> Any:
    """Load a ``.tflite`` file and allocate its tensors.

    :param num_threads: CPU threads for the interpreter; ``None`` lets the
        runtime decide.
    :param keep_tensors: keep every intermediate tensor readable after
        ``invoke()`` (``experimental_preserve_all_tensors``), to read the
        embedding before the dense layer. XNNPACK then delegates op by op
        instead of the whole graph; measured on the shipped model here: 1.80
        instead of 1.74 ms per invoke, outputs identical (docs/learning.md).
    :raises ModelLoadError: the file is missing, empty, truncated or not a
        TensorFlow Lite flatbuffer.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    content = path.read_bytes()
    # A flatbuffer carries its file identifier at bytes 4..8; checking it turns
    # a random or truncated file into a clear message instead of a native abort.
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TensorFlow Lite model (no TFL3 identifier)")
    _, interpreter_cls = interpreter_class()
    try:
        # XNNPACK is applied (and announced) in allocate_tensors.
        with _without_runtime_banners():
            if keep_tensors:
                with warnings.catch_warnings():
                    # LiteRT warns that the option is "for debugging": measured, see the docstring.
                    warnings.simplefilter("ignore", UserWarning)
                    interpreter = interpreter_cls(
                        model_content=content, num_threads=num_threads, experimental_preserve_all_tensors=True
                    )
            else:
                interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: the interpreter cannot load it ({exc})") from None
    return interpreter
