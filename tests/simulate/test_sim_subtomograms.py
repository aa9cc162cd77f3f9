"""Subtomogram datasets: layout, labels, stratified disjoint splits, SNR, loader."""

import json
import math

import numpy as np
import pytest

from tomolens.jobs import run_job
from tomolens.simulate import SubtomogramConfig, load_subtomogram_split, simulate_subtomograms


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("subtomos")
    # 24 voxels of 14 Å: a half-box of 168 Å holds l_shape's 122 Å radius and the 20 Å jitter
    cfg = SubtomogramConfig(
        templates=("barrel", "l_shape", "globule"),
        n_per_class=8,
        box=24,
        voxel_size_A=14.0,
        snrs=(0.05, math.inf),
        seed=3,
    )
    return out, run_job(simulate_subtomograms(cfg, out))


def test_layout_and_labels(dataset):
    out, paths = dataset
    assert set(paths) == {"dataset", *(f"{s}/{k}" for s in ("0.05", "inf") for k in ("train", "val", "test"))}
    meta = json.loads(paths["dataset"].read_text())
    assert meta["class_names"] == ["barrel", "l_shape", "globule"]
    assert set(meta["template_radius_A"]) == set(meta["class_names"])
    assert 100 < meta["template_radius_A"]["l_shape"] <= 168 - 20
    assert meta["measured_snr"]["0.05"] == pytest.approx(0.05, rel=0.1)
    total = 0
    for split in ("train", "val", "test"):
        x, y, names = load_subtomogram_split(out / "0.05" / f"{split}.npz")
        assert x.dtype == np.float32 and x.shape[1:] == (24, 24, 24) and y.dtype == np.int64
        assert names == meta["class_names"]
        assert np.bincount(y, minlength=3).min() >= 1  # stratified: every class in every split
        assert np.allclose(x.reshape(len(x), -1).mean(1), 0, atol=1e-4)
        total += len(y)
    assert total == 24 and meta["counts"] == {"train": 18, "val": 3, "test": 3}


def test_splits_disjoint_and_shared_across_snrs(dataset):
    out, _ = dataset
    angles = {}
    for split in ("train", "val", "test"):
        with np.load(out / "0.05" / f"{split}.npz") as a, np.load(out / "inf" / f"{split}.npz") as b:
            assert np.array_equal(a["angles"], b["angles"]) and np.array_equal(a["y"], b["y"])
            angles[split] = {tuple(np.round(r, 6)) for r in a["angles"]}
            # same particles, different noise: highly but not perfectly correlated
            corr = np.corrcoef(a["x"].ravel(), b["x"].ravel())[0, 1]
            assert 0.05 < corr < 0.6
    assert not (angles["train"] & angles["test"]) and not (angles["train"] & angles["val"])


def test_classes_differ_without_noise(dataset):
    """Noise-free subtomograms of one class resemble each other more than other classes
    after alignment-free comparison of rotation-invariant radial profiles."""
    out, _ = dataset
    x, y, _ = load_subtomogram_split(out / "inf" / "train.npz")
    c = (np.array(x.shape[1:]) - 1) / 2
    r = np.sqrt(((np.indices(x.shape[1:]).T - c) ** 2).sum(-1)).T.astype(int)
    prof = np.stack([np.bincount(r.ravel(), weights=v.ravel()) / np.bincount(r.ravel()) for v in x])[:, :10]
    centroids = np.stack([prof[y == k].mean(0) for k in range(3)])
    pred = np.argmin(((prof[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() > 0.6


def test_bad_config_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="split"):
        run_job(simulate_subtomograms(SubtomogramConfig(split=(0.5, 0.2, 0.2)), tmp_path))
    with pytest.raises(ValueError, match="box"):
        run_job(simulate_subtomograms(SubtomogramConfig(box=0), tmp_path))
    (tmp_path / "x.npz").write_bytes(b"")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a tomolens subtomogram split"):
        load_subtomogram_split(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_subtomogram_split(tmp_path / "missing.npz")


def test_a_template_the_box_would_crop_is_refused_before_any_work(tmp_path):
    """l_shape (radius 122 Å) + 20 Å jitter in a 24-voxel box of 10 Å (half-box 120 Å): cropped by 22 Å."""
    cfg = SubtomogramConfig(templates=("globule", "l_shape"), n_per_class=3, box=24, voxel_size_A=10.0)
    with pytest.raises(
        ValueError,
        match=r"would crop l_shape \(radius 122.1 Å: cropped by 22 Å\)\. Use a box of "
        r"at least 32 voxels \(320 Å\)",
    ):
        run_job(simulate_subtomograms(cfg, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # the suggested box is accepted
    cfg.box = 32
    paths = run_job(simulate_subtomograms(cfg, tmp_path / "out"))
    assert json.loads(paths["dataset"].read_text())["template_radius_A"]["l_shape"] == pytest.approx(122.1)
