"""Particle files that cover several tomograms (RELION ``rlnTomoName``, Dynamo ``tomo``).

A RELION 5 particles file routinely lists the picks of 20–40 tomograms in one table.
Merging them into one layer puts particles of different tomograms on top of each
other; these helpers split a :class:`~tomolens.io.coords.ParticleTable` by tomogram,
pick the rows of one tomogram, and write one file per tomogram.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from tomolens.io.coords import CoordinateFileError, ParticleTable

log = logging.getLogger(__name__)

#: Feature holding each row's tomogram (``rlnTomoName`` in STAR, ``tomo`` in Dynamo tables).
TOMO_FEATURE = "tomo_name"


def tomogram_names(table: ParticleTable) -> list[str]:
    """The distinct tomogram names of a table, in order of first appearance ([] if none)."""
    if TOMO_FEATURE not in table.features.columns:
        return []
    return [str(n) for n in dict.fromkeys(table.features[TOMO_FEATURE].astype(str))]


def subset(table: ParticleTable, mask: np.ndarray) -> ParticleTable:
    """The rows of ``table`` where ``mask`` (bool, shape (N,)) is true, with its pixel size and optics."""
    mask = np.asarray(mask, bool)
    return ParticleTable(
        table.coords_zyx[mask], table.features[mask].reset_index(drop=True), table.pixel_size_A, table.optics
    )


def split_by_tomogram(table: ParticleTable) -> dict[str, ParticleTable]:
    """One table per tomogram name, in order of first appearance; ``{"": table}`` when the
    table names no tomogram."""
    names = tomogram_names(table)
    if not names:
        return {"": table}
    column = table.features[TOMO_FEATURE].astype(str).to_numpy()
    return {name: subset(table, column == name) for name in names}


def describe_tomograms(table: ParticleTable, file_name: str) -> str:
    """``"picks.star holds 3 tomograms (TS_01 120 rows, …), 400 rows in all"``."""
    parts = split_by_tomogram(table)
    counts = ", ".join(f"{name} {len(t)}" for name, t in list(parts.items())[:6])
    more = f", … {len(parts) - 6} more" if len(parts) > 6 else ""
    return f"{file_name} holds {len(parts)} tomograms ({counts}{more}), {len(table)} rows in all"


def _stem(tomogram: str) -> str:
    name = Path(str(tomogram)).name
    for suffix in (".ome.zarr", ".zarr", ".mrc", ".rec", ".map", ".st", ".ali", ".tif", ".tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def match_tomogram(names: list[str], tomogram: str) -> str | None:
    """The tomogram name in ``names`` that a tomogram file or layer name refers to.

    Exact match of the file stem first (``TS_01.mrc`` → ``TS_01``), else the longest name
    that occurs in the stem as a whole token (``rec_TS_01_10.00Apx`` → ``TS_01``), else None.
    """
    stem = _stem(tomogram)
    if stem in names:
        return stem
    hits = [n for n in names if n and re.search(rf"(^|[^0-9A-Za-z]){re.escape(n)}($|[^0-9A-Za-z])", stem)]
    return max(hits, key=len) if hits else None


def select_tomogram(
    table: ParticleTable, tomogram: str | None, file_name: str = "the file", strict: bool = False
) -> ParticleTable:
    """The rows of the tomogram ``tomogram`` (a name, file path or layer name refers to it).

    A table of one tomogram is returned whole unless ``strict`` and its name does not match.

    Raises
    ------
    CoordinateFileError
        When no tomogram is given although the file covers several, or when none of the
        file's tomogram names matches; the message lists the names.
    """
    parts = split_by_tomogram(table)
    names = list(parts)
    if len(parts) == 1 and not (strict and tomogram and names[0] and match_tomogram(names, tomogram) is None):
        return parts[names[0]]
    if not tomogram:
        raise CoordinateFileError(
            f"{describe_tomograms(table, file_name)}; open (or choose) the tomogram whose picks you "
            "want, or open every tomogram's picks as a layer of its own."
        )
    name = match_tomogram(names, tomogram)
    if name is None:
        shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        raise CoordinateFileError(
            f"None of the {len(names)} tomograms in {file_name} ({shown}) matches {_stem(tomogram)!r}. "
            "Rename the tomogram layer after its rlnTomoName, or open every tomogram as a layer."
        )
    return parts[name]


def is_centred_star(path: str | os.PathLike) -> bool:
    """Whether a STAR file holds RELION 5 centred coordinates (``rlnCenteredCoordinateXAngst``),
    which need the tomogram's size and voxel size to become voxels."""
    path = Path(path)
    if path.suffix.lower() != ".star" or not path.is_file():
        return False
    with open(path, errors="replace") as handle:
        return any(line.lstrip().startswith("_rlnCenteredCoordinateXAngst") for line in handle)


def write_per_tomogram(
    folder: str | os.PathLike, table: ParticleTable, stem: str = "particles", suffix: str = ".star", **kwargs
) -> list[Path]:
    """Write one pick file per tomogram, ``<folder>/<stem>_<tomogram><suffix>``.

    Each is written atomically by :func:`~tomolens.io.picks.write_picks` in the format of
    ``suffix`` (``kwargs`` passed on) and keeps its rows' tomogram name.  Returns the paths.
    """
    from tomolens.io.picks import write_picks

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, part in split_by_tomogram(table).items():
        safe = re.sub(r"[^0-9A-Za-z._-]+", "_", name) or "all"
        written.append(write_picks(folder / f"{stem}_{safe}{suffix}", part, **kwargs))
    log.info("wrote %d files, one per tomogram, to %s", len(written), folder)
    return written
