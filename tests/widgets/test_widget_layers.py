"""Result layers built off the GUI thread and placed (or updated in place) on it (issue 22)."""

import threading

import numpy as np
import pandas as pd
import pytest

from tomolens._widgets._layers import build_layer, place_layer
from tomolens.io.mrc import contrast_limits


def test_build_layer_in_a_worker_thread_gives_images_our_contrast_limits():
    rng = np.random.default_rng(0)
    volume = rng.normal(5.0, 2.0, (16, 32, 32)).astype(np.float32)
    built = {}

    def build():  # no viewer, no Qt: a plain thread can build it
        built["image"] = build_layer(volume, {"name": "v", "scale": (10.0,) * 3}, "image")
        built["points"] = build_layer(
            rng.uniform(0, 16, (5, 3)),
            {"name": "p", "features": pd.DataFrame({"score": np.linspace(0, 1, 5)})},
            "points",
        )

    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    image, points = built["image"], built["points"]
    assert tuple(image.contrast_limits) == pytest.approx(contrast_limits(volume))
    np.testing.assert_allclose(image.scale, (10.0,) * 3)
    assert len(points.data) == 5 and list(points.features["score"]) == pytest.approx(np.linspace(0, 1, 5))
    given = build_layer(volume, {"name": "w", "contrast_limits": (0.0, 1.0)}, "image")
    assert tuple(given.contrast_limits) == (0.0, 1.0)  # given limits are kept
    with pytest.raises(ValueError, match="Unknown layer type 'surface'"):
        build_layer(volume, {}, "surface")


def test_place_layer_appends_then_updates_in_place(make_napari_viewer):
    viewer = make_napari_viewer()
    first = np.zeros((8, 16, 16), np.int32)
    first[2:4, 2:4, 2:4] = 1
    labels, updated = place_layer(viewer, build_layer(first, {"name": "r labels", "opacity": 0.4}, "labels"))
    assert not updated and viewer.layers["r labels"] is labels
    labels.opacity = 0.8  # the user's display setting survives a re-run
    second = first * 2
    spec = {"name": "r labels", "metadata": {"run": 2}, "scale": (2.0, 2.0, 2.0), "translate": (1.0, 0.0, 0.0)}
    again, updated = place_layer(viewer, build_layer(second, spec, "labels"))
    assert updated and again is labels and len(viewer.layers) == 1
    np.testing.assert_array_equal(labels.data, second)
    assert labels.opacity == 0.8 and labels.metadata["run"] == 2
    np.testing.assert_allclose(labels.scale, 2.0)  # the new result's grid
    np.testing.assert_allclose(labels.translate, (1.0, 0.0, 0.0))

    features = pd.DataFrame({"score": [0.1, 0.9]})
    spec = {"name": "r points", "features": features, "size": 3.0, "face_color": "score", "face_colormap": "viridis"}
    points, _ = place_layer(viewer, build_layer(np.array([[1.0, 2, 3], [4, 5, 6]]), spec, "points"))
    fewer = {**spec, "features": pd.DataFrame({"score": [0.5]}), "size": 7.0}
    new = build_layer(np.array([[2.0, 2, 2]]), fewer, "points")
    again, updated = place_layer(viewer, new)
    assert updated and again is points and len(viewer.layers) == 2
    np.testing.assert_allclose(points.data, [[2.0, 2, 2]])
    assert list(points.features["score"]) == [0.5] and np.allclose(points.size, 7.0)
    np.testing.assert_allclose(points.face_color, new.face_color)

    # a layer of another type with the same name is not overwritten: napari adds the new one beside it
    image, updated = place_layer(viewer, build_layer(first.astype(np.float32), {"name": "r points"}, "image"))
    assert not updated and len(viewer.layers) == 3 and viewer.layers["r points"] is points
    assert image in viewer.layers
