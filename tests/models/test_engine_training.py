import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tomolens.jobs import run_job
from tomolens.models.sampling import PatchSampler, TrainingPair
from tomolens.models.training import TrainConfig, train_model
from tomolens.models.unet import UNet3D


def _pair(seed, shape=(16, 24, 24)):
    rng = np.random.default_rng(seed)
    target = np.zeros(shape, np.float32)
    target[4:12, 6:14, 8:18] = 1
    image = target + rng.normal(0, 0.3, shape).astype(np.float32)
    return TrainingPair(image, target[None])


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


def test_sampler_shapes_augmentation_keeps_pairs_aligned():
    pair = _pair(0)
    sampler = PatchSampler([pair], (8, 16, 16), foreground_fraction=1.0, augment=True)
    x, y = sampler.sample(16, np.random.default_rng(0))
    assert x.shape == (16, 1, 8, 16, 16) and y.shape == (16, 1, 8, 16, 16)
    # the input is the (scaled, shifted) noisy target: correlation stays high after flips/rotations
    for xi, yi in zip(x[:, 0], y[:, 0]):
        if 0 < yi.mean() < 1:
            assert np.corrcoef(xi.ravel(), yi.ravel())[0, 1] > 0.6
    # foreground-centred patches contain foreground
    assert (y.reshape(16, -1).max(axis=1) > 0).all()


def test_training_learns_stops_early_and_resumes(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ckpt = tmp_path / "run.ckpt"
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=4,
        steps_per_epoch=6,
        val_patches=4,
        learning_rate=1e-2,
        patience=10,
        seed=0,
        checkpoint=ckpt,
    )
    infos = []
    result = run_job(
        train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg),
        lambda p: p.info and infos.append(p.info),
    )
    assert [i["epoch"] for i in infos] == [1, 2, 3, 4]
    assert infos[-1]["val_loss"] < infos[0]["val_loss"]
    assert result.best_val_loss == min(i["val_loss"] for i in infos)
    assert ckpt.is_file()
    # resume continues at epoch 5 with the history kept
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 5, "resume": True})
    resumed = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg2))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history[:4] == result.history


def test_early_stopping_on_validation_only():
    torch.manual_seed(0)
    # validation target is the opposite of the training target: val loss rises, training stops
    good, bad = _pair(0), _pair(1)
    bad = TrainingPair(bad.image, 1 - bad.target)
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=30,
        steps_per_epoch=4,
        val_patches=4,
        learning_rate=1e-2,
        patience=2,
        seed=0,
    )
    result = run_job(train_model(UNet3D(1, 1, base_channels=2, depth=1), [good], [bad], bce, cfg))
    assert result.stopped_early and len(result.history) < 30
    assert len(result.history) == result.best_epoch + 2


def test_resuming_an_early_stopped_run_trains_another_patience_window(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    good, bad = _pair(0), _pair(1)
    bad = TrainingPair(bad.image, 1 - bad.target)
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=30,
        steps_per_epoch=2,
        val_patches=4,
        learning_rate=1e-2,
        patience=2,
        seed=0,
        checkpoint=tmp_path / "run.ckpt",
    )
    first = run_job(train_model(UNet3D(1, 1, base_channels=2, depth=1), [good], [bad], bce, cfg))
    assert first.stopped_early
    again = run_job(
        train_model(
            UNet3D(1, 1, base_channels=2, depth=1), [good], [bad], bce, TrainConfig(**{**cfg.__dict__, "resume": True})
        )
    )
    # not one epoch and out: two more epochs without improvement, then it stops again
    assert len(again.history) == len(first.history) + 2 and again.stopped_early


