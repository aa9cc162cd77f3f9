"""Training data of the engine: (image, target) pairs and the random, augmented patches drawn
from them (:class:`PatchSampler`), for :func:`tomolens.models.training.train_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TrainingPair:
    """One training volume and its target.

    Attributes
    ----------
    image : ndarray, shape (z, y, x) (or (y, x) for 2D); (K, z, y, x) / (K, y, x) with ``channels``
        Raw tomogram; z-score normalised by the sampler (over all of its channels).
    target : ndarray, shape (C, z, y, x) or (z, y, x)
        Dense target (float maps or integer labels), same spatial shape as ``image``.
    foreground : ndarray of bool, optional
        Where to centre "foreground" patches; by default ``target > 0`` on channel 0 (not used
        by a class-balanced :class:`PatchSampler`, which centres on each class in turn).
    channels : bool
        ``image`` has a leading axis of K input channels (for example the neighbouring
        z-slices a 2.5D slice network sees); every pair of one training run must have
        the same K, and the network then takes (N, K, *patch).
    """

    image: np.ndarray
    target: np.ndarray
    foreground: np.ndarray | None = None
    channels: bool = False

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The image's shape without its channel axis."""
        return tuple(self.image.shape[1:] if self.channels else self.image.shape)

    def __post_init__(self) -> None:
        spatial = self.spatial_shape
        if tuple(self.target.shape[-len(spatial) :]) != spatial:
            raise ValueError(
                f"Target shape {self.target.shape} does not match image shape {self.image.shape}"
                + (" (channels first)." if self.channels else ".")
            )


#: Most voxels per class that a class-balanced :class:`PatchSampler` keeps to draw centres from.
MAX_CLASS_VOXELS = 1_000_000


