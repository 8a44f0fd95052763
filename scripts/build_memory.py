"""Build the training memory that ships beside a model (``<name>.memory.npz``).

``bin-agent learn`` mixes it with the bin's own labels so the refitted head does
not forget the classes the bin has not been told about. Run it once per model,
after training (no TensorFlow: the LiteRT interpreter reads the embeddings):

    python scripts/build_memory.py --model models/waste_mobilenetv2_int8.tflite \\
        --split models/waste_split.json ../shared/data/trashnet [data/wcnn ...]

Takes at most ``--per-class`` photos per class from the ``--subset`` (train) of
each dataset, spread evenly over each class; the file format is in
``bin_agent/learning/memory.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bin_agent.classify.classifier import Classifier
from bin_agent.classify.preprocess import load_image
from bin_agent.learning.deploy import sha256
from bin_agent.learning.memory import build, memory_path, pick_per_class
from bin_agent.training import dataset as ds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="folder-per-class datasets (missing ones are skipped)")
    parser.add_argument("--model", type=Path, default=Path("models/waste_mobilenetv2_int8.tflite"))
    parser.add_argument("--split", type=Path, default=Path("models/waste_split.json"))
    parser.add_argument("--subset", default="train")
    parser.add_argument("--per-class", type=int, default=300, help="photos per class, all datasets together")
    parser.add_argument("--out", type=Path, help="default: <model>.memory.npz beside the model")
    args = parser.parse_args()

    classifier = Classifier.from_model_path(args.model, num_threads=1)
    classifier = Classifier(classifier.files, num_threads=1, views=classifier.views, embeddings=True)
    split = ds.read_split(args.split)
    photos: list[tuple[Path, int]] = []
    sources: dict[str, int] = {}
    for folder in args.datasets:
        if not folder.is_dir():
            print(f"skipped {folder}: not there", file=sys.stderr)
            continue
        items = ds.select(ds.list_dataset(folder), ds.split_for(split, folder, args.split), args.subset)
        photos += [(item.path, item.label) for item in items]
        sources[f"{ds.dataset_name(folder)}/{args.subset}"] = len(items)
    chosen = [photos[i] for i in pick_per_class([label for _, label in photos], args.per_class)]
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 200 == 0 or done == total:
            print(f"  {done}/{total} photos, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    memory = build(
        lambda path: classifier.embed(load_image(path)),
        chosen,
        classifier.labels,
        sha256(classifier.files.model),
        {
            "model_version": str(classifier.metadata.get("version", "unknown")),
            "views": classifier.views,
            "sources": sources,
            "subset": args.subset,
            "per_class_cap": args.per_class,
        },
        progress,
    )
    out = memory.save(args.out or memory_path(args.model))
    print(f"wrote {out}: {len(chosen)} photos, {out.stat().st_size / 1e6:.2f} MB, {memory.meta.get('per_class')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
