"""Training-time background replacement, camera effects and calibration (no TensorFlow)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bin_agent.classify.preprocess import PreprocessSpec
from bin_agent.training import backgrounds as bg
from bin_agent.training import dataset as ds
from bin_agent.training.evaluate import threshold_for_accuracy
from bin_agent.training.train import fit_temperature, view_stack, views_nll

BOARD = (205, 203, 198)
ITEM = (170, 30, 30)


def studio_photo(rng: np.random.Generator, item=ITEM, box=(150, 120, 330, 240), shadow=True) -> np.ndarray:
    """A 384x512 photo like TrashNet's: a plain board, sensor noise, one item, its soft shadow."""
    photo = np.empty((384, 512, 3), np.float32)
    photo[:] = BOARD
    left, top, right, bottom = box
    if shadow:  # darker board, same hue: must stay background
        photo[bottom : bottom + 25, left + 20 : right + 20] *= 0.8
    photo[top:bottom, left:right] = item
    photo += rng.normal(0, 3, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8)


def test_item_mask_finds_the_item_and_leaves_the_shadow_on_the_board():
    rng = np.random.default_rng(1)
    mask = bg.item_mask(studio_photo(rng))
    assert mask is not None
    left, top, right, bottom = mask.box
    assert abs(left - 150) <= 8 and abs(top - 120) <= 8
    assert abs(right - 330) <= 8 and abs(bottom - 240) <= 8  # the shadow below is not part of it


def test_item_mask_fills_holes_the_colour_of_the_board():
    rng = np.random.default_rng(2)
    photo = studio_photo(rng, shadow=False)
    photo[150:210, 200:280] = BOARD  # a label the colour of the board, inside the item
    mask = bg.item_mask(photo)
    assert mask is not None
    factor = mask.alpha.shape[1] / photo.shape[1]
    assert mask.alpha[int(180 * factor), int(240 * factor)] > 0.9


def test_no_mask_for_a_busy_photo_or_scattered_fragments():
    rng = np.random.default_rng(3)
    busy = (rng.random((384, 512, 3)) * 255).astype(np.uint8)
    assert bg.item_mask(busy) is None
    fragments = studio_photo(rng, shadow=False, item=BOARD)  # a white item on the white board...
    for x in (60, 200, 340, 460):  # ...of which only some print stands out
        fragments[60:70, x : x + 8] = (20, 20, 20)
        fragments[300:310, x : x + 8] = (20, 20, 20)
    assert bg.item_mask(fragments) is None


def test_composite_pastes_the_item_at_the_asked_scale_on_a_new_background():
    rng = np.random.default_rng(4)
    photo = studio_photo(rng)
    mask = bg.item_mask(photo)
    assert mask is not None
    for seed in range(12):
        view = bg.composite(photo, mask, 160, np.random.default_rng(seed), scale=(0.6, 0.6))
        assert view.shape == (160, 160, 3) and view.dtype == np.uint8
        red = (np.abs(view.astype(int) - ITEM).sum(axis=-1) < 40).mean()
        # the item is 180x120 in the photo: 0.6 of the side is 96x64 px = 0.24 of the view,
        # less what may leave the canvas (at most a tenth of each side)
        assert 0.15 < red < 0.27, red
        board = (np.abs(view.astype(int) - BOARD).sum(axis=-1) < 15).mean()
        assert board < 0.5  # the board around the item is gone


def test_composite_placed_says_where_the_item_landed():
    rng = np.random.default_rng(9)
    photo = studio_photo(rng)
    mask = bg.item_mask(photo)
    assert mask is not None
    for seed in range(8):
        view, (left, top, right, bottom) = bg.composite_placed(
            photo, mask, 320, np.random.default_rng(seed), scale=(0.3, 0.5)
        )
        red = np.abs(view.astype(int) - ITEM).sum(axis=-1) < 40
        rows, cols = np.nonzero(red.any(axis=1))[0], np.nonzero(red.any(axis=0))[0]
        # the placed box is the mask's box (padded by a thirtieth of the item) cut at the canvas
        tolerance = 0.06 * max(right - left, bottom - top) + 2
        assert abs(cols[0] - left) <= tolerance and abs(cols[-1] + 1 - right) <= tolerance
        assert abs(rows[0] - top) <= tolerance and abs(rows[-1] + 1 - bottom) <= tolerance


