"""Synthetic phantoms shared by the classify/cluster tests (sphere, rod, ring, cross) — not a test module."""

import numpy as np


def phantom(kind: str, box: int, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """A noisy cube holding one shape, randomly turned about z and shifted by ≤1 voxel."""
    c = (box - 1) / 2 + rng.uniform(-1, 1, 3)
    z, y, x = np.meshgrid(*(np.arange(box) - c[i] for i in range(3)), indexing="ij")
    a = rng.uniform(0, np.pi)
    u, v = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    r = box / 4
    if kind == "sphere":
        vol = (z**2 + u**2 + v**2) < r**2
    elif kind == "rod":
        vol = (np.abs(u) < box / 2.5) & (z**2 + v**2 < (r / 2.5) ** 2)
    elif kind == "ring":
        rho = np.sqrt(u**2 + v**2)
        vol = (np.abs(rho - r) < 1.5) & (np.abs(z) < 2)
    elif kind == "cross":
        vol = ((np.abs(u) < r) & (np.abs(v) < 1.2) | (np.abs(v) < r) & (np.abs(u) < 1.2)) & (np.abs(z) < r)
    else:
        raise ValueError(kind)
    return (vol.astype(np.float32) + noise * rng.standard_normal(vol.shape)).astype(np.float32)


def phantom_set(kinds, n_per_class, box, seed, noise=0.3):
    rng = np.random.default_rng(seed)
    x = np.stack([phantom(k, box, rng, noise) for k in kinds for _ in range(n_per_class)])
    y = np.repeat(np.arange(len(kinds)), n_per_class)
    x -= x.reshape(len(x), -1).mean(1)[:, None, None, None]
    x /= x.reshape(len(x), -1).std(1)[:, None, None, None]
    return x.astype(np.float32), y.astype(np.int64)


def labelled_tomogram(kinds, n_per_class, box, seed, noise=0.3):
    """A tomogram with phantoms on a grid: (tomogram zyx float32, centres zyx (N, 3), class names (N,))."""
    x, y = phantom_set(kinds, n_per_class, box, seed, noise)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    side = int(np.ceil(np.sqrt(len(x))))
    tomo = np.random.default_rng(seed + 1).normal(0, noise, (box + 4, side * box, side * box)).astype(np.float32)
    centres = []
    for i, cube in enumerate(x):
        r, c = divmod(i, side)
        tomo[2 : 2 + box, r * box : (r + 1) * box, c * box : (c + 1) * box] = cube
        centres.append((2 + box // 2, r * box + box // 2, c * box + box // 2))
    return tomo, np.array(centres, float), np.array([kinds[k] for k in y])