def test_training_needs_validation_and_checkpoint_for_resume(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        run_job(train_model(UNet3D(1, 1, base_channels=2, depth=1), [_pair(0)], [], bce, TrainConfig()))
    cfg = TrainConfig(patch_size=(8, 16, 16), resume=True, checkpoint=tmp_path / "none.ckpt")
    with pytest.raises(ValueError, match="resume"):
        run_job(train_model(UNet3D(1, 1, base_channels=2, depth=1), [_pair(0)], [_pair(1)], bce, cfg))


def test_fine_tuning_keeps_the_starting_weights_when_no_epoch_beats_them():
    torch.manual_seed(0)
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=4,
        steps_per_epoch=6,
        val_patches=4,
        learning_rate=1e-2,
        patience=10,
        seed=0,
    )
    good = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg)).model
    start = {k: v.clone() for k, v in good.state_dict().items()}
    # now train it on the opposite target: every epoch is worse on the (original) validation data
    flipped = TrainingPair(_pair(0).image, 1 - _pair(0).target)
    tuned = run_job(
        train_model(good, [flipped], [_pair(1)], bce, TrainConfig(**{**cfg.__dict__, "keep_start_if_best": True}))
    )
    assert tuned.best_epoch == 0 and tuned.start_val_loss == tuned.best_val_loss
    assert all(h["val_loss"] > tuned.start_val_loss for h in tuned.history)
    for k, v in tuned.model.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_sampler_keeps_input_channels_aligned_with_the_target():
    """Channels-first pairs (a 2.5D slab of K slices): patches keep K and stay aligned under augmentation."""
    rng = np.random.default_rng(1)
    target = (rng.random((40, 48)) > 0.7).astype(np.int64)
    # channel k is the target plus 10·k: the order of the channels is visible in their means
    image = np.stack([target + 10.0 * k + 0.1 * rng.normal(size=target.shape) for k in range(3)])
    sampler = PatchSampler([TrainingPair(image, target, channels=True)], (16, 16), augment=True)
    x, y = sampler.sample(12, np.random.default_rng(0))
    assert x.shape == (12, 3, 16, 16) and y.shape == (12, 1, 16, 16)
    for xi, yi in zip(x, y[:, 0]):
        means = xi.reshape(3, -1).mean(axis=1)
        assert means[0] < means[1] < means[2]  # channels are never flipped or mixed
        for channel in xi:
            assert np.corrcoef(channel.ravel(), yi.ravel())[0, 1] > 0.9


def test_pairs_with_different_channel_counts_are_refused():
    a = TrainingPair(np.zeros((3, 16, 16), np.float32), np.zeros((16, 16), np.int64), channels=True)
    b = TrainingPair(np.zeros((5, 16, 16), np.float32), np.zeros((16, 16), np.int64), channels=True)
    with pytest.raises(ValueError, match="input channels"):
        PatchSampler([a, b], (16, 16))
    with pytest.raises(ValueError, match="does not match"):
        TrainingPair(np.zeros((3, 16, 16), np.float32), np.zeros((3, 16, 16), np.int64)[:, :8], channels=True)


def test_a_validation_score_chooses_the_epoch_and_stops_training(tmp_path):
    """With val_score the best epoch is the best score's (not the lowest loss), and patience follows it."""
    torch.manual_seed(0)
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=5,
        steps_per_epoch=3,
        val_patches=4,
        learning_rate=1e-2,
        patience=2,
        seed=0,
        checkpoint=tmp_path / "s.ckpt",
        val_score=lambda logits, target: next(scores),
    )
    result = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg))
    assert [h["val_score"] for h in result.history] == [0.1, 0.5, 0.3, 0.2]  # stopped: 2 epochs without a better score
    assert result.best_epoch == 2 and result.best_val_score == 0.5 and result.stopped_early
    assert result.best_val_loss == result.history[1]["val_loss"]
    assert result.history[-1]["best_val_score"] == 0.5


