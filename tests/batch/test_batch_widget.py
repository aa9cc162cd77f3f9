"""Presets: ParamPanel save/load, and a preset saved from a widget gives the same outputs via CLI and batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from batch_helpers import VOXEL_A, read_centres

from tomolens._widgets._params import ParamPanel
from tomolens.batch import pipeline_from_dict, run_batch
from tomolens.cli import main
from tomolens.detect.detector import DETECT_PARAMS
from tomolens.io import read_mrc
from tomolens.params import Param


def test_param_panel_presets_round_trip_and_errors(qtbot, tmp_path):
    panel = ParamPanel(tuple(p for p in DETECT_PARAMS if p.name != "model"))
    assert panel.task == "detect"
    assert panel.save_button.text == "Save preset…" and panel.load_button.text == "Load preset…"
    panel.set_values({"mask_threshold": 0.35, "min_distance_fraction": 1.2, "device": "cpu"})
    chosen = {"name": "detect_default"}
    panel.add_preset_field("model", lambda: chosen["name"], lambda v: chosen.update(name=v))
    path = panel.save_preset(tmp_path / "detect")
    assert path.suffix == ".json"
    saved = json.loads(path.read_text())
    assert saved["task"] == "detect" and saved["params"]["mask_threshold"] == 0.35
    assert saved["params"]["model"] == "detect_default" and saved["params"]["min_distance_fraction"] == 1.2

    other = ParamPanel(tuple(p for p in DETECT_PARAMS if p.name != "model"))
    other.add_preset_field("model", lambda: chosen["name"], lambda v: chosen.update(name=v))
    chosen["name"] = "something else"
    applied = other.load_preset(path)
    assert other.values() == panel.values() and applied["model"] == "detect_default"
    assert chosen["name"] == "detect_default"

    (tmp_path / "detect.yaml").write_text("task: detect\nparams:\n  mask_threshold: 0.8\n  overlap: 0.5\n")
    other.load_preset(tmp_path / "detect.yaml")
    assert other.values()["mask_threshold"] == 0.8 and other.values()["overlap"] == 0.5
    (tmp_path / "classify.json").write_text(json.dumps({"task": "classify", "params": {"edge": "pad"}}))
    with pytest.raises(ValueError, match="preset for 'classify'; this panel is for 'detect'"):
        other.load_preset(tmp_path / "classify.json")
    (tmp_path / "typo.json").write_text(json.dumps({"task": "detect", "params": {"mask_treshold": 0.1}}))
    with pytest.raises(ValueError, match="mask_treshold"):
        other.load_preset(tmp_path / "typo.json")
    (tmp_path / "bad.json").write_text(json.dumps({"task": "detect", "params": {"mask_threshold": 7}}))
    with pytest.raises(ValueError, match="above the maximum"):
        other.load_preset(tmp_path / "bad.json")
    assert other.values()["mask_threshold"] == 0.8  # a bad preset changes nothing
    custom = ParamPanel(
        (Param("weird_setting", 1, "not any task's"), Param("learning_rate", 2e-3, "small float", min=1e-6, max=1.0))
    )
    assert custom.task == "custom"
    assert custom.values()["learning_rate"] == pytest.approx(2e-3)  # not rounded to the spin box's 2 decimals


def test_widget_preset_gives_same_outputs_through_cli_and_batch(make_napari_viewer, qtbot, batch_data, tmp_path):
    from tomolens._widgets.detect import FROM_FILE, DetectWidget

    model, tomo = batch_data["model"], batch_data["paths"][0]
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        np.asarray(read_mrc(tomo).data), name="tomo", scale=(VOXEL_A,) * 3, units=("angstrom",) * 3
    )
    widget = DetectWidget(viewer)
    widget.image.value = layer
    widget.model_file.value = model
    widget.model_choice.value = FROM_FILE
    widget.params.set_values(
        {
            "mask_threshold": 0.45,
            "centre_threshold": 0.25,
            "device": "cpu",
            "particle_radius_A": 40.0,
            "min_volume_A3": 5000.0,
        }
    )
    preset = widget.params.save_preset(tmp_path / "from_widget.json")

    widget.start_detection()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    assert widget.result is not None
    gui = widget.result.particles.coords_zyx
    gui = gui[np.lexsort(gui.T[::-1])]
    assert len(gui) > 0

    stem = tmp_path / "cli" / "tomo"
    stem.parent.mkdir()
    assert main(["detect", str(tomo), "--preset", str(preset), "--model", model, "--out", str(stem)]) == 0
    np.testing.assert_allclose(read_centres(tmp_path / "cli" / "tomo_centres.star"), gui, atol=1e-3)

    pipeline = pipeline_from_dict(
        {
            "task": "batch",
            "pipeline": [
                {"task": "detect", "preset": preset.name, "params": {"model": model}},
                {"task": "export", "params": {"format": "star"}},
            ],
        },
        base_dir=tmp_path,
    )
    summary = run_batch(pipeline, [tomo], tmp_path / "batch", progress=False)
    assert summary.results[0].status == "done" and summary.results[0].particles == len(gui)
    np.testing.assert_allclose(
        read_centres(tmp_path / "batch" / tomo.stem / f"{tomo.stem}_particles.star"), gui, atol=1e-3
    )


def test_detect_defaults_give_same_result_in_widget_and_cli(make_napari_viewer, qtbot, batch_data, tmp_path):
    from tomolens._widgets.detect import DetectWidget
    from tomolens.models.card import shipped_models

    if "detect_default" not in shipped_models("detect"):
        pytest.skip("no shipped detect_default model yet")
    tomo = batch_data["paths"][1]
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        np.asarray(read_mrc(tomo).data), name="tomo", scale=(VOXEL_A,) * 3, units=("angstrom",) * 3
    )
    widget = DetectWidget(viewer)
    widget.image.value = layer
    widget.params.set_values({"device": "cpu"})  # the default "auto" is the CPU here too
    widget.start_detection()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    gui = widget.result.particles.coords_zyx
    gui = gui[np.lexsort(gui.T[::-1])]
    assert main(["detect", str(tomo), "--out", str(tmp_path / "tomo")]) == 0
    cli = read_centres(tmp_path / "tomo_centres.star")
    assert len(gui) > 0 and cli.shape == gui.shape
    np.testing.assert_allclose(cli, gui, atol=1e-3)
