"""Orientation recovery for single-particle projections (Banjac, Donati, Defferrard 2021).

Two steps: a Siamese network estimates the distance between the orientations of two
projections (:mod:`tomolens.orient.network`), then orientations are recovered by making
the distances they imply match the estimates (:mod:`tomolens.orient.recover`).  Around
them: a projection simulator (:mod:`~tomolens.orient.project`), STAR/.mrcs files
(:mod:`~tomolens.orient.files`), alignment and errors (:mod:`~tomolens.orient.rotations`)
and Fourier reconstruction with FSC (:mod:`~tomolens.orient.reconstruct`).

Importing this package loads numpy and scipy only; torch is imported when needed.
"""
