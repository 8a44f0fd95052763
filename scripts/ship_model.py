#!/usr/bin/env python3
"""Put a chosen run's int8 model into ``models/`` with the metadata a shipped model carries.

    .venv/bin/python scripts/ship_model.py RUN --version VERSION --val VAL_EVAL.json --test TEST_EVAL.json

``VAL_EVAL.json`` and ``TEST_EVAL.json`` are ``bin-agent evaluate --out`` reports of the
run's int8 model on both sources (``--subset val`` and, once, after the run was chosen on
validation, ``--subset test``). The run's metadata is kept; the version is set, the data
paths are written as the repository names them, the run's settings and where it started
from are recorded, and the figures of both reports are written per source
(``metrics.validation_int8`` and ``metrics.test_int8``; tests/test_shipped_model.py checks
them). The float weights and the training memory are rebuilt after it by their own
scripts (models/README.md, "Shipping a model").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "waste_mobilenetv2_int8"
DATA_NAMES = {"trashnet": "../shared/data/trashnet", "wcnn": "data/wcnn"}


def figures(report: dict[str, Any]) -> dict[str, Any]:
    def one(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": r["n"],
            "accuracy": round(r["accuracy"], 4),
            "macro_f1": round(r["macro_f1"], 4),
            "recall": {c: round(v["recall"], 4) for c, v in r["per_class"].items()},
            "expected_calibration_error": round(r["reliability"]["expected_calibration_error"], 4),
        }

    out = {"pooled": one(report)}
    for name, source in report.get("sources", {}).items():
        out[name] = one(source)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--version", required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    run_files = [args.run / f"{NAME}{suffix}" for suffix in (".json", ".tflite", ".labels.txt")]
    for path in [*run_files, args.run / "training_report.json", args.val, args.test]:
        if not path.is_file():  # before anything in --out is replaced
            parser.error(
                f"{path}: not there (RUN is a `bin-agent train --out` folder; --val/--test `bin-agent evaluate --out` reports)"
            )
    meta = json.loads((args.run / f"{NAME}.json").read_text())
    model = (args.run / f"{NAME}.tflite").read_bytes()
    if meta["sha256"] != hashlib.sha256(model).hexdigest():
        raise SystemExit(f"{args.run / NAME}.json does not describe {NAME}.tflite")
    val, test = (json.loads(p.read_text()) for p in (args.val, args.test))
    for report, subset in ((val, "val"), (test, "test")):
        if Path(report["model"]).resolve() != (args.run / f"{NAME}.tflite").resolve() or report["subset"] != subset:
            raise SystemExit(f"the {subset} report is not of {args.run / NAME}.tflite on the {subset} photos")
    run = json.loads((args.run / "training_report.json").read_text())
    meta["version"] = args.version
    trained = meta["trained_on"]
    renamed = {d: DATA_NAMES.get(Path(d).name, Path(d).name) for d in trained["datasets"]}
    trained["datasets"] = [renamed[d] for d in trained["datasets"]]
    trained["photos"] = {renamed[d]: v for d, v in trained["photos"].items()}
    settings = {k: v for k, v in run["config"].items() if k not in ("out", "datasets", "threads")}
    if settings.get("init_weights"):
        settings["init_weights"] = (
            "the previous shipped model's float weights (models/waste_mobilenetv2_float.weights.h5)"
        )
    trained["settings"] = settings
    trained["seconds"] = run.get("seconds")
    meta["metrics"] = {
        "validation_int8": figures(val),
        "test_int8": figures(test) | {"read": "once, after the model was chosen on validation"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / f"{NAME}.tflite", args.out / f"{NAME}.tflite")
    shutil.copyfile(args.run / f"{NAME}.labels.txt", args.out / f"{NAME}.labels.txt")
    (args.out / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"shipped {args.run / NAME}.tflite as {args.out / NAME}.tflite, version {args.version}")
    print(json.dumps(meta["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
