import numpy as np
import pytest

from detect_helpers import make_spheres
from tomolens.detect import DetectionResult, detection_targets, postprocess
from tomolens.evaluate import match_centres


def _noisy_maps(instances, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    t = detection_targets(instances)
    return np.clip(t + rng.normal(0, noise, t.shape), 0, 1).astype(np.float32)


def test_touching_spheres_split_into_the_right_instances():
    # spheres of radius 4 voxels packed down to 7 voxels apart: many touch
    _, inst, centres = make_spheres(n=20, min_sep=7.0, seed=3)
    touching = (np.linalg.norm(centres[:, None] - centres[None], axis=-1) < 8.5).sum() - len(centres)
    assert touching > 0
    maps = _noisy_maps(inst)
    mask, instances, table = postprocess(maps, 10.0, {"particle_radius_A": 40.0, "min_volume_A3": 5e4})
    assert len(table) == len(centres) == instances.max()
    m = match_centres(table.coords_zyx * 10, centres * 10, 20.0)
    assert m.f1 == 1.0 and m.mean_distance_A < 8
    assert list(table.features.columns[:3]) == ["score", "volume_A3", "instance_id"]
    np.testing.assert_array_equal(np.sort(table.features["instance_id"]), np.arange(1, len(table) + 1))
    # volumes near the sphere volume (4/3 π 4³ voxels × 1000 Å³)
    assert np.median(table.features["volume_A3"]) == pytest.approx(4 / 3 * np.pi * 64 * 1000, rel=0.25)
    assert mask.dtype == np.uint8 and instances.dtype == np.int32


def test_size_range_and_score_filters():
    _, inst, centres = make_spheres(n=10, min_sep=10.0, seed=1)
    maps = detection_targets(inst)
    # a small bright speck far from the spheres
    maps[:, 1:3, 1:3, 1:3] = 1.0
    maps[1, 2, 2, 2] = 1.0
    base = {"particle_radius_A": 40.0, "min_volume_A3": 0.0, "fragment_fraction": 0.0}
    _, _, all_found = postprocess(maps, 10.0, base)
    _, _, filtered = postprocess(maps, 10.0, {**base, "min_volume_A3": 5e4})
    assert len(all_found) == len(filtered) + 1 == len(centres) + 1
    _, _, frag = postprocess(maps, 10.0, {**base, "fragment_fraction": 0.2})
    assert len(frag) == len(centres)
    _, _, none = postprocess(maps, 10.0, {**base, "max_volume_A3": 1e4})
    assert len(none) == 1


def test_reapply_uses_kept_maps():
    _, inst, centres = make_spheres(n=12, min_sep=9.0, seed=2)
    maps = _noisy_maps(inst, noise=0.05)
    mask, instances, table = postprocess(maps, 10.0, {"particle_radius_A": 40.0})
    result = DetectionResult(maps, mask, instances, table, 10.0, 10.0, {"particle_radius_A": 40.0})
    stricter = result.reapply(centre_threshold=0.99)
    assert len(stricter.particles) < len(table)
    assert stricter.prob_maps is maps
    assert len(result.reapply(centre_threshold=0.3).particles) == len(centres)


def test_postprocess_bad_input():
    with pytest.raises(ValueError, match=r"\(2, z, y, x\)"):
        postprocess(np.zeros((3, 4, 4, 4), np.float32), 10.0)
    with pytest.raises(ValueError, match="voxel size"):
        postprocess(np.zeros((2, 4, 4, 4), np.float32), None)
    with pytest.raises(ValueError, match="mask_threshold"):
        postprocess(np.zeros((2, 4, 4, 4), np.float32), 10.0, {"mask_threshold": 2.0})


def _sphere_instances(shape, centres, radii):
    grid = np.indices(shape, dtype=np.float32)
    inst = np.zeros(shape, np.int32)
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        inst[sum((g - v) ** 2 for g, v in zip(grid, c)) <= r * r] = i
    return inst


def test_auto_radius_follows_each_particle_so_large_ones_are_not_split():
    # small (radius 3) and large (radius 9) particles in one volume; a fixed radius fitted to the small ones
    # splits the large ones, the per-particle estimate neither splits nor merges
    centres = np.array([(12, 12, 12), (12, 12, 36), (12, 36, 12), (12, 36, 36), (12, 48, 52), (12, 52, 28)], float)
    radii = [9, 9, 9, 9, 3, 3]
    inst = _sphere_instances((24, 64, 64), centres, radii)
    maps = detection_targets(inst)
    # a spurious second maximum on each large particle's centre map, 4 voxels off its centre
    for c in centres[:4].astype(int):
        maps[1, c[0], c[1], c[2] + 4] = 0.9
    _, _, fixed = postprocess(maps, 10.0, {"particle_radius_A": 30.0, "min_volume_A3": 0.0, "fragment_fraction": 0.0})
    assert len(fixed) > len(centres)  # the large ones are split with a 30 Å radius
    _, instances, auto = postprocess(
        maps, 10.0, {"particle_radius_A": 0.0, "min_volume_A3": 0.0, "fragment_fraction": 0.0}
    )
    m = match_centres(auto.coords_zyx * 10, centres * 10, 15.0)
    assert len(auto) == len(centres) == instances.max() and m.f1 == 1.0
    by_size = np.sort(auto.features["radius_A"].to_numpy())
    assert by_size[:2] == pytest.approx([30, 30], rel=0.35) and by_size[2:] == pytest.approx([90] * 4, rel=0.25)


def test_two_lobe_particle_is_picked_at_its_centre_of_mass():
    # one particle made of two lobes (a chaperonin seen side-on): the centre map has a peak in each lobe
    shape = (24, 40, 40)
    lobes = np.array([(12, 20, 16.5), (12, 20, 23.5)])
    inst = _sphere_instances(shape, lobes, [4, 4])
    maps = detection_targets(inst)
    maps[1][inst == 2] *= 0.45  # the network is surer of one lobe
    maps[0] = inst > 0
    mass = lobes.mean(axis=0)
    _, _, peak = postprocess(
        maps,
        10.0,
        {"particle_radius_A": 120.0, "centre_method": "peak", "min_volume_A3": 0.0, "min_distance_fraction": 0.7},
    )
    assert len(peak) == 1 and np.linalg.norm(peak.coords_zyx[0] - mass) > 2.5  # in a lobe
    _, instances, table = postprocess(
        maps,
        10.0,
        {"particle_radius_A": 120.0, "min_volume_A3": 0.0, "centre_method": "mass", "min_distance_fraction": 0.7},
    )
    assert len(table) == 1 and np.linalg.norm(table.coords_zyx[0] - mass) < 0.5
    assert instances.max() == 1 and np.count_nonzero(instances) == np.count_nonzero(maps[0] > 0.5)
