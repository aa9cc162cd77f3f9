"""Layers for particle tables that may cover several tomograms, with their orientations.

Opening a RELION 5 particles file that lists 21 tomograms gives 21 Points layers (named
``<file> <rlnTomoName>``), each with its orientation arrows when the picks have angles, and
a message that says how many tomograms and rows the file holds.  To keep only the rows of
one tomogram, use :func:`tomogram_pick_layers` (the Tomogram widget's "Open picks of
this tomogram").
"""

from __future__ import annotations

import logging
from typing import Any

from tomolens._napari.layers import points_layer_data
from tomolens._napari.orientation_layers import points_with_orientations
from tomolens.io.coords import ParticleTable
from tomolens.io.star_tomo import TOMO_FEATURE, describe_tomograms, select_tomogram, split_by_tomogram

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict, str]


def notify(message: str) -> None:
    """Log ``message`` and show it as a napari notification."""
    log.info(message)
    try:
        from napari.utils.notifications import show_info
    except ImportError:  # pragma: no cover - napari is a dependency; scripts may run without it
        return
    show_info(message)


def pick_layers(table: ParticleTable, name: str, file_name: str) -> list[LayerData]:
    """Points (and orientation Vectors) layer data, one set per tomogram the table covers.

    A table of one tomogram (or none named) gives one Points layer called ``name``; several
    tomograms give one per tomogram called ``"<name> <tomogram>"`` and a notification with the
    counts.  Each Points layer's metadata carries ``tomo_name`` and ``source_file``.
    """
    parts = split_by_tomogram(table)
    layers: list[LayerData] = []
    for tomo, part in parts.items():
        label = name if len(parts) == 1 else f"{name} {tomo}"
        points = points_layer_data(part, name=label)
        points[1]["metadata"].update({TOMO_FEATURE: tomo or None, "source_file": file_name})
        layers.extend(points_with_orientations(points))
    if len(parts) > 1:
        notify(
            f"{describe_tomograms(table, file_name)}: opened one Points layer per tomogram. "
            "To open only the rows of the tomogram you are looking at, use Tomogram ▸ "
            "'Open picks of this tomogram'."
        )
    return layers


def tomogram_pick_layers(table: ParticleTable, tomogram: str | None, name: str, file_name: str) -> list[LayerData]:
    """Points (and orientation) layer data for the rows of one tomogram only.

    ``tomogram`` is the open tomogram's layer name or file path, matched to ``rlnTomoName``
    by :func:`tomolens.io.star_tomo.match_tomogram`.  Raises
    :class:`~tomolens.io.coords.CoordinateFileError` when the file covers several tomograms
    and none is given or none matches.
    """
    part = select_tomogram(table, tomogram, file_name)
    if len(part) != len(table):
        notify(
            f"{describe_tomograms(table, file_name)}: opened the {len(part)} rows of "
            f"{part.features[TOMO_FEATURE].iloc[0]}."
        )
    points = points_layer_data(part, name=name)
    tomo = part.features[TOMO_FEATURE].iloc[0] if TOMO_FEATURE in part.features and len(part) else None
    points[1]["metadata"].update({TOMO_FEATURE: tomo, "source_file": file_name})
    return points_with_orientations(points)
