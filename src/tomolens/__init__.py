"""napari-tomolens: deep-learning analysis of cryo-electron tomograms in napari.

Importing :mod:`tomolens` loads no napari, Qt or torch; those are imported by the
sub-packages that need them.
"""

__version__ = "0.1.0"
