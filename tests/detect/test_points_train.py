"""Training the detector from clicked points: targets, masked loss, radius estimate, the job."""

import numpy as np
import pytest
import torch

from detect_helpers import make_spheres, save_small_detector
from tomolens.detect import detect_particles
from tomolens.detect.points import (
    CENTRE,
    MARKER,
    MASK,
    WEIGHT,
    default_region,
    estimate_radius,
    masked_detection_loss,
    parse_kind_radii,
    parse_region,
    point_targets,
)
from tomolens.detect.points_train import train_from_points
from tomolens.evaluate import match_centres
from tomolens.jobs import JobCancelled, run_job
from tomolens.models.card import read_card


@pytest.fixture
def start_model(tmp_path):
    """A small untrained detector (random weights, 8 channels): fast to train."""
    return save_small_detector(tmp_path / "small.pt")


@pytest.fixture
def planted():
    return make_spheres(shape=(24, 48, 48), radius=3.0, n=16, noise=0.3, seed=1)


def test_targets_put_spheres_of_the_radius_at_the_clicks():
    shape = (20, 30, 30)
    centres = np.array([[10, 10, 10], [10, 20, 20]], float)
    t = point_targets(shape, centres, [3.0, 2.0], (slice(5, 15), slice(5, 25), slice(5, 25)))
    assert t.shape == (4, *shape) and t.dtype == np.float32
    assert t[MASK].sum() == pytest.approx(4 / 3 * np.pi * (27 + 8), rel=0.15)
    assert t[CENTRE][10, 10, 10] == 1.0 and t[CENTRE][10, 20, 20] == 1.0
    assert t[MASK][10, 10, 13] == 1 and t[MASK][10, 10, 14] == 0 and t[MASK][10, 20, 23] == 0
    assert 0 < t[CENTRE][10, 10, 12] < t[CENTRE][10, 10, 11] < 1
    assert t[WEIGHT][0].sum() == 0 and t[WEIGHT][10, 6, 6] == 1  # known only in the region
    assert t[MARKER][10, 10, 10] == 0.5 and (t[MARKER] > 0).sum() == 2


def test_held_out_clicks_are_unlabelled_for_training_and_positive_for_validation():
    centres = np.array([[10, 10, 10], [10, 20, 20]], float)
    region = (slice(0, 20), slice(0, 30), slice(0, 30))
    held = np.array([False, True])
    train = point_targets((20, 30, 30), centres, 3.0, region, held_out=held)
    val = point_targets((20, 30, 30), centres, 3.0, region, held_out=held, validation=True)
    assert train[WEIGHT][10, 20, 20] == 0 and train[WEIGHT][10, 20, 24] == 0 and train[MASK][10, 20, 20] == 0
    assert val[WEIGHT][10, 20, 20] == 1 and val[MASK][10, 20, 20] == 1
    assert train[MARKER][10, 20, 20] == 1.0 and train[WEIGHT][10, 10, 10] == 1


def test_negatives_are_background_outside_the_region():
    t = point_targets((20, 30, 30), np.array([[5, 5, 5]], float), 2.0, None, negatives_zyx=np.array([[15, 25, 25]]))
    assert t[WEIGHT][15, 25, 25] == 1 and t[MASK][15, 25, 25] == 0
    assert t[WEIGHT][15, 15, 15] == 0 and t[WEIGHT][5, 5, 5] == 1


def test_masked_loss_ignores_an_unclicked_particle_outside_the_region():
    torch.manual_seed(0)
    shape = (16, 16, 32)
    target = torch.from_numpy(
        point_targets(shape, np.array([[8, 8, 6]], float), 3.0, (slice(0, 16), slice(0, 16), slice(0, 14)))
    )[None]
    logits = torch.randn(1, 2, *shape, requires_grad=True)
    loss = masked_detection_loss(logits, target)
    loss.backward()
    loss = loss.detach()
    assert torch.all(logits.grad[..., 14:] == 0)  # outside the fully picked region: no gradient
    assert torch.any(logits.grad[..., :14] != 0)
    other = logits.detach().clone()
    other[:, :, 4:12, 4:12, 20:28] = 10.0  # a confident "particle" nobody clicked, outside the region
    assert float(masked_detection_loss(other, target)) == pytest.approx(float(loss), rel=1e-6)
    inside = logits.detach().clone()
    inside[:, :, 0:4, 0:4, 0:4] = 10.0  # the same inside the region costs
    assert float(masked_detection_loss(inside, target)) > float(loss)


def test_per_kind_radii_parsing():
    assert parse_kind_radii("ribosome=130, proteasome = 80") == {"ribosome": 130.0, "proteasome": 80.0}
    for bad, msg in (("=30", "names no kind"), ("a=0", "positive"), ("a=x", "positive"), ("a", "positive")):
        with pytest.raises(ValueError, match=msg):
            parse_kind_radii(bad)