def test_keep_last_trains_every_epoch_and_returns_the_last_weights():
    """keep_last: worse scores neither stop training nor bring back an earlier epoch's weights."""
    torch.manual_seed(0)
    scores = iter([0.9, 0.5, 0.3, 0.2])
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=4,
        steps_per_epoch=3,
        val_patches=4,
        learning_rate=1e-2,
        patience=1,
        seed=0,
        keep_last=True,
        val_score=lambda logits, target: next(scores),
    )
    model = UNet3D(1, 1, base_channels=4, depth=1)
    last = {}
    job = train_model(model, [_pair(0)], [_pair(1)], bce, cfg)
    try:
        while True:
            progress = next(job)
            if progress.info and progress.info["epoch"] == 4:
                last = {k: v.detach().clone() for k, v in model.state_dict().items()}
    except StopIteration as stop:
        result = stop.value
    assert len(result.history) == 4 and result.best_epoch == 4 and not result.stopped_early
    assert result.best_val_score == 0.2
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(v, last[k])


def test_weight_average_is_what_is_validated_and_returned(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(1, 1, base_channels=4, depth=1)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=2,
        steps_per_epoch=4,
        val_patches=4,
        learning_rate=5e-2,
        patience=5,
        seed=0,
        ema_decay=0.99,
        checkpoint=tmp_path / "e.ckpt",
    )
    result = run_job(train_model(net, [_pair(0)], [_pair(1)], bce, cfg))
    torch.manual_seed(0)
    raw = run_job(
        train_model(
            UNet3D(1, 1, base_channels=4, depth=1),
            [_pair(0)],
            [_pair(1)],
            bce,
            TrainConfig(**{**cfg.__dict__, "ema_decay": 0.0, "checkpoint": None}),
        )
    )

    def moved(model):
        return sum(float((v.detach() - start[k]).abs().sum()) for k, v in model.named_parameters())

    # the same steps; the average of the trajectory lies closer to the start than its end does
    assert 0 < moved(result.model) < moved(raw.model)
    assert "ema" in torch.load(tmp_path / "e.ckpt", weights_only=True)
    resumed = run_job(
        train_model(
            UNet3D(1, 1, base_channels=4, depth=1),
            [_pair(0)],
            [_pair(1)],
            bce,
            TrainConfig(**{**cfg.__dict__, "epochs": 3, "resume": True}),
        )
    )
    assert len(resumed.history) == 3
    with pytest.raises(ValueError, match="ema_decay"):
        run_job(train_model(net, [_pair(0)], [_pair(1)], bce, TrainConfig(**{**cfg.__dict__, "ema_decay": 1.5})))


def test_weight_average_warms_up_then_decays():
    from tomolens.models.training import _weight_average

    lin = torch.nn.Linear(1, 1, bias=False)
    ema = _weight_average(lin, 0.9)
    expected = None
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0] + [0.0] * 40):
        with torch.no_grad():
            lin.weight.fill_(value)
        ema.update_parameters(lin)
        d = min(0.9, (1 + n) / (10 + n))
        expected = value if n == 0 else d * expected + (1 - d) * value  # n = updates before this one
        assert float(ema.module.weight) == pytest.approx(expected, rel=1e-5)
    assert _weight_average(lin, 0.0) is None


