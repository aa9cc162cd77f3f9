"""Training the segmenter on a domain-randomised dataset folder (complete labels, any voxel size)."""

import json

import numpy as np
import pytest

from tomolens.cli import main
from tomolens.io.mrc import read_mrc
from tomolens.jobs import run_job
from tomolens.models.tiling import rescale_volume
from tomolens.models.domain_data import load_domain_volumes, read_manifest
from tomolens.simulate.domain import DOMAIN_CLASSES
from tomolens.simulate.domain_dataset import write_domain_dataset


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    run_job(write_domain_dataset(root / "train", 2, first_seed=11, shape_zyx=(32, 48, 48), maps_dir=None))
    run_job(write_domain_dataset(root / "val", 1, first_seed=21, shape_zyx=(32, 48, 48), maps_dir=None))
    return root


def test_volumes_come_at_the_model_voxel_size_and_bright(datasets):
    volumes = load_domain_volumes(datasets / "train", 10.0)
    manifest = read_manifest(datasets / "train")
    for vol, entry in zip(volumes, manifest["tomograms"]):
        config = json.loads((datasets / "train" / entry["folder"] / "config.json").read_text())
        vs = entry["config"]["voxel_size_A"]
        assert vol.source_voxel_size_A == pytest.approx(vs)
        assert vol.tomogram.shape == tuple(round(n * vs / 10.0) for n in (32, 48, 48))
        assert vol.semantic.shape == vol.instances.shape == vol.tomogram.shape
        assert vol.semantic.max() < len(DOMAIN_CLASSES)
        dark = (config.get("polarity") or config["config"]["polarity"]) == "dark"
        raw = read_mrc(datasets / "train" / entry["folder"] / "tomogram.mrc").data
        expected = rescale_volume(-np.asarray(raw) if dark else np.asarray(raw), vs / 10.0)
        np.testing.assert_allclose(vol.tomogram, expected, atol=1e-5)  # the dark ones negated: bright
    small = load_domain_volumes(datasets / "train", 5.0, max_shape=(16, 40, 40))  # 2x finer, then cropped
    assert all(v.tomogram.shape == v.semantic.shape and max(v.tomogram.shape) <= 40 for v in small)
    with pytest.raises(ValueError, match="not a tomolens dataset"):
        load_domain_volumes(datasets, 10.0)


def test_train_command_on_a_dataset_writes_a_card_with_ranges(datasets, tmp_path, capsys):
    out = tmp_path / "seg_domain"
    code = main(
        [
            "train",
            "--task",
            "segment",
            "--domain-data",
            str(datasets / "train"),
            "--domain-val",
            str(datasets / "val"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--val-patches",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--patch",
            "32",
            "--segment-context",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["classes"] == list(DOMAIN_CLASSES) and card["polarity"] == "bright"
    assert card["extra"]["training_seeds"] == [11, 12] and card["extra"]["validation_seeds"] == [21]
    assert card["extra"]["training_ranges"]["tilt_range_deg"] == [45.0, 70.0]
    assert "domain-randomised dataset" in card["training_data"]
    assert (
        main(
            [
                "train",
                "--task",
                "segment",
                "--domain-data",
                str(datasets / "train"),
                "--domain-val",
                str(datasets / "train"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        != 0
    )
    assert "share seeds" in capsys.readouterr().err


def test_detection_trains_on_a_dataset_with_macromolecules_only(datasets, tmp_path, capsys):
    import pandas as pd

    from tomolens.models.domain_data import detection_volumes

    triples, volumes = detection_volumes(datasets / "train", 10.0)
    for (tomo, inst, vs), vol in zip(triples, volumes):
        entry = datasets / "train" / f"tomo_{vol.seed:06d}" / "particles.csv"
        table = pd.read_csv(entry)
        macro = set(table.loc[table["class_name"] == "macromolecule", "instance_id"])
        assert set(np.unique(inst)) - {0} <= macro and vs == 10.0 and tomo.shape == inst.shape
        others = set(table.loc[table["class_name"] != "macromolecule", "instance_id"])
        assert not (set(np.unique(inst)) & others)  # gold beads are not particles to pick
    out = tmp_path / "det_domain"
    code = main(
        [
            "train",
            "--task",
            "detect",
            "--domain-data",
            str(datasets / "train"),
            "--domain-val",
            str(datasets / "val"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--val-patches",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--patch",
            "16",
        ]
    )
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["task"] == "detect" and "domain-randomised dataset" in card["training_data"]
