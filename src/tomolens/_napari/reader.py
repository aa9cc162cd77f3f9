"""npe2 reader: MRC-family volumes and particle-coordinate files."""

from __future__ import annotations

from pathlib import Path

from tomolens.io.coords import COORD_EXTENSIONS, read_coordinates
from tomolens.io.mrc import MRC_EXTENSIONS, read_mrc
from tomolens._napari.layers import points_layer_data, volume_layer_data


def get_reader(path):
    """Return a reader function for one tomolens-readable path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = Path(str(path)).suffix.lower()
    if suffix in MRC_EXTENSIONS:
        return read_mrc_layers
    if suffix in COORD_EXTENSIONS:
        return read_coordinate_layers
    return None


def read_mrc_layers(path):
    """Open an MRC file memory-mapped as one Image (or Labels) layer."""
    path = path[0] if isinstance(path, list) else path
    return [volume_layer_data(read_mrc(path))]


def read_coordinate_layers(path):
    """Open a STAR/CSV/TXT coordinate file as a Points layer with its columns as features."""
    path = path[0] if isinstance(path, list) else path
    table = read_coordinates(path)
    return [points_layer_data(table, name=Path(path).stem)]
