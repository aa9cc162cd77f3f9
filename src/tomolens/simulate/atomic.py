"""Templates from atomic models (PDB / mmCIF) through gemmi — an optional extra.

``pip install "napari-tomolens[pdb]"`` installs gemmi.  Each atom (waters and hydrogens
left out, first model only) contributes its atomic number, spread trilinearly onto a
grid at the requested voxel size and blurred by a Gaussian of half a voxel, so the map
is band-limited like an EM map at that sampling.  The result goes through
:func:`tomolens.simulate.templates.template_from_map` like any density map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

ATOMIC_EXTENSIONS = (".pdb", ".ent", ".cif", ".mmcif")


def atoms_from_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions (N, 3) in Å, **z, y, x** order, and atomic numbers (N,).

    Raises
    ------
    ValueError
        gemmi missing, unreadable file, or no atoms.
    """
    try:
        import gemmi
    except ImportError as err:
        raise ValueError(
            'PDB/mmCIF templates need gemmi, an optional extra: pip install "napari-tomolens[pdb]".'
        ) from err
    path = Path(path)
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        raise ValueError(f"Cannot read {path.name} as a PDB/mmCIF model: {err}") from err
    structure.remove_hydrogens()
    structure.remove_waters()
    if len(structure) == 0:
        raise ValueError(f"{path.name} holds no model.")
    xyz, z_numbers = [], []
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
                z_numbers.append(atom.element.atomic_number)
    if not xyz:
        raise ValueError(f"{path.name} holds no atoms.")
    return np.asarray(xyz, float)[:, ::-1], np.asarray(z_numbers, float)


def density_from_atoms(coords_zyx_A: np.ndarray, weights: np.ndarray, voxel_size_A: float) -> np.ndarray:
    """Render atoms as a density map (float32, z, y, x) at ``voxel_size_A``.

    Trilinear splatting of each atom's weight, then a Gaussian blur of 0.5 voxel.
    """
    if not voxel_size_A > 0:
        raise ValueError(f"voxel_size_A must be positive, got {voxel_size_A}.")
    pos = (coords_zyx_A - coords_zyx_A.min(axis=0)) / voxel_size_A + 3.0
    shape = tuple(int(np.ceil(m)) + 4 for m in pos.max(axis=0))
    grid = np.zeros(shape, np.float64)
    base = np.floor(pos).astype(int)
    frac = pos - base
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        w = np.prod(np.where(offset, frac, 1.0 - frac), axis=1) * weights
        idx = base + offset
        np.add.at(grid, (idx[:, 0], idx[:, 1], idx[:, 2]), w)
    return ndimage.gaussian_filter(grid, 0.5).astype(np.float32)


def template_from_atomic_model(path: str | os.PathLike, voxel_size_A: float):
    """A :class:`~tomolens.simulate.templates.Template` from a PDB/mmCIF file."""
    from tomolens.simulate.templates import template_from_map

    coords, weights = atoms_from_file(path)
    density = density_from_atoms(coords, weights, voxel_size_A)
    return template_from_map(density, voxel_size_A, voxel_size_A, Path(path).stem)
