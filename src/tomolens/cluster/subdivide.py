"""Subdivide particles by clustering learned features.

Two feature sources (``features``):

- ``"classifier"`` (default): a classifier's ``forward_with_embedding`` (``model``): for
  the ResNet the pooled outputs of its three stages, for the seed CNN its penultimate
  layer; the classifier's class columns are added to the table;
- ``"embedding"``: a general particle embedding of :mod:`tomolens.embed`, trained by
  metric learning on domain-randomised maps and pseudo-proteins (``embed_model``).  None
  is shipped yet: the one trained so far did not beat the classifier's features on
  held-out maps at SNR 0.05 (docs/embedding.md).

Following Xu et al. 2017 (seed 003): a supervised 3D CNN learns structural features;
those features, clustered without labels, split the particles into homogeneous subsets —
including structures the network never saw — whose averages recover the structures.

Features are standardised and reduced by PCA (to at most ``max_dims`` components)
before clustering with scikit-learn: k-means (k chosen by the silhouette score or
given), agglomerative (Ward) or HDBSCAN (label −1 = noise).  A 2D embedding (PCA or
t-SNE) is returned for plotting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tomolens.jobs import Progress
from tomolens.params import Param

log = logging.getLogger(__name__)

METHODS = ("kmeans", "agglomerative", "hdbscan")
FEATURE_SOURCES = ("embedding", "classifier")
EMBEDDINGS = ("pca", "tsne")
#: Fewest points that can be clustered.
MIN_POINTS = 6

#: User settings of subdivision (CLI options and widget controls).
SUBDIVIDE_PARAMS = (
    Param(
        "features",
        "classifier",
        "Features to cluster: the classifier's learned features, or a general "
        "particle embedding (features = embedding, with an embedding model file)",
        choices=FEATURE_SOURCES,
    ),
    Param(
        "embed_model",
        "embed_default",
        "Embedding name or a .pt/.json embedding model file (features = "
        "embedding; none is shipped yet: train one with tomolens train --task embed)",
        type=str,
        advanced=True,
    ),
    Param("method", "kmeans", "Clustering: k-means, agglomerative (Ward) or HDBSCAN", choices=METHODS),
    Param("n_clusters", 0, "Clusters for k-means/agglomerative (0 = choose by silhouette score)", min=0, max=100),
    Param("k_max", 12, "Largest k tried when choosing by silhouette", min=2, max=100, advanced=True),
    Param("min_cluster_size", 10, "HDBSCAN: smallest cluster, particles", min=2, max=100000, advanced=True),
    Param("embedding", "pca", "2D embedding for the plot: PCA, or t-SNE (slower)", choices=EMBEDDINGS),
    Param("seed", 0, "Random seed of k-means and t-SNE", advanced=True),
)


@dataclass
class Clustering:
    """Cluster labels and how they were chosen.

    Attributes
    ----------
    labels : ndarray, int64, shape (N,)
        Cluster per point, 0..k-1; −1 = noise (HDBSCAN only).
    n_clusters : int
    method : str
    silhouette : dict
        ``{k: score}`` for the k values tried (k-means/agglomerative with k chosen
        automatically), else the score of the result when defined.
    """

    labels: np.ndarray
    n_clusters: int
    method: str
    silhouette: dict = field(default_factory=dict)


def reduce_features(features: np.ndarray, max_dims: int = 32, seed: int = 0) -> np.ndarray:
    """Standardise features and keep their first principal components.

    Parameters
    ----------
    features : ndarray, shape (N, F)

    Returns
    -------
    ndarray, float64, shape (N, min(max_dims, N - 1, F))
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"Features must be a 2D array (points, features); got shape {x.shape}.")
    x = StandardScaler().fit_transform(x)
    dims = max(1, min(max_dims, x.shape[0] - 1, x.shape[1]))
    return PCA(n_components=dims, random_state=seed).fit_transform(x)


