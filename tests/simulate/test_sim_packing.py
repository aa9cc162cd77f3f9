"""Packing: no overlaps, counts and fractions reached, impossible requests refused."""

import numpy as np
import pytest

from tomolens.jobs import run_job
from tomolens.simulate import PackingError, SimulationConfig, simulate_tomogram
from tomolens.simulate.scene import Scene, pack_particles
from tomolens.simulate.templates import load_templates

SMALL = ("globule", "tetrahedron", "ring7", "torus", "l_shape")


def _no_overlap(sim_scene_particles, instances):
    counts = np.bincount(instances.ravel())
    for p in sim_scene_particles:
        assert counts[p["instance_id"]] == p["mask_voxels"], p["instance_id"]


def test_volume_fraction_20_percent_without_overlap():
    templates = load_templates(SMALL, 10.0)
    scene = Scene.empty((40, 80, 80))
    run_job(pack_particles(scene, templates, np.random.default_rng(1), None, 0.22))
    fraction = (scene.instances > 0).mean()
    assert fraction >= 0.22
    _no_overlap(scene.particles, scene.instances)  # every mask fully present: nothing overwritten
    assert set(np.unique(scene.semantic[scene.instances > 0])) <= set(range(1, len(SMALL) + 1))
    assert np.array_equal(scene.semantic > 0, scene.instances > 0)


def test_count_reached_with_membranes_and_filaments():
    cfg = SimulationConfig(
        shape_zyx=(48, 96, 96),
        templates=SMALL,
        n_particles=40,
        n_membranes=1,
        n_filaments=2,
        snr=float("inf"),
        mode="fourier",
        seed=3,
    )
    sim = run_job(simulate_tomogram(cfg))
    assert len(sim.particles) == 40
    assert sim.class_names[-2:] == ["membrane", "filament"]
    assert list(sim.particles.features.instance_id) == list(range(1, 41))
    ids = np.unique(sim.instances)
    assert ids.max() == 40 + len(sim.structures)
    mem = sim.class_names.index("membrane")
    fil = sim.class_names.index("filament")
    assert (sim.semantic == mem).sum() > 500 and (sim.semantic == fil).sum() > 200
    # membranes and filaments carry ids after the particles
    assert set(np.unique(sim.instances[sim.semantic == mem])) <= set(sim.structures.instance_id)


def test_impossible_packing_is_refused():
    with pytest.raises(ValueError, match="at most"):
        run_job(simulate_tomogram(SimulationConfig(shape_zyx=(16, 32, 32), n_particles=500, mode="fourier")))
    with pytest.raises(ValueError, match="volume_fraction"):
        run_job(simulate_tomogram(SimulationConfig(shape_zyx=(16, 32, 32), volume_fraction=0.7, mode="fourier")))
    with pytest.raises(PackingError, match="stalled|does not fit"):
        run_job(
            simulate_tomogram(
                SimulationConfig(shape_zyx=(24, 32, 32), templates=("shell",), volume_fraction=0.45, mode="fourier")
            )
        )


def test_bad_sizes_and_tilts_are_clear_errors():
    for kwargs, match in (
        ({"shape_zyx": (0, 64, 64)}, "positive"),
        ({"shape_zyx": (-4, 64, 64)}, "positive"),
        ({"voxel_size_A": 0}, "voxel_size_A"),
        ({"tilt_range_deg": 95}, "90"),
        ({"tilt_step_deg": -1}, "tilt_step"),
        ({"snr": -0.1}, "snr"),
        ({"mode": "magic"}, "mode"),
    ):
        with pytest.raises(ValueError, match=match):
            run_job(simulate_tomogram(SimulationConfig(**kwargs)))


def test_a_template_wider_than_the_slab_is_warned_about_and_radii_recorded(tmp_path):
    """l_shape (radius 122 Å, 254 Å across) in a 24-voxel (240 Å) slab fits only lying down: a warning says so."""
    cfg = SimulationConfig(
        shape_zyx=(24, 48, 48), templates=("l_shape", "globule"), n_particles=2, mode="fourier", seed=0
    )
    with pytest.warns(
        UserWarning,
        match=r"'l_shape' is up to 254 Å across \(radius 122.1 Å\), 14 Å more than the "
        r"volume's 240 Å along z \(24 voxels\).*at least 28 voxels along z",
    ):
        sim = run_job(simulate_tomogram(cfg))
    assert sim.template_radius_A == {"l_shape": pytest.approx(122.1), "globule": pytest.approx(42.4)}
    import json

    sim.save(tmp_path, write_tilt_series=False)
    assert json.loads((tmp_path / "config.json").read_text())["template_radius_A"]["l_shape"] == pytest.approx(122.1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a slab that holds every orientation: no warning
        run_job(
            simulate_tomogram(
                SimulationConfig(shape_zyx=(32, 32, 32), templates=("globule",), n_particles=1, mode="fourier", seed=0)
            )
        )
