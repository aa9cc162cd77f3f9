"""Semantic segmentation of tomograms from a few painted slices.

- :mod:`~tomolens.segment.labels` — the label convention (painted 0 = ignored, class k
  painted/predicted as k + 1), checks of painted labels, ground-truth conversion;
- :mod:`~tomolens.segment.losses` — sparse cross-entropy (+ soft Dice) ignoring unpainted voxels;
- :mod:`~tomolens.segment.train` — training jobs (2D slice U-Net or 3D U-Net) and
  ``tomolens train --task segment``; :mod:`~tomolens.segment.settings` — their parameter
  tables and the widget's starting values;
- :mod:`~tomolens.segment.predict` — tiled prediction (2D per slice, optionally averaged
  over the three orthogonal slicings, or 3D) → class probabilities and labels;
- :mod:`~tomolens.segment.cleanup` — small-component removal, hole filling, instances;
- :mod:`~tomolens.segment.cli` — ``tomolens segment``.

Importing this package loads neither torch nor napari.
"""