def test_resuming_with_a_score_rescores_a_checkpoint_chosen_by_loss(tmp_path):
    """A checkpoint whose best epoch was chosen by loss is scored again, not compared loss vs score."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=2,
        steps_per_epoch=3,
        val_patches=4,
        learning_rate=1e-2,
        patience=5,
        seed=0,
        checkpoint=tmp_path / "r.ckpt",
    )
    first = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg))
    scored = TrainConfig(**{**cfg.__dict__, "epochs": 3, "resume": True, "val_score": lambda logits, target: 0.3})
    resumed = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, scored))
    # every epoch scores 0.3: the resumed epoch does not beat the re-scored best, which stays the first run's
    assert resumed.best_epoch == first.best_epoch and resumed.best_val_score == 0.3


def test_any_angle_rotation_keeps_image_and_integer_labels_aligned():
    """rotate_any: images and labels are read through the same rotation and scale; labels stay labels."""
    yy, xx = np.mgrid[:64, :80]
    target = (1 + ((yy // 8 + xx // 8) % 3)).astype(np.int16)  # painted blocks of classes 1-3
    target[:, 70:] = 0  # not painted
    image = target.astype(np.float32)
    sampler = PatchSampler(
        [TrainingPair(image, target, target > 0)], (32, 32), foreground_fraction=1.0, augment=True, rotate_any=True
    )
    x, y = sampler.sample(24, np.random.default_rng(0))
    assert y.dtype == np.int16 and set(np.unique(y)) <= {0, 1, 2, 3}
    for xi, yi in zip(x[:, 0], y[:, 0]):
        painted = yi > 0
        # undo the intensity scale/shift, then the image agrees with its labels almost everywhere
        a, b = np.polyfit(xi[painted], yi[painted], 1)
        assert np.mean(np.abs(a * xi[painted] + b - yi[painted]) < 0.5) > 0.85
    # a patch that is not rotated (1 in 4) is an axis-aligned crop of the labels under one of the 8
    # flips/quarter turns; a rotated and scaled one is none of them
    crops = np.lib.stride_tricks.sliding_window_view(target, (32, 32))

    def aligned(patch):
        views = [np.rot90(v, k) for v in (patch, patch[:, ::-1]) for k in range(4)]
        return any(np.all(crops == v, axis=(-2, -1)).any() for v in views)

    n_aligned = sum(aligned(yi) for yi in y[:, 0])
    assert 1 <= n_aligned <= 16, n_aligned
    plain = PatchSampler([TrainingPair(image, target, target > 0)], (32, 32), foreground_fraction=1.0, augment=True)
    assert all(aligned(yi) for yi in plain.sample(8, np.random.default_rng(0))[1][:, 0])


def test_flip_channels_reverses_the_slab_order_in_some_patches():
    rng = np.random.default_rng(3)
    target = (rng.random((40, 48)) > 0.7).astype(np.int64)
    image = np.stack([target + 10.0 * k for k in range(3)])
    sampler = PatchSampler([TrainingPair(image, target, channels=True)], (16, 16), augment=True, flip_channels=True)
    x, _ = sampler.sample(40, np.random.default_rng(0))
    means = x.reshape(40, 3, -1).mean(axis=2)
    rising = (means[:, 0] < means[:, 1]) & (means[:, 1] < means[:, 2])
    falling = (means[:, 0] > means[:, 1]) & (means[:, 1] > means[:, 2])
    assert (rising | falling).all() and 5 < falling.sum() < 35


def test_resuming_a_keep_last_run_with_held_out_validation_scores_the_kept_weights_again(tmp_path):
    """A run that kept its last epoch (scored on training voxels) resumed to choose by validation: re-scored."""
    torch.manual_seed(0)
    scores = iter([0.9, 0.95, 0.1, 0.2])  # the fit (two epochs), then the kept weights re-scored, then epoch 3
    common = dict(
        patch_size=(8, 16, 16),
        batch_size=2,
        steps_per_epoch=2,
        val_patches=4,
        learning_rate=1e-2,
        patience=5,
        seed=0,
        checkpoint=tmp_path / "k.ckpt",
        val_score=lambda logits, target: next(scores),
    )
    model = UNet3D(1, 1, base_channels=4, depth=1)
    run_job(train_model(model, [_pair(0)], [_pair(1)], bce, TrainConfig(epochs=2, keep_last=True, **common)))
    resumed = run_job(train_model(model, [_pair(0)], [_pair(1)], bce, TrainConfig(epochs=3, resume=True, **common)))
    assert resumed.best_epoch == 3 and resumed.best_val_score == 0.2  # 0.2 beats the re-scored 0.1, not 0.95


def test_balanced_sampling_centres_patches_on_a_rare_painted_class():
    # a painted slice: class value 1 nearly everywhere, value 3 in one small square
    labels = np.ones((128, 128), np.int16)
    labels[100:104, 20:24] = 3
    image = np.zeros((128, 128), np.float32)
    pair = TrainingPair(image, labels)

    def share_with_rare(balance: bool) -> float:
        sampler = PatchSampler([pair], (32, 32), foreground_fraction=1.0, augment=False, balance_classes=balance)
        _, y = sampler.sample(400, np.random.default_rng(1))
        return float(np.mean([(t == 3).any() for t in y]))

    # by painted voxel the square is drawn 16 / 16384 of the time (plus patches that happen to cover it);
    # by class, half of the centres are in it
    assert share_with_rare(False) < 0.2
    assert share_with_rare(True) > 0.45


def test_balanced_sampling_needs_integer_targets():
    pair = TrainingPair(np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32))
    with pytest.raises(ValueError, match="integer class targets"):
        PatchSampler([pair], (8, 8), balance_classes=True)


@pytest.mark.parametrize("bf16", [True, False])
def test_cpu_bfloat16_autocasts_training_forward_passes_only(bf16):
    from tomolens.models.device import cpu_has_native_bf16

    assert isinstance(cpu_has_native_bf16(), bool)
    torch.manual_seed(0)
    net = UNet3D(1, 1, base_channels=4, depth=1)
    seen = []  # (training?, dtype of the network's output)
    net.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    loss_dtypes = []

    def loss(logits, target):
        loss_dtypes.append(logits.dtype)
        return bce(logits, target)

    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=4,
        steps_per_epoch=6,
        val_patches=4,
        learning_rate=1e-2,
        patience=10,
        seed=0,
        cpu_bf16=bf16,
    )
    result = run_job(train_model(net, [_pair(0)], [_pair(1)], loss, cfg))
    assert result.precision == ("bfloat16" if bf16 else "float32")
    training = {dtype for is_training, dtype in seen if is_training}
    assert training == {torch.bfloat16 if bf16 else torch.float32}
    assert {dtype for is_training, dtype in seen if not is_training} == {torch.float32}  # validation
    assert set(loss_dtypes) == {torch.float32}  # the loss sees float32 logits
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_resuming_in_another_precision_reports_mixed(tmp_path):
    cfg = TrainConfig(
        patch_size=(8, 16, 16),
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
        val_patches=2,
        seed=0,
        checkpoint=tmp_path / "run.ckpt",
        cpu_bf16=False,
    )
    run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg))
    again = TrainConfig(**{**cfg.__dict__, "epochs": 2, "resume": True, "cpu_bf16": True})
    result = run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, again))
    assert result.precision == "mixed"


def test_cpu_precision_setting():
    from tomolens.models.cli import cpu_bf16

    assert (cpu_bf16("auto"), cpu_bf16("float32"), cpu_bf16("bfloat16")) == (None, False, True)
    with pytest.raises(ValueError, match="cpu_precision"):
        cpu_bf16("fp16")


def test_balanced_sampling_across_pairs_of_other_shapes_with_a_cap():
    small = np.ones((20, 20), np.int16)  # padded to the 32x32 patch
    big = np.ones((64, 64), np.int16)
    big[50:53, 10:13] = 4  # the rare class only in the second pair
    pairs = [TrainingPair(np.zeros(a.shape, np.float32), a) for a in (small, big)]
    sampler = PatchSampler(pairs, (32, 32), foreground_fraction=1.0, augment=False, balance_classes=True)
    (pairs_1, flat_1), (pairs_4, flat_4) = sampler.by_class
    assert set(pairs_4) == {1} and len(flat_4) == 9
    for k, f in zip(pairs_4, flat_4):  # indices point at the class in the (padded) target
        assert sampler.targets[k][0].ravel()[f] == 4
    capped = sampler._class_voxels(cap=10)
    assert [len(f) for _, f in capped] == [10, 9]
    for (ks, fs), value in zip(capped, (1, 4)):
        assert all(sampler.targets[k][0].ravel()[f] == value for k, f in zip(ks, fs))
    _, y = sampler.sample(200, np.random.default_rng(0))
    assert 0.4 < np.mean([(t == 4).any() for t in y]) < 0.75


def test_balanced_sampling_without_painted_voxels_falls_back_to_random_patches():
    pair = TrainingPair(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.int16))
    sampler = PatchSampler([pair], (16, 16), foreground_fraction=1.0, balance_classes=True)
    assert sampler.by_class is None
    x, y = sampler.sample(4, np.random.default_rng(0))
    assert x.shape == (4, 1, 16, 16) and not y.any()


def _state_dicts_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_the_budget_on_record():
    """Two runs of the same settings and seed give bit-identical weights; a generous time limit changes nothing."""
    torch.set_num_threads(1)

    def run(**changes):
        torch.manual_seed(0)  # the network's initial weights
        cfg = TrainConfig(
            **{
                **dict(
                    patch_size=(8, 16, 16),
                    batch_size=2,
                    epochs=3,
                    steps_per_epoch=3,
                    val_patches=4,
                    learning_rate=1e-2,
                    patience=10,
                    seed=3,
                    cpu_bf16=False,
                ),
                **changes,
            }
        )
        return run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [_pair(0)], [_pair(1)], bce, cfg))

    first, second, limited = run(), run(), run(max_minutes=600.0)
    assert _state_dicts_equal(first.model.state_dict(), second.model.state_dict())
    assert _state_dicts_equal(first.model.state_dict(), limited.model.state_dict())
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    other = run(seed=4)
    assert not _state_dicts_equal(first.model.state_dict(), other.model.state_dict())
    assert first.budget["max_steps"] == 9 and first.budget["steps_run"] == 9
    assert first.budget["stopped_by"] == "epoch budget" and first.budget["early_stopping"]["window"] == 3


_RUN_IN_A_NEW_PROCESS = """
import sys
import numpy as np, torch, torch.nn.functional as F
from tomolens.jobs import run_job
from tomolens.models.sampling import TrainingPair
from tomolens.models.training import TrainConfig, train_model
from tomolens.models.unet import UNet3D

