"""bin-agent compare: two models on the same labelled photos, side by side, with a verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bin_agent.learning.compare import sign_test
from tests.helpers import SHIPPED_MODEL, TINY_MODELS


def test_sign_test_is_the_exact_two_sided_binomial():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64)  # 2 * 0.5**6
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


@pytest.fixture
def labelled(tmp_path: Path, trashnet_dir: Path) -> Path:
    folder = tmp_path / "mybin"
    for label in ("glass", "paper", "metal", "cardboard"):
        (folder / label).mkdir(parents=True)
        for photo in sorted((trashnet_dir / label).glob("*.jpg"))[:3]:
            (folder / label / photo.name).symlink_to(photo)
    return folder


@pytest.mark.parametrize("better", [True, False])
def test_compare_prints_both_models_and_a_verdict(labelled, better):
    tiny = TINY_MODELS / "tiny_uint8.tflite"
    a, b = (tiny, SHIPPED_MODEL) if better else (SHIPPED_MODEL, tiny)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bin_agent",
            "compare",
            "--model",
            str(a),
            "--model",
            str(b),
            str(labelled),
            "--threshold",
            "0.6",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == (0 if better else 1), run.stderr
    lines = run.stdout.splitlines()
    for name in ("accuracy", "recall glass", "to fallback (< 0.60)", "sorted right", "latency"):
        assert any(line.startswith(name) for line in lines), name
    accuracy = next(line for line in lines if line.startswith("accuracy")).split()
    right_a, right_b = (int(x.strip("()").split("/")[0]) for x in accuracy[2::2])
    verdict = lines[-1]
    if better:
        assert verdict.startswith("verdict: B is better than A") and right_b > right_a
    else:
        assert verdict.startswith("verdict: B is NOT better than A") and right_b <= right_a
    assert f"B right on {right_b} of 12 photos, A on {right_a}" in verdict


def test_compare_needs_two_models(labelled):
    run = subprocess.run(
        [sys.executable, "-m", "bin_agent", "compare", "--model", str(SHIPPED_MODEL), str(labelled)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "exactly two models" in run.stderr


def test_an_empty_subset_names_its_cause(labelled, tmp_path):
    from bin_agent.learning.compare import items_of
    from bin_agent.training import dataset as ds

    # A split file made without these photos: none of them is in its test subset.
    split = tmp_path / "split.json"
    entry = {"train": ["glass/other.jpg"], "val": [], "test": ["glass/another.jpg"]}
    split.write_text(json.dumps({"datasets": {"elsewhere": entry}}))
    with pytest.raises(ds.DatasetError, match=r"none of the 12 photo\(s\) of .*mybin is in the 'test' subset"):
        items_of([labelled], split, "test")
