"""CLI: train --task classify on labelled particles, classify, subdivide."""

import json

import numpy as np
import pandas as pd
import pytest
from classify_phantoms import labelled_tomogram

from tomolens.cli import main
from tomolens.io import ParticleTable, read_coordinates, write_coordinates, write_mrc
from tomolens.models.card import read_card


def test_train_classify_subdivide_cli(tmp_path, capsys):
    kinds = ["sphere", "rod", "ring"]
    tomo, centres, names = labelled_tomogram(kinds, 24, 16, seed=5)
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    write_coordinates(tmp_path / "lab.star", ParticleTable(centres, pd.DataFrame({"kind": names}), 10.0))
    rc = main(
        [
            "train",
            "--task",
            "classify",
            "--classify-tomogram",
            str(tmp_path / "t.mrc"),
            "--classify-points",
            str(tmp_path / "lab.star"),
            "--classify-label-column",
            "kind",
            "--classify-box-A",
            "160",
            "--epochs",
            "5",
            "--batch-size",
            "8",
            "--learning-rate",
            "3e-3",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "m.pt"),
        ]
    )
    assert rc == 0
    card = read_card(tmp_path / "m.json")
    assert card.classes == sorted(kinds) and card.voxel_size_A == 10.0 and card.patch_size == [16] * 3
    assert card.metrics["test_n"] == 11 and card.metrics["test_accuracy"] >= 0.75
    assert card.training_command.startswith("tomolens")  # the engine records sys.argv
    threshold = card.extra["unknown"]["threshold"]  # written by the training command itself

    unlabelled = tmp_path / "picks.star"
    write_coordinates(unlabelled, ParticleTable(centres, pd.DataFrame(index=range(len(centres))), 10.0))
    assert (
        main(
            [
                "classify",
                str(tmp_path / "t.mrc"),
                str(unlabelled),
                "--model",
                str(tmp_path / "m.pt"),
                "--out",
                str(tmp_path / "cls.star"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = read_coordinates(tmp_path / "cls.star")
    assert {"class", "confidence", "prob_sphere", "prob_rod", "prob_ring", "ood_distance"} <= set(out.features.columns)
    assert np.mean(out.features["class"].astype(str).to_numpy() == names) >= 0.8
    # the STAR file carries the unknown class exactly where the distance passes the card's threshold
    far = out.features["ood_distance"].to_numpy(float) > threshold
    np.testing.assert_array_equal(out.features["class"].astype(str).to_numpy() == "unknown", far)
    assert f"{far.sum()} unknown: feature distance above" in capsys.readouterr().out

    assert (
        main(
            [
                "subdivide",
                str(tmp_path / "t.mrc"),
                str(unlabelled),
                "--features",
                "classifier",
                "--model",
                str(tmp_path / "m.pt"),
                "--out",
                str(tmp_path / "sub.star"),
                "--n-clusters",
                "3",
                "--averages",
                str(tmp_path / "avg"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    sub = read_coordinates(tmp_path / "sub.star")
    assert sorted(set(sub.features["cluster"])) == [0, 1, 2]
    assert len(list((tmp_path / "avg").glob("cluster_*.mrc"))) == 3

    assert (
        main(
            [
                "classify",
                str(tmp_path / "t.mrc"),
                str(unlabelled),
                "--model",
                str(tmp_path / "m.pt"),
                "--out",
                str(tmp_path / "x.star"),
                "--box-A",
                "320",
            ]
        )
        == 2
    )
    assert "differs from the 160 Å" in capsys.readouterr().err

    # a classifier whose card lacks the statistics (trained before them) gets them without retraining:
    # the same data and seed give the same split, so the same statistics as training wrote
    old = json.loads((tmp_path / "m.json").read_text())
    written = old["extra"].pop("unknown")
    (tmp_path / "m.json").write_text(json.dumps(old))
    data = ["--classify-tomogram", str(tmp_path / "t.mrc"), "--classify-points", str(tmp_path / "lab.star")]
    data += ["--classify-label-column", "kind", "--classify-box-A", "160", "--device", "cpu", "--threads", "1"]
    calibrate = ["train", "--task", "classify", "--classify-calibrate", str(tmp_path / "m.pt"), *data]
    assert main([*calibrate, "--out", str(tmp_path / "m2.pt")]) == 0
    assert "unknown detection: distance threshold" in capsys.readouterr().out
    again = read_card(tmp_path / "m2.json")
    assert again.extra["unknown"]["threshold"] == pytest.approx(written["threshold"], rel=1e-4)
    np.testing.assert_allclose(again.extra["unknown"]["class_means"], written["class_means"], rtol=1e-4, atol=1e-6)
    assert again.metrics == card.metrics and "--classify-calibrate" in again.extra["unknown_calibration"]
    assert (tmp_path / "m2.pt").read_bytes() == (tmp_path / "m.pt").read_bytes() and again.sha256 == card.sha256
    # in place: only the card changes
    assert main([*calibrate, "--out", str(tmp_path / "m.pt")]) == 0
    assert read_card(tmp_path / "m.json").extra["unknown"] == again.extra["unknown"]
    # other classes than the model's: one line, exit 2
    (tmp_path / "two.star").write_text((tmp_path / "lab.star").read_text().replace("ring", "rod"))
    bad = [a if a != str(tmp_path / "lab.star") else str(tmp_path / "two.star") for a in calibrate]
    assert main([*bad, "--out", str(tmp_path / "m3.pt")]) == 2
    assert "differ from the model's" in capsys.readouterr().err and not (tmp_path / "m3.json").exists()


def test_training_pools_labelled_particles_of_several_tomograms(tmp_path, capsys):
    from tomolens.classify.data import dataset_from_tomograms
    from tomolens.jobs import run_job

    a, ca, na = labelled_tomogram(["sphere", "rod", "ring"], 24, 16, seed=5)
    b, cb, nb = labelled_tomogram(["sphere", "rod"], 24, 16, seed=6)  # no rings in this one
    ds = run_job(dataset_from_tomograms([(a, ca, na), (b, cb, nb)], 16, 10.0))
    assert ds.class_names == ["ring", "rod", "sphere"]
    n = len(ds.train.y) + len(ds.val.y) + len(ds.test.y)
    assert n == len(na) + len(nb)
    # the pooled labels keep each particle's class: count of rods equals the rods placed
    all_y = np.concatenate([ds.train.y, ds.val.y, ds.test.y])
    assert np.sum(all_y == 1) == np.sum(np.asarray(na) == "rod") + np.sum(np.asarray(nb) == "rod")

    write_mrc(tmp_path / "a.mrc", a, 10.0)
    write_coordinates(tmp_path / "a.star", ParticleTable(ca, pd.DataFrame({"kind": na}), 10.0))
    write_mrc(tmp_path / "b.mrc", b, 10.0)
    write_coordinates(tmp_path / "b.star", ParticleTable(cb, pd.DataFrame({"kind": nb}), 10.0))
    rc = main(
        [
            "train",
            "--task",
            "classify",
            "--classify-tomogram",
            str(tmp_path / "a.mrc"),
            str(tmp_path / "b.mrc"),
            "--classify-points",
            str(tmp_path / "a.star"),
            str(tmp_path / "b.star"),
            "--classify-label-column",
            "kind",
            "--classify-box-A",
            "160",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "m.pt"),
        ]
    )
    assert rc == 0
    card = read_card(tmp_path / "m.json")
    assert card.classes == ["ring", "rod", "sphere"] and f"{len(na) + len(nb)} labelled particles" in card.training_data
    rc = main(
        [
            "train",
            "--task",
            "classify",
            "--classify-tomogram",
            str(tmp_path / "a.mrc"),
            str(tmp_path / "a.mrc"),
            "--classify-points",
            str(tmp_path / "a.star"),
            "--classify-label-column",
            "kind",
            "--out",
            str(tmp_path / "m.pt"),
        ]
    )
    assert rc != 0
    assert "one coordinate file per tomogram" in capsys.readouterr().err


def test_integer_and_float_labels_name_the_same_class():
    from tomolens.classify.data import dataset_from_tomograms
    from tomolens.jobs import run_job

    a, ca, na = labelled_tomogram(["sphere", "rod"], 24, 16, seed=5)
    b, cb, nb = labelled_tomogram(["sphere", "rod"], 24, 16, seed=6)
    ints = [1 if n == "sphere" else 2 for n in na]
    floats = [1.0 if n == "sphere" else 2.0 for n in nb]  # as pandas reads a class column with a blank
    ds = run_job(dataset_from_tomograms([(a, ca, ints), (b, cb, floats)], 16, 10.0))
    assert ds.class_names == ["1", "2"]
    with np.testing.assert_raises(ValueError):
        run_job(dataset_from_tomograms([], 16, 10.0))


def test_classify_refuses_an_unknown_voxel_size_the_python_api_warns(tmp_path, capsys, torch_one_thread):
    """A tomogram without a voxel size (header 0): classify refuses (exit 2, one line naming the file and
    --voxel-size-A) instead of assuming the model's; with --voxel-size-A it runs; the Python function still
    takes None and says that it uses the model's voxel size."""
    from tomolens.classify.predict import classify_points
    from tomolens.jobs import run_job

    tomo, centres, _ = labelled_tomogram(["sphere", "rod"], 2, 32, seed=5)  # the shipped model takes 32³ boxes
    write_mrc(tmp_path / "tomo.mrc", tomo, None)
    write_coordinates(tmp_path / "picks.star", ParticleTable(np.asarray(centres, float)))
    args = ["classify", str(tmp_path / "tomo.mrc"), str(tmp_path / "picks.star"), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a.star")]) == 2
    err = capsys.readouterr().err
    assert "tomo.mrc: the voxel size is unknown" in err and "--voxel-size-A" in err
    assert not (tmp_path / "a.star").exists()
    assert main([*args, "--voxel-size-A", "10", "--out", str(tmp_path / "b.star")]) == 0
    with pytest.warns(UserWarning, match="Unknown voxel size: using the model's 10 Å"):
        result = run_job(classify_points(tomo, np.asarray(centres, float), "classify_phantoms_resnet", None))
    b = read_coordinates(tmp_path / "b.star")
    assert list(result.features["class"].astype(str)) == list(b.features["class"])


def test_classify_converts_picks_made_at_another_binning(tmp_path, capsys, caplog, torch_one_thread):
    """Picks made on the bin-1 tomogram (their STAR says rlnImagePixelSize 10) classified on the tomogram binned ×2
    (20 Å): converted to its voxels with a log line, as the Classify dock does through world coordinates — not
    refused as 'outside the tomogram'. A file without a pixel size takes --coords-pixel-size-A."""
    tomo, centres, _ = labelled_tomogram(["sphere", "rod"], 2, 32, seed=5)
    z, y, x = (s // 2 for s in tomo.shape)
    binned = tomo[: 2 * z, : 2 * y, : 2 * x].reshape(z, 2, y, 2, x, 2).mean((1, 3, 5))
    write_mrc(tmp_path / "bin2.mrc", binned, 20.0)
    write_coordinates(tmp_path / "bin1.star", ParticleTable(centres, pixel_size_A=10.0))
    np.savetxt(tmp_path / "bin1.txt", centres[:, ::-1])  # x y z in bin-1 pixels, no pixel size
    common = [str(tmp_path / "bin2.mrc"), "--device", "cpu"]
    with caplog.at_level("INFO"):
        assert (
            main(["classify", common[0], str(tmp_path / "bin1.star"), *common[1:], "--out", str(tmp_path / "a.star")])
            == 0
        )
    assert "bin1.star: coordinates at 10 Å per pixel converted to the tomogram's 20 Å voxels" in caplog.text
    a = read_coordinates(tmp_path / "a.star")
    np.testing.assert_allclose(a.coords_zyx, centres / 2)
    assert a.pixel_size_A == 20.0 and len(a.features["class"]) == len(centres)
    txt = ["classify", common[0], str(tmp_path / "bin1.txt"), *common[1:]]
    assert main([*txt, "--coords-pixel-size-A", "10", "--out", str(tmp_path / "b.star")]) == 0
    b = read_coordinates(tmp_path / "b.star")
    np.testing.assert_allclose(b.coords_zyx, a.coords_zyx)
    assert list(b.features["class"]) == list(a.features["class"])