def pair(seed, shape=(16, 24, 24)):
    rng = np.random.default_rng(seed)
    target = np.zeros(shape, np.float32)
    target[4:12, 6:14, 8:18] = 1
    return TrainingPair(target + rng.normal(0, 0.3, shape).astype(np.float32), target[None])

torch.set_num_threads(1)
torch.manual_seed(int(sys.argv[3]))  # a different initial network: resume must replace it
cfg = TrainConfig(patch_size=(8, 16, 16), batch_size=2, epochs=int(sys.argv[2]), steps_per_epoch=3, val_patches=4,
                  learning_rate=1e-2, patience=10, seed=0, checkpoint=sys.argv[1], resume=sys.argv[4] == "resume",
                  cpu_bf16=False)
run_job(train_model(UNet3D(1, 1, base_channels=4, depth=1), [pair(0)], [pair(1)],
                    lambda a, b: F.binary_cross_entropy_with_logits(a, b), cfg))
"""


def test_resume_in_another_process_continues_the_same_optimiser_state(tmp_path):
    """4 epochs in one process equal 2 epochs, then 2 more resumed in a new process: same weights,
    same Adam moments and step counts, same history (the sampler's random state is restored too)."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_RUN_IN_A_NEW_PROCESS)

    def run(ckpt, epochs, seed, mode):
        subprocess.run([sys.executable, str(script), str(ckpt), str(epochs), str(seed), mode], check=True, timeout=300)

    run(tmp_path / "straight.ckpt", 4, 0, "new")
    run(tmp_path / "split.ckpt", 2, 0, "new")
    run(tmp_path / "split.ckpt", 4, 7, "resume")
    a = torch.load(tmp_path / "straight.ckpt", weights_only=False)
    b = torch.load(tmp_path / "split.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] and [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    sa, sb = a["optimiser"]["state"], b["optimiser"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert float(sa[k]["step"]) == float(sb[k]["step"]) == 12
        torch.testing.assert_close(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose([h["val_loss"] for h in a["history"]], [h["val_loss"] for h in b["history"]], 1e-5)
