"""Point-group symmetry: groups, symmetry-aware errors, symmetrised maps, axes, refinement, STAR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from tomolens.jobs import run_job
from tomolens.orient.project import simulate_projections
from tomolens.orient.reconstruct import reconstruct_fourier
from tomolens.orient.rotations import canonical, random_orientations
from test_orient_refine import blob_map  # noqa: E402 (tests/orient is on sys.path under pytest)
from tomolens.orient.symmetry import (
    Symmetry,
    _quat_multiply,
    check_symmetry,
    detect_symmetry,
    find_symmetry_frame,
    group_rotations,
    parse_symmetry,
    symmetric_errors_deg,
    symmetrise_volume,
    symmetry_score,
)


def tilted(angles_deg=(30.0, 50.0, 10.0)) -> np.ndarray:
    return Rotation.from_euler("ZYZ", angles_deg, degrees=True).as_matrix()


def test_groups_follow_relion_conventions():
    assert [len(group_rotations(g)) for g in ("C1", "C7", "D7", "T", "O", "I")] == [1, 7, 14, 12, 24, 60]
    assert parse_symmetry("d7") == "D7" and parse_symmetry(None) == "C1"
    np.testing.assert_allclose(group_rotations("D3").as_matrix()[0], np.eye(3))  # identity first
    # Cn: every rotation about z; Dn: the n-fold about z and a 2-fold about x
    rotvecs = group_rotations("C7").as_rotvec()[1:]
    np.testing.assert_allclose(np.abs(rotvecs[:, 2]), np.linalg.norm(rotvecs, axis=1), atol=1e-12)
    half_turn_x = Rotation.from_euler("x", 180, degrees=True).as_matrix()
    assert min(np.abs(m - half_turn_x).max() for m in group_rotations("D7").as_matrix()) < 1e-12
    for bad in ("C0", "D1", "X3", "C", "I5", "T2"):
        with pytest.raises(ValueError, match="Unknown symmetry"):
            parse_symmetry(bad)


#: RELION's generators (fold, axis) of T, O and I1…I4 (its symmetries.cpp), to check our settings against.
RELION_GENERATORS = {
    "T": ((3, (0, 0, 1)), (2, (0, 0.816496, 0.577350))),
    "O": ((3, (1, 1, 1)), (4, (0, 0, 1))),
    "I1": ((2, (1, 0, 0)), (5, (0.850651, 0, -0.525731)), (3, (0.934172, 0.356822, 0))),
    "I2": ((2, (0, 0, 1)), (5, (0.525731, 0, 0.850651)), (3, (0, 0.356822, 0.934172))),
    "I3": ((2, (-0.525731, 0, 0.850651)), (5, (0, 0, 1)), (3, (-0.491123, 0.356822, 0.794654))),
    "I4": ((2, (0.525731, 0, 0.850651)), (5, (0.894427, 0, 0.447214)), (3, (0.491123, 0.356822, 0.794654))),
}


@pytest.mark.parametrize("name", sorted(RELION_GENERATORS))
def test_relion_settings_of_t_o_and_i(name):
    group = group_rotations(name)
    mats = group.as_matrix()
    assert len(mats) == {"T": 12, "O": 24}.get(name, 60) and parse_symmetry(name.lower()) == name
    for fold, axis in RELION_GENERATORS[name]:  # each RELION generator is an element of our group
        turn = Rotation.from_rotvec(np.asarray(axis) / np.linalg.norm(axis) * 2 * np.pi / fold).as_matrix()
        assert np.abs(mats - turn).max(axis=(1, 2)).min() < 1e-5, (name, fold, axis)
    products = np.einsum("aij,bjk->abik", mats, mats).reshape(-1, 1, 3, 3)  # closed under products
    assert np.abs(products - mats[None]).max(axis=(2, 3)).min(axis=1).max() < 1e-9
    if name == "I2":  # RELION's I is I2, not scipy's setting (which is I1)
        np.testing.assert_allclose(group_rotations("I").as_matrix(), mats)
        scipy_i = Rotation.create_group("I").as_matrix()[:, None]
        assert np.abs(scipy_i - group_rotations("I1").as_matrix()[None]).max(axis=(2, 3)).min(axis=1).max() < 1e-9


def test_a_map_in_another_relion_setting_of_i_is_recognised():
    """A map symmetric in I1 asked for as I (= I2): the frame found turns I2 into I1."""
    vol = symmetrise_volume(blob_map(n=24, seed=4), "I1")
    found = find_symmetry_frame(vol, "I")
    assert found.score > 0.95 and symmetry_score(vol, "I") < 0.9
    in_i1 = group_rotations("I1").as_matrix()
    assert np.abs(found.matrices()[:, None] - in_i1[None]).max(axis=(2, 3)).min(axis=1).max() < 1e-9


@pytest.mark.parametrize("name", ["C7", "D7", "I"])
def test_error_is_zero_for_orientations_that_differ_by_a_group_element(name):
    truth = random_orientations(300, seed=2)
    sym = Symmetry(name, tilted())  # the group in a map frame that is not RELION's setting
    rng = np.random.default_rng(0)
    picks = sym.quats()[rng.integers(0, sym.order, len(truth))]
    same = _quat_multiply(truth, picks)
    # and a global rotation of the map, in either hand (what is left once the frame is fixed)
    moved = _quat_multiply(same, Rotation.random(random_state=5).as_quat()[None])
    if name == "D7":
        moved = _quat_multiply(np.array([[0.0, 0.0, 1.0, 0.0]]), moved)
    errors, _ = symmetric_errors_deg(moved, truth, sym)
    assert errors.max() < 1e-3
    plain, _ = symmetric_errors_deg(same, truth, "C1")
    assert np.median(plain) > 30  # without the group the same orientations look far off
    # rotations outside the group are errors: steps of 360/14° about z, half of them not in C7
    if name == "C7":
        turns = Rotation.from_euler("z", rng.integers(0, 14, (len(truth), 1)) * 360 / 14, degrees=True).as_quat()
        off = _quat_multiply(truth, Rotation.from_matrix(sym.frame).as_quat()[None])
        off = _quat_multiply(_quat_multiply(off, turns), Rotation.from_matrix(sym.frame.T).as_quat()[None])
        assert np.mean(symmetric_errors_deg(off, truth, sym)[0] > 10) > 0.3


def test_symmetrised_reconstruction_of_a_cn_map_equals_the_map():
    torch.set_num_threads(1)
    vol = symmetrise_volume(blob_map(), "C4")
    assert symmetry_score(vol, "C4") > 0.98 and symmetry_score(blob_map(), "C4") < 0.7
    np.testing.assert_allclose(symmetrise_volume(vol, "C4"), vol, atol=0.02 * vol.max())
    pset = run_job(simulate_projections(vol, 5.0, 300, seed=3))
    plain = run_job(reconstruct_fourier(pset.images, pset.quats))
    recon = run_job(reconstruct_fourier(pset.images, pset.quats, symmetry="C4"))
    mask = vol > 0.05 * vol.max()

    def corr(a):
        return np.corrcoef(a[mask], vol[mask])[0, 1]

    assert corr(recon) > 0.98 and corr(recon) >= corr(plain) - 1e-3
    assert np.abs(recon - vol).max() < 0.2 * vol.max()


def test_axes_detection_and_warnings():
    frame = tilted((20.0, 40.0, 0.0))
    vol = symmetrise_volume(blob_map(seed=2), Symmetry("D3", frame))
    found = find_symmetry_frame(vol, "D3")
    assert found.score > 0.95
    assert np.degrees(np.arccos(abs(found.frame[:, 2] @ frame[:, 2]))) < 2.0  # the 3-fold axis
    report = run_job(detect_symmetry(vol))
    assert report.suggested.name == "D3" and report.scores["D3"] > 0.95
    assert run_job(detect_symmetry(blob_map())).suggested.name == "C1"
    sym, warning = check_symmetry(blob_map(), "D7")
    assert warning is not None and f"scores {sym.score:.2f} for D7" in warning
    assert check_symmetry(vol, "C3")[1] is None


def test_refinement_finds_orientations_up_to_symmetry():
    """A C3 phantom; starting orientations in another frame, symmetry copies, 4° kicks, a fifth lost."""
    from tomolens.orient.refine import refine_orientations

    torch.set_num_threads(1)
    vol = symmetrise_volume(blob_map(seed=3), Symmetry("C3", tilted()))
    pset = run_job(simulate_projections(vol, 5.0, 300, seed=7, snr=1.0))
    truth = pset.quats
    rng = np.random.default_rng(1)
    sym = Symmetry("C3", tilted())
    start = _quat_multiply(truth, sym.quats()[rng.integers(0, 3, len(truth))])
    start = _quat_multiply(start, Rotation.random(random_state=9).as_quat()[None])  # a global rotation of the map
    start = Rotation.from_rotvec(rng.normal(size=(len(truth), 3)) * np.radians(4.0)) * Rotation.from_quat(start)
    start = start.as_quat()
    lost = rng.choice(len(truth), 60, replace=False)
    start[lost] = Rotation.random(60, random_state=rng).as_quat()
    before, _ = symmetric_errors_deg(start, truth, sym)
    info: dict = {}
    refined, _, history = run_job(
        refine_orientations(
            pset.images,
            start,
            5.0,
            schedule=(("global", 15.0, 15.0, 1), ("local", 4.0, 15.0, 2), ("local", 2.0, 12.0, 1)),
            symmetry="C3",
            info=info,
        )
    )
    after, _ = symmetric_errors_deg(refined, truth, sym)
    assert np.median(before) > 7.0 and np.median(after) < 5.0 and np.median(after[lost]) < 6.0
    assert info["symmetry_score"] > 0.5 and not info["kept_start"]  # a blurred first map: well above 0
    assert info["half_set_score"] >= history[0]["half_set_score_before"]
    # the result is in RELION's setting: its reconstruction has the 3-fold axis along z
    recon = run_job(reconstruct_fourier(pset.images, refined))
    assert symmetry_score(recon, "C3") > 0.6 > 0.3 > symmetry_score(recon, Symmetry("C3", tilted()))


@pytest.mark.parametrize("gold_standard", [False, True])
def test_refinement_never_ends_below_its_start(monkeypatch, gold_standard):
    """A pass that goes wrong (here: one that scrambles the orientations) is undone by the half-set FSC."""
    import tomolens.orient.refine as refine
    from tomolens.jobs import Progress

    torch.set_num_threads(1)
    pset = run_job(simulate_projections(blob_map(), 5.0, 200, seed=5, snr=1.0))
    schedule = (("local", 2.0, 15.0, 1),)

    def scramble(images_ft, mats, spec, plane, candidates, batch):
        yield Progress(1, 1, "scrambling")
        return Rotation.random(len(mats), random_state=0).as_matrix(), len(mats)

    monkeypatch.setattr(refine, "local_pass", scramble)
    info: dict = {}
    refined, _, history = run_job(
        refine.refine_orientations(
            pset.images, pset.quats, 5.0, schedule=schedule, info=info, gold_standard=gold_standard
        )
    )
    assert history[0]["moved"] == len(pset.quats)
    assert history[0]["half_set_score_after"] < history[0]["half_set_score_before"] - 0.2
    assert info["kept_start"]  # the start is returned
    np.testing.assert_allclose(np.abs(np.sum(canonical(refined) * canonical(pset.quats), axis=1)), 1.0, atol=1e-9)


def test_star_round_trip_with_relion_conventions(tmp_path):
    import starfile

    from tomolens.orient.files import read_angles_star, read_star_symmetry, write_angles_star

    quats = random_orientations(50, seed=8, half_sphere=False)
    shifts = np.random.default_rng(0).uniform(-5, 5, (50, 2))
    path = write_angles_star(tmp_path / "o.star", quats, "stack.mrcs", 4.0, shifts_A=shifts, symmetry="D7")
    back, back_shifts = read_angles_star(path)
    np.testing.assert_allclose(np.abs(np.sum(back * quats, axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(back_shifts, shifts, atol=1e-5)  # starfile writes 6 decimals
    assert read_star_symmetry(path) == "D7"
    table = starfile.read(path, always_dict=True)["particles"]
    # RELION: the matrix of (rot, tilt, psi) maps map coordinates to the image; origin = −content shift
    from tomolens.orient.rotations import matrices, quats_from_relion

    angles = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    np.testing.assert_allclose(matrices(quats_from_relion(angles)), matrices(quats), atol=1e-6)
    np.testing.assert_allclose(table["rlnOriginXAngst"].to_numpy(), -shifts[:, 0], atol=1e-5)
    assert table["rlnImageName"].iloc[0] == "000001@stack.mrcs"
    write_angles_star(tmp_path / "c1.star", quats, "stack.mrcs")
    assert read_star_symmetry(tmp_path / "c1.star") == "C1"


def test_maps_too_large_or_too_small_for_the_box_or_window():
    from tomolens.orient.project import box_warnings, particle_diameter_A

    ball = np.zeros((40, 40, 40), np.float32)
    g = np.arange(40) - 20
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    ball[x**2 + y**2 + z**2 < 10**2] = 1.0
    assert particle_diameter_A(ball, 5.0) == pytest.approx(100.0, abs=15.0)
    assert box_warnings(ball, 5.0, window_A=200.0) == []
    assert "wider than the distance network's 80 Å input window" in box_warnings(ball, 5.0, window_A=80.0)[0]
    assert "under a quarter" in box_warnings(ball, 5.0, window_A=500.0)[0]
    cut = np.ones((20, 20, 20), np.float32)  # density up to the box's edge
    assert "reaches the edge of its box" in box_warnings(cut, 5.0)[0]


def test_pipeline_with_a_symmetry_and_a_map_that_lacks_it():
    """recover_from_stack: errors up to the group, a symmetrised map, and a warning for a group the map lacks."""
    from tomolens.orient.pipeline import recover_from_stack

    torch.set_num_threads(1)
    vol = blob_map()  # asymmetric
    pset = run_job(simulate_projections(vol, 5.0, 120, seed=4))
    values = {"recover_steps": 20, "pairs_per_step": 1000, "n_anchors": 40, "symmetry": "C3", "refine": False}
    out = run_job(recover_from_stack(pset.images, 5.0, values, pset.quats, vol))
    assert out.symmetry == "C3" and any("scores" in w and "for C3 symmetry" in w for w in out.warnings)
    assert "warning:" in out.summary() and "up to C3" in out.summary()
    assert out.symmetry_score < 0.5 and out.errors_deg.shape == (120,)
    # the reconstruction is averaged over the group in the true map's frame
    frame = check_symmetry(vol, "C3")[0]
    assert symmetry_score(out.reconstruction, frame) > 0.9
    with pytest.raises(ValueError, match="symmetry"):
        run_job(recover_from_stack(pset.images, 5.0, {**values, "symmetry": "C99"}))


def test_distance_targets_are_the_same_for_orientations_that_differ_by_a_group_element():
    """The distance network's target min_g d(q_i, q_j g) does not change when q_j becomes q_j g."""
    from tomolens.orient.network import pair_targets
    from tomolens.orient.rotations import geodesic_distance
    from tomolens.orient.symmetry import expand_quats, symmetric_distance

    sym = Symmetry("D3", tilted())
    quats = random_orientations(12, seed=4, half_sphere=False)
    moved = _quat_multiply(quats, sym.quats()[np.random.default_rng(2).integers(0, sym.order, 12)])
    assert np.degrees(geodesic_distance(quats, moved)).max() > 90  # far apart as plain rotations
    target = pair_targets(torch.from_numpy(quats), torch.from_numpy(expand_quats(quats, sym))).numpy()
    target_moved = pair_targets(torch.from_numpy(moved), torch.from_numpy(expand_quats(moved, sym))).numpy()
    np.testing.assert_allclose(target_moved, target, atol=1e-6)
    np.testing.assert_allclose(
        np.diag(pair_targets(torch.from_numpy(quats), torch.from_numpy(expand_quats(moved, sym))).numpy()),
        0.0,
        atol=1e-6,
    )  # an image and its symmetry copy: distance 0
    i, j = np.triu_indices(12, 1)
    np.testing.assert_allclose(target[i, j], symmetric_distance(quats[i], quats[j], sym), atol=1e-9)
    assert np.all(target[i, j] <= geodesic_distance(quats[i], quats[j]) + 1e-9)
    plain = pair_targets(torch.from_numpy(quats), torch.from_numpy(expand_quats(quats, "C1"))).numpy()
    np.testing.assert_allclose(plain[i, j], geodesic_distance(quats[i], quats[j]), atol=1e-9)


