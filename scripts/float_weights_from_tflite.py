"""Reconstruct the shipped model's float Keras weights from its int8 TFLite file.

The run that produced ``models/waste_mobilenetv2_int8.tflite`` kept no float weights,
so ``bin-agent train --init-weights shipped`` had nothing to start from. This script
makes ``models/waste_mobilenetv2_float.weights.h5`` the way the ImageNet backbone in
``../shared/weights`` was made (``../shared/README.md``):

- every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED operator of the int8 model is
  read in execution order: its int8 weights (per-channel scales) and int32 bias
  (scale = input scale x weight scale, per channel) de-quantized to float32;
- each is mapped to the Keras layer of the same name in the model that
  :func:`bin_agent.training.train.build_models` builds (the operator's weight tensor
  is named after it: ``.../block_3_expand_1/convolution``, ``.../block_3_depthwise_BN_1/...``),
  its shape checked, and the layout turned into Keras's (``[O, H, W, I]`` ->
  ``[H, W, I, O]``; depthwise ``[1, H, W, C]`` -> ``[H, W, C, 1]``; dense ``[O, I]`` ->
  ``[I, O]``);
- the converter folded each batch-norm into the convolution before it, so the
  convolution takes the folded kernel and its BatchNormalization layer becomes the
  identity plus the folded bias in inference mode: gamma = sqrt(1 + epsilon),
  beta = the bias, moving mean 0, moving variance 1;
- the Rescaling layer (``x / 127.5 - 1``) and the pooling have no weights; the dense
  layer gets its kernel and bias (the temperature is already folded into them).

The file is written as float16 (5.0 MB instead of 9.5; ``--float32`` for the full
width): a kernel's values are int8 steps, 1/127 of their channel's largest, and a
float16 value's spacing is at most 1/1024 of it, so float16 rounds at least 8 times
finer than the int8 grid they came from. ``bin-agent train --init-weights`` converts them back to float32
(``train.load_run_weights``).

Then it proves the result: on the TrashNet validation photos of ``models/waste_split.json``
(``fit_to_input``, as the agent feeds them) the float model's probabilities are compared
with the shipped int8 model's (top-1 agreement, largest and mean absolute probability
difference, the accuracy of both), for the float32 model and for the one loaded from the
written file as ``--init-weights`` loads it, and, with ``--export N``, those of a fresh int8 export
of the model loaded from the file (``convert_int8``, the training pipeline's, calibrated
on N training photos).

    nice python scripts/float_weights_from_tflite.py ../shared/data/trashnet
    nice python scripts/float_weights_from_tflite.py ../shared/data/trashnet --export 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bin_agent import CLASSES, DEFAULT_MODEL  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.training import dataset as ds  # noqa: E402
from bin_agent.training.train import (  # noqa: E402
    SHIPPED_FLOAT_WEIGHTS,
    TrainConfig,
    build_models,
    convert_int8,
    convert_weights_file,
    load_run_weights,
)

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass
class FloatOp:
    """One weighted operator of the int8 model, de-quantized, in Keras layout."""

    op: str
    tensor: str  # the weight tensor's name in the TFLite file
    kernel: np.ndarray
    bias: np.ndarray


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the XNNPACK delegate: it may take over the constant tensors.
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    return interpreter


def _dequantize(detail: dict, values: np.ndarray) -> np.ndarray:
    """``scale * (q - zero_point)`` along the tensor's quantized dimension."""
    q = detail["quantization_parameters"]
    scales, zeros, axis = q["scales"], q["zero_points"], q["quantized_dimension"]
    if len(scales) == 0:
        raise ValueError(f"{detail['name']}: not a quantized tensor")
    shape = [1] * values.ndim
    if len(scales) > 1:
        shape[axis] = len(scales)
    return ((values.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def read_weighted_ops(path: Path) -> list[FloatOp]:
    """Every conv, depthwise conv and dense operator of the int8 model at ``path``,
    in execution order, with float32 kernel (Keras layout) and bias."""
    interpreter = _interpreter(path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in WEIGHT_OPS:
            continue
        weight, bias = details[op["inputs"][1]], details[op["inputs"][2]]
        w = _dequantize(weight, interpreter.get_tensor(weight["index"]))
        b = _dequantize(bias, interpreter.get_tensor(bias["index"]))
        if op["op_name"] == "CONV_2D":
            kernel = w.transpose(1, 2, 3, 0)  # [O, H, W, I] -> [H, W, I, O]
        elif op["op_name"] == "DEPTHWISE_CONV_2D":
            kernel = w[0][..., np.newaxis]  # [1, H, W, C] -> [H, W, C, 1] (multiplier 1)
        else:
            kernel = w.T  # [O, I] -> [I, O]
        found.append(FloatOp(op["op_name"], weight["name"], kernel, b))
    return found


def reconstruct(path: Path, input_size: int = 160):
    """The Keras model of ``train.build_models`` holding the int8 model's weights."""
    import keras

    full = build_models(TrainConfig(datasets=[], out=Path("."), weights=None, input_size=input_size))[0]
    base = next(layer for layer in full.layers if isinstance(layer, keras.Model))
    ops = read_weighted_ops(path)
    layers = list(base.layers)
    weighted = [
        (i, layer)
        for i, layer in enumerate(layers)
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)
    ]
    dense = full.get_layer("probabilities")
    if len(ops) != len(weighted) + 1:
        raise SystemExit(f"{path}: {len(ops)} weighted operators, the Keras model has {len(weighted) + 1} layers")
    for (i, layer), op in zip(weighted, ops[:-1]):
        # the operator's weight tensor is named after the layer (its own or its BN's)
        if f"/{layer.name}_" not in op.tensor and f"/{layer.name}/" not in op.tensor:
            raise SystemExit(f"operator {op.tensor!r} does not belong to layer {layer.name!r}")
        norm = layers[i + 1]
        if not isinstance(norm, keras.layers.BatchNormalization):
            raise SystemExit(f"{layer.name} is not followed by a BatchNormalization layer")
        (kernel,) = layer.get_weights()  # use_bias=False: the bias lives in the BN
        if kernel.shape != op.kernel.shape:
            raise SystemExit(f"{layer.name}: kernel {op.kernel.shape} in the TFLite file, {kernel.shape} in Keras")
        layer.set_weights([op.kernel])
        gamma = np.full_like(op.bias, np.sqrt(1.0 + norm.epsilon))
        norm.set_weights([gamma, op.bias, np.zeros_like(op.bias), np.ones_like(op.bias)])
    head = ops[-1]
    if "probabilities" not in head.tensor or head.kernel.shape != dense.get_weights()[0].shape:
        raise SystemExit(f"the last weighted operator {head.tensor!r} is not the dense head")
    dense.set_weights([head.kernel, head.bias])
    return full


def save_float_weights(full, out: Path, dtype: str = "float16") -> None:
    """``full``'s weights at ``out``, every array as ``dtype`` (Keras writes float32)."""
    if dtype == "float32":
        full.save_weights(out)
        return
    with tempfile.TemporaryDirectory(prefix="float-weights-") as tmp:
        wide = Path(tmp) / "float32.weights.h5"
        full.save_weights(wide)
        convert_weights_file(wide, out, dtype)


def int8_probabilities(path: Path | bytes, views: list[np.ndarray]) -> np.ndarray:
    """The int8 model's de-quantized probabilities, one uint8 view at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path)) if isinstance(path, Path) else Interpreter(model_content=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    rows = []
    for view in views:
        interpreter.set_tensor(inp["index"], view[np.newaxis].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    return np.stack(rows)


def agreement(mine: np.ndarray, shipped: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and the largest/mean absolute probability difference."""
    diff = np.abs(mine - shipped)
    return {
        "top1_agreement": float((mine.argmax(1) == shipped.argmax(1)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def photos(root: Path, split: Path, subset: str, limit: int | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``subset`` photos of ``root`` in ``split`` as the agent feeds them."""
    items = ds.select(ds.list_dataset(root), ds.split_for(ds.read_split(split), root, split), subset)
    if limit:
        # evenly through the sorted keys, so every class is in
        items = [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, limit).round())]
    spec = TrainConfig(datasets=[], out=Path(".")).spec
    return [ds.eval_pixels(item.path, spec) for item in items], np.array([item.label for item in items])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trashnet", type=Path, help="the TrashNet folder (../shared/data/trashnet)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the int8 model (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=SHIPPED_FLOAT_WEIGHTS, help="the weights file to write")
    parser.add_argument("--split", type=Path, default=REPO / "models" / "waste_split.json")
    parser.add_argument("--limit", type=int, help="compare on at most this many validation photos")
    parser.add_argument(
        "--export", type=int, default=0, metavar="N", help="also export int8 (calibrated on N training photos)"
    )
    parser.add_argument("--float32", action="store_true", help="write float32 (default: float16, half the size)")
    args = parser.parse_args(argv)
    if not args.trashnet.is_dir():  # before anything is written: the proof needs the photos
        parser.error(f"{args.trashnet}: no such folder (the TrashNet photos, ../shared/data/trashnet)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    started = time.perf_counter()
    full = reconstruct(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dtype = "float32" if args.float32 else "float16"
    save_float_weights(full, args.out, dtype)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {dtype}) in {time.perf_counter() - started:.0f}s")
    # the model a retrain starts from: the file read back as --init-weights reads it
    stored = build_models(TrainConfig(datasets=[], out=Path("."), weights=None))[0]
    load_run_weights(stored, args.out)

    views, labels = photos(args.trashnet, args.split, "val", args.limit)
    shipped = int8_probabilities(args.model, views)
    batch = ds.keras_batch(views)
    # the float model as reconstructed, and (unless the file is float32: the same) as read back
    floats = {"float32 (as reconstructed)": full}
    if dtype != "float32":
        floats[f"read back from the {dtype} file"] = stored
    rows = {name: np.asarray(model.predict(batch, batch_size=32, verbose=0)) for name, model in floats.items()}
    # yardsticks for the rows: how far the file's rounding alone, and int8 rounding alone, move a float model
    yardsticks = []
    if dtype != "float32":
        yardsticks.append((f"read back from the {dtype} file", "float32 (as reconstructed)"))
    if args.export:
        train_views, _ = photos(args.trashnet, args.split, "train", args.export)
        for name, model in floats.items():
            exported = convert_int8(model, train_views)
            print(f"int8 export of {name}: {len(exported):,} bytes (shipped: {args.model.stat().st_size:,})")
            rows[f"int8 export of {name}"] = int8_probabilities(exported, views)
            yardsticks.append((f"int8 export of {name}", name))
    print(f"{len(views)} TrashNet validation photos ({args.split.name}), one view each, against {args.model.name}:")
    print(f"  shipped int8: accuracy {(shipped.argmax(1) == labels).mean():.4f}")
    for what, probs in rows.items():
        figures = agreement(probs, shipped)
        print(
            f"  {what}: top-1 agreement {figures['top1_agreement']:.4f}, probability difference "
            f"max {figures['max_abs_diff']:.4f} mean {figures['mean_abs_diff']:.4f}, "
            f"accuracy {(probs.argmax(1) == labels).mean():.4f}"
        )
    for mine, theirs in yardsticks:
        figures = agreement(rows[mine], rows[theirs])
        print(
            f"  yardstick: {mine} against {theirs}: top-1 agreement {figures['top1_agreement']:.4f}, "
            f"probability difference max {figures['max_abs_diff']:.4f} mean {figures['mean_abs_diff']:.4f}"
        )
    per_class = {c: int((labels == i).sum()) for i, c in enumerate(CLASSES)}
    print(f"  photos per class: {per_class}; {time.perf_counter() - started:.0f}s in all")
    return 0


if __name__ == "__main__":
    run_script(main)
