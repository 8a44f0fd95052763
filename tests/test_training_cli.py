"""split / evaluate commands and metrics, on a small synthetic dataset and the tiny models (no TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bin_agent import CLASSES
from bin_agent.cli import main
from bin_agent.training import dataset as ds
from bin_agent.training.evaluate import metrics, threshold_table

TINY = Path(__file__).resolve().parent / "data" / "models"


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "mybin"
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
            pixels[..., c % 3] = 40 * c
            Image.fromarray(pixels).save(root / name / f"{name}{i}.jpg")
    (root / "trash" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, bin_agent.training, bin_agent.cli.training, bin_agent.training.evaluate, "
        "bin_agent.training.train; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_split_is_stratified_deterministic_and_disjoint(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "split.json"
    assert main(["split", str(photos), "--out", str(out), "--seed", "5", "--test", "0.2", "--val", "0.2"]) == 0
    first = json.loads(out.read_text())
    assert main(["split", str(photos), "--out", str(out), "--seed", "5", "--test", "0.2", "--val", "0.2"]) == 0
    assert json.loads(out.read_text()) == first
    entry = first["datasets"]["mybin"]
    sets = [set(entry[s]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for name in CLASSES:
        assert entry["counts"]["test"][name] == 2  # 20 % of 10 in every class (11 in trash: round(2.2))
    assert "broken.jpg" in " ".join(entry["train"] + entry["val"] + entry["test"])
    other = ds.make_split(ds.list_dataset(photos), seed=6, test=0.2, val=0.2)
    assert other["test"] != entry["test"]


def test_evaluate_writes_report_and_plots(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    code = main(
        ["evaluate", str(photos), "--model", str(TINY / "tiny_uint8.tflite"), "--subset", "all", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "macro-F1" in printed and "1 unreadable (skipped)" in printed
    assert "threshold" in printed and "confusion matrix" in printed
    result = json.loads((out / "tiny_uint8_eval.json").read_text())
    assert result["n"] == 60 and len(result["unreadable"]) == 1
    assert np.array(result["confusion_matrix"]).sum() == 60
    assert set(result["per_class"]) == set(CLASSES)
    assert result["latency_ms"]["p95"] >= result["latency_ms"]["mean"] * 0.5
    for png in ("tiny_uint8_confusion.png", "tiny_uint8_reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_with_split_picks_the_subset(photos: Path, tmp_path: Path, capsys) -> None:
    split = tmp_path / "split.json"
    assert main(["split", str(photos), "--out", str(split)]) == 0
    assert (
        main(
            [
                "evaluate",
                str(photos),
                "--model",
                str(TINY / "tiny_int8.tflite"),
                "--split",
                str(split),
                "--subset",
                "test",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "e" / "tiny_int8_eval.json").read_text())
    test_keys = set(json.loads(split.read_text())["datasets"]["mybin"]["test"])
    assert {p["key"] for p in result["predictions"]} <= test_keys
    assert result["n"] + len(result["unreadable"]) == len(test_keys)


@pytest.mark.parametrize("case", ["missing_folder", "bad_model", "missing_model", "bad_split"])
def test_evaluate_errors_are_one_line(photos: Path, tmp_path: Path, capsys, case: str) -> None:
    model = TINY / "tiny_uint8.tflite"
    dataset = photos
    extra: list[str] = []
    if case == "missing_folder":
        dataset = tmp_path / "nope"
    elif case == "bad_model":
        model = tmp_path / "bad.tflite"
        model.write_bytes(b"\x00" * 64)
        for suffix in (".labels.txt", ".json"):
            (tmp_path / f"bad{suffix}").write_bytes((TINY / f"tiny_uint8{suffix}").read_bytes())
    elif case == "missing_model":
        model = tmp_path / "absent.tflite"
    elif case == "bad_split":
        (tmp_path / "split.json").write_text("{not json")
        extra = ["--split", str(tmp_path / "split.json")]
    code = main(["evaluate", str(dataset), "--model", str(model), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("bin-agent: ") and "\n" not in err and "Traceback" not in err


def test_train_rejects_missing_folder(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("bin-agent: ")


def test_unknown_class_folder_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "data" / "banana").mkdir(parents=True)
    with pytest.raises(ds.DatasetError, match="banana"):
        ds.list_dataset(tmp_path / "data")


def test_metrics_on_a_known_confusion() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    conf = np.array([0.9, 0.8, 0.4, 0.95, 0.6, 0.5])
    m = metrics(y_true, y_pred, conf, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    rows = {r["threshold"]: r for r in threshold_table(conf, y_true == y_pred, (0.0, 0.7))}
    assert rows[0.0]["sorted_share"] == 1.0
    assert rows[0.7]["sorted_share"] == pytest.approx(0.5) and rows[0.7]["sorted_accuracy"] == 1.0


def test_wilson_intervals_of_accuracy_and_recall() -> None:
    from bin_agent.training.evaluate import wilson_interval

    # reference values of the Wilson score interval (z = 1.96)
    assert wilson_interval(14, 17) == pytest.approx((0.5897, 0.9381), abs=5e-4)
    assert wilson_interval(305, 321) == pytest.approx((0.9206, 0.9691), abs=5e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    m = metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.ones(4), ["a", "b"])
    assert m["accuracy_interval_95"] == list(wilson_interval(3, 4))
    assert m["per_class"]["a"]["recall_interval_95"] == list(wilson_interval(1, 2))


def test_class_weights_balance_the_classes() -> None:
    weights = ds.class_weights([0] * 30 + [1] * 10, n_classes=3)
    assert weights[0] * 30 == pytest.approx(weights[1] * 10)
    assert weights[2] == 0.0


def test_class_weight_factors_multiply_the_balanced_weight() -> None:
    plain = ds.class_weights([0] * 30 + [1] * 10, n_classes=2)
    boosted = ds.class_weights([0] * 30 + [1] * 10, n_classes=2, factors={1: 2.0})
    assert boosted[0] == plain[0] and boosted[1] == pytest.approx(2 * plain[1])
    assert ds.parse_class_factors(["trash=2", " glass=0.5"]) == {"trash": 2.0, "glass": 0.5}


def test_source_balance_keeps_one_source_from_defining_a_class() -> None:
    # trash: 10 photos from source 0, 90 from source 1; glass only from source 1
    labels = [5] * 100 + [1] * 20
    sources = [0] * 10 + [1] * 90 + [1] * 20
    even = ds.source_balance(labels, sources, 1.0)
    assert even[:10].sum() == pytest.approx(even[10:100].sum())  # each source half of trash's weight
    assert even[:100].sum() == pytest.approx(100) and even[100:] == pytest.approx(np.ones(20))
    half = ds.source_balance(labels, sources, 0.5)
    assert half[:10].sum() / half[10:100].sum() == pytest.approx((10 / 90) ** 0.5)
    assert ds.source_balance(labels, sources, 0.0) == pytest.approx(np.ones(120))


@pytest.mark.parametrize("text", ["trash", "banana=2", "trash=0", "trash=-1", "trash=lots", "trash=nan", "=2"])
def test_train_rejects_bad_class_weight_in_one_line(photos: Path, tmp_path: Path, capsys, text: str) -> None:
    code = main(["train", str(photos), "--out", str(tmp_path / "run"), "--class-weight", text])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("bin-agent: class weight") and "\n" not in err


def test_evaluate_several_sources_reports_each_and_pooled(photos: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "otherbin"
    for name in ("glass", "metal"):
        (other / name).mkdir(parents=True)
        for i in range(5):
            (other / name / f"{i}.jpg").write_bytes((photos / name / f"{name}{i}.jpg").read_bytes())
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(photos),
                str(other),
                "--model",
                str(TINY / "tiny_uint8.tflite"),
                "--subset",
                "all",
                "--out",
                str(out),
                "--target-accuracy",
                "0.5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "per source:" in printed and "mybin" in printed and "otherbin" in printed
    result = json.loads((out / "tiny_uint8_eval.json").read_text())
    assert set(result["sources"]) == {"mybin", "otherbin"}
    assert result["sources"]["mybin"]["n"] == 60 and result["sources"]["otherbin"]["n"] == 10
    assert result["n"] == 70  # pooled
    pooled_correct = sum(s["accuracy"] * s["n"] for s in result["sources"].values())
    assert result["accuracy"] == pytest.approx(pooled_correct / 70)
    for section in (result, *result["sources"].values()):
        assert "expected_calibration_error" in section["reliability"]
        assert "threshold_for_target" in section


@pytest.mark.parametrize(
    "option", ["--background-p", "--item-crop-p", "--uneven-light-p", "--low-res-p", "--colour-temperature"]
)
@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_train_rejects_a_share_outside_0_1(photos: Path, tmp_path: Path, capsys, option: str, value: str) -> None:
    code = main(["train", str(photos), "--out", str(tmp_path / "run"), option, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"bin-agent: {option}") and "\n" not in err


def test_train_without_the_train_extra_is_one_line_naming_the_install(photos: Path, tmp_path: Path) -> None:
    # An interpreter where TensorFlow and Keras cannot be imported, as after `pip install -e .`
    # (a None in sys.modules makes the import fail and find_spec answer None).
    code = (
        "import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
        "from bin_agent.cli import main\n"
        f"sys.exit(main(['train', {str(photos)!r}, '--out', {str(tmp_path / 'run')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = result.stderr.strip()
    assert result.returncode == 69, err
    assert "Traceback" not in err and "\n" not in err
    assert "pip install -e '.[train]'" in err and not (tmp_path / "run").exists()


def test_train_hands_the_augmentation_options_to_the_run(photos: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorflow")  # train checks for it before anything else
    from bin_agent.training import train as train_module

    seen = {}

    def fake_train(config, progress=None):
        seen["config"] = config
        return {}

    monkeypatch.setattr(train_module, "train", fake_train)
    options = [
        "--background-p",
        "0.3",
        "--item-crop-p",
        "0.2",
        "--uneven-light-p",
        "0.7",
        "--low-res-p",
        "0.4",
        "--colour-temperature",
        "0.25",
    ]
    assert main(["train", str(photos), "--out", str(tmp_path / "run"), *options]) == 0
    augmentation = seen["config"].augmentation
    assert (augmentation.background_p, augmentation.item_crop_p) == (0.3, 0.2)
    assert (augmentation.camera.uneven_light_p, augmentation.camera.temperature) == (0.7, 0.25)
    assert augmentation.camera.low_res_p == 0.4
    assert not seen["config"].keep_last
    assert main(["train", str(photos), "--out", str(tmp_path / "run1"), "--keep-last"]) == 0
    assert seen["config"].keep_last and not train_module.selects_best(seen["config"])
    assert main(["train", str(photos), "--out", str(tmp_path / "run2")]) == 0
    defaults = seen["config"].augmentation
    assert defaults == ds.Augmentation()  # the trainer's defaults, the shipped recipe's


@pytest.mark.parametrize(("select_best", "kept"), [(True, 1), (False, 2)])
def test_keep_last_keeps_the_last_epoch_not_the_best_on_validation(select_best: bool, kept: int) -> None:
    pytest.importorskip("keras")
    from bin_agent.training.train import _EpochLog

    class Model:  # what the log reads and restores of a Keras model
        def __init__(self) -> None:
            self.weights = [0]

        def get_weights(self) -> list[int]:
            return list(self.weights)

        def set_weights(self, weights: list[int]) -> None:
            self.weights = list(weights)

    model = Model()
    log = _EpochLog("fine", lambda line: None, [model], select_best=select_best)
    for epoch, val_accuracy in enumerate([0.90, 0.85]):  # the second epoch is worse on validation
        model.weights = [epoch + 1]
        log.end(epoch, {"val_accuracy": val_accuracy, "val_loss": 0.5})
    log.restore()
    assert model.weights == [kept] and log.best_epoch == kept


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (["split", "{photos}", "--out", "{blocker}/split.json"], "a file is there where a folder is needed"),
        (["split", "{photos}", "--out", "{folder}"], "a folder, where a file is needed"),
        (["evaluate", "--model", "{model}", "{photos}", "--subset", "all", "--out", "{blocker}"], "a file is there"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line_naming_it(
    photos: Path, tmp_path: Path, capsys, command: list[str], why: str
) -> None:
    """Where a command writes (``--out``) a file lies where a folder is needed, or the other way
    round: one line naming the path and why, exit 74, no traceback."""
    blocker, folder = tmp_path / "notes.txt", tmp_path / "a-folder"
    blocker.write_text("a file in the way\n")
    folder.mkdir()
    model = TINY / "tiny_int8.tflite"
    argv = [part.format(photos=photos, blocker=blocker, folder=folder, model=model) for part in command]
    assert main(argv) == os.EX_IOERR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bin-agent: ") and why in err[0], err
    assert str(blocker if "{blocker}" in " ".join(command) else folder) in err[0]
    assert blocker.read_text() == "a file in the way\n"


def test_an_os_error_naming_no_file_keeps_its_traceback(monkeypatch) -> None:
    """Only errors about a named file become a line: one naming none (a socket, a bug) is not
    hidden behind a generic message."""
    from bin_agent.cli import training

    def refused(args: Any) -> int:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(training, "cmd_split", refused)
    with pytest.raises(ConnectionRefusedError):
        main(["split", str(Path.cwd()), "--out", "x.json"])
