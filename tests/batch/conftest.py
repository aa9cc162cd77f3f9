"""Fixtures for the batch tests: small simulated tomograms and a detection model trained for seconds."""

from __future__ import annotations


import pytest

from batch_helpers import SHAPE, VOXEL_A


@pytest.fixture(scope="session")
def batch_data(tmp_path_factory) -> dict:
    """Four simulated tomograms (MRC files), their truth, and a tiny trained detection model.

    The model is trained for one short epoch on a fifth simulated tomogram (never one
    of the four batch inputs): enough to give reproducible, non-trivial detections.
    """
    import torch

    from tomolens.detect.train import ARCHITECTURE, CLASSES, train_detection_model
    from tomolens.io import write_mrc
    from tomolens.jobs import run_job
    from tomolens.models.card import ModelCard, save_model
    from tomolens.models.training import TrainConfig
    from tomolens.simulate.tomogram import SimulationConfig, simulate_tomogram

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("batch_data")
    tomo_dir = root / "tomograms"
    tomo_dir.mkdir()
    sims = [
        run_job(
            simulate_tomogram(
                SimulationConfig(
                    shape_zyx=SHAPE,
                    voxel_size_A=VOXEL_A,
                    mode="fourier",
                    n_particles=8,
                    seed=seed,
                    templates=["globule", "barrel"],
                    snr=1.0,
                )
            )
        )
        for seed in range(5)
    ]
    paths = []
    for i, sim in enumerate(sims[:4]):
        paths.append(write_mrc(tomo_dir / f"tomo_{i}.mrc", sim.tomogram, VOXEL_A))
    train = sims[4]
    config = TrainConfig(
        patch_size=(16, 16, 16),
        batch_size=2,
        epochs=1,
        steps_per_epoch=6,
        val_patches=2,
        patience=1,
        seed=0,
        device="cpu",
    )
    half = SHAPE[1] // 2
    result = run_job(
        train_detection_model(
            [(train.tomogram[:, :half], train.instances[:, :half], VOXEL_A)],
            [(train.tomogram[:, half:], train.instances[:, half:], VOXEL_A)],
            config,
        )
    )
    card = ModelCard(
        name="batch_test_detect",
        task="detect",
        architecture=ARCHITECTURE,
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": 8, "depth": 2},
        classes=list(CLASSES),
        voxel_size_A=VOXEL_A,
        patch_size=[16, 16, 16],
        training_command="tests/batch/conftest.py (1 epoch × 6 steps)",
        training_data="simulated seed 4",
        extra={"postprocess": {"particle_radius_A": 40.0, "min_volume_A3": 5000.0}},
    )
    weights, _ = save_model(result.model.cpu(), card, root / "batch_test_detect.pt")
    return {
        "root": root,
        "tomo_dir": tomo_dir,
        "paths": paths,
        "model": str(weights),
        "truth": [s.particles for s in sims[:4]],
    }
