"""Segmentation core: sparse loss, label checks, clean-up, training, prediction, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_toy import TOY_CLASSES, make_toy

from tomolens.jobs import JobCancelled, run_job
from tomolens.models.card import ModelCard
from tomolens.segment.cleanup import clean_classes, fill_small_holes, instances_from_classes
from tomolens.segment.labels import (
    check_painted_labels,
    class_lookup,
    evenly_spaced_slices,
    sparse_from_classes,
)
from tomolens.segment.losses import sparse_segmentation_loss
from tomolens.segment.predict import (
    check_model_classes,
    classes_from_probabilities,
    predict_probabilities,
    predicted_label_values,
    segment_tomogram,
)
from tomolens.segment.simulated import dice_per_class
from tomolens.segment.train import save_segmenter, train_segmenter

FAST = dict(
    model_kind="2d",
    patch=32,
    batch_size=4,
    base_channels=8,
    depth=2,
    learning_rate=5e-3,
    val_patches=4,
    device="cpu",
    seed=0,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_sparse_loss_ignores_unpainted_voxels(dice_weight):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
    target = torch.randint(1, 4, (2, 8, 8), generator=gen)
    target[:, :4] = 0  # top half not painted
    loss = sparse_segmentation_loss(logits, target, dice_weight=dice_weight)
    loss.backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[:, :, :4]) == 0  # exactly zero gradient where unpainted
    assert torch.count_nonzero(grad[:, :, 4:]) > 0
    # changing the logits of unpainted voxels does not change the loss
    changed = logits.detach().clone()
    changed[:, :, :4] = 100 * torch.randn(2, 3, 4, 8, generator=gen)
    assert float(sparse_segmentation_loss(changed, target, dice_weight=dice_weight)) == pytest.approx(float(loss))
    if dice_weight == 0:
        expected = torch.nn.functional.cross_entropy(
            logits.detach().permute(0, 2, 3, 1)[:, 4:].reshape(-1, 3), (target[:, 4:] - 1).reshape(-1)
        )
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_sparse_loss_nothing_painted_is_zero_with_zero_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = sparse_segmentation_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), dice_weight=1.0)
    loss.backward()
    assert float(loss) == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_sparse_loss_rejects_labels_beyond_the_classes():
    with pytest.raises(ValueError, match="has no output channel"):
        sparse_segmentation_loss(torch.randn(1, 2, 4, 4), torch.full((1, 4, 4), 3))


def test_painted_label_checks_say_what_is_wrong():
    names = ["background", "membrane"]
    good = np.zeros((4, 8, 8), np.uint8)
    good[1, :4], good[1, 4:] = 1, 2
    assert check_painted_labels(good, (4, 8, 8), names).dtype == np.int16
    with pytest.raises(ValueError, match=r"shape \(4, 8, 9\).*tomogram has \(4, 8, 8\)"):
        check_painted_labels(np.zeros((4, 8, 9), np.uint8), (4, 8, 8), names)
    with pytest.raises(ValueError, match="No voxels are painted.*1 = background, 2 = membrane"):
        check_painted_labels(np.zeros((4, 8, 8), np.uint8), (4, 8, 8), names)
    single = np.zeros((4, 8, 8), np.uint8)
    single[2] = 2
    with pytest.raises(ValueError, match="Only one class \\('membrane', value 2\\)"):
        check_painted_labels(single, (4, 8, 8), names)
    with pytest.raises(ValueError, match=r"Label values \[3\] have no class"):
        check_painted_labels(good * 0 + np.where(good == 2, 3, good).astype(np.uint8), (4, 8, 8), names)
    with pytest.raises(ValueError, match="at least two classes"):
        check_painted_labels(good, (4, 8, 8), ["background"])


def test_ground_truth_conversions():
    lut = class_lookup(["background", "ring7", "membrane", "barrel", "filament"])
    assert lut.tolist() == [0, 3, 1, 3, 2]
    classes = np.arange(3 * 4 * 4).reshape(3, 4, 4) % 3
    sparse = sparse_from_classes(classes, [1])
    assert np.all(sparse[[0, 2]] == 0) and np.array_equal(sparse[1], classes[1] + 1)
    assert evenly_spaced_slices(5, 100) == [15, 32, 50, 67, 84]


def test_cleanup_removes_small_components_fills_small_holes_keeps_lumen():
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[2:8, 2:8, 2:8] = 1
    classes[4, 4, 4] = 0  # a one-voxel hole
    classes[15, 15, 15] = 1  # a speck
    shell = np.zeros_like(classes, bool)
    shell[10:19, 10:19, 1:10] = True
    shell[11:18, 11:18, 2:9] = False  # a closed box with a 343-voxel lumen
    classes[shell] = 2
    out = clean_classes(classes, 3, min_size_voxels=5, max_hole_voxels=10)
    assert out[15, 15, 15] == 0 and out[4, 4, 4] == 1
    assert np.all(out[11:18, 11:18, 2:9] == 0)  # the lumen is larger than 10 voxels: not filled
    assert fill_small_holes(shell, 1000)[14, 14, 5]
    instances, table = instances_from_classes(out, ["background", "a", "b"], voxel_size_A=10.0)
    assert len(table) == 2 and sorted(table["class_name"]) == ["a", "b"]
    assert table.loc[table["class_name"] == "a", "voxels"].item() == 216
    assert table["volume_A3"].iloc[0] == table["voxels"].iloc[0] * 1000
    assert set(np.unique(instances)) == {0, 1, 2}


def test_threshold_and_label_values():
    probs = np.array([[0.5, 0.2, 0.7], [0.3, 0.5, 0.1], [0.2, 0.3, 0.2]], np.float32)[:, None, None, :]
    assert classes_from_probabilities(probs).ravel().tolist() == [0, 1, 0]
    assert classes_from_probabilities(probs, 0.25).ravel().tolist() == [1, 1, 0]
    assert predicted_label_values(np.array([0, 1, 2])).tolist() == [0, 2, 3]


def test_training_on_painted_slices_lowers_loss_and_segments_a_new_volume(tmp_path):
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [3, 8, 12])
    trained = run_job(
        train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=5, steps_per_epoch=10, patience=10, **FAST)
    )
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < 0.7 * losses[0]
    test_tomo, test_classes = make_toy(1)
    probs = run_job(predict_probabilities(trained.model, trained.card, test_tomo, 10.0, orthogonal=False))
    assert probs.shape == (3, *test_tomo.shape)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    dice = dice_per_class(classes_from_probabilities(probs), test_classes, TOY_CLASSES)
    assert dice["background"] > 0.9 and dice["membrane"] > 0.5 and dice["filament"] > 0.5, dice
    # save → load → segment gives the same probabilities; the card records the convention
    weights = save_segmenter(trained, tmp_path / "toy.pt")
    result = run_job(
        segment_tomogram(test_tomo, 10.0, model=str(weights), orthogonal=False, device="cpu", class_names=TOY_CLASSES)
    )
    np.testing.assert_allclose(result.probabilities, probs, atol=1e-5)
    assert result.labels.max() == 3 and 1 not in np.unique(result.labels)
    assert result.reapply(threshold=0.99).classes.sum() < result.classes.sum()
    with pytest.raises(ValueError, match="segments \\['background', 'membrane', 'filament'\\].*train a new model"):
        run_job(
            segment_tomogram(test_tomo, 10.0, model=str(weights), device="cpu", class_names=["background", "membrane"])
        )


def test_cancel_training_and_prediction_then_resume(tmp_path):
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [4, 11])
    ckpt = tmp_path / "toy.ckpt"
    with pytest.raises(JobCancelled):
        run_job(
            train_segmenter(
                [(tomo, painted)], TOY_CLASSES, 10.0, epochs=3, steps_per_epoch=10, checkpoint=ckpt, **FAST
            ),
            should_stop=lambda: True,
        )
    assert not ckpt.exists()  # cancelled before the first epoch ended
    seen = []
    with pytest.raises(JobCancelled):
        run_job(
            train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=3, steps_per_epoch=5, checkpoint=ckpt, **FAST),
            on_progress=seen.append,
            should_stop=lambda: bool(seen and seen[-1].info),
        )
    assert ckpt.is_file()
    resumed = run_job(
        train_segmenter(
            [(tomo, painted)], TOY_CLASSES, 10.0, epochs=2, steps_per_epoch=5, checkpoint=ckpt, resume=True, **FAST
        )
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    check_model_classes(resumed.card, TOY_CLASSES)
    with pytest.raises(JobCancelled):
        run_job(predict_probabilities(resumed.model, resumed.card, tomo, 10.0), should_stop=lambda: True)


def test_training_refuses_bad_labels():
    tomo, classes = make_toy(0)
    with pytest.raises(ValueError, match="No voxels are painted"):
        run_job(train_segmenter([(tomo, np.zeros_like(classes))], TOY_CLASSES, 10.0, **FAST))
    with pytest.raises(ValueError, match="labels have shape"):
        run_job(train_segmenter([(tomo, classes[:, :-1] + 1)], TOY_CLASSES, 10.0, **FAST))
    single = np.zeros_like(classes)
    single[5] = 1
    with pytest.raises(ValueError, match="Only one class"):
        run_job(train_segmenter([(tomo, single)], TOY_CLASSES, 10.0, **FAST))


def test_fine_tuning_starts_from_the_given_model(tmp_path):
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [3, 8, 12])
    source = run_job(train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=2, steps_per_epoch=5, **FAST))
    weights = save_segmenter(source, tmp_path / "source.pt")
    fresh = run_job(
        train_segmenter(
            [(tomo, painted)], TOY_CLASSES, 10.0, epochs=1, steps_per_epoch=1, **{**FAST, "learning_rate": 1e-6}
        )
    )
    # the kind, width and depth come from the starting model, whatever was asked for
    tuned = run_job(
        train_segmenter(
            [(tomo, painted)],
            TOY_CLASSES,
            10.0,
            epochs=1,
            steps_per_epoch=1,
            start_from=str(weights),
            **{**FAST, "learning_rate": 1e-6, "model_kind": "3d", "base_channels": 4, "patch": 16},
        )
    )
    assert tuned.card.arch_kwargs == source.card.arch_kwargs and tuned.card.extra["model_kind"] == "2d"
    assert tuned.card.extra["start_from"]["sha256"] == source.card.sha256
    # it predicts with its starting model's tiles, whatever patch it was fine-tuned on
    assert tuned.card.patch_size == source.card.patch_size == [32, 32] and tuned.card.extra["training_patch"] == [
        16,
        16,
    ]
    assert "fine-tuned from source" in tuned.card.training_data
    # one step at a tiny learning rate: the weights are still the starting model's, not a fresh network's
    src = dict(source.model.state_dict())
    for name, value in tuned.model.state_dict().items():
        if value.dtype.is_floating_point and value.ndim > 1:
            assert torch.allclose(value, src[name], atol=1e-4), name
    assert any(
        not torch.allclose(v, src[k], atol=1e-3)
        for k, v in fresh.model.state_dict().items()
        if v.dtype.is_floating_point and v.ndim > 1
    )
    assert fresh.card.extra.get("start_from") is None
    # the model's own classes: its output layer is kept (other classes: tests/segment/test_segment_start.py)
    assert tuned.card.extra["start_from"] == {"name": "source", "sha256": source.card.sha256}
    assert "new output layer" not in tuned.card.training_data


def test_start_model_sets_kind_patch_rule_voxel_size_and_resume_checks(tmp_path):
    from tomolens.segment.settings import train_kwargs

    # the 2D patch rule follows the kind training will produce: the shipped 3D model keeps 32³ patches
    assert train_kwargs({"segment_model": "2d", "patch": 32, "segment_start_from": "segment_default"})["patch"] == 32
    assert train_kwargs({"segment_model": "2d", "patch": 32, "segment_start_from": "none"})["patch"] == 96
    assert train_kwargs({"segment_start_from": "none"})["start_from"] is None
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [3, 8, 12])
    source = run_job(train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=1, steps_per_epoch=2, **FAST))
    weights = save_segmenter(source, tmp_path / "src.pt")
    with pytest.raises(
        ValueError, match="10 Å voxels\\) on a tomogram of 20 Å voxels: rescale.*--segment-start-from none"
    ):
        run_job(train_segmenter([(tomo, painted)], TOY_CLASSES, 20.0, start_from=str(weights), **FAST))
    # resuming a checkpoint written by another network: a clear message, not a torch size mismatch
    ckpt = tmp_path / "run.ckpt"
    run_job(train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=1, steps_per_epoch=2, checkpoint=ckpt, **FAST))
    with pytest.raises(ValueError, match="written by a different network"):
        run_job(
            train_segmenter(
                [(tomo, painted)],
                TOY_CLASSES,
                10.0,
                epochs=2,
                steps_per_epoch=2,
                checkpoint=ckpt,
                resume=True,
                **{**FAST, "base_channels": 4},
            )
        )


def test_slab_pairs_and_prediction_read_the_same_neighbouring_slices():
    """A 2.5D slice model: training slabs (face slices repeated) are what tiled prediction feeds it."""
    from tomolens.preprocess import estimate_normalisation
    from tomolens.segment.networks import SliceWise, build_segmentation_network
    from tomolens.segment.train import make_pairs, slab

    tomo, classes = make_toy(2)
    painted = sparse_from_classes(classes, [0, 8])
    pairs = make_pairs(tomo, painted, "2d", context=2)
    assert [p.image.shape for p in pairs] == [(5, 48, 48)] * 2 and all(p.channels for p in pairs)
    np.testing.assert_array_equal(pairs[0].image[:3], np.stack([tomo[0]] * 3))  # below z = 0: the face slice
    np.testing.assert_array_equal(pairs[1].image, tomo[6:11])
    assert make_pairs(tomo, painted, "2d", context=0)[0].image.shape == (48, 48)

    torch.manual_seed(0)
    net, arch, kwargs = build_segmentation_network("2d", 3, base_channels=4, depth=2, context=2)
    assert kwargs["in_channels"] == 5
    card = ModelCard(
        name="slab",
        task="segment",
        architecture=arch,
        arch_kwargs=kwargs,
        classes=TOY_CLASSES,
        voxel_size_A=10.0,
        patch_size=[32, 32],
        extra={"model_kind": "2d", "context_slices": 2},
        polarity="bright",
    )
    probs = run_job(
        predict_probabilities(net, card, tomo, 10.0, orthogonal=False, slice_smoothing=0, polarity="bright")
    )
    normalised = estimate_normalisation(tomo).apply(tomo, (0, 0, 0))
    with torch.no_grad():
        for z in (0, 1, 7, 15):
            x = torch.from_numpy(slab(normalised, z, 0, 2))[None]
            np.testing.assert_allclose(probs[:, z], net.eval()(x).softmax(1)[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="expects \\(N, 1, 5, y, x\\)"):
        SliceWise(net, 2)(torch.zeros(1, 1, 3, 32, 32))


def _untrained_slice_model(seed: int, context: int = 1):
    """(network, card) of an untrained 2.5D slice U-Net for the toy classes."""
    from tomolens.segment.networks import build_segmentation_network

    torch.manual_seed(seed)
    net, arch, kwargs = build_segmentation_network("2d", 3, base_channels=4, depth=2, context=context)
    card = ModelCard(
        name="t",
        task="segment",
        architecture=arch,
        arch_kwargs=kwargs,
        classes=TOY_CLASSES,
        voxel_size_A=10.0,
        patch_size=[32, 32],
        extra={"model_kind": "2d", "context_slices": context},
    )
    return net, card


def test_test_time_augmentation_averages_the_eight_plane_symmetries():
    tomo, _ = make_toy(3)
    net, card = _untrained_slice_model(1)
    plain = run_job(predict_probabilities(net, card, tomo, 10.0, orthogonal=False))
    averaged = run_job(predict_probabilities(net, card, tomo, 10.0, orthogonal=False, tta=True))
    np.testing.assert_allclose(averaged.sum(0), 1.0, atol=1e-4)
    assert np.abs(averaged - plain).max() > 1e-3  # an untrained network is not symmetric by itself
    # averaged over the group, the prediction of a rotated (or flipped) tomogram is the rotated prediction
    for turned, undo in (
        (np.rot90(tomo, 1, (1, 2)), lambda p: np.rot90(p, -1, (2, 3))),
        (tomo[:, ::-1], lambda p: p[:, :, ::-1]),
    ):
        again = run_job(
            predict_probabilities(net, card, np.ascontiguousarray(turned), 10.0, orthogonal=False, tta=True)
        )
        np.testing.assert_allclose(undo(again), averaged, atol=1e-5)


def test_painted_dice_score_counts_painted_voxels_and_painted_classes_only():
    from tomolens.segment.losses import painted_dice_score

    classes = torch.tensor([[0, 1, 1, 2, 2, 0]])  # 0 background, 1, 2 structures
    logits = torch.nn.functional.one_hot(classes, 3).permute(0, 2, 1).float()  # (1, 3, 6): perfect
    painted = classes + 1
    assert painted_dice_score(logits, painted) == 1.0
    painted[0, 1:3] = 0  # class 1 not painted: it is not scored
    logits[0, :, 3] = torch.tensor([0.0, 5.0, 0.0])  # one painted class-2 voxel called class 1
    # background 1.0; class 2: 2·1 / (1 + 2); class 1 left out (predicting it is not rewarded or punished
    # by itself, only through the painted class it replaced)
    assert painted_dice_score(logits, painted) == pytest.approx((1.0 + 2 / 3) / 2)


def test_training_is_reproducible_from_its_seed():
    """The initial weights follow ``seed``, whatever the global torch random state was."""
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [3, 8, 12])
    runs = []
    for draw in (1, 7):
        torch.rand(draw)  # move the global random state
        trained = run_job(
            train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=2, steps_per_epoch=3, patience=10, **FAST)
        )
        runs.append([(h["loss"], h["val_loss"]) for h in trained.history])
    assert runs[0] == runs[1]


def test_hold_out_none_trains_on_every_painted_voxel_and_keeps_the_last_epoch():
    """A new network trains on all painted voxels by default: nothing is held back, no early stop."""
    tomo, classes = make_toy(0)
    painted = sparse_from_classes(classes, [3, 8, 12])
    painted[:, 30:] = 0  # painted only where the strip would train: holding the strip back is impossible
    with pytest.raises(ValueError, match="validation region"):
        run_job(
            train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=2, steps_per_epoch=2, hold_out="strip", **FAST)
        )
    trained = run_job(
        train_segmenter([(tomo, painted)], TOY_CLASSES, 10.0, epochs=4, steps_per_epoch=3, patience=1, **FAST)
    )  # hold_out "auto" = "none" for a new network
    assert len(trained.history) == 4  # patience does not stop it
    metrics = trained.card.metrics
    assert metrics["validation"] == "none" and metrics["kept_epoch"] == 4 and "best_val_dice" not in metrics
    assert "every painted voxel" in trained.card.training_data


def test_resolve_hold_out():
    from tomolens.segment.settings import resolve_hold_out

    assert resolve_hold_out("auto", fine_tuning=False) == "none"
    assert resolve_hold_out("auto", fine_tuning=True) == "strip"
    assert resolve_hold_out("strip", fine_tuning=False) == "strip"
    with pytest.raises(ValueError, match="'auto', 'strip' or 'none'"):
        resolve_hold_out("half", fine_tuning=False)


def test_slice_smoothing_averages_neighbouring_slices_of_slice_models_only():
    from scipy.ndimage import gaussian_filter1d

    from tomolens.segment.networks import build_segmentation_network

    tomo, _ = make_toy(3)
    net, card = _untrained_slice_model(0)
    raw = run_job(predict_probabilities(net, card, tomo, 10.0, orthogonal=False, slice_smoothing=0))
    smoothed = run_job(predict_probabilities(net, card, tomo, 10.0, orthogonal=False, slice_smoothing=1.5))
    np.testing.assert_allclose(smoothed, gaussian_filter1d(raw, 1.5, axis=1, mode="nearest"), atol=1e-5)
    np.testing.assert_allclose(smoothed.sum(0), 1.0, atol=1e-4)
    assert np.abs(np.diff(smoothed, axis=1)).mean() < np.abs(np.diff(raw, axis=1)).mean()
    with pytest.raises(ValueError, match="slice_smoothing"):
        run_job(predict_probabilities(net, card, tomo, 10.0, slice_smoothing=-1))
    net3, arch3, kwargs3 = build_segmentation_network("3d", 3, base_channels=4, depth=1)
    card3 = ModelCard(
        name="v",
        task="segment",
        architecture=arch3,
        arch_kwargs=kwargs3,
        classes=TOY_CLASSES,
        voxel_size_A=10.0,
        patch_size=[16, 16, 16],
        extra={"model_kind": "3d"},
    )
    np.testing.assert_array_equal(
        run_job(predict_probabilities(net3, card3, tomo, 10.0, slice_smoothing=2)),
        run_job(predict_probabilities(net3, card3, tomo, 10.0, slice_smoothing=0)),
    )