def _fit(method: str, x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering, KMeans

    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


def cluster_features(
    features: np.ndarray,
    method: str = "kmeans",
    n_clusters: int = 0,
    k_max: int = 12,
    min_cluster_size: int = 10,
    max_dims: int = 32,
    seed: int = 0,
) -> Clustering:
    """Cluster feature vectors.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        One feature vector per particle.
    method : {"kmeans", "agglomerative", "hdbscan"}
    n_clusters : int
        k for k-means/agglomerative; 0 chooses k in 2..k_max by the silhouette score.
    k_max : int
        Largest k tried when choosing automatically.
    min_cluster_size : int
        HDBSCAN's smallest cluster.
    max_dims : int
        PCA components kept before clustering.
    seed : int

    Returns
    -------
    Clustering

    Raises
    ------
    ValueError
        Too few points, an unknown method or an impossible k.
    """
    from sklearn.metrics import silhouette_score

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    n = len(features)
    if n < MIN_POINTS:
        raise ValueError(f"Clustering needs at least {MIN_POINTS} particles; got {n}. Pick more particles.")
    if n_clusters and not 2 <= n_clusters < n:
        raise ValueError(f"The number of clusters must be between 2 and {n - 1} for {n} particles; got {n_clusters}.")
    x = reduce_features(features, max_dims, seed)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        size = max(2, min(min_cluster_size, n // 2))
        labels = HDBSCAN(min_cluster_size=size).fit_predict(x)
        k = int(labels.max() + 1)
        good = labels >= 0
        score = {}
        if 2 <= k < good.sum():
            score = {k: float(silhouette_score(x[good], labels[good]))}
        return Clustering(labels.astype(np.int64), k, method, score)
    if n_clusters:
        labels = _fit(method, x, n_clusters, seed)
        return Clustering(labels.astype(np.int64), n_clusters, method, {n_clusters: float(silhouette_score(x, labels))})
    scores, fits = {}, {}
    for k in range(2, min(k_max, n - 1) + 1):
        fits[k] = _fit(method, x, k, seed)
        scores[k] = float(silhouette_score(x, fits[k]))
    best = max(scores, key=scores.get)
    log.info("silhouette scores %s → k = %d", {k: round(v, 3) for k, v in scores.items()}, best)
    return Clustering(fits[best].astype(np.int64), best, method, scores)


def embed_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2D embedding of the features for plotting.

    Returns
    -------
    ndarray, float32, shape (N, 2)
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}; got {method!r}.")
    x = reduce_features(features, 32, seed)
    if x.shape[1] < 2:
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    if method == "pca":
        return x[:, :2].astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
    # Barnes-Hut is slower than the exact gradient below about a thousand points
    tsne_method = "exact" if len(x) <= 1000 else "barnes_hut"
    return (
        TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca", method=tsne_method)
        .fit_transform(x)
        .astype(np.float32)
    )


def cluster_averages(subtomograms: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Mean cube of every cluster (noise, −1, left out).

    Returns
    -------
    dict
        ``{cluster: ndarray float32 (b, b, b)}``
    """
    return {int(k): subtomograms[labels == k].mean(axis=0).astype(np.float32) for k in np.unique(labels) if k >= 0}


@dataclass
class Subdivision:
    """Result of :func:`subdivide_points`.

    Attributes
    ----------
    features : pandas.DataFrame
        One row per input point: ``cluster`` (−1 for noise or skipped points), plus the
        classifier's columns with ``features="classifier"``.
    embedding_2d : ndarray, float32, shape (N, 2)
        Plot coordinates per input point (NaN for skipped points).
    averages : dict
        ``{cluster: mean cube (b, b, b)}``.
    clustering : Clustering
    info : dict
        Provenance from classification or embedding (model, voxel sizes — the averages are at
        ``info["model_voxel_size_A"]`` when it is set — and the polarity decision).
    """

    features: pd.DataFrame
    embedding_2d: np.ndarray
    averages: dict
    clustering: Clustering
    info: dict = field(default_factory=dict)


def subdivide_points(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    model: str | os.PathLike = "classify_phantoms_resnet",
    voxel_size_A: float | None = None,
    method: str = "kmeans",
    n_clusters: int = 0,
    k_max: int = 12,
    min_cluster_size: int = 10,
    embedding: str = "pca",
    edge: str = "pad",
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    polarity: str = "auto",
    features: str = "classifier",
    embed_model: str | os.PathLike = "embed_default",
    unknown_scale: float = 1.0,
) -> Generator[Progress, None, Subdivision]:
    """Cluster particles by learned features (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    coords_zyx : array, shape (N, 3), voxels
    model : str or path
        Shipped classifier name or model path (``features="classifier"``).
    features : {"embedding", "classifier"}
        Cluster the general embedding (``embed_model``) or the classifier's features.
    embed_model : str or path
        Shipped embedding name or model path (``features="embedding"``).
    unknown_scale : float
        ``features="classifier"``: the classifier's unknown marking
        (:func:`tomolens.classify.predict.classify_points`); it changes the ``class``
        column only, never the clustering.
    Other parameters: see :func:`cluster_features` and
    :func:`tomolens.classify.predict.classify_points`.

    Returns
    -------
    Subdivision
        With ``features="embedding"`` the table holds only ``cluster``; with
        ``"classifier"`` also the classifier's columns.
    """
    if features not in FEATURE_SOURCES:
        raise ValueError(f"features must be one of {FEATURE_SOURCES}; got {features!r}.")
    n_points = len(np.asarray(coords_zyx))
    if n_points < MIN_POINTS:
        raise ValueError(f"Subdivision needs at least {MIN_POINTS} particles; got {n_points}. Pick more particles.")
    if features == "classifier":
        from tomolens.classify.predict import classify_points

        result = yield from classify_points(
            tomogram,
            coords_zyx,
            model,
            voxel_size_A,
            edge=edge,
            batch_size=batch_size,
            device=device,
            polarity=polarity,
            unknown_scale=unknown_scale,
        )
        table = result.features.copy()
    else:
        from tomolens.embed.predict import embed_points

        result = yield from embed_points(
            tomogram,
            coords_zyx,
            embed_model,
            voxel_size_A,
            edge=edge,
            batch_size=batch_size,
            device=device,
            polarity=polarity,
        )
        table = pd.DataFrame(index=pd.RangeIndex(n_points))
    if len(result.indices) < MIN_POINTS:
        raise ValueError(
            f"Only {len(result.indices)} particles lie far enough from the tomogram's edge "
            f"(edge = {edge!r}); subdivision needs at least {MIN_POINTS}. Use edge = 'pad'."
        )
    yield Progress(0, 2, f"clustering {len(result.indices)} particles ({method}, {features} features)")
    clustering = cluster_features(result.embedding, method, n_clusters, k_max, min_cluster_size, seed=seed)
    yield Progress(1, 2, "2D embedding")
    emb = embed_2d(result.embedding, embedding, seed)
    cluster = np.full(n_points, -1, np.int64)
    cluster[result.indices] = clustering.labels
    table["cluster"] = cluster
    emb_full = np.full((n_points, 2), np.nan, np.float32)
    emb_full[result.indices] = emb
    averages = cluster_averages(result.subtomograms, clustering.labels)
    yield Progress(2, 2, f"{clustering.n_clusters} clusters")
    return Subdivision(table, emb_full, averages, clustering, {**result.info, "features": features})
