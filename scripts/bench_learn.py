"""Time the parts of ``bin-agent learn`` here, with the figures a Pi 4 estimate needs.

    python scripts/bench_learn.py [--labels 1000]

1. the refits of a learn on ``--labels`` bin embeddings (the memory's own rows
   with noise: the cost does not depend on what they show) mixed with the
   shipped training memory: one per verdict fold (``verdict_blocks``, each on
   the other folds' labels) and the final one on all of them, each an alignment
   and 100 accelerated gradient steps; with the floating-point operations and
   the bytes they stream;
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
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.learning.learn import cross_fitted_logits, embedding_classifier, refit  # noqa: E402
from bin_agent.learning.memory import Memory, memory_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from bin_agent.config import Config

    config = Config()
    classifier = embedding_classifier(DEFAULT_MODEL, config)
    memory = Memory.load(memory_path(DEFAULT_MODEL))
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(memory.labels), args.labels)
    bin_x = np.clip(memory.embeddings[rows] * 0.8 + rng.normal(0, 0.2, (args.labels, 1280)), 0, 6).astype(np.float32)
    bin_y = memory.labels[rows]
    blocks = config.learning.verdict_blocks
    # Rows seen by the refits: each fold's refit has the other folds' labels, the last all.
    rows_fitted = (blocks + 1) * len(memory.labels) + (blocks - 1) * args.labels + args.labels
    features, classes = 1281, len(classifier.labels)
    flops = config.learning.steps * 4 * rows_fitted * features * classes + 30 * 4 * rows_fitted * features
    streamed = (config.learning.steps * 2 + 30 * 2) * rows_fitted * features * 4
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        cross_fitted_logits(classifier, bin_x, bin_y, memory, config)
        refit(classifier, bin_x, bin_y, memory, config)
        times.append(time.perf_counter() - started)
    best = min(times)
    print(
        f"refits: {blocks} folds + 1 final, memory {len(memory.labels)} + {args.labels} bin labels, "
        f"{features} features x {classes} classes, {config.learning.steps} steps each"
    )
    print(f"refits: best of {args.repeat}: {best:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"refits: {flops / 1e9:.2f} GFLOP, {flops / best / 1e9:.1f} GFLOP/s here; stream {streamed / 1e9:.2f} GB")
    frame = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    classifier.embed(frame)
    started = time.perf_counter()
    for _ in range(20):
        classifier.embed(frame)
    per_photo = (time.perf_counter() - started) / 20
    print(f"embed: {per_photo * 1000:.1f} ms per captured photo ({classifier.views} views, 1 thread)")
    return 0


if __name__ == "__main__":
    run_script(main)
