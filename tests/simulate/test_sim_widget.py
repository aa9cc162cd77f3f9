"""The Simulate dock widget: run a small simulation and get its layers."""

import numpy as np

from tomolens._widgets.simulate import SimulateWidget


def test_simulate_widget_adds_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SimulateWidget(viewer)
    widget.panel.set_values(
        {
            "size_x": 48,
            "size_y": 48,
            "size_z": 32,
            "n_particles": 6,
            "templates": "globule,tetrahedron",
            "mode": "fourier",
            "seed": 2,
        }
    )
    widget.runner.run_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    names = [layer.name for layer in viewer.layers]
    assert names == ["simulated tomogram", "simulated semantic", "simulated instances", "simulated particles"]
    points = viewer.layers["simulated particles"]
    assert len(points.data) == 6 and "class_name" in points.features
    assert all(np.allclose(layer.scale, 10.0) for layer in viewer.layers)
    assert "6 particles" in widget.summary.value


def test_simulate_widget_bad_settings_do_not_start(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SimulateWidget(viewer)
    widget.panel.set_values({"tilt_step_deg": 30.0, "tilt_range_deg": 10.0})
    widget.start()
    assert not widget.runner.running and len(viewer.layers) == 0
