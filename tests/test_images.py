"""Hostile image files: decompression bombs, huge JPEGs, truncated files.

Made for real: a 15,000 x 15,000 PNG (about 250 KB on disk, 675 MB decoded), a
10,000 x 10,000 JPEG (1.8 GB of memory when decoded naively), a truncated JPEG.
The replay, ``bin-agent classify`` and the training loader skip what they
cannot decode with one line each, and a process's peak memory stays bounded
(the child's VmHWM; printed, and checked against a generous bound only:
this is about memory, not speed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bin_agent.classify.preprocess import ImageError, load_image
from tests.helpers import TINY_MODELS, base_config, write_toml
from tests.test_config_inputs import write_blank_png

TINY = TINY_MODELS / "tiny_uint8.tflite"
RSS_BOUND_MB = 400


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    files = {
        "bomb": root / "bomb.png",
        "big_jpeg": root / "big.jpg",
        "truncated": root / "truncated.jpg",
        "good": root / "good.jpg",
    }
    write_blank_png(files["bomb"], 15_000, 15_000)
    # Made in a child process: the 400 MB canvas never lives in the test process.
    script = (
        "import sys; from PIL import Image, ImageDraw; im = Image.new('RGB', (10000, 10000), (90, 100, 110)); "
        "ImageDraw.Draw(im).ellipse((2000, 2000, 8000, 8000), fill=(240, 240, 60)); "
        "im.save(sys.argv[1], quality=80)"
    )
    subprocess.run([sys.executable, "-c", script, str(files["big_jpeg"])], check=True, timeout=300)
    photo = np.full((480, 640, 3), 220, np.uint8)
    photo[120:360, 200:440] = (40, 160, 60)
    Image.fromarray(photo).save(files["good"], quality=90)
    files["truncated"].write_bytes(files["good"].read_bytes()[:3000])
    return files


# Runs `python -m bin_agent ARGS` and writes the process's peak RSS (VmHWM, kB)
# to $PEAK_RSS_FILE at exit. VmHWM belongs to the memory of the program after
# exec; getrusage's ru_maxrss would also count the forking pytest process.
PEAK_RSS_WRAPPER = """
import atexit, os, runpy, sys
def report():
    with open('/proc/self/status') as status:
        peak = next(line.split()[1] for line in status if line.startswith('VmHWM:'))
    with open(os.environ['PEAK_RSS_FILE'], 'w') as out:
        out.write(peak)
