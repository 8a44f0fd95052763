"""Two models side by side on the same labelled photos, with a verdict.

``bin-agent compare --model A --model B DATASET_DIR...`` runs both through
the agent's own :class:`~bin_agent.classifier.Classifier` (as ``evaluate``
does) on the same photos, and prints accuracy, per-class recall, the share
sent to the fallback compartment at the configured confidence threshold, the
accuracy of what is sorted, and latency. The verdict counts the photos one
model gets right and the other wrong: B is better when it is right on more
photos than A. An exact sign test on those photos (McNemar) says how likely
a difference that large is by chance; with a few dozen photos a small gain
is not yet evidence, and the line says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..training import dataset as ds
from ..training.evaluate import evaluate_items


def items_of(dirs: Sequence[Path], split: Path | None = None, subset: str = "test") -> list[ds.Item]:
    """The photos of dataset folders (a subset of a split file's, if given).

    :raises DatasetError: none at all, naming why for each folder.
    """
    items: list[ds.Item] = []
    causes = []
    for folder in dirs:
        found = ds.list_dataset(folder)  # a folder without photos: its own DatasetError
        if split is not None:
            chosen = ds.select(found, ds.split_for(ds.read_split(split), Path(folder), split), subset)
            if not chosen:
                causes.append(
                    f"none of the {len(found)} photo(s) of {folder} is in the {subset!r} subset of {split} "
                    "(another --subset, or a split file made with these photos: bin-agent split --base)"
                )
            found = chosen
        items += found
    if not items:
        raise ds.DatasetError("no photos to compare on: " + "; ".join(causes))
    return items


def sign_test(fixes: int, breaks: int) -> float:
    """Two-sided exact binomial p-value of ``fixes`` vs ``breaks`` (McNemar's exact test)."""
    n = fixes + breaks
    if n == 0:
        return 1.0
    low = min(fixes, breaks)
    tail = sum(math.comb(n, k) for k in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def summary(result: dict[str, Any], threshold: float) -> dict[str, Any]:
    rows = result["predictions"]
    right = [row["true"] == row["pred"] for row in rows]
    sorted_rows = [ok for ok, row in zip(right, rows) if row["confidence"] >= threshold]
    return {
        "n": len(rows),
        "right": sum(right),
        "accuracy": result["accuracy"],
        "recall": {
            name: (row["recall"], row["support"]) for name, row in result["per_class"].items() if row["support"]
        },
        "fallback": len(rows) - len(sorted_rows),
        "sorted_right": sum(sorted_rows),
        "sorted": len(sorted_rows),
        "latency_mean": result["latency_ms"]["mean"],
        "latency_p95": result["latency_ms"]["p95"],
    }


def compare(
    model_a: Path,
    model_b: Path,
    items: Sequence[ds.Item],
    threshold: float,
    threads: int | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate both models on ``items``; the figures and the verdict."""
    results = []
    for tag, model in (("A", model_a), ("B", model_b)):
        # A few photos first, untimed: the first model would otherwise also pay for cold
        # caches (photo files, interpreter start) and look slower than it is.
        evaluate_items(model, items[:3], threads=threads)
        results.append(evaluate_items(model, items, progress=progress, what=f"model {tag}", threads=threads))
    a_rows, b_rows = (r["predictions"] for r in results)
    if [r["key"] for r in a_rows] != [r["key"] for r in b_rows]:
        raise ds.DatasetError("the two models did not read the same photos")
    fixes = sum(a["true"] != a["pred"] and b["true"] == b["pred"] for a, b in zip(a_rows, b_rows))
    breaks = sum(a["true"] == a["pred"] and b["true"] != b["pred"] for a, b in zip(a_rows, b_rows))
    a, b = summary(results[0], threshold), summary(results[1], threshold)
    return {
        "a": a,
        "b": b,
        "models": [str(model_a), str(model_b)],
        "threshold": threshold,
        "fixes": fixes,
        "breaks": breaks,
        "p_value": sign_test(fixes, breaks),
        "b_better": b["right"] > a["right"],
    }


def verdict(c: dict[str, Any]) -> str:
    a, b = c["a"], c["b"]
    counts = (
        f"B right on {b['right']} of {b['n']} photos, A on {a['right']} "
        f"(B fixes {c['fixes']}, breaks {c['breaks']}; sign test p = {c['p_value']:.3g})"
    )
    if not c["b_better"]:
        return f"verdict: B is NOT better than A: {counts}"
    caution = "" if c["p_value"] < 0.05 else "; not yet conclusive: label more photos to be sure"
    return f"verdict: B is better than A: {counts}{caution}"


def format_comparison(c: dict[str, Any]) -> str:
    a, b = c["a"], c["b"]
    width = 26

    def row(name: str, left: str, right: str) -> str:
        return f"{name:<28}{left:>{width}}{right:>{width}}"

    lines = [
        f"A: {c['models'][0]}",
        f"B: {c['models'][1]}",
        "",
        row("", "A", "B"),
        row("photos", str(a["n"]), str(b["n"])),
        row("accuracy", f"{a['accuracy']:.3f} ({a['right']}/{a['n']})", f"{b['accuracy']:.3f} ({b['right']}/{b['n']})"),
    ]
    for name in a["recall"]:
        (ra, na), (rb, nb) = a["recall"][name], b["recall"].get(name, (0.0, 0))
        lines.append(row(f"recall {name}", f"{ra:.3f} of {na}", f"{rb:.3f} of {nb}"))
    t = c["threshold"]
    lines.append(
        row(
            f"to fallback (< {t:.2f})",
            f"{a['fallback'] / a['n']:.3f} ({a['fallback']})",
            f"{b['fallback'] / b['n']:.3f} ({b['fallback']})",
        )
    )
    lines.append(
        row(f"sorted right (>= {t:.2f})", f"{a['sorted_right']}/{a['sorted']}", f"{b['sorted_right']}/{b['sorted']}")
    )
    lines.append(
        row(
            "latency mean / p95 ms",
            f"{a['latency_mean']:.1f} / {a['latency_p95']:.1f}",
            f"{b['latency_mean']:.1f} / {b['latency_p95']:.1f}",
        )
    )
    lines += ["", verdict(c)]
    return "\n".join(lines)
