"""Quantization-aware fine-tuning for the int8 export.

Post-training quantization alone costs the fine-tuned MobileNetV2 1 to 3
points of accuracy (models/README.md). The largest rounding errors are in the
linear tensors (block projections and residual sums), whose calibrated ranges
span tens of units but are quantized to 256 steps. This module fine-tunes
the float network *through* a simulation of the int8 model the TFLite
converter will make of it, so the weights learn to work with that rounding:

- weights are rounded as the converter rounds them: symmetric int8 per output
  channel (per channel of a depthwise kernel), ``[-127, 127]``;
- activations are rounded where the int8 model stores a tensor: after the
  input scaling, after every ReLU6 (the converter's fixed ``[0, 6]`` range),
  after every block projection and residual sum and after the logits, with
  ranges calibrated as the converter calibrates them (minimum and maximum over
  the calibration photos, widened to include 0), re-measured every epoch;
- gradients pass through the rounding unchanged (straight-through), and not
  at all through clipped activations.

The simulated network *shares* its weights with the float model, so training
it changes the float model in place, and the export stays the ordinary
full-integer conversion (``train.convert_int8``) of plain Keras layers: there
is no separate quantization library and no custom op in the shipped file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import ops

RELU6_RANGE = (0.0, 6.0)


@dataclass
class _Mode:
    """Shared by every simulated layer: while ``calibrating``, activations pass
    unrounded and each measured tensor widens its range (the converter also
    calibrates the float network)."""

    calibrating: bool = False
    measured: list[FakeQuantActivation] = field(default_factory=list)


def fake_quant_weights(kernel, channel_axis: int):
    """``kernel`` rounded to symmetric int8 per channel along ``channel_axis``,
    with a straight-through gradient."""
    axes = [a for a in range(len(kernel.shape)) if a != channel_axis]
    largest = ops.max(ops.abs(kernel), axis=axes, keepdims=True)
    scale = ops.maximum(largest, 1e-12) / 127.0
    rounded = ops.clip(ops.round(kernel / scale), -127.0, 127.0) * scale
    return kernel + ops.stop_gradient(rounded - kernel)


class FakeQuantActivation(keras.layers.Layer):
    """Rounds a tensor to 256 levels over ``[low, high]`` (uint8/int8 with a
    zero point), the straight-through estimator of ``tf.quantization``.

    A ``fixed`` range is never re-measured (ReLU6 outputs, as the converter)."""

    def __init__(self, mode: _Mode, fixed: tuple[float, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.fixed = fixed
        low, high = fixed if fixed else (0.0, 0.0)
        self.low = self.add_weight(shape=(), initializer=keras.initializers.Constant(low), trainable=False, name="low")
        self.high = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(high), trainable=False, name="high"
        )
        if not fixed:
            mode.measured.append(self)

    def reset(self) -> None:
        self.low.assign(0.0)
        self.high.assign(0.0)

    def call(self, inputs):
        if self.mode.calibrating:
            if not self.fixed:
                self.low.assign(ops.minimum(self.low, ops.min(inputs)))
                self.high.assign(ops.maximum(self.high, ops.max(inputs)))
            return inputs
        return tf.quantization.fake_quant_with_min_max_vars(inputs, self.low, self.high, num_bits=8, narrow_range=False)


class FakeQuantWeights(keras.layers.Layer):
    """Runs a ``Conv2D``, ``DepthwiseConv2D`` or ``Dense`` layer with its kernel
    rounded per channel; returns the pre-activation (bias added), using the
    wrapped layer's own variables."""

    def __init__(self, layer: keras.layers.Layer, mode: _Mode, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.mode = mode
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            if layer.depth_multiplier != 1:
                raise ValueError(f"{layer.name}: depth multiplier {layer.depth_multiplier} is not simulated")
            self.channel_axis = 2
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            self.channel_axis = -1
        else:
            raise TypeError(f"{layer.name}: cannot simulate {type(layer).__name__}")

    def call(self, inputs):
        layer = self.layer
        kernel = layer.kernel
        if not self.mode.calibrating:
            kernel = fake_quant_weights(kernel, self.channel_axis % len(kernel.shape))
        if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2D)):
            convolve = ops.depthwise_conv if isinstance(layer, keras.layers.DepthwiseConv2D) else ops.conv
            out = convolve(
                inputs,
                kernel,
                strides=layer.strides,
                padding=layer.padding,
                data_format=layer.data_format,
                dilation_rate=layer.dilation_rate,
            )
        else:
            out = ops.matmul(inputs, kernel)
        if layer.use_bias:
            out = out + layer.bias
        return out


class QuantizationAware:
    """The int8 simulation of a float Keras model (see the module doc).

    ``model`` takes the same input as the float model and shares its weights;
    :meth:`calibrate` measures the activation ranges on calibration views.
    """

    def __init__(self, float_model: keras.Model):
        self.mode = _Mode()
        self.model = keras.models.clone_model(
            float_model, clone_function=lambda layer: layer, call_function=self._call, recursive=True
        )
        if not self.mode.measured:
            raise ValueError("nothing to simulate in this model")

    def _after(self, tensor, layer: keras.layers.Layer, fixed: tuple[float, float] | None = None):
        return FakeQuantActivation(self.mode, fixed, name=f"{layer.name}_fq")(tensor)

    def _call(self, layer: keras.layers.Layer, *args, **kwargs):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            out = FakeQuantWeights(layer, self.mode, name=f"{layer.name}_fqw")(*args)
            activation = keras.activations.get(layer.activation)
            if activation is keras.activations.linear:
                return out
            # the int8 model stores the pre-activation (here: the head's logits) and then
            # the softmax at fixed 1/256 steps, which cannot change the top class
            return activation(self._after(out, layer))
        out = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.ReLU):
            if layer.max_value is None or layer.negative_slope:
                raise ValueError(f"{layer.name}: only ReLU6 is simulated")
            return self._after(out, layer, (0.0, float(layer.max_value)))
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return self._after(out, layer, RELU6_RANGE)  # the int8 MEAN keeps its input's range
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Add)):
            return self._after(out, layer)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith("project_BN"):
            return self._after(out, layer)  # linear bottleneck: no ReLU6 after it
        return out

    def calibrate(self, views: Sequence[np.ndarray], batch_size: int = 32) -> None:
        """Measure every non-fixed activation range on ``views`` (float pixel
        batches as the model takes them), with unrounded weights and
        activations, as the converter does."""
        for layer in self.mode.measured:
            layer.reset()
        self.mode.calibrating = True
        try:
            for start in range(0, len(views), batch_size):
                self.model(np.asarray(views[start : start + batch_size]), training=False)
        finally:
            self.mode.calibrating = False

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {layer.name: (float(layer.low.numpy()), float(layer.high.numpy())) for layer in self.mode.measured}

    def calibrate_each_epoch(self, views: Sequence[np.ndarray]) -> keras.callbacks.Callback:
        """A Keras callback that re-measures the ranges before every epoch."""
        parent = self

        class Recalibrate(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                parent.calibrate(views)

        return Recalibrate()
