"""Clustering recovers planted clusters; subdivision end to end; bad input."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tomolens.cluster import cluster_averages, cluster_features, embed_2d


def planted(n_per=40, k=4, dims=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (k, dims))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dims)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("method", ["kmeans", "agglomerative", "hdbscan"])
def test_clustering_recovers_planted_clusters(method):
    x, truth = planted()
    result = cluster_features(x, method=method, min_cluster_size=10)
    assert result.n_clusters == 4
    assert adjusted_rand_score(truth, result.labels) > 0.95


def test_silhouette_chooses_k_and_fixed_k_is_kept():
    x, truth = planted(k=3, seed=1)
    auto = cluster_features(x, k_max=6)
    assert auto.n_clusters == 3 and set(auto.silhouette) == set(range(2, 7))
    assert max(auto.silhouette, key=auto.silhouette.get) == 3
    fixed = cluster_features(x, n_clusters=5)
    assert fixed.n_clusters == 5 and len(np.unique(fixed.labels)) == 5


def test_embedding_and_averages():
    x, truth = planted(k=2)
    for method in ("pca", "tsne"):
        emb = embed_2d(x, method)
        assert emb.shape == (80, 2)
        # the two planted groups are apart along the embedding
        assert np.linalg.norm(emb[truth == 0].mean(0) - emb[truth == 1].mean(0)) > emb[truth == 0].std(0).max()
    cubes = np.stack([np.full((4, 4, 4), i % 2, np.float32) for i in range(10)])
    avg = cluster_averages(cubes, np.array([0, 1] * 4 + [-1, -1]))
    assert sorted(avg) == [0, 1] and avg[0].max() == 0 and avg[1].min() == 1


def test_bad_input():
    with pytest.raises(ValueError, match="at least 6 particles"):
        cluster_features(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="method must be"):
        cluster_features(np.zeros((10, 5)), method="dbscan")
    with pytest.raises(ValueError, match="between 2 and 9"):
        cluster_features(np.random.default_rng(0).normal(size=(10, 5)), n_clusters=12)
