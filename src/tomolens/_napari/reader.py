"""npe2 reader: MRC-family volumes and particle-coordinate files."""

from __future__ import annotations

from pathlib import Path

from tomolens.io.picks import PICK_EXTENSIONS, read_picks
from tomolens.io.mrc import MRC_EXTENSIONS, read_mrc
from tomolens._napari.format_layers import format_reader
from tomolens._napari.layers import volume_layer_data
from tomolens._napari.pick_layers import pick_layers


def get_reader(path):
    """Return a reader function for one tomolens-readable path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = Path(str(path)).suffix.lower()
    other = format_reader(path)
    if other is not None:
        return other
    if suffix in MRC_EXTENSIONS:
        return read_mrc_layers
    if suffix in PICK_EXTENSIONS:
        return read_coordinate_layers
    return None


def read_mrc_layers(path):
    """Open an MRC file memory-mapped as one Image (or Labels) layer."""
    path = path[0] if isinstance(path, list) else path
    return [volume_layer_data(read_mrc(path))]


def read_coordinate_layers(path):
    """Open a STAR/CSV/TXT/Dynamo/IMOD pick file as Points layers (one per tomogram it covers)
    with its columns as features, and orientation arrows where the picks have angles."""
    path = path[0] if isinstance(path, list) else path
    table = read_picks(path)
    return pick_layers(table, Path(path).stem, Path(path).name)
