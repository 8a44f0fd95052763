#!/usr/bin/env python3
"""How far the region the agent classified lies from the item, in a measured bin.

Reads the work folder of ``scripts/measure_learning.py`` (its frames are whole photos, a
board with its item, laid on the synthetic bin's floor; ``empty.jpg`` is the empty bin):

* **set 1's crops**: each capture of set 1 (``[capture] mode = "all"``: the region the
  agent classified, as a JPEG) against the board's own region in its frame, the pixels
  that differ from the empty bin, brought to the model's shape by the agent's own
  :func:`bin_agent.agent.region_to_classify` (the default ``[camera]``). Counts the crops
  within 16 px of it and those 48 px or more wider or taller (the floor around the item classified with it;
  a crop of the whole view is 640 px wide);
* **set 2 on the board's own region**: set 2's frames classified on that region, by the
  model the agent ran (all its views): what a trigger whose box were exact would give,
  beside ``result.json``'s figure through ``bin-agent run``.

    BIN_AGENT_SHARED=../shared python scripts/measure_learning.py --subset val --work W
    python scripts/crop_vs_board.py W

The board is found as the rows and columns of which 15 % or more of the pixels differ from
the empty bin by more than 30 (the sum over the three channels): a board that shows the
floor's own colour along an edge is found a little smaller there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bin_agent.agent import region_to_classify  # noqa: E402
from bin_agent.classify.classifier import Classifier, ModelFiles  # noqa: E402
from bin_agent.classify.preprocess import load_image  # noqa: E402
from bin_agent.config import CameraSection  # noqa: E402
from bin_agent.errors import BinAgentError, run_script  # noqa: E402
from bin_agent.geometry import PixelBox  # noqa: E402

DIFFERENCE = 30
"""Grey levels, summed over the channels, by which a board's pixel differs from the empty bin."""
SHARE = 0.15
"""Share of a row's (column's) pixels that differ, for the row (column) to be the board's."""
FAR = 48
"""Pixels wider or taller than the board's region: the floor classified with the item."""


def board_region(frame: np.ndarray, empty: np.ndarray, classifier: Classifier) -> PixelBox | None:
    """The board's region in ``frame`` (against ``empty``), as the agent would classify it
    were the trigger's box the board's; ``None`` when nothing differs."""
    differs = np.abs(frame.astype(np.int16) - empty.astype(np.int16)).sum(axis=-1) > DIFFERENCE
    rows = np.flatnonzero(differs.mean(axis=1) > SHARE)
    cols = np.flatnonzero(differs.mean(axis=0) > SHARE)
    if rows.size == 0 or cols.size == 0:
        return None
    height, width = frame.shape[:2]
    box = (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)
    return region_to_classify(CameraSection(), classifier.spec, frame.shape, box)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="a work folder of scripts/measure_learning.py")
    args = parser.parse_args()
    work: Path = args.work
    result_path = work / "result.json"
    if not result_path.is_file():
        raise BinAgentError(f"{result_path}: not found (run scripts/measure_learning.py --work {work} first)")
    result = json.loads(result_path.read_text())
    state = work / "state"
    # The model the agent ran before learning: set 2's "before" is the one to compare with.
    model = state / "models" / "previous" / "waste_mobilenetv2_int8.tflite"
    if not model.is_file():
        model = REPO / "models" / "waste_mobilenetv2_int8.tflite"
    classifier = Classifier(ModelFiles.beside(model), num_threads=2)

    empty = load_image(work / "set1" / "empty.jpg")
    near = far = total = 0
    for sidecar in sorted((state / "capture").glob("*.json")):
        info = json.loads(sidecar.read_text())
        source = Path(info.get("source", ""))
        if source.parent.name != "set1" or not source.is_file():
            continue
        region = board_region(load_image(source), empty, classifier)
        if region is None:
            continue
        with Image.open(sidecar.with_suffix(".jpg")) as crop:
            crop_width, crop_height = crop.size
        wider = crop_width - (region[2] - region[0])
        taller = crop_height - (region[3] - region[1])
        total += 1
        near += abs(wider) <= 16 and abs(taller) <= 16
        far += wider >= FAR or taller >= FAR
    print(
        f"set 1's crops: {total}; within 16 px of the board's region: {near}; {FAR} px or more wider or taller: {far}"
    )

    empty = load_image(work / "set2" / "empty.jpg")
    right = counted = 0
    for path in sorted((work / "set2").glob("*__*.jpg")):
        frame = load_image(path)
        region = board_region(frame, empty, classifier)
        if region is None:
            continue
        left, top, right_edge, bottom = (int(v) for v in region)
        counted += 1
        right += classifier.classify(frame[top:bottom, left:right_edge]).label == path.name.split("__", 1)[0]
    before = result["set2_before"]
    print(
        f"set 2 on the board's own region: {right / max(counted, 1):.3f} right of {counted} "
        f"(through bin-agent run: {before['accuracy']:.3f} of {before['items']})"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
