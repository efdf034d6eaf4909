"""The weight map (paper eq. 2) against a plainly written brute-force reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_cells.core.config import WeightMapConfig, config_from_dict, config_to_dict
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells
from napari_unet_cells.core.weightmap import (
    WeightMapProgress,
    iter_weight_map,
    separation_target,
    update_weight_map,
    weight_map,
    weight_map_state,
)

# -- the reference, written plainly --------------------------------------------------------


def reference_target(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixel by pixel: a cell pixel with a different cell within `width` (chessboard)."""
    h, w = labels.shape
    target = (labels > 0).astype(np.uint8)
    carved = np.zeros(labels.shape, dtype=bool)
    for y in range(h):
        for x in range(w):
            if labels[y, x] == 0:
                continue
            hood = labels[max(0, y - width) : y + width + 1, max(0, x - width) : x + width + 1]
            if np.any((hood > 0) & (hood != labels[y, x])):
                carved[y, x] = True
    for k in np.unique(labels[labels > 0]):
        cell = labels == k
        if not np.all(carved[cell]):  # a cell is never carved away entirely
            target[cell & carved] = 0
    return target


def reference_weights(labels, ignore=None, config=None):
    """Eq. 2 with a full-image distance transform per cell (O(cells x pixels))."""
    config = config or WeightMapConfig()
    target = reference_target(labels, config.border_width)
    cells = [k for k in np.unique(labels) if k > 0]
    dist = [ndi.distance_transform_edt(labels != k) for k in cells]
    dist = np.sort(np.stack(dist + [np.full(labels.shape, np.inf)] * 2), axis=0)
    d1, d2 = dist[0], dist[1]
    valid = np.ones(labels.shape, bool) if ignore is None else ~ignore
    n_bg = np.count_nonzero((target == 0) & valid)
    n_cell = np.count_nonzero((target == 1) & valid)
    background = target == 0
    w = np.ones(labels.shape)
    if config.class_balance and config.background_weight is None:
        if n_bg and n_cell:
            w[~background] = n_bg / n_cell
    elif config.class_balance:
        v = config.background_weight
        w[background] = v
        if config.balance_sigma > 0:
            extra = (1 - v) * np.exp(-(d1**2) / (2 * config.balance_sigma**2))
            w[background] += extra[background]
    border = config.w0 * np.exp(-((d1 + d2) ** 2) / (2 * config.sigma**2))
    w[background] += border[background]
    if ignore is not None:
        w[ignore] = 0
    return w.astype(np.float32)


# -- label images --------------------------------------------------------------------------