def test_distance_training_on_a_symmetric_map_records_its_group_and_axes():
    from tomolens.orient.network import TrainingMap, train_distance_model

    torch.set_num_threads(1)
    frame = tilted()
    vol = symmetrise_volume(blob_map(seed=3), Symmetry("C3", frame))
    _, card = run_job(
        train_distance_model(
            [TrainingMap(vol, 8.0, "c3blob", "C3"), TrainingMap(blob_map(), 8.0, "plain")],
            pixel_size_A=8.0,
            input_size=24,
            projections_per_map=40,
            steps=2,
            batch_size=8,
            seed=1,
        )
    )
    assert card.extra["symmetry"] == {"c3blob": "C3", "plain": "C1"}
    axis = np.asarray(card.extra["symmetry_frames"]["c3blob"]) @ [0.0, 0.0, 1.0]  # the 3-fold axis found
    assert np.degrees(np.arccos(abs(axis @ (frame @ [0.0, 0.0, 1.0])))) < 3.0
    assert "c3blob C3" in card.training_data


def recover_exact(name: str, n: int, seed: int, **kwargs):
    """Recovery from exact distances up to ``name`` (in a tilted frame): its settings and the mean misfit (°)."""
    from tomolens.orient.recover import ExactDistances, recover_orientations
    from tomolens.orient.symmetry import symmetric_distance

    torch.set_num_threads(1)
    sym = Symmetry(name, tilted())
    truth = random_orientations(n, seed=seed)
    i, j = np.triu_indices(n, 1)
    res = run_job(recover_orientations(ExactDistances(truth, sym), **kwargs))
    misfit = symmetric_distance(res.quats[i], res.quats[j], name) - symmetric_distance(truth[i], truth[j], sym)
    return res.settings, float(np.degrees(np.abs(misfit).mean()))


