"""Crowded cryo-ET tomogram and subtomogram simulation with exact ground truth.

>>> from tomolens.jobs import run_job
>>> from tomolens.simulate import SimulationConfig, simulate_tomogram
>>> sim = run_job(simulate_tomogram(SimulationConfig(shape_zyx=(32, 64, 64), n_particles=5)))  # doctest: +SKIP

Conventions (all documented in the modules):

- Tomogram contrast: protein bright (positive) by default, dark with ``polarity="dark"``;
  normalised to mean 0, std 1.
- Domain randomisation (training data that varies structures and imaging) and a
  shifted-domain test set: :mod:`tomolens.simulate.domain`.
- SNR = var(signal) / var(noise): on the projections in ``mode="tiltseries"``, on the
  volume in ``mode="fourier"`` (``SimulatedTomogram.snr_domain`` says which).
- Euler angles: RELION ZYZ (rot, tilt, psi) in degrees; the template -> particle rotation
  on (x, y, z) vectors is ``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv()``.
- Instance ids: particles 1..N (table order), membranes and filaments after them.
"""

from tomolens.simulate.domain import (
    DOMAIN_CLASSES,
    TRAINING_RANGES,
    DomainConfig,
    DomainRanges,
    sample_domain_config,
    shifted_domain_config,
)
from tomolens.simulate.domain_scene import simulate_domain_tomogram
from tomolens.simulate.scene import PackingError
from tomolens.simulate.subtomograms import SubtomogramConfig, load_subtomogram_split, simulate_subtomograms
from tomolens.simulate.templates import Template, builtin_template_names, load_template, rotation_matrix_zyx
from tomolens.simulate.tomogram import SimulatedTomogram, SimulationConfig, simulate_tomogram

__all__ = [
    "DOMAIN_CLASSES",
    "TRAINING_RANGES",
    "DomainConfig",
    "DomainRanges",
    "PackingError",
    "SimulatedTomogram",
    "SimulationConfig",
    "SubtomogramConfig",
    "Template",
    "builtin_template_names",
    "load_subtomogram_split",
    "load_template",
    "rotation_matrix_zyx",
    "sample_domain_config",
    "shifted_domain_config",
    "simulate_domain_tomogram",
    "simulate_subtomograms",
    "simulate_tomogram",
]
