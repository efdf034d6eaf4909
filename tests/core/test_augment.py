from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet_cells.core import augment
from napari_unet_cells.core.config import AugmentConfig
from napari_unet_cells.core.synthetic import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiles(n=2, size=64, seed=0):
    image, labels = synthetic_cells((size, size * n), seed=seed)
    image = image.astype(np.float32) / image.max()
    split = lambda a: np.stack(np.split(a, n, axis=1))  # noqa: E731
    target = (labels > 0).astype(np.uint8)
    weight = 1.0 + target.astype(np.float32)
    return split(image), split(weight), split(target), split(labels)


def test_labels_stay_integer_ids_without_new_ones():
    image, weight, target, labels = _tiles()
    params = augment.draw_params(np.random.default_rng(1), AugmentConfig(elastic_sigma=10), 2)
    out = augment.augment_batch(params, image, weight, target, labels)
    assert out.labels.dtype == torch.int64 and out.target.dtype == torch.int64
    for i in range(2):
        new = set(np.unique(out.labels[i].numpy()).tolist())
        assert new <= set(np.unique(labels[i]).tolist())
        assert len(new) >= 3  # cells survive the deformation
        assert set(np.unique(out.target[i].numpy()).tolist()) <= {0, 1}
        # the target moved together with the labels: cell pixels are exactly labelled pixels
        assert np.array_equal(out.target[i].numpy() > 0, out.labels[i].numpy() > 0)
    assert not np.array_equal(out.labels.numpy(), labels)  # it did deform


def test_zero_displacement_leaves_the_sample_unchanged():
    image, weight, target, labels = _tiles()
    out = augment.augment_batch(
        [augment.AugmentParams.identity()] * 2, image, weight, target, labels
    )
    np.testing.assert_array_equal(out.image[:, 0].numpy(), image)
    np.testing.assert_array_equal(out.labels.numpy(), labels)
    # the deformation itself is exact for a zero field (no short cut taken here)
    zero = torch.zeros(2, 2, 3, 3)
    smooth = torch.from_numpy(np.stack([image, weight], 1))
    nearest = torch.from_numpy(labels[:, None].astype(np.float32))
    s, k = augment.elastic_deform(zero, smooth, nearest)
    np.testing.assert_allclose(s.numpy(), smooth.numpy(), atol=1e-5)
    np.testing.assert_array_equal(k.numpy(), nearest.numpy())


def test_same_seed_same_result_and_different_seed_differs():
    tiles = _tiles()
    cfg = AugmentConfig()

    def run(seed):
        params = augment.draw_params(np.random.default_rng(seed), cfg, 2)
        return augment.augment_batch(params, *tiles)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.image, c.image)


def test_displacement_is_bicubic_on_a_coarse_grid():
    # a displacement only at the centre grid point: the field peaks there and is smooth
    d = torch.zeros(1, 2, 3, 3)
    d[0, 1, 1, 1] = 10.0
    field = augment.displacement_field(d, (41, 41))[0, 1]
    assert field[20, 20] == pytest.approx(10.0)
    assert field[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert float(field.abs().max()) <= 10.0 + 1e-4
    # bicubic (not bilinear): the profile is curved between grid points
    assert field[20, 10] != pytest.approx(5.0, abs=0.05)
    # the image moves by the field: a vertical edge shifts by about the displacement
    image = torch.zeros(1, 1, 41, 41)
    image[..., 20:] = 1.0
    moved, _ = augment.elastic_deform(d, image)
    assert moved[0, 0, 20, 10:20].sum() > 5  # content from 10 px to the right


def test_flips_rotations_and_intensity_apply_to_all_channels_alike():
    image, weight, target, labels = _tiles(1)
    params = augment.AugmentParams(
        displacement=np.zeros((2, 3, 3), np.float32), rot90=1, flip_x=True, gain=2.0, offset=0.5
    )
    out = augment.augment_batch([params], image, weight, target, labels)
    expected = np.rot90(np.flip(labels[0], -1), 1)
    np.testing.assert_array_equal(out.labels[0].numpy(), expected)
    np.testing.assert_allclose(out.image[0, 0].numpy(), 2 * np.rot90(image[0][:, ::-1]) + 0.5)
    np.testing.assert_allclose(out.weight[0].numpy(), np.rot90(weight[0][:, ::-1]))


def test_strength_scales_the_recipe():
    cfg = AugmentConfig().scaled(0.0)
    assert cfg.elastic_sigma == 0 and cfg.gain == 0 and cfg.flip
    params = augment.draw_params(np.random.default_rng(0), cfg, 3)
    assert all(not p.displacement.any() and p.gain == 1.0 for p in params)
    assert AugmentConfig().scaled(2).elastic_sigma == 20


@pytest.mark.parametrize("rot90", [0, 1, 2, 3])
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_fused_grid_equals_deform_then_orient(rot90, flips):
    image, weight, target, labels = _tiles(1)
    rng = np.random.default_rng(rot90)
    p = augment.AugmentParams(
        displacement=rng.normal(0, 8, (2, 3, 3)).astype(np.float32),
        rot90=rot90,
        flip_y=flips[0],
        flip_x=flips[1],
    )
    fused = augment.augment_batch([p], image, weight, target, labels)
    smooth = torch.from_numpy(np.stack([image, weight], 1))
    nearest = torch.from_numpy(labels[:, None].astype(np.float32))
    s, k = augment.elastic_deform(torch.from_numpy(p.displacement[None]), smooth, nearest)
    s, k = augment._orient(s[0], p), augment._orient(k[0], p)
    np.testing.assert_allclose(fused.image[0, 0].numpy(), s[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(fused.weight[0].numpy(), s[1].numpy(), atol=1e-4)
    same = (fused.labels[0].numpy() == k[0].numpy()).mean()
    assert same > 0.999  # nearest neighbour: only exact ties may round differently
