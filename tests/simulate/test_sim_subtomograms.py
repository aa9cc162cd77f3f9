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
    cfg = SubtomogramConfig(templates=("barrel", "l_shape", "globule"), n_per_class=8, box=24,
                            snrs=(0.05, math.inf), seed=3)
    return out, run_job(simulate_subtomograms(cfg, out))


def test_layout_and_labels(dataset):
    out, paths = dataset
    assert set(paths) == {"dataset", *(f"{s}/{k}" for s in ("0.05", "inf") for k in ("train", "val", "test"))}
    meta = json.loads(paths["dataset"].read_text())
    assert meta["class_names"] == ["barrel", "l_shape", "globule"]
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
