"""Small U-Nets in 3D and 2D, of configurable depth and width.

The architecture follows the classic U-Net: ``depth`` down blocks (two 3×3(×3)
convolutions with batch normalisation and ReLU, then a 2× max-pool), a bottleneck,
and ``depth`` up blocks (2× transposed convolution, concatenation with the skip
connection, two convolutions).  Seed 002 used ``depth=2``.  Input sizes along every
spatial axis must be divisible by ``2 ** depth``; the network checks and says so.

This module imports torch at import time; import it only when a network is needed.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(dims: int, c_in: int, c_out: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    norm = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
    drop = nn.Dropout3d if dims == 3 else nn.Dropout2d
    layers: list[nn.Module] = []
    for c_a, c_b in ((c_in, c_out), (c_out, c_out)):
        layers.append(conv(c_a, c_b, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(norm(c_b))
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(drop(dropout))
    return nn.Sequential(*layers)


class _UNet(nn.Module):
    dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 2,
        batch_norm: bool = True,
        dropout: float = 0.0,
        channel_growth: int = 2,
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"U-Net needs depth ≥ 1 and positive channel counts; got depth={depth}, "
                f"base_channels={base_channels}, in={in_channels}, out={out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        conv = nn.Conv3d if self.dims == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if self.dims == 3 else nn.ConvTranspose2d
        self.pool = nn.MaxPool3d(2) if self.dims == 3 else nn.MaxPool2d(2)
        widths = [base_channels * channel_growth**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for w in widths[:-1]:
            self.down.append(_conv_block(self.dims, c_prev, w, batch_norm, 0.0))
            c_prev = w
        self.bottleneck = _conv_block(self.dims, c_prev, widths[-1], batch_norm, dropout)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.upsample.append(up(widths[i + 1], widths[i], kernel_size=2, stride=2))
            self.up.append(_conv_block(self.dims, 2 * widths[i], widths[i], batch_norm, 0.0))
        self.head = conv(widths[0], out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes of the input must be multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, out_channels, *spatial) for input (N, in_channels, *spatial)."""
        if x.ndim != self.dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects a (batch, channel, {'z, ' if self.dims == 3 else ''}y, x) "
                f"tensor with {self.dims} spatial axes; got shape {tuple(x.shape)}."
            )
        if any(s % self.size_multiple for s in x.shape[2:]):
            raise ValueError(
                f"Patch size {tuple(x.shape[2:])} is not divisible by {self.size_multiple} "
                f"(2**depth, depth={self.depth}); pad or choose another patch size."
            )
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips)):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


class UNet3D(_UNet):
    """3D U-Net: input (N, in_channels, z, y, x) → logits (N, out_channels, z, y, x).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts of input and output.
    base_channels : int
        Width of the first level; level ``i`` has ``base_channels * channel_growth**i``.
    depth : int
        Number of down (and up) blocks; sizes must be divisible by ``2**depth``.
    batch_norm : bool
        Batch normalisation after every convolution.
    dropout : float
        Channel dropout at the bottleneck (0 = none).
    channel_growth : int
        Channel multiplier per level.
    """

    dims = 3


class UNet2D(_UNet):
    """2D U-Net with the same signature as :class:`UNet3D`: (N, C, y, x) → (N, out, y, x)."""

    dims = 2
