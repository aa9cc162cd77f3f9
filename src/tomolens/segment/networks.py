"""Segmentation networks: the engine's U-Nets, and a wrapper running a 2D U-Net slice by slice.

Imports torch at import time; only imported when a network is needed.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES = {"2d": "tomolens.models.unet:UNet2D", "3d": "tomolens.models.unet:UNet3D"}


def build_segmentation_network(
    kind: str, n_classes: int, base_channels: int = 16, depth: int = 2, context: int = 0
) -> tuple[nn.Module, str, dict]:
    """A fresh U-Net with ``n_classes`` output channels.

    Parameters
    ----------
    kind : {"2d", "3d"}
        Slice U-Net (seed 001) or volumetric U-Net.
    context : int
        2D only: neighbouring slices on each side the slice U-Net reads as extra input
        channels (2·context + 1 in all; 0 = the slice alone).  Ignored for 3D.

    Returns
    -------
    (network, architecture import path, constructor kwargs) — the last two go on the card.
    """
    from tomolens.models.unet import UNet2D, UNet3D

    if kind not in ARCHITECTURES:
        raise ValueError(f"Unknown model kind {kind!r}; use '2d' (slice U-Net) or '3d'.")
    in_channels = 2 * int(context) + 1 if kind == "2d" else 1
    kwargs = {
        "in_channels": in_channels,
        "out_channels": int(n_classes),
        "base_channels": int(base_channels),
        "depth": int(depth),
    }
    net = (UNet2D if kind == "2d" else UNet3D)(**kwargs)
    return net, ARCHITECTURES[kind], kwargs


class SliceWise(nn.Module):
    """Run a 2D network on (N, 1, 1 + 2·context, y, x) patches: one slice (and its neighbours) per patch.

    Lets :func:`tomolens.models.tiling.predict_tiled` drive a 2D U-Net over a 3D volume
    with patches of shape (1, py, px) and ``context`` slices of context on each side (the
    network's input channels); ``size_multiple`` is 1 because the z extent is one slice
    (the y/x patch sizes must still be multiples of the 2D network's).
    """

    size_multiple = 1

    def __init__(self, net: nn.Module, context: int = 0) -> None:
        super().__init__()
        self.net = net
        self.context = int(context)
        self.out_channels = net.out_channels
        self.plane_multiple = net.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 1 + 2·context, y, x) → (N, C, 1, y, x) logits of the middle slice."""
        slab = 1 + 2 * self.context
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != slab:
            raise ValueError(f"SliceWise expects (N, 1, {slab}, y, x) patches; got {tuple(x.shape)}.")
        return self.net(x[:, 0])[:, :, None]
