import numpy as np
import pytest
import torch

from tomolens.jobs import Progress, run_job
from tomolens.models.tiling import blend_window, predict_tiled, tile_starts
from tomolens.models.unet import UNet3D
from tomolens.preprocess import estimate_normalisation


@pytest.fixture
def net():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return UNet3D(1, 2, base_channels=4, depth=2).eval()


def _whole(net, vol):
    norm = estimate_normalisation(vol)
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(norm.apply(vol, (0, 0, 0)))[None, None])).numpy()[0]


def test_tile_starts_cover_axis():
    assert tile_starts(72, 32, 16) == [0, 16, 32, 40]
    assert tile_starts(20, 32, 8) == [0]
    w = blend_window((8, 8, 8))
    assert w.max() == pytest.approx(1.0, abs=0.01) and w.min() >= 1e-3


def test_tiled_equals_whole_volume(net):
    vol = np.random.default_rng(0).normal(size=(40, 72, 72)).astype(np.float32)
    progress = []
    tiled = run_job(predict_tiled(net, vol, (32, 32, 32), overlap=0.5, batch_size=3), progress.append)
    whole = _whole(net, vol)
    assert tiled.shape == (2, 40, 72, 72) and tiled.dtype == np.float32
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.02  # everywhere, borders included
    assert diff.mean() < 1e-3
    assert all(isinstance(p, Progress) for p in progress) and progress[-1].done == progress[-1].total


def test_tiled_writes_into_memmap_and_rescales(net, tmp_path):
    vol = np.random.default_rng(1).normal(size=(24, 40, 40)).astype(np.float32)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=(2, 24, 40, 40))
    res = run_job(predict_tiled(net, vol, (16, 32, 32), overlap=8, out=out))
    assert res is out and np.isfinite(out).all() and out.max() <= 1
    # tiny memmap threshold forces temporary memmaps internally
    res2 = run_job(predict_tiled(net, vol, (16, 32, 32), overlap=8, memmap_above_bytes=1, tmp_dir=tmp_path))
    np.testing.assert_allclose(np.asarray(res2), out, atol=1e-6)
    # a volume at 5 Å for a 10 Å model is halved, predicted and mapped back to its grid
    scaled = run_job(predict_tiled(net, vol, (16, 16, 16), voxel_size_A=5.0, model_voxel_size_A=10.0))
    assert scaled.shape == (2, 24, 40, 40)


def test_tiled_rejects_2d_image_for_3d_model(net):
    with pytest.raises(ValueError, match="3D patches"):
        run_job(predict_tiled(net, np.zeros((64, 64), np.float32), (32, 32, 32)))
    with pytest.raises(ValueError, match="divisible by 4"):
        run_job(predict_tiled(net, np.ones((30, 30, 30), np.float32), (30, 30, 30)))


class _SlabMean(torch.nn.Module):
    """(N, 1, 1 + 2h, y, x) → (N, 2, 1, y, x): the slab's mean and its first slice."""

    out_channels = 2

    def forward(self, x):
        return torch.stack([x[:, 0].mean(1), x[:, 0, 0]], 1)[:, :, None]


def test_tiled_context_reads_neighbouring_slices_and_repeats_the_faces():
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(7, 40, 24)).astype(np.float32)
    h = 2
    out = run_job(
        predict_tiled(
            _SlabMean(), vol, (1, 16, 16), overlap=0.25, activation=None, normalisation=(0.0, 1.0), context=(h, 0, 0)
        )
    )
    idx = np.clip(np.arange(-h, vol.shape[0] + h), 0, vol.shape[0] - 1)
    slabs = np.stack([vol[idx[z : z + 2 * h + 1]] for z in range(vol.shape[0])])  # (z, 2h+1, y, x)
    np.testing.assert_allclose(out[0], slabs.mean(1), atol=1e-5)
    np.testing.assert_allclose(out[1], slabs[:, 0], atol=1e-6)  # the face slice repeated below z = 0
