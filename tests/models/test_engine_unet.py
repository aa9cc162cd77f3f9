import numpy as np
import pytest
import torch

from tomolens.models.unet import UNet2D, UNet3D


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_unet3d_shapes_and_width(depth):
    net = UNet3D(in_channels=1, out_channels=3, base_channels=4, depth=depth)
    x = torch.zeros(2, 1, 16, 24, 32)
    assert net(x).shape == (2, 3, 16, 24, 32)
    assert net.size_multiple == 2**depth
    # widths double per level: first conv has base_channels filters
    assert net.down[0][0].out_channels == 4
    assert net.bottleneck[0].out_channels == 4 * 2**depth


def test_unet2d_same_signature():
    net = UNet2D(in_channels=2, out_channels=5, base_channels=8, depth=2)
    assert net(torch.zeros(1, 2, 32, 32)).shape == (1, 5, 32, 32)


def test_unet_rejects_bad_sizes_and_dims():
    net = UNet3D(base_channels=2, depth=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 1, 16, 18, 16))
    with pytest.raises(ValueError, match="3 spatial axes"):
        net(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="depth"):
        UNet3D(depth=0)


def test_unet_can_fit_a_patch():
    torch.manual_seed(0)
    net = UNet3D(1, 1, base_channels=4, depth=1)
    x = torch.randn(1, 1, 8, 8, 8)
    y = (x > 0).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    assert np.isfinite(float(loss))
