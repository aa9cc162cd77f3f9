"""SimulationConfig.polarity: dark is the exact negative of bright, recorded in the metadata."""

import json

import numpy as np
import pytest

from tomolens.jobs import run_job
from tomolens.simulate import SimulationConfig, simulate_tomogram


def test_dark_is_negative_of_bright_and_recorded(tmp_path):
    kw = dict(shape_zyx=(24, 40, 40), templates=("globule", "torus"), n_particles=4, snr=0.2, seed=3)
    bright = run_job(simulate_tomogram(SimulationConfig(**kw)))
    dark = run_job(simulate_tomogram(SimulationConfig(**kw, polarity="dark")))
    assert np.array_equal(dark.tomogram, -bright.tomogram)
    assert np.array_equal(dark.semantic, bright.semantic)
    # the dense particles are bright in one and dark in the other
    inside = bright.semantic > 0
    assert bright.tomogram[inside].mean() > 0 > dark.tomogram[inside].mean()
    meta = json.loads(dark.save(tmp_path)["config"].read_text())
    assert meta["config"]["polarity"] == "dark"
    assert SimulationConfig().polarity == "bright"


def test_bad_polarity_is_refused():
    with pytest.raises(ValueError, match="polarity must be one of"):
        SimulationConfig(polarity="inverted").check()
