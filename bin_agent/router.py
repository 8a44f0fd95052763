"""Which compartment an item goes to.

The router is pure policy: a class → compartment table, and a confidence
threshold below which the item goes to the fallback compartment (by default
the residual waste, where a wrong guess does the least harm to recycling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """Where one item goes and why.

    :param compartment: the compartment to actuate.
    :param fallback: true when the confidence was below the threshold.
    """

    compartment: str
    fallback: bool


class Router:
    """Map a classification to a compartment.

    :param compartments: class → compartment for every class of the model.
    :param fallback: compartment for items classified with low confidence.
    :param confidence_threshold: below this, use ``fallback``.
    """

    def __init__(self, compartments: Mapping[str, str], fallback: str, confidence_threshold: float) -> None:
        self.compartments = dict(compartments)
        self.fallback = fallback
        self.confidence_threshold = confidence_threshold

    def route(self, label: str, confidence: float) -> Route:
        if confidence < self.confidence_threshold or label not in self.compartments:
            return Route(self.fallback, fallback=True)
        return Route(self.compartments[label], fallback=False)
