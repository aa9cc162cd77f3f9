"""Subdivision of particles by clustering learned features (scikit-learn, no torch at import)."""

from tomolens.cluster.subdivide import (
    Clustering,
    Subdivision,
    cluster_averages,
    cluster_features,
    embed_2d,
    subdivide_points,
)

__all__ = ["Clustering", "Subdivision", "cluster_averages", "cluster_features", "embed_2d", "subdivide_points"]
