"""A small tomogram with planted copies of two pseudo-proteins in noise — not a test module."""

import numpy as np
from scipy.spatial.transform import Rotation

from tomolens.simulate.pseudoproteins import PseudoProteinSpec, render_pseudoprotein
from tomolens.simulate.templates import rotate_density

TARGET = PseudoProteinSpec("hollow", 16.0, 3)
DISTRACTOR = PseudoProteinSpec("elongated", 16.0, 4)


def planted_tomogram(n_each=4, noise=0.3, seed=0, rotate=False):
    """(tomogram float32 (64, 128, 128) at 10 Å, centres of TARGET (n, 3), centres of DISTRACTOR (n, 3)).

    Copies (in one orientation per kind, or random ones with ``rotate``) on a grid 32 voxels apart
    (jittered by up to 2 voxels with ``rotate``), bright, plus Gaussian noise of ``noise`` × the
    density's maximum.
    """
    rng = np.random.default_rng(seed)
    vol = np.zeros((64, 128, 128), np.float32)
    slots = [(32, y, x) for y in (20, 52, 84, 116) for x in (20, 52, 84, 116)][: 2 * n_each]
    rng.shuffle(slots)
    centres = {0: [], 1: []}
    fixed = [Rotation.random(random_state=rng).as_matrix() for _ in range(2)]
    for i, slot in enumerate(slots):
        kind = i % 2
        dens = render_pseudoprotein(TARGET if kind == 0 else DISTRACTOR, 10.0).density
        rot = Rotation.random(random_state=rng).as_matrix() if rotate else fixed[kind]
        cube = rotate_density(dens, rot)
        c = np.array(slot) + (rng.integers(-2, 3, 3) if rotate else 0)
        h = cube.shape[0] // 2
        lo = c - h
        sl = tuple(slice(max(0, a), min(s, a + cube.shape[0])) for a, s in zip(lo, vol.shape))
        src = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo))
        vol[sl] = np.maximum(vol[sl], cube[src])
        centres[kind].append(c)
    vol += noise * float(vol.max()) * rng.standard_normal(vol.shape).astype(np.float32)
    return vol, np.array(centres[0], float), np.array(centres[1], float)
