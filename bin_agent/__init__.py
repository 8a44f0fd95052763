"""bin-agent: the software inside a camera-equipped smart waste bin.

The flow, one module per stage: frame (``sources``) → trigger (``trigger``) →
classify (``preprocess``, ``runtime``, ``classifier``) → route (``router``) →
actuate (``actuators``) → record and publish (``store``, ``mqtt``).
``agent`` assembles these from the one validated config (``config``).
"""

from pathlib import Path

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("cardboard", "glass", "metal", "paper", "plastic", "trash")
"""The six waste classes, in the order the shipped model emits them."""

DEFAULT_MODEL_NAME = "waste_mobilenetv2_int8.tflite"
"""File name of the shipped model in the repository's ``models/`` (labels and
metadata lie beside it, see ``classifier.ModelFiles.beside``): the one place
that names it."""

DEFAULT_MODEL = Path(__file__).parent / "models" / DEFAULT_MODEL_NAME
"""The shipped model, ``model.path``'s default. ``bin_agent/models`` is a link
to ``models/`` in a checkout (editable install) and package data in an
installed bin-agent, so the same path works in both."""
