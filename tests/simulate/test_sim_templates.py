"""Templates: built-in phantoms, MRC templates, the RELION Euler convention."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomolens.io import write_mrc
from tomolens.jobs import run_job
from tomolens.simulate import (
    SimulationConfig,
    builtin_template_names,
    load_template,
    rotation_matrix_zyx,
    simulate_tomogram,
)
from tomolens.simulate.templates import rotate_density

MAPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "maps_10A"


def test_at_least_ten_distinct_phantoms_of_8_to_30_nm():
    names = builtin_template_names()
    assert len(names) >= 10 and len(set(names)) == len(names)
    volumes = []
    for name in names:
        t = load_template(name, 10.0)
        diameter_nm = 2 * t.radius_A / 10
        assert 7.5 <= diameter_nm <= 30.5, (name, diameter_nm)
        # centre of mass at the box centre (ground-truth centres coincide with density)
        com = np.array([np.average(np.indices(t.density.shape)[i], weights=t.density) for i in range(3)])
        assert np.allclose(com, (np.array(t.density.shape) - 1) / 2, atol=0.3), name
        volumes.append(t.volume_A3)
    assert len(set(np.round(volumes, -3))) >= 9  # distinct sizes, not one shape repeated


def test_phantom_volume_is_independent_of_voxel_size():
    for name in ("barrel", "l_shape"):
        v10 = load_template(name, 10.0).volume_A3
        v5 = load_template(name, 5.0).volume_A3
        assert abs(v10 - v5) / v5 < 0.15, (name, v10, v5)


def test_mrc_template_resampled(tmp_path):
    t10 = load_template("dumbbell", 10.0)
    path = write_mrc(tmp_path / "dumbbell.mrc", t10.density * 200, 10.0)
    t20 = load_template(path, 20.0)
    assert t20.name == "dumbbell"
    assert t20.density.shape[0] < t10.density.shape[0]
    assert abs(t20.volume_A3 - t10.volume_A3) / t10.volume_A3 < 0.25
    assert np.percentile(t20.density[t20.mask], 75) == pytest.approx(1.0, abs=0.3)


@pytest.mark.skipif(not MAPS.is_dir(), reason="../shared/data/maps_10A (real 10 Å maps) is absent")
def test_real_map_template():
    t = load_template(MAPS / "1bxn.mrc", 10.0)
    assert 80 < 2 * t.radius_A < 300 and t.mask.sum() > 500
    cfg = SimulationConfig(
        shape_zyx=(32, 64, 64),
        templates=(str(MAPS / "1bxn.mrc"), str(MAPS / "3qm1.mrc")),
        n_particles=6,
        mode="fourier",
        seed=0,
    )
    sim = run_job(simulate_tomogram(cfg))
    assert sim.class_names == ["background", "1bxn", "3qm1"] and len(sim.particles) == 6


def test_bad_templates_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown template"):
        load_template("no_such_phantom", 10.0)
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"not an mrc file at all" * 10)
    with pytest.raises(ValueError, match="Cannot use"):
        load_template(bad, 10.0)
    with pytest.raises(ValueError, match="Cannot use"):
        load_template(tmp_path / "missing.mrc", 10.0)
    with pytest.raises(ValueError, match="positive"):
        load_template("barrel", 0.0)


def test_relion_euler_convention_known_case():
    """rot=90: the reference->particle rotation is from_euler(ZYZ).inv(), i.e. -90° about z,
    so the L's long arm (+x in the template) points along -y in the particle."""
    t = load_template("l_shape", 10.0)
    rotated = rotate_density(t.density, rotation_matrix_zyx((90.0, 0.0, 0.0)))
    c = (np.array(t.density.shape) - 1) / 2
    idx = np.argwhere(rotated >= 0.3) - c
    before = np.argwhere(t.density >= 0.3) - c
    assert before[:, 2].max() > 10 and before[:, 1].min() > -5  # long arm +x, short arm +y
    assert idx[:, 1].min() < -10 and idx[:, 1].max() <= 8  # long arm now along -y
    assert idx[:, 2].max() <= 9 and idx[:, 2].min() >= -4  # short arm now along +x
    r = Rotation.from_euler("ZYZ", [90, 0, 0], degrees=True).inv().as_matrix()
    assert np.allclose(r @ [1, 0, 0], [0, -1, 0], atol=1e-9)
