"""File input and output: MRC volumes, particle coordinates, atomic writes.

Files speak x, y, z; everything inside tomolens speaks z, y, x.  The conversion
happens here and nowhere else.
"""

from tomolens.io.atomic import atomic_path
from tomolens.io.coords import ParticleTable, read_coordinates, write_coordinates
from tomolens.io.mrc import MrcVolume, read_mrc, write_mrc

__all__ = [
    "MrcVolume",
    "ParticleTable",
    "atomic_path",
    "read_coordinates",
    "read_mrc",
    "write_coordinates",
    "write_mrc",
]
