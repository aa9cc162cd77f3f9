"""Contrast polarity of a tomogram: measured, decided and reconciled with a model's.

A raw cryo-ET reconstruction shows dense matter (protein, membranes, gold) **dark**: the
phase contrast of an underfocused image is negative.  Many tools and our simulator use the
inverted, **bright** convention.  A network trained on one polarity fails on the other, so
every place that runs a model takes a polarity setting:

- ``"auto"`` (default): measured from the data by :func:`estimate_polarity`;
- ``"dark"``: dense matter is dark (raw cryo-ET as reconstructed by IMOD, AreTomo, Warp…);
- ``"bright"``: dense matter is bright (contrast-inverted data).

When the tomogram's polarity differs from the model's (``ModelCard.polarity``), the input is
negated after normalisation; nothing else changes, so a tomogram and its negative give the
same result.

**The statistic.**  Dense matter occupies a minority of a tomogram's voxels and stands out
from the surrounding ice or cytoplasm by one sign only, so the band-passed intensities have a
skewed distribution whose long tail points towards the dense side; noise, the missing wedge,
CTF fringes and a carbon edge are close to symmetric.  :func:`estimate_polarity` band-passes
blocks of the volume (Gaussian low-pass of σ = 10 Å, minus a Gaussian of σ = 60 Å, at least
1 and 3 voxels: particles and membranes stay, noise and ice-thickness gradients go), leaves
out voxels near constant regions (zero-padded or masked borders) and computes the skewness
of the band-passed values in every octant of every block.  The statistic is their mean; its
standard error comes from their spread.  It is positive for bright data and
negative for dark data.  It decides when ``|skewness| >= MIN_SKEWNESS`` and
``|skewness| >= Z_DECIDE × standard error``; otherwise (pure noise, a flat or nearly empty
volume) it says it cannot decide and the model's own polarity is used.

Measured on our simulations (64×128×128, 10 Å, WBP): crowded at SNR 0.03 +0.09 to +0.13,
SNR 0.05 +0.16 to +0.21, sparse (2–5 % of the volume) +0.56 to +0.85; the real in-vitro
microtubule (SIRT-like, inverted) +0.91; Gaussian noise, white or low-passed, within ±0.03.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np
from scipy import ndimage

from tomolens.params import Param
from tomolens.preprocess import Normalisation, constant_regions, estimate_normalisation

log = logging.getLogger(__name__)

#: The settings a user can choose.
POLARITIES = ("auto", "dark", "bright")

#: The setting as a CLI option, widget control and preset key (one definition for all).
POLARITY_PARAM = Param(
    "polarity",
    "auto",
    "Contrast of the tomogram: auto = measured from the data; dark = dense matter dark (raw cryo-ET); "
    "bright = dense matter bright (contrast-inverted)",
    choices=POLARITIES,
)

#: Smallest absolute block-mean skewness that decides the polarity.
MIN_SKEWNESS = 0.05

#: How many standard errors the skewness must be away from 0 to decide.
Z_DECIDE = 2.5

#: Blocks read by the estimate (edge in voxels, and at most this many).
BLOCK_EDGE = 64
MAX_BLOCKS = 27

#: Band-pass of the statistic, Å (low-pass σ and the σ of the subtracted background).
LOW_PASS_A = 10.0
HIGH_PASS_A = 60.0


@dataclass(frozen=True)
class PolarityEstimate:
    """What :func:`estimate_polarity` measured.

    Attributes
    ----------
    skewness : float
        Mean skewness of the band-passed blocks (> 0: bright, < 0: dark).
    standard_error : float
        Its standard error from the spread between blocks (inf with one block).
    n_blocks : int
        Samples measured (octants of the blocks read).
    polarity : str or None
        ``"dark"``, ``"bright"``, or None when the statistic cannot decide.
    """

    skewness: float
    standard_error: float
    n_blocks: int
    polarity: str | None

    @property
    def statistic(self) -> str:
        """The measurement in words: the skewness and its standard error (or the number of samples, when too few
        for an error)."""
        if self.n_blocks < 2:
            return f"band-passed skewness {self.skewness:+.3f} from {self.n_blocks} sample(s)"
        return f"band-passed skewness {self.skewness:+.3f} ± {self.standard_error:.3f}"

    @property
    def why_undecided(self) -> str:
        """Why the statistic cannot decide (meaningful when ``polarity`` is None)."""
        if self.n_blocks < 2:
            return "too few voxels to measure it: a small or mostly constant volume"
        return "a flat, nearly empty or pure-noise volume"


@dataclass(frozen=True)
class PolarityDecision:
    """The polarity used for one run of a model.

    Attributes
    ----------
    tomogram : str
        ``"dark"`` or ``"bright"``: the tomogram's polarity as used.
    source : str
        ``"auto"`` (measured), ``"user"`` (set) or ``"model"`` (auto could not decide, the
        model's own was assumed).
    model : str
        The model's polarity (``"bright"`` when its card states none).
    invert : bool
        True when the input is negated before the model sees it.
    skewness, standard_error : float or None
        The statistic when it was measured.
    """

    tomogram: str
    source: str
    model: str
    invert: bool
    skewness: float | None = None
    standard_error: float | None = None

    @property
    def sign(self) -> int:
        """-1 when the input is negated, else +1."""
        return -1 if self.invert else 1

    @property
    def message(self) -> str:
        """One line for the log, a notification and the provenance of outputs."""
        how = {"auto": "detected", "user": "set by the user", "model": "undecided by the data, assumed as the model's"}[
            self.source
        ]
        stat = "" if self.skewness is None else f" (band-passed skewness {self.skewness:+.3f})"
        action = "inverted for the model" if self.invert else "used as it is"
        return f"polarity: {self.tomogram} dense matter, {how}{stat}; model expects {self.model}: {action}."

    def to_dict(self) -> dict:
        """Plain values for JSON provenance."""
        return {**asdict(self), "message": self.message}


def _block_starts(shape: tuple[int, ...], edge: int, max_blocks: int) -> list[tuple[int, ...]]:
    """Starts of up to ``max_blocks`` blocks of ``edge`` (or the axis) spread over the volume."""
    per_axis = max(1, int(round(max_blocks ** (1 / 3))))
    axes = []
    for n in shape:
        e = min(edge, n)
        count = min(per_axis, max(1, n // e))
        axes.append(sorted({int(round(s)) for s in np.linspace(0, n - e, count)}))
    return list(product(*axes))


def band_pass(block: np.ndarray, voxel_size_A: float | None) -> tuple[np.ndarray, int]:
    """The band-passed block and the margin (voxels) spoiled by the filters' edges."""
    vs = float(voxel_size_A) if voxel_size_A and np.isfinite(voxel_size_A) and voxel_size_A > 0 else 10.0
    low = max(1.0, LOW_PASS_A / vs)
    high = max(3.0, HIGH_PASS_A / vs)
    block = np.asarray(block, np.float32)
    return ndimage.gaussian_filter(block, low) - ndimage.gaussian_filter(block, high), int(np.ceil(2 * low))


def estimate_polarity(data: np.ndarray, voxel_size_A: float | None = None) -> PolarityEstimate:
    """Measure a tomogram's contrast polarity (see the module docstring).

    Parameters
    ----------
    data : array, shape (z, y, x)
        Any real dtype; may be memory-mapped (at most :data:`MAX_BLOCKS` blocks of
        :data:`BLOCK_EDGE`³ voxels are read).
    voxel_size_A : float, optional
        Sets the band-pass in voxels (10 Å assumed when unknown).

    Returns
    -------
    PolarityEstimate

    Raises
    ------
    ValueError
        When the volume is not 3D, holds NaN/Inf, or is constant.
    """
    if np.ndim(data) != 3:
        raise ValueError(f"The polarity is measured on a 3D tomogram; got shape {np.shape(data)}.")
    skews, weights = [], []
    for start in _block_starts(tuple(data.shape), BLOCK_EDGE, MAX_BLOCKS):
        sl = tuple(slice(s, s + min(BLOCK_EDGE, n)) for s, n in zip(start, data.shape))
        block = np.asarray(data[sl], np.float32)
        if not np.all(np.isfinite(block)):
            raise ValueError("The volume contains NaN or Inf values; replace them before analysis.")
        if block.max() == block.min():
            continue
        filtered, margin = band_pass(block, voxel_size_A)
        keep = ~constant_regions(block, grow=max(1, margin), connectivity=1)
        inner = tuple(slice(margin, n - margin) if n > 4 * margin else slice(None) for n in block.shape)
        filtered, keep = filtered[inner], keep[inner]
        # the octants of every block are the samples (their spread gives the standard error)
        halves = [(slice(0, n // 2), slice(n // 2, n)) if n >= 16 else (slice(None),) for n in filtered.shape]
        for octant in product(*halves):
            values = filtered[octant][keep[octant]].astype(np.float64)
            if values.size < 500:
                continue
            values -= values.mean()
            sd = values.std()
            if sd == 0:
                continue
            skews.append(float(np.mean((values / sd) ** 3)))
            weights.append(values.size)
    if not skews:
        if float(np.max(data)) == float(np.min(data)):
            raise ValueError("The volume is constant (all values equal); there is nothing to analyse.")
        return PolarityEstimate(0.0, float("inf"), 0, None)
    skews_arr, w = np.array(skews), np.array(weights, float)
    mean = float(np.average(skews_arr, weights=w))
    if len(skews_arr) > 1:
        se = float(np.sqrt(np.average((skews_arr - mean) ** 2, weights=w) / (len(skews_arr) - 1)))
    else:
        se = float("inf")
    decided = abs(mean) >= MIN_SKEWNESS and abs(mean) >= Z_DECIDE * se
    polarity = ("bright" if mean > 0 else "dark") if decided else None
    return PolarityEstimate(mean, se, len(skews_arr), polarity)


def model_polarity(card) -> str:
    """The polarity a model expects (its card's ``polarity``; ``"bright"`` with a warning if absent)."""
    value = getattr(card, "polarity", None)
    if value in ("dark", "bright"):
        return value
    if value not in (None, ""):
        raise ValueError(
            f"The model card {getattr(card, 'name', '?')!r} has polarity {value!r}; a card must say 'dark' or 'bright'."
        )
    warnings.warn(
        f"The model card {getattr(card, 'name', '?')!r} does not state the contrast polarity it was "
        "trained on; assuming 'bright' (dense matter bright).",
        UserWarning,
        stacklevel=2,
    )
    return "bright"


def check_polarity_setting(setting: str) -> str:
    """Return ``setting`` if it is one of :data:`POLARITIES`, else raise a clear ValueError."""
    if setting not in POLARITIES:
        raise ValueError(
            f"Unknown polarity {setting!r}; use 'auto' (measure it), 'dark' (raw cryo-ET: dense "
            "matter dark) or 'bright' (contrast-inverted)."
        )
    return setting


def decide_polarity(
    data: np.ndarray, setting: str = "auto", model: str = "bright", voxel_size_A: float | None = None
) -> PolarityDecision:
    """The polarity to use for running a ``model``-polarity network on ``data``.

    Parameters
    ----------
    data : array, shape (z, y, x)
    setting : {"auto", "dark", "bright"}
    model : {"dark", "bright"}
        The model's polarity (:func:`model_polarity`).
    voxel_size_A : float, optional

    Returns
    -------
    PolarityDecision
    """
    check_polarity_setting(setting)
    if model not in ("dark", "bright"):
        raise ValueError(f"A model's polarity must be 'dark' or 'bright'; got {model!r}.")
    if setting != "auto":
        decision = PolarityDecision(setting, "user", model, setting != model)
    else:
        est = estimate_polarity(data, voxel_size_A)
        if est.polarity is None:
            warnings.warn(
                f"The contrast polarity cannot be decided from the data ({est.statistic}: {est.why_undecided}); "
                f"assuming the model's ({model}). Set the polarity (dark = raw cryo-ET, bright = inverted) if that "
                "is wrong.",
                UserWarning,
                stacklevel=2,
            )
            decision = PolarityDecision(model, "model", model, False, est.skewness, est.standard_error)
        else:
            decision = PolarityDecision(
                est.polarity, "auto", model, est.polarity != model, est.skewness, est.standard_error
            )
    log.info("%s", decision.message)
    return decision


def to_model_polarity(
    volume: np.ndarray, setting: str, model: str, voxel_size_A: float | None = None
) -> tuple[np.ndarray, PolarityDecision]:
    """``volume`` as float32 in the model's polarity (negated when they differ), and the decision.

    For training on a user's tomogram: the network then always sees its own convention.
    """
    decision = decide_polarity(volume, setting, model, voxel_size_A)
    data = np.asarray(volume, np.float32)
    return (np.negative(data) if decision.invert else data), decision


def model_input_normalisation(
    volume: np.ndarray, setting: str, card, voxel_size_A: float | None = None
) -> tuple[Normalisation, PolarityDecision]:
    """How ``volume`` becomes the input of the model of ``card``: its normalisation, negated when the
    polarity decision says so, and that decision (for the progress message and the provenance)."""
    decision = decide_polarity(volume, setting, model_polarity(card), voxel_size_A)
    return estimate_normalisation(volume).inverted(decision.invert), decision
