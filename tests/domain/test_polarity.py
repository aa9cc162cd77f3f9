"""Contrast polarity: the statistic on constructed cases, decisions, and the message."""

import numpy as np
import pytest
from scipy import ndimage

from tomolens.polarity import (
    MIN_SKEWNESS,
    decide_polarity,
    estimate_polarity,
    model_polarity,
    to_model_polarity,
)


def test_bright_and_dark_blobs_are_told_apart_and_noise_is_not_decided(blobs):
    bright = blobs()
    est = estimate_polarity(bright, 10.0)
    assert est.polarity == "bright" and est.skewness > MIN_SKEWNESS
    dark = estimate_polarity(-bright, 10.0)
    assert dark.polarity == "dark" and dark.skewness == pytest.approx(-est.skewness)
    noise = np.random.default_rng(1).normal(size=(64, 96, 96)).astype(np.float32)
    assert estimate_polarity(noise, 10.0).polarity is None
    assert estimate_polarity(ndimage.gaussian_filter(noise, 2), 10.0).polarity is None


@pytest.mark.parametrize("transform", ["offset_scale", "uint8", "int16", "float16", "padded", "gradient"])
def test_the_decision_survives_what_real_files_look_like(transform, blobs):
    dark = -blobs(seed=2)
    if transform == "offset_scale":
        vol = dark * 37.0 + 1234.0
    elif transform == "uint8":
        vol = np.clip(dark * 20 + 128, 0, 255).astype(np.uint8)
    elif transform == "int16":
        vol = (dark * 300).astype(np.int16)
    elif transform == "float16":
        vol = dark.astype(np.float16)
    elif transform == "padded":
        vol = np.zeros((80, 128, 128), np.float32)
        vol[8:72, 16:112, 16:112] = dark
    else:
        z, y, x = np.mgrid[:64, :96, :96]
        vol = dark + 0.05 * x - 0.03 * z
    assert estimate_polarity(vol, 10.0).polarity == "dark"


def test_real_microtubule_is_bright(shared_data):
    from tomolens.io.mrc import read_mrc

    mt = read_mrc(shared_data / "real" / "microtubule_14pf.mrc")
    assert estimate_polarity(mt.data, 10.52).polarity == "bright"  # stored inverted (README of the data)
    assert estimate_polarity(-np.asarray(mt.data), 10.52).polarity == "dark"


def test_decisions_say_where_they_come_from(blobs):
    bright = blobs(seed=3)
    auto = decide_polarity(-bright, "auto", "bright", 10.0)
    assert (auto.tomogram, auto.source, auto.invert, auto.sign) == ("dark", "auto", True, -1)
    assert "detected" in auto.message and "inverted for the model" in auto.message
    user = decide_polarity(bright, "dark", "bright")
    assert (user.source, user.invert) == ("user", True) and user.skewness is None
    same = decide_polarity(bright, "auto", "bright", 10.0)
    assert not same.invert and same.to_dict()["message"] == same.message
    noise = np.random.default_rng(4).normal(size=(48, 64, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match="cannot be decided"):
        undecided = decide_polarity(noise, "auto", "dark")
    assert (undecided.tomogram, undecided.source, undecided.invert) == ("dark", "model", False)
    data, decision = to_model_polarity(-bright, "auto", "bright", 10.0)
    np.testing.assert_array_equal(data, bright)
    assert decision.invert


def test_a_volume_too_small_to_measure_says_so_not_plus_or_minus_inf(blobs):
    """An 8×16×16 crop gives one sample: the warning says the volume is too small, not '± inf: … pure-noise'."""
    tiny = blobs(seed=3)[:8, :16, :16]
    est = estimate_polarity(tiny, 10.0)
    assert est.n_blocks < 2 and est.polarity is None
    with pytest.warns(UserWarning, match="cannot be decided") as caught:
        decide_polarity(tiny, "auto", "bright", 10.0)
    text = str(caught[0].message)
    assert "inf" not in text and "pure-noise" not in text and "too few voxels" in text
    noise = np.random.default_rng(4).normal(size=(48, 64, 64)).astype(np.float32)
    assert "±" in estimate_polarity(noise, 10.0).statistic  # enough samples: the error is given
    assert estimate_polarity(noise, 10.0).why_undecided.startswith("a flat")


def test_bad_settings_and_cards_are_clear():
    with pytest.raises(ValueError, match="Unknown polarity 'inverted'"):
        decide_polarity(np.zeros((8, 8, 8)), "inverted")
    with pytest.raises(ValueError, match="constant"):
        estimate_polarity(np.full((32, 32, 32), 3.0, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        estimate_polarity(np.full((32, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="3D"):
        estimate_polarity(np.zeros((32, 32)))

    class Card:
        name, polarity = "old", ""

    with pytest.warns(UserWarning, match="assuming 'bright'"):
        assert model_polarity(Card()) == "bright"
    Card.polarity = "sideways"
    with pytest.raises(ValueError, match="must say 'dark' or 'bright'"):
        model_polarity(Card())