def test_recovery_fits_distances_up_to_the_group():
    """From exact D7 distances, the symmetric loss recovers a set that reproduces them; the plain loss cannot."""
    misfit = {}
    for loss in ("C1", "D7"):
        settings, misfit[loss] = recover_exact(
            "D7", 300, 6, steps=600, pairs_per_step=10000, n_anchors=300, symmetry=loss, starts=1
        )
        assert settings["symmetry"] == loss
    assert misfit["D7"] < 1.0 and misfit["C1"] > 5.0


def test_training_with_a_symmetry_the_map_lacks_warns_with_its_score(caplog):
    from tomolens.orient.network import TrainingMap, map_symmetry

    with caplog.at_level("WARNING", logger="tomolens.orient.network"):
        sym = map_symmetry(TrainingMap(blob_map(), 8.0, "plain", "D7"))
    assert sym.score < 0.9 and f"plain scores {sym.score:.2f} for D7 symmetry" in caplog.text


def test_restarts_leave_the_basin_where_a_single_d3_recovery_stalls():
    """Exact D3 distances: one run from the spectral start stalls (~8° misfit); the annealed restarts fit them."""
    from tomolens.orient.recover import ExactDistances, recover_orientations

    budget = {"steps": 800, "pairs_per_step": 4000, "symmetry": "D3"}
    single_settings, single = recover_exact("D3", 150, 0, starts=1, **budget)
    assert single_settings["starts"] == 1 and single > 5.0  # the stall
    settings, restarted = recover_exact("D3", 150, 0, starts=2, **budget)  # the default with a symmetry is 3
    assert settings["starts"] == 2 and settings["kept_run"] == 1 and restarted < 0.5
    assert settings["misfits"][settings["kept_run"]] == min(settings["misfits"]) < settings["misfits"][0]
    truth = random_orientations(150, seed=0)
    defaults = [
        run_job(recover_orientations(ExactDistances(truth), steps=2, symmetry=g)).settings for g in ("D3", None)
    ]
    assert [d["starts"] for d in defaults] == [3, 1] and defaults[1]["anneal_rad"] == 0.0
    with pytest.raises(ValueError, match="starts must be at least 1"):
        run_job(recover_orientations(ExactDistances(truth), steps=2, starts=0))


