"""bin-agent: the software inside a camera-equipped smart waste bin.

The flow, one module per stage: frame (``sources``) → trigger (``trigger``) →
classify (``preprocess``, ``runtime``, ``classifier``) → route (``router``) →
actuate (``actuators``) → record and publish (``store``, ``mqtt``).
``agent`` assembles these from the one validated config (``config``).
"""

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("cardboard", "glass", "metal", "paper", "plastic", "trash")
"""The six waste classes, in the order the shipped model emits them."""