PLAIN = ds.Augmentation(
    background_p=1.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    channel_gain=0.0,
    blur_p=0.0,
    camera=bg.CameraEffects(
        temperature=0.0, exposure=(1.0, 1.0), gamma=0.0, noise_p=0.0, jpeg_p=0.0, uneven_light_p=0.0
    ),
)


def red_extent(view: np.ndarray) -> tuple[float, float, float]:
    """Share of the view that is the item, and the share of its width and height the item spans."""
    red = np.abs(view.astype(int) - ITEM).sum(axis=-1) < 40
    rows, cols = np.nonzero(red.any(axis=1))[0], np.nonzero(red.any(axis=0))[0]
    return float(red.mean()), (cols[-1] + 1 - cols[0]) / view.shape[1], (rows[-1] + 1 - rows[0]) / view.shape[0]


def test_a_view_cut_as_the_agent_cuts_is_filled_by_the_item_squashed_within_two_to_one():
    spec = PreprocessSpec(input_size=(160, 160))
    cropped = replace(PLAIN, item_crop_p=1.0)
    whole = replace(PLAIN, item_crop_p=0.0)
    photo = studio_photo(np.random.default_rng(10))  # a 180x120 item: 3:2, squashed to fill the square
    for seed in range(10):
        share, across, down = red_extent(ds.augment(photo, spec, np.random.default_rng(seed), cropped))
        # the trigger's box is off by -6..+12 % of the item per edge, around the mask's box (which is
        # padded by a thirtieth per side): the item spans >= 1/1.31 of it
        assert share > 0.55 and min(across, down) > 0.74, (seed, share, across, down)
        share, across, down = red_extent(ds.augment(photo, spec, np.random.default_rng(seed), whole))
        assert share < 0.5 and min(across, down) < 0.92  # pasted whole at 0.45-0.9 of the view
    long_item = studio_photo(np.random.default_rng(11), box=(100, 170, 400, 230))  # 5:1: squashed to 2:1 only
    for seed in range(10):
        share, across, down = red_extent(ds.augment(long_item, spec, np.random.default_rng(seed), cropped))
        long_side, short_side = max(across, down), min(across, down)  # turned by quarter turns
        assert long_side > 0.74 and 0.25 < short_side < 0.6  # 2 x 1/5 = 0.4, give or take the box, (seed, across, down)


def test_backgrounds_vary_and_stay_in_range():
    means = []
    for seed in range(40):
        image = bg.random_background(96, np.random.default_rng(seed))
        assert image.shape == (96, 96, 3) and np.isfinite(image).all()
        assert image.min() >= 0 and image.max() <= 255
        means.append(image.mean())
    assert np.std(means) > 20  # dark liners and light boards alike


def test_augment_replaces_a_plain_background_and_keeps_other_photos_whole():
    spec = PreprocessSpec(input_size=(160, 160))
    rng = np.random.default_rng(5)
    photo = studio_photo(rng)
    always = ds.Augmentation(background_p=1.0)
    never = ds.Augmentation(background_p=0.0)
    replaced = kept = 0

    def corners(view: np.ndarray) -> np.ndarray:
        return np.concatenate([view[:6, :6], view[:6, -6:], view[-6:, :6], view[-6:, -6:]]).reshape(-1, 3)

    for seed in range(10):
        with_bg = ds.augment(photo, spec, np.random.default_rng(seed), always)
        without = ds.augment(photo, spec, np.random.default_rng(seed), never)
        # exposure and colour jitter move the board's colour, but not by this much, and not in every corner
        replaced += np.abs(corners(with_bg).astype(int) - corners(without).astype(int)).mean() > 25
        kept += with_bg.shape == without.shape == (160, 160, 3)
    assert replaced >= 8 and kept == 10


