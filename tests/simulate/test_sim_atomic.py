"""Templates from atomic models (PDB via gemmi)."""

import numpy as np
import pytest
from scipy import ndimage

from tomolens.simulate import load_template


def _pdb_line(serial, x, y, z, element="C"):
    return (
        f"ATOM  {serial:5d}  {element:<3s} ALA A{serial:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}"
    )


def write_two_clusters(path, separation_A=100.0):
    rng = np.random.default_rng(0)
    lines, serial = [], 1
    for cx in (0.0, separation_A):
        for _ in range(60):
            x, y, z = rng.normal([cx, 0.0, 0.0], 4.0)
            lines.append(_pdb_line(serial, x, y, z))
            serial += 1
    path.write_text("\n".join(lines + ["END"]) + "\n")


def test_pdb_template_has_two_blobs_at_the_right_distance(tmp_path):
    pytest.importorskip("gemmi", reason="gemmi is the optional 'pdb' extra")
    write_two_clusters(tmp_path / "pair.pdb", separation_A=100.0)
    template = load_template(tmp_path / "pair.pdb", voxel_size_A=10.0)
    density = template.density
    labels, n = ndimage.label(density > 0.3 * density.max())
    assert n == 2
    centres = np.array(ndimage.center_of_mass(density, labels, [1, 2]))
    # the two clusters lie along x (the last axis) 100 Å = 10 voxels apart
    np.testing.assert_allclose(np.abs(centres[1] - centres[0]), [0, 0, 10], atol=0.7)
    # the template is centred on its centre of mass
    com = np.array(ndimage.center_of_mass(density))
    np.testing.assert_allclose(com, (np.array(density.shape) - 1) / 2, atol=0.6)


def test_unreadable_pdb_is_a_clear_error(tmp_path):
    pytest.importorskip("gemmi", reason="gemmi is the optional 'pdb' extra")
    (tmp_path / "empty.pdb").write_text("END\n")
    with pytest.raises(ValueError, match="no model|no atoms|Cannot read"):
        load_template(tmp_path / "empty.pdb", voxel_size_A=10.0)
    with pytest.raises(ValueError, match="no such file"):
        load_template(tmp_path / "missing.cif", voxel_size_A=10.0)
