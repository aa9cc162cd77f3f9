"""Embed particles: subtomograms → unit-norm vectors of the shipped embedding (or another).

:func:`embed_points` cuts a subtomogram at every position at the model's box, voxel size
and polarity (the same extraction as classification,
:func:`tomolens.classify.predict.model_subtomograms`) and returns one embedding row per
extracted point.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from tomolens.jobs import Progress

log = logging.getLogger(__name__)

#: The shipped embedding model.
DEFAULT_EMBED_MODEL = "embed_default"


@dataclass
class Embedding:
    """Embeddings of a set of points.

    Attributes
    ----------
    embedding : ndarray, float32, shape (M, D)
        Unit-norm rows, one per extracted point (rows follow ``indices``).
    indices : ndarray, int64, shape (M,)
    subtomograms : ndarray, float32, shape (M, b, b, b)
        The z-scored cubes at the model's voxel size (for averages).
    padded, skipped : ndarray, int64
        Input indices padded / skipped at the tomogram's edge.
    info : dict
        Provenance: model, voxel sizes, resampling, polarity decision.
    """

    embedding: np.ndarray
    indices: np.ndarray
    subtomograms: np.ndarray
    padded: np.ndarray
    skipped: np.ndarray
    info: dict = field(default_factory=dict)


def load_embedding(model: str | os.PathLike = DEFAULT_EMBED_MODEL, device: str = "cpu"):
    """Load an embedding model safely (task ``"embed"``); (network in eval mode, card).

    Raises
    ------
    ValueError
        The default name when no embedding is shipped with this installation (it is shipped
        only when it beats the classifier's features on held-out maps; see docs/embedding.md),
        or any model-file error.
    """
    from tomolens.models.card import load_model, shipped_models

    if str(model) == DEFAULT_EMBED_MODEL and DEFAULT_EMBED_MODEL not in shipped_models("embed"):
        raise ValueError(
            f"No embedding model {DEFAULT_EMBED_MODEL!r} is shipped with this installation. Train one with "
            "`tomolens train --task embed --embed-init classify_phantoms_resnet --out embed.pt` and give its "
            "embed.pt as the embedding model, or cluster the classifier's features (features = classifier)."
        )
    return load_model(model, device=device, expected_task="embed")


def embed_subtomograms(
    model, x: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Generator[Progress, None, np.ndarray]:
    """Embeddings of z-scored cubes (a job).

    Parameters
    ----------
    model : torch.nn.Module
        An :class:`~tomolens.embed.network.EmbedNet3D` in eval mode.
    x : ndarray, float32, shape (N, b, b, b)

    Returns
    -------
    ndarray, float32, shape (N, D)
    """
    import torch

    out = []
    n_steps = max(1, -(-len(x) // batch_size))
    with torch.no_grad():
        for step in range(n_steps):
            chunk = x[step * batch_size : (step + 1) * batch_size]
            if len(chunk):
                t = torch.from_numpy(np.ascontiguousarray(chunk, np.float32)[:, None]).to(device)
                out.append(model(t).cpu().numpy())
            yield Progress(step + 1, n_steps, "embedding subtomograms")
    dim = int(model.head[-1].out_features)
    return np.concatenate(out).astype(np.float32) if out else np.empty((0, dim), np.float32)


def embed_points(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    model: str | os.PathLike = DEFAULT_EMBED_MODEL,
    voxel_size_A: float | None = None,
    edge: str = "pad",
    batch_size: int = 64,
    device: str = "cpu",
    polarity: str = "auto",
) -> Generator[Progress, None, Embedding]:
    """Embed the particle at every position (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    coords_zyx : array, shape (N, 3), voxels
    model : str or path
        Shipped embedding name or a ``.pt``/``.json`` model path (task ``"embed"``).
    voxel_size_A : float, optional
        The tomogram's voxel size; cubes are resampled to the model's.
    edge : {"pad", "skip"}
    batch_size : int
    device : str
    polarity : {"auto", "dark", "bright"}

    Returns
    -------
    Embedding
    """
    from tomolens.classify.predict import model_subtomograms
    from tomolens.models.device import choose_device

    device = choose_device(device)
    net, card = load_embedding(model, device)
    extraction, info = yield from model_subtomograms(
        tomogram, coords_zyx, card, voxel_size_A, None, edge, batch_size, polarity
    )
    emb = yield from embed_subtomograms(net, extraction.subtomograms, batch_size, device)
    return Embedding(emb, extraction.indices, extraction.subtomograms, extraction.padded, extraction.skipped, info)
