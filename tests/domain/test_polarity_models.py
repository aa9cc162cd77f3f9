"""The shipped models give the same result on a tomogram and on its negative (default settings)."""

import json

import numpy as np
import pytest
import torch

from tomolens.cli import main
from tomolens.detect.detector import detect_particles
from tomolens.io.mrc import write_mrc
from tomolens.jobs import run_job
from tomolens.segment.predict import segment_tomogram
from tomolens.simulate import SimulationConfig, simulate_tomogram


@pytest.fixture(scope="module")
def sim():
    torch.set_num_threads(1)
    return run_job(
        simulate_tomogram(
            SimulationConfig(
                shape_zyx=(48, 96, 96), volume_fraction=0.12, snr=0.1, n_membranes=1, n_filaments=1, seed=11
            )
        )
    )


def test_detection_is_the_same_on_the_raw_dark_tomogram(sim):
    bright = run_job(detect_particles(sim.tomogram, 10.0, device="cpu"))
    dark = run_job(detect_particles(-sim.tomogram, 10.0, device="cpu"))
    assert bright.params["polarity_decision"]["invert"] is False
    assert dark.params["polarity_decision"]["tomogram"] == "dark" and dark.params["polarity_decision"]["invert"]
    assert len(bright.particles) > 5
    np.testing.assert_allclose(dark.particles.coords_zyx, bright.particles.coords_zyx, atol=1e-4)
    np.testing.assert_array_equal(dark.instances, bright.instances)
    # without the inversion the network sees the wrong contrast, and the picks change
    wrong = run_job(detect_particles(-sim.tomogram, 10.0, device="cpu", polarity="bright"))
    assert not wrong.params["polarity_decision"]["invert"]
    assert wrong.instances.shape != bright.instances.shape or not np.array_equal(wrong.instances, bright.instances)


def test_segmentation_is_the_same_on_the_raw_dark_tomogram(sim):
    bright = run_job(segment_tomogram(sim.tomogram, 10.0, device="cpu", threads=1))
    dark = run_job(segment_tomogram(-sim.tomogram, 10.0, device="cpu", threads=1))
    assert dark.info["polarity"]["invert"] and not bright.info["polarity"]["invert"]
    np.testing.assert_allclose(dark.probabilities, bright.probabilities, atol=1e-5)


def test_cli_detect_records_the_decision(sim, tmp_path, capsys):
    path = write_mrc(tmp_path / "raw.mrc", -sim.tomogram, 10.0)
    assert main(["detect", str(path), "--out", str(tmp_path / "picks"), "--device", "cpu"]) == 0
    prov = json.loads((tmp_path / "picks_centres.provenance.json").read_text())
    assert prov["polarity_decision"]["tomogram"] == "dark" and prov["polarity_decision"]["source"] == "auto"
    assert "polarity" in prov["polarity_decision"]["message"]
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", str(path), "--out", str(tmp_path / "p2"), "--polarity", "upside-down"])
    assert exit_info.value.code == 2
    assert "upside-down" in capsys.readouterr().err
