"""Time the parts of ``bin-agent learn`` here, with the figures a Pi 4 estimate needs.

    python scripts/bench_learn.py [--labels 1000]

1. the refit (alignment + 100 accelerated gradient steps) on the shipped
   training memory + ``--labels`` × (1 - holdout) bin embeddings (the memory's
   own rows with noise: the cost does not depend on what they show), with its
   floating-point operations and the bytes it streams;
2. embedding one captured photo (4 views, one interpreter thread, as learn does).

Prints one line per figure; docs/learning.md turns them into the Pi 4 estimate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bin_agent import DEFAULT_MODEL  # noqa: E402
from bin_agent.classify.head import class_balanced_weights, fit_dense  # noqa: E402
from bin_agent.learning.learn import alignment, embedding_classifier  # noqa: E402
from bin_agent.learning.memory import Memory, memory_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from bin_agent.config import Config

    config = Config()
    classifier = embedding_classifier(DEFAULT_MODEL, config)
    origin = classifier.builtin_head()
    memory = Memory.load(memory_path(DEFAULT_MODEL))
    rng = np.random.default_rng(0)
    used = int(round(args.labels * 0.7))
    rows = rng.integers(0, len(memory.labels), args.labels)
    bin_x = np.clip(memory.embeddings[rows] * 0.8 + rng.normal(0, 0.2, (args.labels, 1280)), 0, 6).astype(np.float32)
    bin_y = memory.labels[rows]
    n = len(memory.labels) + used
    features, classes = 1281, len(classifier.labels)
    flops = args.steps * 4 * n * features * classes + 30 * 4 * n * features
    streamed = (args.steps * 2 + 30 * 2) * n * features * 4
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        scale, shift = alignment(bin_x, memory.embeddings)
        x = np.concatenate([memory.embeddings, bin_x[:used] * scale + shift])
        y = np.concatenate([memory.labels, bin_y[:used]])
        extra = np.concatenate([np.ones(len(memory.labels)), np.full(used, 10.0)])
        fit_dense(x, y, class_balanced_weights(y, classes, extra), origin, l2=0.01, steps=args.steps)
        times.append(time.perf_counter() - started)
    best = min(times)
    print(f"refit: {n} rows x {features} features x {classes} classes, {args.steps} steps")
    print(f"refit: best of {args.repeat}: {best:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"refit: {flops / 1e9:.2f} GFLOP, {flops / best / 1e9:.1f} GFLOP/s here; streams {streamed / 1e9:.2f} GB")
    frame = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    classifier.embed(frame)
    started = time.perf_counter()
    for _ in range(20):
        classifier.embed(frame)
    per_photo = (time.perf_counter() - started) / 20
    print(f"embed: {per_photo * 1000:.1f} ms per captured photo ({classifier.views} views, 1 thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
