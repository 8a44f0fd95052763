"""What keeping the embedding at capture time costs the sorting path.

    python scripts/bench_capture_embedding.py [--items 20] [--rounds 5] [--threads 1]

Two classifiers of the shipped model, as the agent builds them: without and with
``embeddings=True`` (``[capture]`` on: LiteRT keeps every tensor,
``experimental_preserve_all_tensors``, and the embedding rows are read from the
views' batch). They classify the same TrashNet test-split photos, interleaved
round by round so that the load of a shared machine hits both alike. Also times
what the capture writer adds per item (the embedding encoded into the sidecar),
and its size. Prints the median milliseconds per item of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bin_agent import DEFAULT_MODEL  # noqa: E402
from bin_agent.classify.classifier import Classifier, ModelFiles  # noqa: E402
from bin_agent.classify.preprocess import load_image  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.learning.capture import encode_embedding  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    shared = Path(os.environ.get("BIN_AGENT_SHARED", REPO.parent / "shared"))
    split = json.loads((DEFAULT_MODEL.parent / "waste_split.json").read_text())["datasets"]["trashnet"]["test"]
    images = [load_image(shared / "data" / "trashnet" / key) for key in sorted(split)[: args.items]]
    files = ModelFiles.beside(DEFAULT_MODEL)
    plain = Classifier(files, num_threads=args.threads)
    keeping = Classifier(files, num_threads=args.threads, embeddings=True)
    for classifier in (plain, keeping):  # warm-up
        classifier.classify(images[0])
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(args.rounds):
        for name, classifier in (("without", plain), ("with", keeping)):
            started = time.perf_counter()
            for image in images:
                result = classifier.classify(image)
            times[name].append((time.perf_counter() - started) * 1000.0 / len(images))
    embedding = keeping.classify(images[0]).embedding
    assert embedding is not None and result.embedding is not None
    started = time.perf_counter()
    for _ in range(1000):
        encoded = json.dumps(encode_embedding(embedding, keeping.backbone_sha256))
    encode_ms = (time.perf_counter() - started) * 1000.0 / 1000
    same = all(plain.classify(i).label == keeping.classify(i).label for i in images)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    print(f"views {plain.views}, batched {plain.batched}, threads {args.threads}, {len(images)} items x {args.rounds}")
    print(f"classify without embeddings: {without:.2f} ms/item (rounds: {[round(t, 2) for t in times['without']]})")
    print(f"classify with embeddings:    {with_:.2f} ms/item (rounds: {[round(t, 2) for t in times['with']]})")
    print(f"ratio with/without: {with_ / without:.3f}; same labels: {same}")
    print(f"capture writer: embedding into the sidecar {encode_ms:.3f} ms, {len(encoded)} bytes")
    return 0


if __name__ == "__main__":
    run_script(main)
