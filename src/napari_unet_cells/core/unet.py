"""The 2015 U-Net (Ronneberger, Fischer, Brox; arXiv 1505.04597) and its tile arithmetic.

Each level has two 3x3 convolutions + ReLU; unpadded ("valid") by default, so every
convolution loses 2 px. The contracting path halves the size with 2x2 max-pooling and
doubles the channels; the expanding path doubles the size with a 2x2 up-convolution that
halves the channels, then concatenates the centre crop of the matching contracting
feature map. A 1x1 convolution maps to class scores. With depth 4 an input of 572 px
gives an output of 388 px: 92 px of context are lost on every side.

The size arithmetic (any depth) lives in core/unet_sizes.py, which needs no torch; it is
importable from here too.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .config import ModelConfig
from .errors import UNetCellsError
from .unet_sizes import (
    context_margin,
    input_size_for_output,
    is_valid_input_size,
    min_input_size,
    nearest_valid_input_size,
)

__all__ = [
    "DoubleConv",
    "UNet",
    "Up",
    "context_margin",
    "count_conv_layers",
    "count_parameters",
    "input_size_for_output",
    "is_valid_input_size",
    "min_input_size",
    "nearest_valid_input_size",
    "output_size",
    "valid_input_sizes",
]

# --------------------------------------------------------------------------------------
# tile arithmetic (sizes in pixels, along one axis): core/unet_sizes.py, without torch
# --------------------------------------------------------------------------------------


def output_size(
    input_size: int, depth: int = 4, padding: Literal["valid", "same"] = "valid"
) -> int:
    """The network's output size for an input size.

    Parameters
    ----------
    input_size : int
        Input size in pixels along one axis; must be valid (see :func:`is_valid_input_size`).
    depth : int
        The number of 2x2 poolings.
    padding : {"valid", "same"}
        Unpadded (the paper) or zero-padded convolutions.

    Returns
    -------
    int
        The output size in pixels (572 -> 388 for depth 4, valid padding). Raises
        UNetCellsError naming the nearest valid sizes when ``input_size`` is not valid.
    """
    if not is_valid_input_size(input_size, depth, padding):
        below = nearest_valid_input_size(input_size, depth, padding, direction="down")
        above = nearest_valid_input_size(input_size, depth, padding, direction="up")
        hint = f"{above}" if below is None else f"{below} or {above}"
        raise UNetCellsError(
            f"{input_size} px is not a valid input size for a {padding} U-Net of depth "
            f"{depth}; use {hint} px (valid sizes: {_size_rule(depth, padding)})."
        )
    return input_size if padding == "same" else input_size - 2 * context_margin(depth)


def valid_input_sizes(
    max_size: int, depth: int = 4, padding: Literal["valid", "same"] = "valid"
) -> list[int]:
    """All valid input sizes up to ``max_size``.

    Parameters
    ----------
    max_size : int
        The largest size to list, in pixels.
    depth, padding
        As :func:`output_size`.

    Returns
    -------
    list of int
        Increasing sizes in pixels (16k + 12 from 188 for depth 4, valid padding).
    """
    return list(range(min_input_size(depth, padding), max_size + 1, 2**depth))


def _size_rule(depth: int, padding: str) -> str:
    step = 2**depth
    if padding == "same":
        return f"multiples of {step}"
    smallest = min_input_size(depth)
    return f"{step}k + {smallest % step}, from {smallest} px"


# --------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (batch norm and) ReLU.

    (N, C_in, H, W) -> (N, C_out, H - 4, W - 4) valid, or (N, C_out, H, W) same.
    """

    def __init__(self, c_in: int, c_out: int, padding: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """2x2 up-convolution halving the channels, crop-and-concatenate, DoubleConv.

    x: (N, 2C, h, w), skip: (N, C, H, W) with H >= 2h -> (N, C, 2h - 4, 2w - 4) valid.
    """

    def __init__(self, c_in: int, c_out: int, padding: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy = (skip.shape[-2] - x.shape[-2]) // 2
        dx = (skip.shape[-1] - x.shape[-1]) // 2
        skip = skip[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The 2015 U-Net. (N, in_channels, H, W) float -> (N, n_classes, H', W') logits.

    H' = output_size(H, depth) for valid padding (H - 184 for depth 4), H' = H for same.
    The contracting-path features after the deepest block pass through dropout
    ("drop-out layers at the end of the contracting path", paper section 3.1).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        # torch's default layer init draws from the global RNG: leave it untouched
        with torch.random.fork_rng(devices=[]):
            self._build(config or ModelConfig())

    def _build(self, config: ModelConfig) -> None:
        self.config = config
        pad = 1 if config.padding == "same" else 0
        widths = [config.base * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        c_prev = config.in_channels
        for width in widths:
            self.down.append(DoubleConv(c_prev, width, pad, config.batch_norm))
            c_prev = width
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(config.dropout)
        self.up = nn.ModuleList(
            Up(widths[i + 1], widths[i], pad, config.batch_norm)
            for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The paper's init: weights ~ N(0, sqrt(2 / N)), N = inputs of one neuron; bias 0.

        N = k*k*C_in for a convolution, C_in for the 2x2 stride-2 up-convolution (each
        output pixel sees one input pixel per channel).
        """
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                fan_in = module.in_channels
            elif isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            else:
                continue
            with torch.no_grad():
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.zero_()

    def output_size(self, input_size: int) -> int:
        """Output size in pixels for an input size (see module-level ``output_size``)."""
        return output_size(input_size, self.config.depth, self.config.padding)

    @property
    def context_margin(self) -> int:
        """Pixels lost on each side (92 for a valid depth-4 network)."""
        return context_margin(self.config.depth, self.config.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Parameters
        ----------
        x : torch.Tensor
            float (N, in_channels, H, W); H and W valid input sizes.

        Returns
        -------
        torch.Tensor
            float (N, n_classes, H', W') logits, H' = ``self.output_size(H)``.
        """
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))  # (N, base*2^i, ...)
            skips.append(x)
        x = self.dropout(skips.pop())  # deepest features: (N, base*2^depth, h, w)
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)  # (N, n_classes, H', W')


def count_parameters(net: nn.Module) -> int:
    """The number of trainable parameters.

    Parameters
    ----------
    net : torch.nn.Module
        Any network.

    Returns
    -------
    int
        31,030,658 for the paper's U-Net (base 64, depth 4, 1 input, 2 classes).
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_conv_layers(net: nn.Module) -> int:
    """The number of convolution layers (3x3, 2x2 up-convolutions and the 1x1 head).

    Parameters
    ----------
    net : torch.nn.Module
        Any network.

    Returns
    -------
    int
        23 for the paper's U-Net (depth 4).
    """
    return sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in net.modules())
