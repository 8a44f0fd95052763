#!/usr/bin/env python3
"""False events and possible items of the hardest no-item scene, with and without idle looks.

The scene is ``tests/test_trigger.py``'s dim, noisy bin (half the light, 10 grey levels of
noise): a hand waving through, a shadow sweeping across, an uneven light step held 8 s, a
hand pausing 0.4 s, slow drift; 30 s at 10 fps, no item. The test runs it for one seed;
this runs it for many, once per ``idle_look_seconds`` given, and prints the events (all
false: there is no item) and the possible items counted:

    python scripts/trigger_idle_looks.py --seeds 200 320 0 0.2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import test_trigger as scenes  # noqa: E402  (the scenes live with the tests)


def dim_noisy_bin(t: float) -> tuple[list[scenes.Item], np.ndarray]:
    """The script of ``test_dim_noisy_bin_hands_shadows_and_light_steps_give_no_event``."""
    xx = np.linspace(0.0, 1.0, scenes.W, dtype=np.float32)[None, :]
    light = 0.5 * (1.0 + 0.1 * np.sin(2 * np.pi * t / 60.0)) * np.ones((1, scenes.W), np.float32)
    if 8.0 <= t < 9.5:
        edge = (t - 8.0) / 1.5 * (scenes.W + 160) - 80
        light = light * (1.0 - 0.45 / (1.0 + np.exp(-(edge - xx * scenes.W) / 25.0)))
    if 14.0 <= t < 22.0:
        light = light * (1.0 + 0.8 * xx)
    return scenes.hand(t, 3.0, 1.5) + scenes.hand(t, 25.0, 2.0, pause=0.4), light


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("idle_look_seconds", nargs="+", type=float)
    parser.add_argument("--seeds", nargs=2, type=int, default=(200, 320), metavar=("FIRST", "END"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # each possible item logs a warning
    seeds = range(*args.seeds)
    for idle_look in args.idle_look_seconds:
        events, possible, when = 0, 0, []
        for seed in seeds:
            trigger = scenes.motion_trigger(settle_seconds=0.6, idle_look_seconds=idle_look)
            fired = scenes.run(trigger, scenes.Scene(seed=seed, noise=10.0), dim_noisy_bin, seconds=30.0, fps=10)
            events += len(fired)
            possible += trigger.possible_items
            when += [round(t, 1) for t in fired]
        print(
            f"idle_look_seconds {idle_look:g}: {len(seeds)} runs, {events} false events "
            f"(at {sorted(when)} s), {possible} possible items"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
