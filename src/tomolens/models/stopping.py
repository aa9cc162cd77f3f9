"""Early stopping that one noisy validation epoch cannot trigger.

A validation loss measured on a few hundred samples oscillates from epoch to epoch.  With
the plain rule "stop after ``patience`` epochs without a lower loss", one lucky low epoch
early on is enough to stop a run long before its budget (issue 26: a run stopped at a third
of its epochs, 67.7 % instead of about 97 %).  :class:`EarlyStopping` therefore

- compares the **median of the last** ``window`` validation values (a single outlier in
  three epochs, two in five, moves it not at all), not the raw value, and
- never stops before ``min_epochs`` epochs.

Which weights are kept is the caller's business: the trainers keep the epoch of the best
raw validation value (the weights that were actually measured best).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EarlyStopping:
    """Decide when training stops, from the sequence of validation values (lower is better).

    Attributes
    ----------
    patience : int
        Stop after this many epochs in a row in which the smoothed value did not improve.
    min_epochs : int
        Never stop before this many epochs (counted over the whole run, a resumed one included).
    window : int
        The smoothed value of an epoch is the median of the last ``window`` values (fewer at
        the start); 1 is the plain rule.
    min_delta : float
        An improvement must lower the smoothed value by more than this.
    baseline : float
        Smoothed value to beat from the start (e.g. the starting weights' loss when fine-tuning);
        ``inf`` for none.
    """

    patience: int = 6
    min_epochs: int = 0
    window: int = 3
    min_delta: float = 1e-5
    baseline: float = math.inf
    values: list[float] = field(default_factory=list)
    best_smoothed: float = math.nan
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch; got {self.patience}.")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be 0 or more; got {self.min_epochs}.")
        if self.window < 1:
            raise ValueError(f"The early-stopping window must be at least 1 epoch; got {self.window}.")
        if math.isnan(self.best_smoothed):
            self.best_smoothed = self.baseline

    def smoothed(self) -> float:
        """Median of the last ``window`` values (inf before the first)."""
        if not self.values:
            return math.inf
        return float(np.median(self.values[-self.window :]))

    def update(self, value: float) -> bool:
        """Record one epoch's validation value; True when the smoothed value improved."""
        self.values.append(float(value))
        current = self.smoothed()
        if current < self.best_smoothed - self.min_delta:
            self.best_smoothed, self.bad_epochs = current, 0
            return True
        self.bad_epochs += 1
        return False

    def replay(self, values: Iterable[float]) -> EarlyStopping:
        """Feed the values of earlier epochs (a resumed run); returns self."""
        for v in values:
            self.update(v)
        return self

    @property
    def should_stop(self) -> bool:
        """Patience used up, and at least ``min_epochs`` epochs run."""
        return len(self.values) >= self.min_epochs and self.bad_epochs >= self.patience

    def settings(self) -> dict:
        """The settings (for model cards)."""
        return {
            "criterion": f"median of the last {self.window} validation values"
            if self.window > 1
            else "validation value",
            "patience": self.patience,
            "min_epochs": self.min_epochs,
            "window": self.window,
            "min_delta": self.min_delta,
        }


def training_budget(
    epochs: int,
    steps_per_epoch: int,
    epochs_run: int,
    steps_run: int,
    stopped_by: str,
    stopping: EarlyStopping,
    max_minutes: float | None,
) -> dict:
    """What a model card records about a run's budget and why it ended.

    Parameters
    ----------
    epochs, steps_per_epoch : int
        The budget: at most ``epochs × steps_per_epoch`` optimiser steps.
    epochs_run, steps_run : int
        What was run.
    stopped_by : {"epoch budget", "early stopping", "time limit", "cancelled"}
    stopping : EarlyStopping
    max_minutes : float or None
        The user's wall-clock limit, if any (a run it ended depends on the machine's load).
    """
    return {
        "epochs": int(epochs),
        "steps_per_epoch": int(steps_per_epoch),
        "max_steps": int(epochs) * int(steps_per_epoch),
        "epochs_run": int(epochs_run),
        "steps_run": int(steps_run),
        "stopped_by": stopped_by,
        "early_stopping": stopping.settings(),
        "max_minutes": max_minutes,
        "learning_rate_schedule": "follows optimiser steps (not elapsed time)",
    }