def test_camera_effects_are_seeded_and_keep_the_shape():
    pixels = np.full((160, 160, 3), 128, np.uint8)
    a = bg.camera_effects(pixels, np.random.default_rng(7))
    b = bg.camera_effects(pixels, np.random.default_rng(7))
    assert a.shape == pixels.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, bg.camera_effects(pixels, np.random.default_rng(8)))


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 1, 6))
    true_t = 2.5
    scaled = logits[:, 0] / true_t
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(6, p=p) for p in probs])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.1)
    assert views_nll(logits, labels, fitted) < views_nll(logits, labels, 1.0)


def test_view_stack_matches_the_classifier_views():
    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    views = view_stack(pixels, 4)
    assert np.array_equal(views[1], pixels[:, ::-1])
    assert np.array_equal(views[2], np.rot90(pixels, 2))
    assert np.array_equal(views[3], np.rot90(pixels, 2)[:, ::-1])
    assert len(view_stack(pixels, 2)) == 2


def test_threshold_for_accuracy_is_the_lowest_that_reaches_the_target():
    conf = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.5, 0.4, 0.35])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    row = threshold_for_accuracy(conf, correct, 0.97)
    assert row is not None and row["threshold"] == 0.75 and row["sorted_share"] == 0.5
    assert threshold_for_accuracy(conf, np.zeros(8, dtype=bool), 0.97) is None


def test_uneven_light_darkens_part_of_a_view_and_never_brightens_it():
    evenly = bg.CameraEffects(
        temperature=0.0, exposure=(1.0, 1.0), gamma=0.0, noise_p=0.0, jpeg_p=0.0, uneven_light_p=0.0
    )
    unevenly = replace(evenly, uneven_light_p=1.0)
    grey = np.full((160, 160, 3), 150, np.uint8)
    assert np.array_equal(bg.camera_effects(grey, np.random.default_rng(0), evenly), grey)
    spreads = []
    for seed in range(20):
        view = bg.camera_effects(grey, np.random.default_rng(seed), unevenly).astype(int)
        assert view.max() <= 150 and view.min() >= round(150 * 0.35) - 1  # at most the light; at least its floor
        spreads.append(view.max() - view.min())
    # a spot on a floor of 0.35-0.8 of its light: most views differ by over a tenth across
    assert np.median(spreads) > 15, spreads


def test_a_low_res_view_is_a_small_crop_upscaled_as_the_agent_upscales_it():
    from bin_agent.classify.preprocess import crop_resize

    sharp = bg.CameraEffects(
        temperature=0.0, exposure=(1.0, 1.0), gamma=0.0, noise_p=0.0, jpeg_p=0.0, uneven_light_p=0.0
    )
    quarter = replace(sharp, low_res_p=1.0, low_res_scale=(0.25, 0.25))
    photo = np.zeros((160, 160, 3), np.uint8)
    photo[:, :80:2] = 255  # one-pixel stripes (detail only a full-size view keeps) beside
    photo[:, 100:] = 255  # a white block whose edge survives any size
    assert np.array_equal(bg.camera_effects(photo, np.random.default_rng(0), sharp), photo)
    view = bg.camera_effects(photo, np.random.default_rng(0), quarter)
    # The same item 40 px wide on the sensor (each pixel the mean of what it covers), then
    # upscaled to the input by the agent's own resize.
    sensed = np.asarray(Image.fromarray(photo).resize((40, 40), Image.Resampling.BOX))
    assert np.abs(view.astype(int) - crop_resize(sensed, (0.0, 0.0, 40.0, 40.0), (160, 160))).max() <= 1
    assert view[:, :70].std() < 2  # the stripes are a flat grey


def test_the_trainers_uneven_light_is_the_shipped_models() -> None:
    # A retrain (`--init-weights shipped`, "Teach the bin your items") sees the light the shipped model saw.
    import json

    from bin_agent import DEFAULT_MODEL_NAME
    from bin_agent.classify.classifier import ModelFiles

    model = Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME
    settings = json.loads(ModelFiles.beside(model).metadata.read_text())["trained_on"]["settings"]
    camera = settings["augmentation"]["camera"]
    assert bg.CameraEffects().uneven_light_p == camera["uneven_light_p"]
    assert list(bg.CameraEffects().uneven_light_low) == camera["uneven_light_low"]
