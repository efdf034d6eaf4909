from __future__ import annotations

import pytest
import torch

from napari_unet_cells.core import unet as U
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.errors import UNetCellsError


@pytest.mark.slow
def test_paper_network_size_and_shape():
    net = U.UNet(ModelConfig(in_channels=1, n_classes=2, base=64, depth=4))
    assert U.count_parameters(net) == 31_030_658
    assert U.count_conv_layers(net) == 23
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_paper_arithmetic():
    assert U.output_size(572) == 388
    assert U.context_margin(4) == 92
    assert U.min_input_size(4) == 188
    sizes = U.valid_input_sizes(700)
    assert sizes[0] == 188 and all(s % 16 == 12 for s in sizes) and 572 in sizes
    assert U.nearest_valid_input_size(572) == 572
    assert U.nearest_valid_input_size(573) == 588
    assert U.nearest_valid_input_size(573, direction="down") == 572
    assert U.nearest_valid_input_size(100, direction="down") is None
    assert U.nearest_valid_input_size(100) == 188
    assert U.input_size_for_output(388) == 572
    assert U.input_size_for_output(389) == 588


def _brute_force_output(size: int, depth: int) -> int | None:
    """Follow the sizes through the network literally; None if a layer breaks."""
    s = size
    for _ in range(depth):
        s -= 4
        if s < 1 or s % 2:
            return None
        s //= 2
    s -= 4
    for _ in range(depth):
        if s < 1:
            return None
        s = 2 * s - 4
    return s if s >= 1 else None


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_arithmetic_matches_brute_force(depth):
    for size in range(1, 700):
        expected = _brute_force_output(size, depth)
        assert U.is_valid_input_size(size, depth) == (expected is not None), size
        if expected is not None:
            assert U.output_size(size, depth) == expected
            assert expected == size - 2 * U.context_margin(depth)
    valid = [s for s in range(1, 700) if _brute_force_output(s, depth) is not None]
    assert U.valid_input_sizes(699, depth) == valid
    for size in range(1, 700):
        up = U.nearest_valid_input_size(size, depth)
        assert up == min(s for s in [*valid, 10**6] if s >= size) or up > 699
        down = U.nearest_valid_input_size(size, depth, direction="down")
        below = [s for s in valid if s <= size]
        assert down == (below[-1] if below else None)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_network_matches_arithmetic(depth):
    net = U.UNet(ModelConfig(base=2, depth=depth, dropout=0.0)).eval()
    for size in U.valid_input_sizes(U.min_input_size(depth) + 3 * 2**depth, depth):
        with torch.no_grad():
            out = net(torch.zeros(1, 1, size, size + 2**depth))
        assert out.shape[-2:] == (
            U.output_size(size, depth),
            U.output_size(size + 2**depth, depth),
        )


def test_invalid_size_has_clear_error():
    with pytest.raises(UNetCellsError, match=r"not a valid input size.*572 or 588"):
        U.output_size(580)
    with pytest.raises(UNetCellsError, match="188"):
        U.output_size(100)


def test_same_padding_keeps_size():
    cfg = ModelConfig(base=2, depth=2, padding="same", dropout=0.0)
    net = U.UNet(cfg).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 48)).shape == (1, 2, 32, 48)
    assert U.context_margin(2, "same") == 0
    assert U.is_valid_input_size(32, 2, "same") and not U.is_valid_input_size(30, 2, "same")


def test_paper_init_std():
    net = U.UNet(ModelConfig(base=32, depth=2))
    net.reset_parameters(torch.Generator().manual_seed(0))
    conv = net.down[1][0]  # 3x3, 32 -> 64 channels: N = 9 * 32
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.05)
    up = net.up[0].up  # 2x2 up-conv: N = in_channels
    assert up.weight.std().item() == pytest.approx((2 / up.in_channels) ** 0.5, rel=0.05)
    assert all(m.bias.abs().max() == 0 for m in (conv, up))


def test_seeded_init_is_reproducible(tiny_config):
    a, b = U.UNet(tiny_config), U.UNet(tiny_config)
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_batch_norm_and_dropout_options():
    net = U.UNet(ModelConfig(base=2, depth=2, batch_norm=True, dropout=0.5))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.dropout.p == 0.5
    x = torch.randn(2, 1, 44, 44)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # eval: dropout and batch norm are deterministic


def test_bad_config_is_clear():
    with pytest.raises(UNetCellsError, match="padding"):
        ModelConfig(padding="reflect")
    with pytest.raises(UNetCellsError, match="n_classes"):
        ModelConfig(n_classes=1)
    with pytest.raises(UNetCellsError, match="depth"):
        ModelConfig(depth=0)