atexit.register(report)
sys.argv = ['bin-agent', *sys.argv[1:]]
runpy.run_module('bin_agent', run_name='__main__', alter_sys=True)
"""


def run_measured(args: list[str], tmp_path: Path) -> tuple[int, str, str, float]:
    """Run ``bin-agent ARGS``; return (exit code, stdout, stderr, its peak RSS in MB)."""
    peak_file = tmp_path / "peak_rss_kb.txt"
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PEAK_RSS_FILE": str(peak_file)},
    )
    return result.returncode, result.stdout, result.stderr, int(peak_file.read_text()) / 1024


def test_bomb_png_is_refused_from_its_header(hostile):
    assert hostile["bomb"].stat().st_size < 1_000_000
    with pytest.raises(ImageError, match="bomb.png: "):
        load_image(hostile["bomb"])


def test_oversized_png_below_pillows_own_limit_is_refused_by_ours(tmp_path):
    path = tmp_path / "tall.png"
    write_blank_png(path, 5000, 4000)  # 20 MP: Pillow would decode it, our 16 MP limit does not
    with pytest.raises(ImageError, match=r"5000x4000 pixels is more than the limit of 16,000,000"):
        load_image(path)
    assert load_image(path, max_pixels=20_000_000).shape == (4000, 5000, 3)


def test_big_jpeg_is_decoded_reduced(hostile):
    image = load_image(hostile["big_jpeg"])
    assert image.shape == (2500, 2500, 3)  # 1/4 scale: the largest that fits 16 MP
    assert image[1250, 1250, 1] > 200 and image[100, 100, 1] < 120  # the picture, not noise


def test_jpeg_too_large_even_at_one_eighth_is_refused(hostile):
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(hostile["big_jpeg"], max_pixels=1_000_000)  # 1/8 scale is still 1.56 MP


def test_truncated_jpeg_is_an_image_error(hostile):
    with pytest.raises(ImageError, match="truncated.jpg: not a readable image"):
        load_image(hostile["truncated"])


def test_replay_skips_them_with_a_warning_in_bounded_memory(tmp_path, hostile):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bomb", "big_jpeg", "truncated", "good"):
        (folder / hostile[name].name).symlink_to(hostile[name])
    data = base_config(tmp_path, folder, model=TINY, mqtt=False)
    data["trigger"] = {"mode": "motion", "settle_seconds": 0.3}
    config = write_toml(tmp_path / "agent.toml", data)
    code, stdout, stderr, peak_mb = run_measured(["run", "--config", str(config), "--print-events"], tmp_path)
    print(f"replay of bomb.png, big.jpg (10000x10000), truncated.jpg, good.jpg: peak RSS {peak_mb:.0f} MB")
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    skipped = [line for line in stderr.splitlines() if "replay: skipping" in line]
    assert len(skipped) == 2 and any("bomb.png" in s for s in skipped) and any("truncated.jpg" in s for s in skipped)
    sorted_lines = [line for line in stdout.splitlines() if line.startswith("#")]
    assert (
        len(sorted_lines) == 2
        and any("big.jpg" in s for s in sorted_lines)
        and any("good.jpg" in s for s in sorted_lines)
    )
    assert peak_mb < RSS_BOUND_MB


def test_classify_reports_each_bad_file_and_goes_on(tmp_path, hostile):
    args = [
        "classify",
        "--model",
        str(TINY),
        str(hostile["good"]),
        str(hostile["bomb"]),
        str(hostile["truncated"]),
        str(hostile["big_jpeg"]),
    ]
    code, stdout, stderr, peak_mb = run_measured(args, tmp_path)
    print(f"classify of good.jpg, bomb.png, truncated.jpg, big.jpg: peak RSS {peak_mb:.0f} MB")
    assert code == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("bin-agent: ")]
    assert len(errors) == 2 and "bomb.png" in errors[0] and "truncated.jpg" in errors[1], stderr
    assert [line.split(":")[0] for line in stdout.splitlines()] == [str(hostile["good"]), str(hostile["big_jpeg"])]
    assert peak_mb < RSS_BOUND_MB


def test_training_loader_skips_them(hostile):
    from bin_agent.training.dataset import Item, load_items

    items = [
        Item(hostile[name], 0, f"glass/{hostile[name].name}") for name in ("good", "bomb", "truncated", "big_jpeg")
    ]
    reported: list[str] = []
    images, kept, errors = load_items(items, reported.append)
    assert [item.path.name for item in kept] == ["good.jpg", "big.jpg"]
    assert images[1].shape == (2500, 2500, 3)
    assert len(errors) == 2 and errors == reported
    assert "bomb.png" in errors[0] and "truncated.jpg" in errors[1]


@pytest.fixture(scope="module")
def giants(tmp_path_factory) -> dict[str, Path]:
    """A 240 MP baseline JPEG (over Pillow's own 179 MP bomb limit) and a 24 MP progressive one,
    made in a child process (grey: a 240 MB canvas, not 720 MB)."""
    root = tmp_path_factory.mktemp("giants")
    files = {"huge": root / "huge.jpg", "progressive": root / "progressive.jpg"}
    script = (
        "import sys; from PIL import Image, ImageDraw; im = Image.new('L', (20000, 12000), 100); "
        "ImageDraw.Draw(im).ellipse((6000, 3000, 14000, 9000), fill=230); im.save(sys.argv[1], quality=80); "
        "Image.new('L', (6000, 4000), 100).save(sys.argv[2], quality=80, progressive=True)"
    )
    subprocess.run([sys.executable, "-c", script, *map(str, files.values())], check=True, timeout=300)
    return files


def test_a_240_mp_jpeg_is_decoded_reduced_in_bounded_memory(giants, tmp_path):
    image = load_image(giants["huge"])
    assert image.shape == (3000, 5000, 3)  # 1/4 scale: the largest that fits 16 MP
    assert image[1500, 2500, 0] > 200 and image[100, 100, 0] < 120  # the picture, not noise
    code, stdout, stderr, peak_mb = run_measured(["classify", str(giants["huge"]), "--model", str(TINY)], tmp_path)
    print(f"classify of a 20000x12000 JPEG: peak RSS {peak_mb:.0f} MB")
    assert code == 0, stderr[-2000:]
    assert stdout.startswith(f"{giants['huge']}: ")
    assert peak_mb < RSS_BOUND_MB


def test_a_progressive_jpeg_is_bounded_by_its_full_size(giants):
    # libjpeg holds a progressive file's full-resolution coefficients whatever the draft scale.
    with pytest.raises(ImageError, match=r"progressive JPEG of 6000x4000 pixels is more than the limit"):
        load_image(giants["progressive"])
    assert load_image(giants["progressive"], max_pixels=24_000_000).shape == (4000, 6000, 3)