class PatchSampler:
    """Random (augmented) patches from a list of :class:`TrainingPair`.

    Parameters
    ----------
    pairs : sequence of TrainingPair
    patch_size : sequence of int
        Patch size (z, y, x); volumes smaller than this are reflect-padded.
    foreground_fraction : float
        Share of patches centred on a random foreground voxel.
    augment : bool
        Flips, y-x 90° rotations, intensity scale (0.8–1.2) and shift (±0.2 σ).
    rotate_any : bool
        With ``augment``: most patches (3 in 4) are also read rotated by any angle in the
        y-x plane and scaled by 0.85–1.15 (:meth:`_rotated_patch`; images linearly
        interpolated, integer targets by nearest neighbour, unpainted (0) outside the image).
    flip_channels : bool
        With ``augment``: reverse the order of the input channels in half of the patches
        (for channels that are neighbouring z-slices, a flip along z).
    balance_classes : bool
        Centre the ``foreground_fraction`` share of patches on every class equally often: a
        class drawn uniformly among the integer target values > 0 of all pairs, then one of its
        voxels (:meth:`_class_voxels`, at most :data:`MAX_CLASS_VOXELS` per class), instead of a
        foreground voxel drawn uniformly; :attr:`TrainingPair.foreground` is then not used.  For
        painted labels where one class (background) covers most of the painting and a rare
        structure would be in few patches.  Integer targets only.
    """

    def __init__(
        self,
        pairs: Sequence[TrainingPair],
        patch_size: Sequence[int],
        foreground_fraction: float = 0.5,
        augment: bool = True,
        rotate_any: bool = False,
        flip_channels: bool = False,
        balance_classes: bool = False,
    ) -> None:
        if not pairs:
            raise ValueError("Training needs at least one (tomogram, target) pair.")
        self.patch = tuple(int(p) for p in patch_size)
        self.ndim = len(self.patch)
        self.augment = augment
        self.rotate_any = rotate_any
        self.flip_channels = flip_channels
        self.foreground_fraction = foreground_fraction
        self.images, self.targets, self.fg = [], [], []  # images (K, *spatial), targets (C, *spatial)
        for pair in pairs:
            if len(pair.spatial_shape) != self.ndim:
                raise ValueError(
                    f"Patch size {self.patch} needs {self.ndim}D images; got {pair.image.shape}"
                    + (" (channels first)." if pair.channels else ".")
                )
            img = np.asarray(pair.image, np.float32)
            img = (img - img.mean()) / max(float(img.std()), 1e-6)
            if not pair.channels:
                img = img[None]
            if self.images and img.shape[0] != self.images[0].shape[0]:
                raise ValueError(
                    f"Training pairs have different numbers of input channels "
                    f"({self.images[0].shape[0]} and {img.shape[0]})."
                )
            tgt = np.asarray(pair.target)
            if tgt.ndim == self.ndim:
                tgt = tgt[None]
            pad = [(0, max(0, p - s)) for p, s in zip(self.patch, img.shape[1:])]
            if any(a for _, a in pad):
                img = np.pad(img, [(0, 0), *pad], mode="reflect")
                tgt = np.pad(tgt, [(0, 0), *pad], mode="constant")
            if balance_classes:  # centres come from the classes (:meth:`_class_voxels`)
                coords = np.zeros((0, self.ndim), np.int64)
            else:
                fg = pair.foreground if pair.foreground is not None else tgt[0] > 0
                if fg.shape != img.shape[1:]:
                    fg = np.pad(fg, [(0, p - s) for p, s in zip(img.shape[1:], fg.shape)])
                coords = np.argwhere(fg)
            self.images.append(img)
            self.targets.append(tgt)
            self.fg.append(coords)
        self.weights = np.array([im[0].size for im in self.images], float)
        self.weights /= self.weights.sum()
        self.by_class = (self._class_voxels() or None) if balance_classes else None

    def _class_voxels(self, cap: int = MAX_CLASS_VOXELS) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per class (integer target value > 0, ascending): (pair indices int32, flat voxel indices int64
        into the pair's padded spatial shape) of its voxels.

        At most ``cap`` voxels per class, drawn at random with a fixed seed, and at most ``cap``
        per pair while reading (dense 3D labels of many volumes would otherwise hold hundreds
        of MB of coordinates); below the cap, in pair order and then voxel order.
        """
        pick = np.random.default_rng(0)
        found: dict[int, list] = {}
        for k, tgt in enumerate(self.targets):
            if not np.issubdtype(tgt.dtype, np.integer):
                raise ValueError(
                    f"balance_classes needs integer class targets (painted labels); got {tgt.dtype} targets."
                )
            flat = tgt[0].ravel()
            for value in np.flatnonzero(np.bincount(flat[flat > 0])):
                idx = np.flatnonzero(flat == value)
                if len(idx) > cap:
                    idx = np.sort(pick.choice(idx, cap, replace=False))
                found.setdefault(int(value), []).append((k, idx))
        out = []
        for value in sorted(found):
            pairs = np.concatenate([np.full(len(idx), k, np.int32) for k, idx in found[value]])
            flat = np.concatenate([idx for _, idx in found[value]])
            if len(flat) > cap:
                keep = pick.choice(len(flat), cap, replace=False)
                pairs, flat = pairs[keep], flat[keep]
            out.append((pairs, flat))
        return out

    def _draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """(pair index, patch start) of the next patch."""
        if self.by_class and rng.random() < self.foreground_fraction:
            pairs, flat = self.by_class[int(rng.integers(len(self.by_class)))]
            j = int(rng.integers(len(flat)))
            k = int(pairs[j])
            centre = np.unravel_index(int(flat[j]), self.images[k].shape[1:])
            return k, self._around(centre, k, rng)
        k = int(rng.choice(len(self.images), p=self.weights))
        coords = self.fg[k]
        if self.by_class is None and len(coords) and rng.random() < self.foreground_fraction:
            return k, self._around(coords[rng.integers(len(coords))], k, rng)
        shape = self.images[k].shape[1:]
        return k, tuple(int(rng.integers(0, s - p + 1)) for p, s in zip(self.patch, shape))

    def _around(self, centre: Sequence[int], k: int, rng: np.random.Generator) -> tuple[int, ...]:
        """A patch start that puts ``centre`` near the middle of the patch (± a quarter), inside pair ``k``."""
        shape = self.images[k].shape[1:]
        return tuple(
            int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, s - p))
            for c, p, s in zip(centre, self.patch, shape)
        )

    def sample(self, n: int, rng: np.random.Generator, augment: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` patches: input (n, K, *patch) float32 (K = 1 without channels) and target (n, C, *patch)."""
        augment = self.augment if augment is None else augment
        xs, ys = [], []
        for _ in range(n):
            k, start = self._draw(rng)
            if augment and self.rotate_any and rng.random() < 0.75:
                x, y = self._rotated_patch(k, start, rng)
            else:
                sl = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
                x = self.images[k][(slice(None), *sl)]
                y = self.targets[k][(slice(None), *sl)]
            if augment:
                x, y = self._augment(x, y, rng)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return np.stack(xs).astype(np.float32), np.stack(ys)

    def _rotated_patch(self, k: int, start: Sequence[int], rng: np.random.Generator):
        """The patch at ``start`` of pair ``k``, rotated in the y-x plane by a random angle and scaled.

        Returns (image (K, *patch) float32, target (C, *patch)): images by linear interpolation
        (reflected at the faces), integer targets by nearest neighbour with 0 (unpainted, ignored by
        sparse losses) outside the image, float targets linearly with 0 outside.
        """
        from scipy.ndimage import map_coordinates

        image, target = self.images[k], self.targets[k]
        angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.15)
        ny, nx = self.patch[-2:]
        yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
        cy, cx = start[-2] + (ny - 1) / 2, start[-1] + (nx - 1) / 2
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        plane = np.stack([cy + c * yy - s * xx, cx + s * yy + c * xx])
        if self.ndim == 3:  # the same rotation on every z-slice of the patch
            z = np.arange(start[0], start[0] + self.patch[0], dtype=float)[:, None, None]
            coords = np.stack([np.broadcast_to(z, self.patch), *np.broadcast_to(plane[:, None], (2, *self.patch))])
        else:
            coords = plane
        x = np.stack([map_coordinates(ch, coords, order=1, mode="reflect") for ch in image])
        integer = np.issubdtype(target.dtype, np.integer)
        y = np.stack(
            [map_coordinates(ch, coords, order=0 if integer else 1, mode="constant", cval=0) for ch in target]
        ).astype(target.dtype)
        return x.astype(np.float32), y

    def _augment(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        if self.flip_channels and x.shape[0] > 1 and rng.random() < 0.5:
            x = x[::-1]
        for axis in range(self.ndim):
            if rng.random() < 0.5:
                x = np.flip(x, axis + 1)
                y = np.flip(y, axis + 1)
        if self.patch[-1] == self.patch[-2]:
            k = int(rng.integers(4))
            x = np.rot90(x, k, axes=(-2, -1))
            y = np.rot90(y, k, axes=(-2, -1))
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2)
        return x, y