def test_region_parsing_and_default_region():
    assert parse_region("0:10, 5:, :7", (20, 30, 40)) == (slice(0, 10), slice(5, 30), slice(0, 7))
    for bad, msg in (
        ("0:10,5:20", "three ranges"),
        ("0:10,a:3,0:4", "not two integers"),
        ("0:10,0:50,0:4", "within 0:30"),
        ("5:5,0:3,0:3", "not be empty"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_region(bad, (20, 30, 40))
    box = default_region(np.array([[5, 10, 10], [8, 12, 20]], float), np.array([2.0, 3.0]), (20, 30, 40))
    assert box == (slice(2, 12), slice(7, 16), slice(7, 24))


def test_radius_estimate_from_the_clicks(planted):
    tomo, _, centres = planted
    assert estimate_radius(tomo, centres) == pytest.approx(3.0, rel=0.25)
    big, _, c_big = make_spheres(shape=(32, 64, 64), radius=6.0, n=8, noise=0.3, seed=2)
    assert estimate_radius(big, c_big) == pytest.approx(6.0, rel=0.25)


def test_short_training_on_planted_particles_finds_them(planted, start_model, tmp_path):
    tomo, _, centres = planted
    res = run_job(
        train_from_points(
            tomo,
            20.0,
            centres[:10],
            tmp_path / "m.pt",
            radius_A=60.0,
            start_from=start_model,
            steps=100,
            learning_rate=5e-3,
            source="test",
        )
    )
    found = run_job(detect_particles(tomo, 20.0, model=str(res.path), device="cpu")).particles
    m = match_centres(found.coords_zyx, centres, 1.5)  # all 16, 6 of them never clicked
    assert m.f1 > 0.7, m
    card = read_card(res.path)
    info = card.extra["points_training"]
    assert info["clicks"] == 10 and info["held_out_clicks"] == 2 and info["radius_source"] == {"": "typed"}
    assert info["steps_limit"] == 100 and info["steps_run"] == 100 and card.polarity == "bright"
    assert info["start_from"]["name"] == "small" and len(card.extra["rounds"]) == 1
    assert [h["step"] for h in res.history] == list(range(10, 101, 10))
    assert all(0 <= h["val_f1"] <= 1 for h in res.history)


def test_next_round_continues_from_the_last_model(planted, start_model, tmp_path):
    tomo, _, centres = planted
    first = run_job(
        train_from_points(tomo, 20.0, centres[:8], tmp_path / "r1.pt", radius_A=60.0, start_from=start_model, steps=10)
    )
    second = run_job(
        train_from_points(
            tomo, 20.0, centres[:12], tmp_path / "r2.pt", radius_A=60.0, start_from=str(first.path), steps=10
        )
    )
    card = read_card(second.path)
    assert card.extra["points_training"]["start_from"] == {"name": "r1", "sha256": first.card.sha256}
    assert [r["clicks"] for r in card.extra["rounds"]] == [8, 12]
    assert card.arch_kwargs["base_channels"] == 8


def test_cancel_keeps_the_best_weights_so_far(planted, start_model, tmp_path):
    tomo, _, centres = planted
    seen = []
    with pytest.raises(JobCancelled):
        run_job(
            train_from_points(
                tomo, 20.0, centres[:10], tmp_path / "c.pt", radius_A=60.0, start_from=start_model, steps=200
            ),
            on_progress=lambda p: p.info and seen.append(p.info),
            should_stop=lambda: len(seen) >= 2,
        )
    card = read_card(tmp_path / "c.json")
    assert card.extra["points_training"]["cancelled"] is True
    assert card.extra["points_training"]["steps_run"] == 20
    assert card.metrics["best_step"] in (0, 10, 20)
    run_job(detect_particles(tomo, 20.0, model=str(tmp_path / "c.pt")))  # a usable model


def test_time_limit_stops_training(planted, start_model, tmp_path):
    tomo, _, centres = planted
    res = run_job(
        train_from_points(
            tomo,
            20.0,
            centres[:10],
            tmp_path / "t.pt",
            radius_A=60.0,
            start_from=start_model,
            steps=10_000,
            minutes=1e-4,
        )
    )
    assert res.card.extra["points_training"]["steps_run"] == 10


def test_per_kind_radius_and_estimate(planted, start_model, tmp_path):
    tomo, _, centres = planted
    kinds = ["a"] * 5 + ["b"] * 5
    res = run_job(
        train_from_points(
            tomo,
            20.0,
            centres[:10],
            tmp_path / "k.pt",
            radius_A={"a": 60.0},
            kinds=kinds,
            start_from=start_model,
            steps=10,
        )
    )
    info = res.card.extra["points_training"]
    assert info["radius_source"] == {"a": "typed", "b": "estimated"}
    assert info["radius_A"]["b"] == pytest.approx(60.0, rel=0.3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"centres_zyx": np.zeros((3, 3))}, "at least 5"),
        ({"centres_zyx": np.array([[5, 5, 5]] * 4 + [[5, 5, 90]])}, "outside the tomogram"),
        ({"radius_A": -10.0}, "positive number"),
        ({"voxel_size_A": None}, "voxel size is unknown"),
        ({"radius_A": 300.0}, "quarter of its 16-voxel patch"),
        ({"region": (slice(0, 4), slice(0, 4), slice(0, 4)), "steps": 0}, "step budget"),
    ],
)
def test_bad_input_is_explained(planted, start_model, tmp_path, kwargs, message):
    tomo, _, centres = planted
    args = {
        "volume": tomo,
        "voxel_size_A": 20.0,
        "centres_zyx": centres[:10],
        "out": tmp_path / "x.pt",
        "radius_A": 60.0,
        "start_from": start_model,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        run_job(train_from_points(**args))
    assert not (tmp_path / "x.pt").exists()