def test_global_search_over_the_asymmetric_unit_matches_the_full_search(monkeypatch):
    """On a D2 map the global pass over the asymmetric unit finds what the full grid finds, with ~1/4 the slices."""
    import tomolens.orient.matching as matching
    from tomolens.orient.project import centred_fft2, centred_fft3, fourier_plane
    from tomolens.orient.rotations import global_grid, matrices
    from tomolens.orient.symmetry import asymmetric_unit_grid, symmetric_distance

    torch.set_num_threads(1)
    vol = symmetrise_volume(blob_map(n=24, seed=3), "D2")
    pset = run_job(simulate_projections(vol, 5.0, 40, seed=1))
    _, _, disc, plane = fourier_plane(24, 8.0, matching.LOW_CUT)
    ft = centred_fft2(matching.zero_mean(pset.images), 24)[:, disc].astype(np.complex64)
    spectrum = centred_fft3(vol, 1.0)
    spec = torch.from_numpy(np.stack([spectrum.real, spectrum.imag])[None])
    start = matrices(random_orientations(40, seed=9))  # far off: the grid's best beats them
    slices = []
    real = matching.central_slices
    monkeypatch.setattr(matching, "central_slices", lambda s, m, p: slices.append(len(m)) or real(s, m, p))
    found, evaluations = {}, {}
    for label, grid in (("full", global_grid(12.0)), ("unit", asymmetric_unit_grid(12.0, "D2"))):
        slices.clear()
        mats, moved = run_job(matching.global_pass(ft, start, spec, plane, grid, 100))
        found[label] = Rotation.from_matrix(mats).as_quat()
        evaluations[label] = sum(slices) - len(start)  # reference slices (the rest: the current orientations')
        assert moved >= 35
    assert 3.4 < evaluations["full"] / evaluations["unit"] < 4.6  # D2 has order 4
    for label in found:  # both within the grid step of the truth up to the group
        assert np.median(np.degrees(symmetric_distance(found[label], pset.quats, "D2"))) < 8.0
    apart = np.degrees(symmetric_distance(found["unit"], found["full"], "D2"))
    assert np.mean(apart < 12.0) >= 0.9


def test_detection_suggests_an_icosahedral_map_in_relions_setting():
    vol = symmetrise_volume(blob_map(n=24, seed=4), "I")
    report = run_job(detect_symmetry(vol, candidates=("C3", "C5", "D5", "I")))
    assert report.suggested.name == "I" and report.scores["I"] > 0.9 and report.scores["D5"] > 0.9
    plain = run_job(detect_symmetry(blob_map(n=24, seed=4), candidates=("C5", "I")))
    assert plain.suggested.name == "C1" and "I" not in plain.scores  # C5 fails: I is not tried
