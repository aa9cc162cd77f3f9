"""Structures of the domain-randomised simulator: bilayer, microtubule, actin, pseudo-proteins."""

import numpy as np
import pytest
from scipy.signal import find_peaks

from tomolens.simulate.pseudoproteins import (
    FAMILIES,
    SIZE_RANGE_NM,
    PseudoProteinSpec,
    _largest_extent,
    render_pseudoprotein,
    sample_pseudoprotein,
)
from tomolens.simulate.scene import Scene
from tomolens.simulate.structures import add_filament, add_membrane, bilayer_profile


@pytest.mark.parametrize("thickness_nm", [4.0, 5.0, 6.0])
def test_bilayer_has_two_peaks_3_to_5_nm_apart(thickness_nm):
    voxel = 2.0
    scene = Scene.empty((80, 24, 24))
    ok = add_membrane(
        scene, "sheet", {"point_zyx": (40.0, 12.0, 12.0), "normal_zyx": (1.0, 0.0, 0.0)}, thickness_nm * 10, voxel
    )
    assert ok
    profile = scene.density[:, 12, 12]
    peaks, _ = find_peaks(profile, height=0.5)
    assert len(peaks) == 2
    spacing_nm = (peaks[1] - peaks[0]) * voxel / 10
    assert 3.0 <= spacing_nm <= 5.0
    # the core between the head groups is much less dense than the peaks, and beyond them is solvent
    assert profile[40] < 0 < profile[peaks].min()  # lipid tails below solvent, head groups dense
    assert profile[:12].max() < 0.01 and profile[-12:].max() < 0.01  # solvent 5.6 nm away
    # label: the bilayer's full thickness
    labelled = np.flatnonzero(scene.instances[:, 12, 12])
    assert (labelled.max() - labelled.min() + 1) * voxel == pytest.approx(thickness_nm * 10, abs=voxel)


def test_membrane_refuses_overlap_and_profile_is_symmetric():
    scene = Scene.empty((40, 40, 40))
    params = {"point_zyx": (20.0, 20.0, 20.0), "radius_A": 120.0}
    assert add_membrane(scene, "vesicle", params, 50.0, 10.0)
    assert not add_membrane(scene, "vesicle", {"point_zyx": (20.0, 22.0, 20.0), "radius_A": 120.0}, 50.0, 10.0)
    d = np.linspace(-40, 40, 81)
    assert np.allclose(bilayer_profile(d, 50.0), bilayer_profile(-d, 50.0))


@pytest.mark.parametrize("n_pf", [13, 14])
def test_microtubule_cross_section_hollow_25nm_with_protofilaments(n_pf):
    voxel = 4.0
    scene = Scene.empty((80, 80, 60))
    path = np.stack([np.full(60, 40.0), np.full(60, 40.0), np.arange(60.0)], axis=1)
    assert add_filament(scene, "microtubule", path, voxel, n_pf=n_pf)
    section, label = scene.density[:, :, 30], scene.instances[:, :, 30] > 0
    z, y = np.mgrid[:80, :80]
    r_A = np.hypot(z - 40, y - 40) * voxel
    assert section[r_A < 60].max() < 0.05  # hollow lumen (inner radius 7.5 nm)
    assert section[(r_A > 85) & (r_A < 115)].mean() > 0.4  # dense wall
    assert section[r_A > 135].max() < 0.05
    outer_diameter_nm = 2 * r_A[label].max() / 10
    assert outer_diameter_nm == pytest.approx(25.0, abs=2 * voxel / 10)
    assert not label[r_A < 70].any()
    # protofilament texture: n_pf-fold angular modulation of the wall
    ring = (r_A > 90) & (r_A < 115)
    angles = np.arctan2(z - 40, y - 40)[ring]
    hist, _ = np.histogram(angles, bins=180, range=(-np.pi, np.pi), weights=section[ring])
    counts, _ = np.histogram(angles, bins=180, range=(-np.pi, np.pi))
    spectrum = np.abs(np.fft.rfft(hist / np.maximum(counts, 1) - (hist / np.maximum(counts, 1)).mean()))
    assert int(np.argmax(spectrum[1:40])) + 1 == n_pf


def test_actin_is_7nm_double_helix_with_37nm_crossover():
    voxel = 2.5
    scene = Scene.empty((40, 40, 400))
    path = np.stack([np.full(400, 20.0), np.full(400, 20.0), np.arange(400.0)], axis=1)
    assert add_filament(scene, "actin", path, voxel)
    z, y = np.mgrid[:40, :40]
    r_A = np.hypot(z - 20, y - 20) * voxel
    label = scene.instances[:, :, 100] > 0
    assert 2 * r_A[label].max() / 10 == pytest.approx(7.0, abs=2 * voxel / 10)
    x0, cross = 100, int(round(370 / voxel))
    a, b, c = (scene.density[:, :, x] for x in (x0, x0 + cross, x0 + cross // 2))
    corr = lambda u, v: float(np.corrcoef(u.ravel(), v.ravel())[0, 1])  # noqa: E731
    assert corr(a, b) > 0.9  # same cross-section one crossover (37 nm) later
    assert corr(a, c) < corr(a, b) - 0.2  # turned by 90° half-way


@pytest.mark.parametrize("family", FAMILIES)
def test_pseudoproteins_sizes_in_range_and_deterministic(family):
    rng = np.random.default_rng(3)
    voxel = 5.0
    for size in (SIZE_RANGE_NM[0], 17.0, SIZE_RANGE_NM[1]):
        spec = PseudoProteinSpec(family, size, int(rng.integers(1000)))
        t = render_pseudoprotein(spec, voxel)
        extent_nm = (_largest_extent(t.mask) + 1) * voxel / 10
        assert extent_nm == pytest.approx(size, abs=voxel / 10 + 0.05 * size)
        assert t.density.dtype == np.float32 and t.density.shape[0] % 2 == 1
        if size == 17.0:
            assert np.array_equal(t.density, render_pseudoprotein(spec, voxel).density)
    drawn = [sample_pseudoprotein((family,), rng) for _ in range(20)]
    assert all(SIZE_RANGE_NM[0] <= s.size_nm <= SIZE_RANGE_NM[1] and s.family == family for s in drawn)
    other = render_pseudoprotein(PseudoProteinSpec(family, 10.0, 1), voxel).density
    assert not np.array_equal(render_pseudoprotein(PseudoProteinSpec(family, 10.0, 2), voxel).density, other)


def test_bad_pseudoprotein_and_filament_settings():
    with pytest.raises(ValueError, match="6.0-40.0 nm"):
        render_pseudoprotein(PseudoProteinSpec("compact", 50.0, 0), 5.0)
    with pytest.raises(ValueError, match="Unknown pseudo-protein family"):
        render_pseudoprotein(PseudoProteinSpec("blob", 10.0, 0), 5.0)
    with pytest.raises(ValueError, match="Unknown filament kind"):
        add_filament(Scene.empty((16, 16, 16)), "tubulin", np.zeros((3, 3)), 10.0)
