"""File ▸ Open Sample: a small crowded simulated tomogram with its ground truth.

Generated on demand (a few seconds) by :func:`tomolens.simulate.simulate_tomogram`;
nothing is downloaded.  :func:`simulation_layers` is also what the "Simulate" dock
widget uses to turn a :class:`~tomolens.simulate.SimulatedTomogram` into layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tomolens._napari.layers import points_layer_data, scale_kwargs
from tomolens.io.mrc import contrast_limits
from tomolens.jobs import run_job

#: The sample: 64×128×128 voxels of 10 Å, 15 % crowded, one vesicle and two filaments.
SAMPLE_SETTINGS = dict(
    shape_zyx=(64, 128, 128),
    voxel_size_A=10.0,
    volume_fraction=0.15,
    snr=0.1,
    n_membranes=1,
    n_filaments=2,
    mode="tiltseries",
    seed=7,
)


def simulation_layers(sim, prefix: str = "simulated") -> list[tuple[Any, dict, str]]:
    """Layer-data tuples for a simulated tomogram: Image, semantic and instance Labels,
    particle Points (features class, class_name, rot, tilt, psi, instance_id, radius_A,
    coloured by class), all at the voxel size in Å."""
    scale = scale_kwargs(sim.voxel_size_A, 3)
    names = list(sim.class_names)
    class_table = pd.DataFrame({"index": np.arange(len(names)), "class_name": names})
    meta = {
        "class_names": names,
        "voxel_size_A": sim.voxel_size_A,
        "measured_snr": sim.measured_snr,
        "snr_domain": sim.snr_domain,
        "config": sim.config.to_dict(),
    }
    points, points_kwargs, _ = points_layer_data(sim.particles, name=f"{prefix} particles", color_by="class_name")
    points_kwargs["size"] = 6.0
    return [
        (
            sim.tomogram,
            {
                "name": f"{prefix} tomogram",
                "contrast_limits": contrast_limits(sim.tomogram),
                "projection_mode": "none",
                "metadata": meta,
                **scale,
            },
            "image",
        ),
        (
            sim.semantic,
            {
                "name": f"{prefix} semantic",
                "features": class_table,
                "opacity": 0.4,
                "visible": False,
                "metadata": {"class_names": names},
                **scale,
            },
            "labels",
        ),
        (sim.instances, {"name": f"{prefix} instances", "opacity": 0.4, "visible": False, **scale}, "labels"),
        (points, points_kwargs, "points"),
    ]


def crowded_sample():
    """A 64×128×128 tomogram at 10 Å: crowded phantom particles (15 % of the volume),
    one vesicle and two filaments, SNR 0.1, ±60°/3° tilt series with CTF and WBP, and its
    ground truth (semantic and instance Labels, particle Points)."""
    from tomolens.simulate import SimulationConfig, simulate_tomogram

    sim = run_job(simulate_tomogram(SimulationConfig(**SAMPLE_SETTINGS)))
    return simulation_layers(sim, prefix="sample")
