"""The 2015 U-Net (Ronneberger, Fischer, Brox; arXiv 1505.04597), standalone.

This file is copied into every bioimage.io package that napari-unet-cells exports, as
the ``pytorch_state_dict`` architecture: it needs only torch, so any bioimage.io
consumer (bioimageio.core, ilastik, other napari plugins) can rebuild the network from
it without installing napari-unet-cells. Its modules and state-dict keys are those of
``napari_unet_cells.core.unet.UNet`` (a test checks that both give the same output
for the same weights).

Each level: two 3x3 convolutions + ReLU, unpadded ("valid") by default; 2x2
max-pooling down, 2x2 up-convolution, crop-and-concatenate up; dropout at the end of
the contracting path; a 1x1 convolution to class scores (logits, no softmax). With
valid padding the output is smaller than the input by 2 * (6 * 2**depth - 4) px per
axis (184 px for depth 4: 572 -> 388); valid input sizes are 2**depth * k + r from the
smallest one (16k + 12 from 188 px for depth 4).
"""

from __future__ import annotations

import torch
from torch import nn


class _DoubleConv(nn.Sequential):
    """(N, C_in, H, W) -> (N, C_out, H - 4, W - 4) valid, or (N, C_out, H, W) same."""

    def __init__(self, c_in: int, c_out: int, padding: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _Up(nn.Module):
    """x: (N, 2C, h, w), skip: (N, C, H, W) -> (N, C, 2h - 4, 2w - 4) valid."""

    def __init__(self, c_in: int, c_out: int, padding: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = _DoubleConv(2 * c_out, c_out, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy = (skip.shape[-2] - x.shape[-2]) // 2
        dx = (skip.shape[-1] - x.shape[-1]) // 2
        skip = skip[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
        return self.conv(torch.cat([skip, x], dim=1))


class UNet2015(nn.Module):
    """(N, in_channels, H, W) float32 -> (N, n_classes, H', W') logits.

    Parameters
    ----------
    in_channels : int
        Image channels.
    n_classes : int
        Output classes (background first).
    base : int
        Channels of the first level (paper: 64).
    depth : int
        Number of 2x2 poolings (paper: 4).
    padding : {"valid", "same"}
        Unpadded (paper) or zero-padded 3x3 convolutions.
    dropout : float
        Probability at the end of the contracting path (inactive in eval mode).
    batch_norm : bool
        Batch normalisation after each 3x3 convolution.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        base: int = 64,
        depth: int = 4,
        padding: str = "valid",
        dropout: float = 0.5,
        batch_norm: bool = False,
    ):
        super().__init__()
        pad = 1 if padding == "same" else 0
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for width in widths:
            self.down.append(_DoubleConv(c_prev, width, pad, batch_norm))
            c_prev = width
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], pad, batch_norm) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes, H', W') of a float32 (N, in_channels, H, W) batch; H' = H -
        2 * (6 * 2**depth - 4) px with valid padding, H with same."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)