def random_cells(seed: int, shape=(48, 56), n=12) -> np.ndarray:
    """Random touching/overlapping discs and boxes, many cut by the image border."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx = rng.uniform(-4, shape[0] + 4), rng.uniform(-4, shape[1] + 4)
        r = rng.uniform(2, 9)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r * rng.uniform(0.3, 1))
        labels[mask] = k
    return labels


def nested_cells() -> np.ndarray:
    """A ring cell whose bounding box contains two others, a 1-px cell, a thin line."""
    yy, xx = np.mgrid[:40, :44]
    r = np.hypot(yy - 20, xx - 22)
    labels = np.zeros((40, 44), np.int64)
    labels[(r >= 10) & (r < 14)] = 3  # ring
    labels[r < 5] = 7  # inside the ring, not touching
    labels[(r >= 5) & (r < 6) & (xx < 22)] = 9  # half ring touching 7
    labels[2, 2] = 11  # single pixel touching 12 (cannot be carved away)
    labels[1:4, 3] = 12
    labels[30:39, 40] = 5  # one-pixel wide line at the border touching 6
    labels[30:39, 41:44] = 6
    labels[0:3, 20:44] = 8  # cell on the image border
    return labels


def synthetic_labels(seed: int, shape=(64, 64)) -> np.ndarray:
    return synthetic_cells(shape, seed=seed, config=SyntheticConfig(diameter=(8.0, 16.0)))[1]


CONFIGS = [
    WeightMapConfig(),
    WeightMapConfig.preset("fiji"),
    WeightMapConfig(border_width=2, sigma=3.0),
    WeightMapConfig(border_width=0, class_balance=False),
    WeightMapConfig(w0=0.0),
]


# -- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"w0={c.w0}-bw={c.border_width}")
@pytest.mark.parametrize("case", ["random0", "random1", "random2", "nested", "synthetic"])
def test_weight_map_equals_brute_force(case, config):
    labels = {
        "random0": lambda: random_cells(0),
        "random1": lambda: random_cells(1, n=20),
        "random2": lambda: random_cells(2, shape=(37, 61), n=8),
        "nested": nested_cells,
        "synthetic": lambda: synthetic_labels(3),
    }[case]()
    assert len(np.unique(labels)) > 3
    weights = weight_map(labels, config=config)
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    reference = reference_weights(labels, config=config)
    np.testing.assert_allclose(weights, reference, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(
        separation_target(labels, config), reference_target(labels, config.border_width)
    )


def test_ignore_mask_gets_zero_and_is_left_out_of_class_frequencies():
    labels = random_cells(4)
    rng = np.random.default_rng(0)
    ignore = np.zeros(labels.shape, bool)
    ignore[5:20, 10:40] = True
    ignore |= rng.random(labels.shape) < 0.05
    weights = weight_map(labels, ignore)
    assert np.all(weights[ignore] == 0) and np.all(weights[~ignore] > 0)
    np.testing.assert_allclose(weights, reference_weights(labels, ignore), rtol=0, atol=1e-5)
    # an integer mask (e.g. a napari Labels layer) means nonzero = ignore
    np.testing.assert_array_equal(weight_map(labels, ignore.astype(np.uint8) * 3), weights)


def test_class_balance_normalisation_is_inverse_frequency_with_background_one():
    labels = np.zeros((10, 10), np.uint16)
    labels[:2, :5] = 1  # 10 cell pixels, 90 background, no neighbours: no carving
    weights = weight_map(labels, config=WeightMapConfig(w0=0))
    assert np.all(weights[labels == 0] == 1.0)
    np.testing.assert_allclose(weights[labels == 1], 9.0)
    # fiji: cells 1, background v (no distance term with balance_sigma 0)
    fiji = WeightMapConfig.preset("fiji", w0=0, balance_sigma=0.0)
    weights = weight_map(labels, config=fiji)
    np.testing.assert_allclose(weights[labels == 0], 0.1)
    np.testing.assert_allclose(weights[labels == 1], 1.0)


def test_border_term_is_largest_on_the_carved_border_between_touching_cells():
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 4:15] = 1
    labels[5:15, 15:26] = 2
    target = separation_target(labels)
    assert np.all(target[5:15, 14:16] == 0) and np.all(target[6:14, 5:14] == 1)
    weights = weight_map(labels, config=WeightMapConfig(class_balance=False))
    # carved pixels: d1 = 0 (own cell as annotated), d2 = 1
    np.testing.assert_allclose(weights[10, 14], 1 + 10 * np.exp(-1 / 50), rtol=1e-6)
    assert weights[10, 14] == weights.max()
    np.testing.assert_array_equal(weights[target == 1], 1.0)  # the term is background-only


def test_touching_cells_come_apart_in_the_target():
    labels = synthetic_labels(5, shape=(96, 96))
    assert len(touching_pairs_of(labels)) > 3
    target = separation_target(labels)
    pieces, _ = ndi.label(target, structure=np.ones((3, 3)))
    for a, b in touching_pairs_of(labels):
        assert not set(np.unique(pieces[labels == a])) & set(np.unique(pieces[labels == b])) - {0}
    # no cell vanishes
    assert set(np.unique(labels[target == 1])) == set(np.unique(labels)) - {0}


def touching_pairs_of(labels):
    from napari_unet_cells.core.labels import touching_pairs

    return touching_pairs(labels)


@pytest.mark.parametrize("n_cells", [0, 1])
def test_fewer_than_two_cells_has_no_border_term(n_cells):
    labels = np.zeros((30, 30), np.uint8)
    if n_cells:
        labels[10:20, 10:20] = 4
    weights = weight_map(labels)
    assert np.all(np.isfinite(weights))
    expected = np.ones((30, 30), np.float32)
    if n_cells:
        expected[labels > 0] = np.count_nonzero(labels == 0) / 100
    np.testing.assert_array_equal(weights, expected)
    fiji = weight_map(labels, config=WeightMapConfig.preset("fiji"))
    assert np.all(np.isfinite(fiji)) and fiji.max() <= 1.0
    np.testing.assert_array_equal(weight_map(labels, np.ones_like(labels, bool)), 0.0)


def test_large_label_values_and_dtypes():
    labels = random_cells(6)
    for dtype in (np.uint8, np.uint16, np.int64, np.uint32):
        np.testing.assert_array_equal(
            weight_map(labels.astype(dtype)), weight_map(labels.astype(np.int32))
        )
    huge = np.where(labels > 0, labels.astype(np.int64) * 10**12 + 5, 0)
    np.testing.assert_allclose(weight_map(huge), weight_map(labels), atol=1e-6)


def test_far_cells_use_the_tolerance_margin():
    # two cells far apart: the exact term is below tolerance * w0 everywhere
    labels = np.zeros((40, 200), np.int32)
    labels[15:25, 2:10] = 1
    labels[15:25, 190:198] = 2
    weights = weight_map(labels, config=WeightMapConfig(class_balance=False))
    np.testing.assert_allclose(
        weights, reference_weights(labels, config=WeightMapConfig(class_balance=False)), atol=1e-6
    )


# -- stacks and progress -------------------------------------------------------------------


def test_3d_is_processed_plane_by_plane():
    stack = np.stack([random_cells(7), random_cells(8), np.zeros((48, 56), np.int32)])
    ignore = np.zeros(stack.shape, bool)
    ignore[1, :10] = True
    weights = weight_map(stack, ignore)
    assert weights.shape == stack.shape
    for i in range(3):
        np.testing.assert_array_equal(weights[i], weight_map(stack[i], ignore[i]))
    np.testing.assert_array_equal(separation_target(stack)[1], separation_target(stack[1]))
    with pytest.raises(UNetCellsError, match="3D"):
        weight_map(stack, planewise=False)


def test_generator_reports_progress_and_stops():
    labels = synthetic_labels(9, shape=(128, 128))
    events = []
    gen = iter_weight_map(labels)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            state = stop.value
            break
    assert all(isinstance(e, WeightMapProgress) for e in events) and len(events) > 3
    assert events[-1].done == events[-1].total
    np.testing.assert_array_equal(state.weights, weight_map(labels))
    stopped = iter_weight_map(labels, should_stop=lambda: True)
    next(stopped)
    with pytest.raises(StopIteration) as info:
        next(stopped)
    assert info.value.value is None


# -- incremental updates -------------------------------------------------------------------


def _disc(shape, y, x, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


@pytest.mark.parametrize(
    "config", [WeightMapConfig(), WeightMapConfig.preset("fiji"), WeightMapConfig(border_width=2)]
)
def test_incremental_update_equals_full_recompute(config):
    rng = np.random.default_rng(11)
    labels = synthetic_labels(10, shape=(120, 140))
    ignore = np.zeros(labels.shape, bool)
    ignore[:8, :30] = True
    state = weight_map_state(labels, ignore, config)
    original = labels.copy()
    for step in range(14):
        y, x = rng.integers(0, 120), rng.integers(0, 140)
        brush = _disc(labels.shape, y, x, rng.integers(1, 7))
        kind = step % 4
        if kind == 0:  # grow the cell under the brush (or the nearest one)
            value = labels[y, x] or rng.choice(np.unique(labels)[1:])
        elif kind == 1:  # erase
            value = 0
        elif kind == 2:  # a new cell
            value = labels.max() + 1
        else:  # paint the ignore mask instead
            ignore |= brush
            brush = None
        if brush is not None:
            labels[brush] = value
        region = None
        if step % 3 == 0 and brush is not None:
            ys, xs = np.nonzero(brush)
            region = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        out = update_weight_map(state, labels, ignore, region=region)
        assert out is state.weights
        full = weight_map(labels, ignore, config)
        np.testing.assert_allclose(state.weights, full, rtol=0, atol=1e-6, err_msg=f"step {step}")
        np.testing.assert_array_equal(state.target, separation_target(labels, config))
    # erase a whole cell, and undo everything
    labels[labels == labels.max()] = 0
    update_weight_map(state, labels, ignore)
    np.testing.assert_allclose(state.weights, weight_map(labels, ignore, config), atol=1e-6)
    assert state.labels is not labels and not np.shares_memory(state.labels, labels)
    update_weight_map(state, original, np.zeros_like(ignore))
    np.testing.assert_allclose(state.weights, weight_map(original, config=config), atol=1e-6)


def test_incremental_update_in_a_stack_and_its_errors():
    stack = np.stack([random_cells(12), random_cells(13)])
    state = weight_map_state(stack)
    stack[1, 10:20, 10:20] = 3
    update_weight_map(state, stack, region=(slice(1, 2), slice(10, 20), slice(10, 20)))
    np.testing.assert_allclose(state.weights, weight_map(stack), atol=1e-6)
    with pytest.raises(UNetCellsError, match="shape"):
        update_weight_map(state, stack[0])
    with pytest.raises(UNetCellsError, match="ignore mask"):
        update_weight_map(state, stack, np.zeros(stack.shape, bool))
    with pytest.raises(UNetCellsError, match="one slice per axis"):
        update_weight_map(state, stack, region=(slice(0, 2),))
    wider = stack.astype(np.int64)
    wider[0, 0, 0] = 2**40
    with pytest.raises(UNetCellsError, match="recompute"):
        update_weight_map(state, wider)
    wider[0, 0, 0] = 5  # a wider dtype with values that fit is fine
    update_weight_map(state, wider)
    np.testing.assert_allclose(state.weights, weight_map(wider), atol=1e-6)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "ignore", "match"),
    [
        (np.zeros((8, 8), np.float32), None, "integer"),
        (np.full((8, 8), -1, np.int32), None, "negative"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 2), bool), "shape"),
        (np.zeros(8, np.int32), None, "2D"),
        (np.zeros((8, 8), np.int32), np.zeros((8, 9), bool), "shape"),
        (np.zeros((8, 8), np.int32), np.full((8, 8), "x"), "ignore mask"),
    ],
)
def test_bad_input_gives_a_clear_error(labels, ignore, match):
    with pytest.raises(UNetCellsError, match=match):
        weight_map(labels, ignore)


@pytest.mark.parametrize(
    "fields",
    [
        {"w0": -1.0},
        {"sigma": 0.0},
        {"border_width": -1},
        {"border_width": 1.5},
        {"background_weight": 0.0},
        {"balance_sigma": -2.0},
        {"tolerance": 1.0},
    ],
)
def test_bad_config_gives_a_clear_error(fields):
    with pytest.raises(UNetCellsError, match=r"(?i)weight map"):
        WeightMapConfig(**fields)


def test_presets_by_name_and_round_trip():
    fiji = WeightMapConfig.preset("fiji")
    assert (fiji.w0, fiji.sigma, fiji.background_weight, fiji.balance_sigma) == (50, 6, 0.1, 10)
    assert WeightMapConfig.preset("paper") == WeightMapConfig()
    assert WeightMapConfig.preset("paper", sigma=3.0).sigma == 3.0
    assert config_from_dict(WeightMapConfig, config_to_dict(fiji)) == fiji
    assert dataclasses.replace(fiji, w0=1.0).w0 == 1.0
    with pytest.raises(UNetCellsError, match="paper, fiji"):
        WeightMapConfig.preset("unet")
