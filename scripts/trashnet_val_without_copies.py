#!/usr/bin/env python3
"""TrashNet validation accuracy of int8 models, with and without the photos a model saw turned copies of.

    .venv/bin/python scripts/turned_trashnet_copies.py <old build>/wcnn <old split> --json leak.json
    .venv/bin/python scripts/trashnet_val_without_copies.py leak.json MODEL.tflite [MODEL.tflite ...]

The shipped model was trained on a data build holding turned and mirrored copies of 23
TrashNet validation photos (models/README.md, "A leak in the previous data build"); a
model fine-tuned from its weights inherits them. Comparing candidates on the other
validation photos keeps that leak out of the choice. Each model is run as the agent runs
it (the metadata's views, one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bin_agent.errors import run_script  # noqa: E402
from bin_agent.training import dataset as ds  # noqa: E402
from bin_agent.training.evaluate import evaluate_items  # noqa: E402

SHARED = Path(os.environ.get("BIN_AGENT_SHARED", ROOT.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("leak", type=Path, help="turned_trashnet_copies.py --json output")
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--trashnet", type=Path, default=SHARED / "data" / "trashnet")
    parser.add_argument("--split", type=Path, default=ROOT / "models" / "waste_split.json")
    args = parser.parse_args(argv)
    leaked = set(json.loads(args.leak.read_text()).get("train -> val", []))
    items = ds.select(
        ds.list_dataset(args.trashnet), ds.split_for(ds.read_split(args.split), args.trashnet, args.split), "val"
    )
    print(f"{len(items)} TrashNet validation photos, {len(leaked)} of them copied (turned) into the old training data")
    for model in args.models:
        predictions = evaluate_items(model, items, threads=1)["predictions"]
        right = [p["true"] == p["pred"] for p in predictions]
        clean = [r for p, r in zip(predictions, right) if p["key"] not in leaked]
        trash = [p["pred"] == "trash" for p in predictions if p["true"] == "trash"]
        print(
            f"{model}: all {sum(right)}/{len(right)} = {sum(right) / len(right):.4f}; "
            f"without the copied {sum(clean)}/{len(clean)} = {sum(clean) / len(clean):.4f}; "
            f"trash {sum(trash)}/{len(trash)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    run_script(main)
