"""Pick-by-example dock widget: similarity layer, picks, live threshold, empty examples refused."""

import numpy as np
from planted import planted_tomogram

from tomolens.jobs import Progress


def test_pick_by_example_widget_live_threshold(make_napari_viewer, qtbot, classifier_embedding):
    from tomolens._widgets.pick_example import PickByExampleWidget

    viewer = make_napari_viewer()
    vol, target, _ = planted_tomogram()
    image = viewer.add_image(vol, scale=(10, 10, 10), units=("angstrom",) * 3, name="tomo")
    examples = viewer.add_points(target[:2], scale=(10, 10, 10), units=("angstrom",) * 3, name="ex")
    widget = PickByExampleWidget(viewer)
    widget.image_picker.value, widget.examples_picker.value = image, examples
    widget.params.controls["embed_model"].value = classifier_embedding
    widget.params.controls["polarity"].value = "bright"
    widget.params.controls["device"].value = "cpu"
    widget.params.controls["threshold"].value = 0.5
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    sim = viewer.layers["tomo similarity"]
    assert sim.data.shape == (8, 16, 16) and tuple(sim.scale) == (80.0, 80.0, 80.0)
    picks = viewer.layers["tomo picks by example"]
    assert len(picks.data) >= 2 and set(picks.features["class"]) == {"target"}
    assert np.all(picks.features["score"] >= 0.5)
    scores = picks.features["score"].to_numpy()
    top = float(np.sort(scores)[-2])
    widget.params.controls["threshold"].value = top  # live: re-picked from the stored map (in the worker)
    qtbot.waitUntil(lambda: not widget.runner.running and f"≥ {top:.2f}:" in widget.summary.value, timeout=30000)
    assert len(picks.data) == int(np.sum(scores >= top)) and np.all(picks.features["score"] >= top)
    assert widget.summary.value.startswith(f"{len(picks.data)} picks")
    # a re-run with a finer stride updates the similarity layer in place (no remove and re-add), on its new grid
    widget.params.controls["stride"].value = 4
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert viewer.layers["tomo similarity"] is sim and viewer.layers["tomo picks by example"] is picks
    assert sim.data.shape == (16, 32, 32) and tuple(sim.scale) == (40.0, 40.0, 40.0)


def test_pick_widget_refuses_an_empty_examples_layer(make_napari_viewer, monkeypatch):
    import tomolens._widgets.pick_example as mod

    viewer = make_napari_viewer()
    scale = {"scale": (10.0,) * 3, "units": ("angstrom",) * 3}  # a voxel size: the examples are what is wrong
    image = viewer.add_image(np.zeros((16, 32, 32), np.float32), name="tomo", **scale)
    examples = viewer.add_points(np.empty((0, 3)), name="ex", ndim=3, **scale)
    warnings = []
    monkeypatch.setattr(mod, "show_warning", warnings.append)
    widget = mod.PickByExampleWidget(viewer)
    widget.image_picker.value, widget.examples_picker.value = image, examples
    widget.start()
    assert warnings and "at least one example" in warnings[0] and not widget.runner.running


def test_pick_widget_template_method_from_clicks_and_from_a_reference_map(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import tomolens._widgets.pick_example as mod
    from tomolens.evaluate import match_centres
    from tomolens.io.mrc import write_mrc
    from tomolens.simulate.pseudoproteins import render_pseudoprotein

    from planted import TARGET

    viewer = make_napari_viewer()
    vol, target, _ = planted_tomogram(n_each=6, noise=0.3, seed=1, rotate=True)
    image = viewer.add_image(vol, scale=(10, 10, 10), units=("angstrom",) * 3, name="tomo")
    examples = viewer.add_points(target[:2] * 10, units=("angstrom",) * 3, name="ex")  # world coordinates, Å
    infos = []
    monkeypatch.setattr(mod, "show_info", infos.append)
    widget = mod.PickByExampleWidget(viewer)
    assert widget.params.controls["method"].value == "template"
    widget.image_picker.value, widget.examples_picker.value = image, examples
    for name, value in (("radius_A", 80.0), ("min_distance_A", 80.0), ("angular_step_deg", 60.0)):
        widget.params.controls[name].value = value
    widget.params.controls["polarity"].value = "bright"
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    sim = viewer.layers["tomo similarity"]
    assert sim.data.shape == vol.shape and tuple(sim.scale) == (10.0, 10.0, 10.0)
    picks = viewer.layers["tomo picks by example"]
    assert match_centres(picks.data, target, 4.0).f1 >= 0.9
    # a reference map at 5 Å and no examples layer: resampled, and the notification says so
    write_mrc(tmp_path / "ref.mrc", render_pseudoprotein(TARGET, 5.0).density, 5.0)
    widget.examples_picker.value = None
    widget.reference.value = str(tmp_path / "ref.mrc")
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert match_centres(picks.data, target, 4.0).f1 >= 0.9 and set(picks.features["class"]) == {"ref"}
    assert any("resampled from 5" in m for m in infos)


def test_pick_widget_cancel_stops_the_rotation_search(make_napari_viewer, qtbot):
    from tomolens._widgets.pick_example import PickByExampleWidget

    viewer = make_napari_viewer()
    vol, target, _ = planted_tomogram(rotate=True)
    image = viewer.add_image(vol, scale=(10, 10, 10), units=("angstrom",) * 3, name="tomo")
    examples = viewer.add_points(target[:2], scale=(10, 10, 10), units=("angstrom",) * 3, name="ex")
    widget = PickByExampleWidget(viewer)
    widget.image_picker.value, widget.examples_picker.value = image, examples
    widget.params.controls["angular_step_deg"].value = 10.0  # thousands of rotations: minutes if not cancelled
    widget.params.controls["polarity"].value = "bright"
    n_layers = len(viewer.layers)
    widget.start()
    qtbot.waitUntil(lambda: (widget.runner.last_progress or Progress(0, 0)).total > 1000, timeout=30000)
    widget.runner.cancel()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=10000)
    assert widget.runner.status.value == "Cancelled"
    assert len(viewer.layers) == n_layers and widget.result is None
