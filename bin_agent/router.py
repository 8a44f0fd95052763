"""Which compartment an item goes to.

The router is pure policy: a class → compartment table, and a confidence
threshold below which the item goes to the fallback compartment (by default
the residual waste, where a wrong guess does the least harm to recycling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FALLBACK_CONFIDENCE_THRESHOLD = 0.8
"""The threshold when neither ``router.confidence_threshold`` nor the model's metadata sets one
(a model whose metadata carries no ``recommended_confidence_threshold``)."""


def confidence_threshold(
    configured: float | None, recommended: float | None, fitted: float | None = None
) -> tuple[float, str]:
    """The threshold in force and where it comes from, for a line a person reads.

    :param configured: ``router.confidence_threshold`` (None: unset); it wins when set.
    :param recommended: the model's metadata's (``Classifier.recommended_threshold``).
    :param fitted: the one ``bin-agent learn`` fitted on this bin's labels with the head it
        deployed (``Classifier.threshold``); it beats the metadata's, fitted on photos elsewhere.
    """
    if configured is not None:
        return configured, "router.confidence_threshold"
    if fitted is not None:
        return fitted, "fitted by bin-agent learn on this bin's labels"
    if recommended is not None:
        return recommended, "the model's metadata"
    return FALLBACK_CONFIDENCE_THRESHOLD, "the default: the model's metadata recommends none"


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
