"""Saving through tomolens.io, the CLI commands, and the napari sample."""

import json

import numpy as np
import pytest

from tomolens.cli import main
from tomolens.io import read_coordinates, read_mrc
from tomolens.jobs import run_job
from tomolens.simulate import SimulationConfig, simulate_tomogram


def test_save_round_trip(tmp_path):
    cfg = SimulationConfig(
        shape_zyx=(32, 48, 48), templates=("l_shape", "globule"), n_particles=6, snr=0.1, mode="fourier", seed=1
    )
    sim = run_job(simulate_tomogram(cfg))
    paths = sim.save(tmp_path)
    tomo = read_mrc(paths["tomogram"])
    assert np.allclose(tomo.data, sim.tomogram) and tomo.voxel_size_A == (10.0, 10.0, 10.0)
    sem, inst = read_mrc(paths["semantic"]), read_mrc(paths["instances"])
    assert sem.is_labels and inst.is_labels
    assert np.array_equal(sem.data, sim.semantic) and np.array_equal(inst.data, sim.instances)
    for key in ("particles_star", "particles_csv"):
        table = read_coordinates(paths[key])
        assert np.allclose(table.coords_zyx, sim.particles.coords_zyx, atol=1e-4)
        assert np.allclose(table.features["rot"], sim.particles.features["rot"], atol=1e-4)
        assert list(table.features["class_name"]) == list(sim.particles.features["class_name"])
    meta = json.loads(paths["config"].read_text())
    assert meta["class_names"] == ["background", "l_shape", "globule"] and meta["n_particles"] == 6


def test_cli_simulate_and_subtomograms(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "t"),
            "--size-x",
            "48",
            "--size-y",
            "48",
            "--size-z",
            "32",
            "--n-particles",
            "5",
            "--templates",
            "globule,torus",
            "--snr",
            "0",
        ]
    )
    assert rc == 0 and (tmp_path / "t" / "tomogram.mrc").is_file()
    assert "5 particles" in capsys.readouterr().out
    rc = main(
        [
            "simulate-subtomograms",
            "--out",
            str(tmp_path / "s0"),
            "--templates",
            "globule,torus",
            "--n-per-class",
            "3",
            "--box",
            "16",
            "--snrs",
            "0.1,inf",
            "--no-crowding",
        ]
    )
    # torus (radius 95 Å) + 20 Å jitter does not fit a half-box of 80 Å
    assert rc == 2 and "would crop torus" in capsys.readouterr().err and not (tmp_path / "s0").exists()
    rc = main(
        [
            "simulate-subtomograms",
            "--out",
            str(tmp_path / "s"),
            "--templates",
            "globule,torus",
            "--n-per-class",
            "3",
            "--box",
            "16",
            "--voxel-size-A",
            "16",
            "--snrs",
            "0.1,inf",
            "--no-crowding",
        ]
    )
    assert rc == 0 and (tmp_path / "s" / "inf" / "test.npz").is_file()
    with pytest.raises(SystemExit):  # argparse refuses a tilt range beyond 90°
        main(["simulate", "--out", str(tmp_path / "bad"), "--tilt-range-deg", "120"])
    rc = main(
        ["simulate", "--out", str(tmp_path / "bad"), "--size-z", "8", "--n-particles", "3", "--templates", "shell"]
    )
    assert rc == 2 and "does not fit" in capsys.readouterr().err


def test_sample_layers():
    from tomolens._napari.sample import crowded_sample

    layers = crowded_sample()
    kinds = [k for _, _, k in layers]
    assert kinds == ["image", "labels", "labels", "points"]
    (tomo, tk, _), (sem, sk, _), (inst, _, _), (pts, pk, _) = layers
    assert tomo.shape == sem.shape == inst.shape == (64, 128, 128)
    assert tk["scale"] == sk["scale"] == pk["scale"] == (10.0, 10.0, 10.0)
    names = list(sk["features"]["class_name"])
    assert "membrane" in names and "filament" in names
    assert len(pts) >= 50 and {"class", "rot", "tilt", "psi"} <= set(pk["features"].columns)
    assert (sem > 0).mean() > 0.15
