"""benchmarks/bench_segment.py: another model's results go under keys of their own; parts it cannot run are refused."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_segment
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_segment


def _dice(value: float) -> dict:
    return {"background": 0.99, "membrane": value, "filament": value, "particle": value}


def _args(model: str, parts: str) -> argparse.Namespace:
    return argparse.Namespace(
        model=model, parts=parts, threads=1, epochs_scratch=45, epochs_finetune=45, snr="0.05,0.03", cache=None
    )


def test_model_suffix_and_parts(bench):
    assert bench.model_suffix("segment_default") == ""
    assert bench.model_suffix("segment_domain") == "@segment_domain"
    assert bench.model_suffix("/tmp/runs/my_model.pt") == "@my_model"
    assert bench.base_kind("finetuned_5_slices@segment_domain") == "finetuned_5_slices"
    every = {"shipped", "scratch", "finetune", "timing"}
    assert bench.check_parts("segment_default", every, given=False) == every
    assert bench.check_parts("segment_domain", every, given=False) == {"finetune"}
    assert bench.check_parts("segment_domain", {"finetune", "timing"}, given=True) == {"finetune", "timing"}
    with pytest.raises(
        ValueError, match="--parts shipped scores .*segment_domain segments \\['background', 'membrane', "
    ):
        bench.check_parts("segment_domain", {"shipped", "finetune"}, given=True)
    # the domain model is a slice network: fine-tuned for what the widget's 5 minutes give it
    from tomolens.segment.settings import trained_kind

    assert bench.FINETUNE_EPOCHS[trained_kind("3d", "segment_domain")] == 45
    assert bench.FINETUNE_EPOCHS[trained_kind("3d", "segment_default")] == 14


def test_another_model_never_overwrites_the_default_model_rows(bench):
    default_rows = {
        "snr_0.05": {
            5008: {"seed": 5008, "finetuned_5_slices": _dice(0.7), "epochs_run_finetuned": 14},
            5009: {"seed": 5009, "finetuned_5_slices": _dice(0.8), "epochs_run_finetuned": 13},
        }
    }
    result = {}
    bench.record_run(
        result, _args("segment_default", "finetune"), {"finetune"}, {0.05, 0.03}, default_rows, None, [1.0]
    )
    before = copy.deepcopy(result)
    assert result["model"] == "segment_default" and result["dice"]["snr_0.05"]["finetuned_5_slices"]["membrane"] == 0.75
    domain_rows = {
        "snr_0.05": {
            5008: {
                "seed": 5008,
                "finetuned_5_slices@segment_domain": _dice(0.5),
                "epochs_run_finetuned@segment_domain": 45,
            },
            5009: {
                "seed": 5009,
                "finetuned_5_slices@segment_domain": _dice(0.3),
                "epochs_run_finetuned@segment_domain": 45,
            },
        }
    }
    timed = {"shape_zyx": [200, 512, 512], "measured_at_full_size": True, "z_slices@segment_domain": {"wall_s": 1.0}}
    bench.record_run(
        result,
        _args("segment_domain", "finetune"),
        {"finetune", "timing"},
        {0.05, 0.03},
        domain_rows,
        timed,
        [2.0],
    )
    entry = result["dice"]["snr_0.05"]
    assert entry["finetuned_5_slices"] == before["dice"]["snr_0.05"]["finetuned_5_slices"]
    assert entry["finetuned_5_slices_summary"] == before["dice"]["snr_0.05"]["finetuned_5_slices_summary"]
    assert entry["finetuned_5_slices@segment_domain"]["membrane"] == 0.4
    assert entry["finetuned_5_slices@segment_domain_summary"]["membrane"]["seeds"] == [5008, 5009]
    for old, new in zip(before["dice"]["snr_0.05"]["tomograms"], entry["tomograms"]):
        assert {k: new[k] for k in old} == old  # the default model's values kept, the other's added beside them
        assert new["epochs_run_finetuned@segment_domain"] == 45
    for key in ("model", "load_average_at_start", "torch_threads", "finetuned_5_slices_settings"):
        assert result[key] == before[key], key
    assert result["finetuned_5_slices_settings@segment_domain"]["start_from"] == "segment_domain"
    assert result["run@segment_domain"]["load_average_at_start"] == [2.0]
    assert result["commands"]["finetune"] == before["commands"]["finetune"]
    assert result["commands"]["finetune,timing@segment_domain"].endswith("--model segment_domain")
    assert result["timing"]["z_slices@segment_domain"] == {"wall_s": 1.0}
    assert bench.result_kinds(entry["tomograms"]) == ["finetuned_5_slices", "finetuned_5_slices@segment_domain"]
