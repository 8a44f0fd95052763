"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$BIN_AGENT_SHARED``."""
    return Path(os.environ.get("BIN_AGENT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def trashnet_dir() -> Path:
    """The TrashNet photos. Missing data fails in CI and skips elsewhere."""
    path = shared_dir() / "data" / "trashnet"
    if not (path / "cardboard").is_dir():
        message = f"TrashNet photos not found at {path} (set BIN_AGENT_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    path = shared_dir() / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not path.is_file():
        message = f"MobileNetV2 weights not found at {path} (set BIN_AGENT_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
