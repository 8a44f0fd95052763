"""The int8 simulation used for quantization-aware fine-tuning (training/qat.py).

What matters is that the simulation predicts what the TFLite converter's int8
model computes: these tests convert a real MobileNetV2 (ImageNet weights, 96x96)
and compare the simulated network with the int8 interpreter on real photos.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bin_agent.classify.preprocess import PreprocessSpec, fit_to_input, load_image
from bin_agent.classify.runtime import load_interpreter

try:
    import tensorflow as tf
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("TensorFlow is not installed (pip install -e '.[train]')", allow_module_level=True)


def test_weights_are_rounded_per_channel_to_symmetric_int8() -> None:
    from bin_agent.training.qat import fake_quant_weights

    rng = np.random.default_rng(0)
    # a depthwise kernel (kh, kw, channels, 1): channel 1 is 1000x smaller than channel 0
    kernel = rng.normal(size=(3, 3, 2, 1)).astype(np.float32)
    kernel[:, :, 1] *= 1e-3
    rounded = np.asarray(fake_quant_weights(tf.constant(kernel), channel_axis=2))
    for channel in range(2):
        original, quantized = kernel[:, :, channel], rounded[:, :, channel]
        step = np.abs(original).max() / 127
        levels = np.round(quantized / step)
        np.testing.assert_allclose(quantized, levels * step, rtol=1e-5, atol=1e-12)
        assert np.abs(levels).max() == 127, "the largest weight of each channel maps to +-127"
        assert np.abs(quantized - original).max() <= step / 2 + 1e-9
    # per tensor, the small channel would have been rounded to zero
    assert np.count_nonzero(rounded[:, :, 1]) == 9


def test_gradient_passes_straight_through_the_weight_rounding() -> None:
    from bin_agent.training.qat import fake_quant_weights

    kernel = tf.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_weights(kernel, channel_axis=1) * 3.0)
    np.testing.assert_allclose(tape.gradient(loss, kernel).numpy(), np.full((3, 4), 3.0))


def test_activation_ranges_are_measured_then_rounded_to_256_levels() -> None:
    from bin_agent.training.qat import FakeQuantActivation, _Mode

    mode = _Mode()
    layer = FakeQuantActivation(mode)
    mode.calibrating = True
    layer(np.array([-1.0, 0.0, 2.0], np.float32))
    mode.calibrating = False
    assert (float(layer.low.numpy()), float(layer.high.numpy())) == (-1.0, 2.0)
    out = np.asarray(layer(np.array([0.013, 5.0, -3.0], np.float32)))
    step = 3.0 / 255
    assert out[0] == pytest.approx(round(0.013 / step) * step, abs=1e-6)
    assert out[1] == pytest.approx(2.0, abs=step) and out[2] == pytest.approx(-1.0, abs=step)  # clipped


@pytest.fixture(scope="module")
def converted(trashnet_dir: Path, imagenet_weights: Path, tmp_path_factory):
    """A MobileNetV2 with a 6-class head, its int8 TFLite file and 24 photos."""
    import keras

    from bin_agent.training.train import TrainConfig, build_models, convert_int8

    config = TrainConfig(datasets=[], out=tmp_path_factory.mktemp("qat"), weights=str(imagenet_weights), input_size=96)
    keras.utils.set_random_seed(5)
    full = build_models(config)[0]
    dense = full.get_layer("probabilities")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(5).normal(0, 0.08, kernel.shape).astype(np.float32), bias])
    spec = PreprocessSpec(input_size=(96, 96))
    photos = sorted(trashnet_dir.glob("*/*.jpg"))[::40][:48]
    views = [fit_to_input(load_image(p), spec) for p in photos]
    calibration, probe = views[:24], views[24:]
    path = config.out / "m.tflite"
    path.write_bytes(convert_int8(full, calibration))
    return full, calibration, probe, path


def _tflite_probabilities(path: Path, views) -> np.ndarray:
    interpreter = load_interpreter(path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    rows = []
    for view in views:
        interpreter.set_tensor(inp["index"], view[np.newaxis])
        interpreter.invoke()
        rows.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    return np.array(rows)


def test_simulation_predicts_the_converted_int8_model(converted) -> None:
    from bin_agent.training.qat import QuantizationAware

    full, calibration, probe, path = converted
    batch = np.stack(probe).astype(np.float32)
    simulated = QuantizationAware(full)
    simulated.mode.calibrating = True  # while measuring, nothing is rounded: exactly the float model
    np.testing.assert_array_equal(np.asarray(simulated.model(batch)), np.asarray(full(batch)))
    simulated.calibrate(np.stack(calibration).astype(np.float32))

    # The rounding noise of a deep int8 network is chaotic, so the simulation
    # cannot reproduce the int8 outputs bit for bit; it must add noise of the
    # same size. (Rounding depthwise kernels per tensor instead of per channel
    # measured 6x the int8 model's noise; no rounding at all gives none.)
    int8 = _tflite_probabilities(path, probe)
    flt = np.asarray(full(batch))
    sim = np.asarray(simulated.model(batch))
    sim_noise, int8_noise = np.abs(sim - flt).mean(), np.abs(int8 - flt).mean()
    assert 0.5 < sim_noise / int8_noise < 2.0, (sim_noise, int8_noise)

    # the measured ranges are the converter's: same scale for every residual sum
    ranges = simulated.ranges()
    assert ranges["mobilenet_scaling_fq"] == pytest.approx((-1.0, 1.0), abs=0.01)
    assert all(low <= 0.0 <= high for low, high in ranges.values())
    interpreter = load_interpreter(path)
    sums = {
        d["name"].split("/")[-2].removesuffix("_1"): d["quantization"][0]
        for d in interpreter.get_tensor_details()
        if d["name"].endswith("_add_1/Add")
    }
    assert len(sums) == 10
    for name, scale in sums.items():
        low, high = ranges[f"{name}_fq"]
        assert (high - low) / 255 == pytest.approx(scale, rel=5e-3), name


def test_training_the_simulation_changes_the_float_model(converted) -> None:
    """The simulation shares the float model's variables: what QAT learns is exported."""
    from bin_agent.training.qat import QuantizationAware

    full, calibration, probe, _ = converted
    simulated = QuantizationAware(full)
    simulated.calibrate(np.stack(calibration).astype(np.float32))
    dense = full.get_layer("probabilities")
    before = dense.get_weights()[0].copy()
    import keras

    simulated.model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    target = np.eye(6, dtype=np.float32)[np.arange(len(probe)) % 6]
    simulated.model.fit(np.stack(probe).astype(np.float32), target, epochs=1, verbose=0)
    assert not np.allclose(dense.get_weights()[0], before)
