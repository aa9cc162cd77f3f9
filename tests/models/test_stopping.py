"""Early stopping on a noisy validation sequence (issue 26: one oscillation stopped a run at a third of its budget)."""

import math

import numpy as np
import pytest

from tomolens.models.stopping import EarlyStopping, training_budget


def noisy_falling_losses(epochs: int = 30, dip_epoch: int = 4, seed: int = 0) -> list[float]:
    """A validation loss that falls slowly with noise, and one lucky low epoch early on."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    values = 0.3 + 0.7 * np.exp(-(e - 1) / 8.0) + rng.normal(0, 0.01, epochs)
    values[dip_epoch - 1] = 0.45  # the trend reaches this only around epoch 13
    return values.tolist()


def epochs_until_stop(stopping: EarlyStopping, values) -> int:
    for epoch, v in enumerate(values, 1):
        stopping.update(v)
        if stopping.should_stop:
            return epoch
    return len(values)


def test_one_lucky_epoch_stops_the_plain_rule_at_a_third_of_the_budget():
    values = noisy_falling_losses()
    assert epochs_until_stop(EarlyStopping(patience=6, window=1), values) == 10


@pytest.mark.parametrize("seed", range(5))
def test_the_median_rides_out_one_lucky_epoch(seed):
    values = noisy_falling_losses(seed=seed)
    stopping = EarlyStopping(patience=6, window=3)
    stopped_at = epochs_until_stop(stopping, values)
    assert stopped_at >= 20, (stopped_at, stopping.values)


def test_min_epochs_holds_off_the_plain_rule():
    values = noisy_falling_losses()
    stopping = EarlyStopping(patience=6, min_epochs=15, window=1)
    assert epochs_until_stop(stopping, values) >= 15


def test_a_real_plateau_still_stops():
    values = [1.0, 0.8, 0.6, 0.5] + [0.5 + 0.05 * (i % 2) for i in range(20)]
    stopping = EarlyStopping(patience=4, window=3)
    assert epochs_until_stop(stopping, values) < len(values)


def test_median_window_and_baseline():
    stopping = EarlyStopping(patience=2, window=3, baseline=0.5)
    assert stopping.smoothed() == math.inf
    assert not stopping.update(0.9)  # 0.9 does not beat the baseline 0.5
    assert not stopping.update(0.1)  # median(0.9, 0.1) = 0.5: not lower than the baseline
    assert stopping.should_stop
    assert stopping.update(0.2)  # median(0.9, 0.1, 0.2) = 0.2
    assert stopping.bad_epochs == 0 and stopping.best_smoothed == pytest.approx(0.2)


def test_replay_gives_the_same_state():
    values = noisy_falling_losses()
    a = EarlyStopping(patience=6).replay(values[:12])
    b = EarlyStopping(patience=6)
    for v in values[:12]:
        b.update(v)
    assert (a.best_smoothed, a.bad_epochs, a.values) == (b.best_smoothed, b.bad_epochs, b.values)


@pytest.mark.parametrize(
    "kwargs, message", [({"patience": 0}, "patience"), ({"window": 0}, "window"), ({"min_epochs": -1}, "min_epochs")]
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyStopping(**kwargs)


def test_budget_record_says_steps_and_settings():
    record = training_budget(30, 110, 12, 1320, "early stopping", EarlyStopping(6, 10, 5), None)
    assert record["max_steps"] == 3300 and record["steps_run"] == 1320
    assert record["early_stopping"] == {
        "criterion": "median of the last 5 validation values",
        "patience": 6,
        "min_epochs": 10,
        "window": 5,
        "min_delta": 1e-5,
    }
