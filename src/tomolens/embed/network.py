"""The embedding network: a small residual 3D CNN with a unit-norm projection head.

The body is the residual body of :class:`tomolens.classify.networks.ResNet3DSmall` (a
strided stem and three stages of 16, 32, 64 channels at box/2, box/4, box/8 for
``width=16``); the global averages of the three stages' outputs (7 × width values) go
through a two-layer projection head (with batch norm, which keeps the untrained embeddings
from starting collapsed onto one direction) to ``dim`` values, which are L2-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from tomolens.classify.networks import ResNet3DSmall


class EmbedNet3D(nn.Module):
    """Subtomogram → unit-norm embedding.

    Parameters
    ----------
    dim : int
        Embedding size.
    box : int
        Cube edge in voxels (divisible by 8); kept on the card, the network accepts any size.
    width : int
        Channels of the first stage (then 2×, 4×).

    Input ``(B, 1, box, box, box)`` float32 z-scored cubes; output ``(B, dim)`` float32 with
    unit L2 norm.
    """

    def __init__(self, dim: int = 48, box: int = 32, width: int = 16) -> None:
        super().__init__()
        self.body = ResNet3DSmall(n_classes=1, box=box, width=width, dropout=0.0).body
        self.head = nn.Sequential(
            nn.Linear(7 * width, 4 * width), nn.BatchNorm1d(4 * width), nn.ReLU(inplace=True), nn.Linear(4 * width, dim)
        )

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global averages of the three stages' outputs, shape (B, 7 × width)."""
        h = self.body[0](x)
        out = []
        for k, block in enumerate(self.body[1:6]):
            h = block(h)
            if k in (0, 2, 4):
                out.append(h.mean(dim=(2, 3, 4)))
        return torch.cat(out, dim=1)

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (..., dim) of pooled stage features (..., 7 × width)."""
        shape = pooled.shape
        out = self.head(pooled.reshape(-1, shape[-1]))
        return nn.functional.normalize(out, dim=1).reshape(*shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_pooled(self.pooled(x))
