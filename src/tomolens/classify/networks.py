"""3D CNN subtomogram classifiers (torch).

Both networks take ``(B, 1, box, box, box)`` float32 z-scored cubes and return class
logits ``(B, n_classes)``; ``features(x)`` returns the penultimate-layer activations and
``forward_with_embedding(x)`` the logits together with the embedding that
:mod:`tomolens.cluster` clusters for subdivision.

- :class:`SeedCNN3D` is the network of Liu et al. 2020 (seed 000): conv 32, conv 32,
  max-pool, conv 64, conv 64, max-pool, dense 512, dense 512, dense N — with batch norm
  after every convolution and dropout before the dense layers.  About 17 M parameters
  at a 32³ box, most of them in the first dense layer.
- :class:`ResNet3DSmall` is our variant: a strided stem, three stages of residual blocks
  (16, 32, 64 channels at box/2, box/4, box/8) and global average pooling into a 64-wide
  feature vector.  About 0.3 M parameters, about 16 times fewer multiply-adds than the
  seed network, and it accepts any box divisible by 8.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES = {
    "seed": "tomolens.classify.networks:SeedCNN3D",
    "resnet": "tomolens.classify.networks:ResNet3DSmall",
}


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class SeedCNN3D(nn.Module):
    """The seed's 3D CNN with batch norm and dropout.

    Parameters
    ----------
    n_classes : int
        Output classes.
    box : int
        Cube edge in voxels (divisible by 4).
    dropout : float
        Dropout probability before each dense layer.
    """

    def __init__(self, n_classes: int, box: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        if box % 4:
            raise ValueError(f"SeedCNN3D needs a box divisible by 4; got {box}.")
        self.body = nn.Sequential(
            _conv_bn_relu(1, 32),
            _conv_bn_relu(32, 32),
            nn.MaxPool3d(2),
            _conv_bn_relu(32, 64),
            _conv_bn_relu(64, 64),
            nn.MaxPool3d(2),
            nn.Flatten(),
        )
        flat = 64 * (box // 4) ** 3
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(flat, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape (B, 512)."""
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, N) and the subdivision embedding: the penultimate activations (B, 512)."""
        f = self.features(x)
        return self.classifier(f), f


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout))
        self.skip = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.skip(x))


class ResNet3DSmall(nn.Module):
    """A small residual 3D CNN with global average pooling.

    Parameters
    ----------
    n_classes : int
        Output classes.
    box : int
        Cube edge in voxels (divisible by 8); kept on the card, the network itself
        accepts any size.
    width : int
        Channels of the first stage (then 2×, 4×).
    dropout : float
        Dropout probability before the last layer.
    """

    def __init__(self, n_classes: int, box: int = 32, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        if box % 8:
            raise ValueError(f"ResNet3DSmall needs a box divisible by 8; got {box}.")
        w = width
        self.body = nn.Sequential(
            _conv_bn_relu(1, w, stride=2),
            _ResBlock(w, w, 1),
            _ResBlock(w, 2 * w, 2),
            _ResBlock(2 * w, 2 * w, 1),
            _ResBlock(2 * w, 4 * w, 2),
            _ResBlock(4 * w, 4 * w, 1),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape (B, 4 × width)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, N) and the subdivision embedding (B, 7 × width): the global averages of
        the three residual stages' outputs, the last of which is :meth:`features`.

        The earlier stages are less specialised to the training classes, which helps classes
        absent from training form clusters of their own: on the validation split of
        ``benchmarks/bench_classify.py`` (8 of 10 classes trained, SNR 0.05) the adjusted Rand
        index rose from 0.79 to 0.81 on average over k-means/agglomerative and k = 10/silhouette.
        """
        h = self.body[0](x)
        pooled = []
        for k, block in enumerate(self.body[1:6]):
            h = block(h)
            if k in (0, 2, 4):  # the end of each stage
                pooled.append(h.mean(dim=(2, 3, 4)))
        return self.classifier(pooled[-1]), torch.cat(pooled, dim=1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
