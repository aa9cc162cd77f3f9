"""A gallery of cluster averages for the Subdivide dock: one tile per cluster, click to select its particles.

Each tile shows two thumbnails of the cluster's average subtomogram side by side — its central z-slice and its
projection along z — with the cluster number and its number of particles.  Clicking a tile calls
``on_select(cluster)``; the dock selects that cluster's points (and, through the linked plot, its dots).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QToolButton, QVBoxLayout, QWidget

#: Edge of a thumbnail in screen pixels (each tile holds two).
THUMB_PX = 72
#: Tiles per row of the gallery.
COLUMNS = 3


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A 2D float image scaled to 0–255 between its 1st and 99th percentiles (uint8, C-contiguous)."""
    image = np.asarray(image, float)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, [1, 99])
    scaled = (np.nan_to_num(image, nan=lo) - lo) / (hi - lo) if hi > lo else np.zeros(image.shape)
    return np.ascontiguousarray(np.clip(scaled * 255, 0, 255).astype(np.uint8))


def thumbnail_pair(cube: np.ndarray) -> np.ndarray:
    """Central z-slice and z-projection of a (z, y, x) average, side by side with a 2-pixel gap (uint8, 2D)."""
    cube = np.asarray(cube, float)
    if cube.ndim != 3:
        raise ValueError(f"A cluster average must be a 3D volume (z, y, x); got shape {cube.shape}.")
    central, projection = to_uint8(cube[cube.shape[0] // 2]), to_uint8(cube.mean(axis=0))
    gap = np.zeros((cube.shape[1], 2), np.uint8)
    return np.ascontiguousarray(np.concatenate([central, gap, projection], axis=1))


def _pixmap(gray: np.ndarray) -> QPixmap:
    height, width = gray.shape
    image = QImage(gray.data, width, height, width, QImage.Format.Format_Grayscale8).copy()  # own the pixels
    return QPixmap.fromImage(image).scaled(
        2 * THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class ClusterGallery(QWidget):
    """Tiles of cluster averages; ``on_select(cluster)`` is called when a tile is clicked."""

    def __init__(self, on_select: Callable[[int], None], parent=None) -> None:
        super().__init__(parent)
        self._on_select = on_select
        self.tiles: dict[int, QToolButton] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel("cluster averages appear here (central slice | projection); click one to select it")
        self.caption.setWordWrap(True)
        outer.addWidget(self.caption)
        self._grid = QGridLayout()
        outer.addLayout(self._grid)

    def set_averages(self, averages: dict[int, np.ndarray], counts: dict[int, int]) -> None:
        """Replace the tiles: one per cluster of ``averages`` (cluster → (z, y, x) cube), with its particle count."""
        for button in self.tiles.values():
            self._grid.removeWidget(button)
            button.deleteLater()
        self.tiles = {}
        for i, (k, cube) in enumerate(sorted(averages.items())):
            button = QToolButton()
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.setIcon(QIcon(_pixmap(thumbnail_pair(cube))))
            button.setIconSize(QSize(2 * THUMB_PX, THUMB_PX))
            button.setText(f"cluster {k} ({counts.get(k, 0)})")
            button.setToolTip(f"Select the {counts.get(k, 0)} particles of cluster {k}")
            button.clicked.connect(lambda _=False, k=k: self._on_select(k))
            self._grid.addWidget(button, i // COLUMNS, i % COLUMNS)
            self.tiles[k] = button
        self.caption.setText(
            "cluster averages (central slice | projection along z); click one to select its particles"
            if self.tiles
            else "no cluster averages"
        )
