"""Training and evaluation of the bin's image classifier.

- :mod:`.dataset` — folder-per-class datasets, the fixed train/val/test split,
  training-time augmentation (through :func:`bin_agent.preprocess.crop_resize`).
- :mod:`.evaluate` — metrics of a ``.tflite`` model run through
  :class:`bin_agent.classifier.Classifier` (no TensorFlow).
- :mod:`.train` — MobileNetV2 fine-tuning and TFLite export. It is the only
  module of bin-agent that imports TensorFlow, and only when it is imported:
  importing this package does not.
- :mod:`.commands` — the ``train``, ``evaluate`` and ``split`` sub-commands.
"""
