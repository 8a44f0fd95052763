"""Decoding limits, importable without numpy or PIL (the config schema names them)."""

DEFAULT_MAX_PIXELS = 16_000_000
"""Largest image (width x height, after JPEG draft scaling) that is decoded: a
12 MP camera or phone photo fits; a 15,000 x 15,000 PNG does not."""
