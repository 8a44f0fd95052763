"""Build the training memory that ships beside a model (``<name>.memory.npz``).

``bin-agent learn`` mixes it with the bin's own labels so the refitted head does
not forget the classes the bin has not been told about. Run it once per model,
after training (no TensorFlow: the LiteRT interpreter reads the embeddings):

    python scripts/build_memory.py --model models/waste_mobilenetv2_int8.tflite \\
        --split models/waste_split.json ../shared/data/trashnet [data/wcnn ...]

Takes at most ``--per-class`` photos per class from the ``--subset`` (train) of
the datasets together, spread evenly over each class; with ``--per-source``,
each class's quota is shared evenly between the datasets that have the class
(so the memory covers every training source, not mostly the largest). The file
format is in ``bin_agent/learning/memory.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bin_agent.classify.classifier import Classifier
from bin_agent.classify.preprocess import load_image
from bin_agent.errors import run_script
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
    parser.add_argument(
        "--per-source", action="store_true", help="share each class's quota evenly between the datasets"
    )
    parser.add_argument("--out", type=Path, help="default: <model>.memory.npz beside the model")
    args = parser.parse_args()

    classifier = Classifier.from_model_path(args.model, num_threads=1)
    classifier = Classifier(classifier.files, num_threads=1, views=classifier.views, embeddings=True)
    split = ds.read_split(args.split)
    photos: list[tuple[Path, int]] = []
    origin: list[str] = []
    sources: dict[str, int] = {}
    for folder in args.datasets:
        if not folder.is_dir():
            print(f"skipped {folder}: not there", file=sys.stderr)
            continue
        items = ds.select(ds.list_dataset(folder), ds.split_for(split, folder, args.split), args.subset)
        photos += [(item.path, item.label) for item in items]
        origin += [ds.dataset_name(folder)] * len(items)
        sources[f"{ds.dataset_name(folder)}/{args.subset}"] = len(items)
    if not photos:  # a memory of nothing would replace the shipped one and teach learn nothing
        parser.error(f"no {args.subset} photos in {' '.join(map(str, args.datasets))}: nothing written")
    picked = pick_per_class([label for _, label in photos], args.per_class, origin if args.per_source else None)
    chosen = [photos[i] for i in picked]
    taken = {name: sum(1 for i in picked if origin[i] == name) for name in dict.fromkeys(origin)}
    print(f"taking {len(chosen)} photos: {taken}", file=sys.stderr)
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
            "per_source": args.per_source,
            "taken": taken,
        },
        progress,
    )
    out = memory.save(args.out or memory_path(args.model))
    print(f"wrote {out}: {len(chosen)} photos, {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    run_script(main)
