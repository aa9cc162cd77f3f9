"""Particle coordinates: RELION STAR (pixel and RELION 5 centred-Å forms), CSV, TXT.

Inside tomolens a particle table holds coordinates in **voxels, z, y, x order,
0-based** (the centre of the first voxel is 0, as in napari).  Files speak x, y, z:

- **STAR, pixel form**: ``rlnCoordinateX/Y/Z`` in voxels (0-based, as Warp, crYOLO and
  napari write them), optional ``rlnAngleRot/Tilt/Psi`` (ZYZ Euler angles in degrees,
  the RELION convention), ``rlnTomoName``, ``rlnClassNumber``,
  ``rlnAutopickFigureOfMerit`` (our ``score``), ``rlnImagePixelSize`` (Å); every other
  feature is written as a column of its own name.
- **STAR, RELION 5 centred form**: ``rlnCenteredCoordinateX/Y/ZAngst`` = (x − size_x / 2)
  × pixel size, i.e. Å from the tomogram's centre.  Converting needs the tomogram
  size and the pixel size.
- **CSV**: a header with ``x, y, z``, a ``unit`` column (``px`` or ``A``) and one column
  per feature.
- **TXT**: whitespace-separated ``x y z`` in voxels, one particle per line, ``#``
  comments allowed.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from tomolens.io.atomic import atomic_path
from tomolens.io.checks import check_voxel_size, is_valid_length, require_regular_file

log = logging.getLogger(__name__)

COORD_EXTENSIONS = (".star", ".csv", ".txt", ".coords")
PIXEL_COLS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
CENTRED_COLS = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
#: STAR column ↔ tomolens feature name.
STAR_FEATURES = {
    "rlnAngleRot": "rot",
    "rlnAngleTilt": "tilt",
    "rlnAnglePsi": "psi",
    "rlnTomoName": "tomo_name",
    "rlnClassNumber": "class",
    "rlnAutopickFigureOfMerit": "score",
}
PIXEL_SIZE_COLS = (  # the first one present gives the coordinates' pixel size
    "rlnTomoTiltSeriesPixelSize",  # RELION 4/5: rlnCoordinateX/Y/Z are tilt-series pixels
    "rlnImagePixelSize",
    "rlnPixelSize",
    "rlnDetectorPixelSize",
    "rlnMicrographPixelSize",
)


class CoordinateFileError(ValueError):
    """A coordinate file could not be read or written; the message says why."""


def _numbers(df: pd.DataFrame, columns, path: Path, row_name) -> np.ndarray:
    """The columns as an (N, len(columns)) float array; every value must be a finite number.

    ``row_name(i)`` says where row ``i`` is in the file ("line 5", "particle 3").
    """
    out = np.zeros((len(df), len(columns)))
    for j, col in enumerate(columns):
        if col not in df:
            continue
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            value = df[col].iloc[i]
            shown = repr(value) if isinstance(value, str) else str(value)
            raise CoordinateFileError(
                f"{path.name}, {row_name(i)}, column {col}: {shown} is not a finite number"
                + (f" ({bad.size} such values)" if bad.size > 1 else "")
                + "; fix or remove those rows."
            )
        out[:, j] = values
    return out


def _file_pixel_size(value, column: str, path: Path) -> float | None:
    """A pixel size read from a file, or None (with a warning) when it is not a usable size."""
    if is_valid_length(value):
        return float(value)
    warnings.warn(
        f"{path.name}: {column} is {value!r}, not a positive pixel size in Å; treating it as unknown.",
        UserWarning,
        stacklevel=4,
    )
    return None


@dataclass
class ParticleTable:
    """Particle positions with per-particle features.

    Attributes
    ----------
    coords_zyx : ndarray, shape (N, 3), float64
        Positions in voxels, z, y, x, 0-based.
    features : pandas.DataFrame
        N rows, one column per feature (``score``, ``class``, ``rot``/``tilt``/``psi``…).
    pixel_size_A : float or None
        Voxel size in Å when known.
    optics : pandas.DataFrame or None
        A STAR file's ``data_optics`` table (RELION 3.1+), written back with the particles.
    """

    coords_zyx: np.ndarray
    features: pd.DataFrame = field(default_factory=pd.DataFrame)
    pixel_size_A: float | None = None
    optics: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.coords_zyx = np.asarray(self.coords_zyx, dtype=np.float64).reshape(-1, 3)
        if self.features is None or len(self.features.columns) == 0:
            self.features = pd.DataFrame(index=range(len(self.coords_zyx)))
        self.features = self.features.reset_index(drop=True)
        if len(self.features) != len(self.coords_zyx):
            raise ValueError(f"{len(self.coords_zyx)} coordinates but {len(self.features)} feature rows.")

    def __len__(self) -> int:
        return len(self.coords_zyx)


def _read_star_table(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles table (with its optics group's pixel sizes joined on) and the optics table."""
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises several types for malformed files
        text = " ".join(str(err).split())
        if any(key in text for key in ("Length mismatch", "Error tokenizing", "Expected")):
            text = "a data row has more or fewer values than the loop declares columns"
        elif isinstance(err, UnicodeDecodeError):
            text = "it is not UTF-8 text"
        raise CoordinateFileError(f"{path.name} is not a readable STAR file: {text} ({type(err).__name__}).") from err
    optics = blocks.get("optics")
    optics = optics if isinstance(optics, pd.DataFrame) and len(optics) else None
    for name in ("particles", *blocks.keys()):
        df = blocks.get(name)
        if isinstance(df, pd.DataFrame) and (
            set(PIXEL_COLS[:2]) <= set(df.columns) or set(CENTRED_COLS[:2]) <= set(df.columns)
        ):
            return _join_optics(df, optics), optics
    found = sorted({c for df in blocks.values() if isinstance(df, pd.DataFrame) for c in df.columns})
    raise CoordinateFileError(
        f"{path.name} has no coordinate columns. Expected rlnCoordinateX/Y/Z (pixels) or "
        f"rlnCenteredCoordinateX/Y/ZAngst (RELION 5); found: {', '.join(found) or 'no table'}."
    )


def _join_optics(df: pd.DataFrame, optics: pd.DataFrame | None) -> pd.DataFrame:
    """Add each row's optics-group pixel sizes (``rlnOpticsGroup`` → ``data_optics``)."""
    if optics is None:
        return df
    cols = [c for c in PIXEL_SIZE_COLS if c in optics.columns and c not in df.columns]
    if not cols:
        return df
    if "rlnOpticsGroup" in df.columns and "rlnOpticsGroup" in optics.columns:
        lookup = optics.set_index("rlnOpticsGroup")[cols]
        joined = lookup.reindex(df["rlnOpticsGroup"].to_numpy()).reset_index(drop=True)
        if joined.isna().any().any():
            missing = sorted(set(df["rlnOpticsGroup"]) - set(optics["rlnOpticsGroup"]))
            raise CoordinateFileError(f"Particles name optics groups {missing} that the data_optics table lacks.")
    else:
        joined = pd.DataFrame({c: np.full(len(df), optics[c].iloc[0]) for c in cols})
    return pd.concat([df.reset_index(drop=True), joined], axis=1)


def _star_to_table(df: pd.DataFrame, path: Path, pixel_size_A, tomogram_shape_zyx, optics=None):
    if len(df) == 0:
        raise CoordinateFileError(f"{path.name} holds no particles (its table has columns but no rows).")
    px_col = next((c for c in PIXEL_SIZE_COLS if c in df.columns), None)
    row_px = pd.to_numeric(df[px_col], errors="coerce").to_numpy(float) if px_col else None
    file_px = _file_pixel_size(df[px_col].iloc[0], px_col, path) if px_col else None
    px = pixel_size_A if pixel_size_A is not None else file_px
    particle = lambda i: f"particle {i + 1}"  # noqa: E731
    if set(PIXEL_COLS[:2]) <= set(df.columns):
        xyz = _numbers(df, PIXEL_COLS, path, particle)
        if (
            pixel_size_A is None
            and file_px is not None
            and row_px is not None
            and np.all(np.isfinite(row_px) & (row_px > 0))
            and not np.allclose(row_px, file_px)
        ):
            # optics groups of different pixel sizes: every row to the first row's pixel size
            log.info("%s: optics groups of several pixel sizes; coordinates rescaled to %g Å", path.name, px)
            xyz = xyz * (row_px / px)[:, None]
        used = set(PIXEL_COLS)
    else:
        if pixel_size_A is None and optics is not None and px_col in optics.columns:
            px = None  # the optics group's pixel size is the tilt series', not the (binned) tomogram's
        if px is None or tomogram_shape_zyx is None:
            raise CoordinateFileError(
                f"{path.name} holds RELION 5 centred coordinates in Å; converting them to voxels "
                "needs the pixel size and the tomogram size. Give both (choose the tomogram "
                "layer, or pass --pixel-size and --tomogram-shape)."
            )
        size_xyz = np.asarray(tomogram_shape_zyx, float)[::-1]
        ang = _numbers(df, CENTRED_COLS, path, particle)
        xyz = ang / px + size_xyz / 2.0
        used = set(CENTRED_COLS)
    used |= set(PIXEL_SIZE_COLS)
    features = pd.DataFrame({STAR_FEATURES.get(c, c): df[c].to_numpy() for c in df.columns if c not in used})
    return ParticleTable(xyz[:, ::-1], features, px, optics)


def _read_csv(path: Path, pixel_size_A) -> ParticleTable:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise CoordinateFileError(f"{path.name} is empty: it holds no particles.") from err
    except UnicodeDecodeError as err:
        raise CoordinateFileError(
            f"{path.name} is not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8 CSV."
        ) from err
    except (pd.errors.ParserError, ValueError) as err:
        raise CoordinateFileError(f"{path.name} is not a readable CSV table: {' '.join(str(err).split())}") from err
    lower = {str(c).lower().strip(): c for c in df.columns}
    if not {"x", "y", "z"} <= set(lower):
        raise CoordinateFileError(f"{path.name} needs a header with columns x, y, z; found: {', '.join(df.columns)}.")
    xyz = _numbers(df, [lower["x"], lower["y"], lower["z"]], path, lambda i: f"line {i + 2}")
    unit = str(df[lower["unit"]].iloc[0]).strip() if "unit" in lower and len(df) else "px"
    file_px = (
        _file_pixel_size(df[lower["pixel_size_a"]].iloc[0], lower["pixel_size_a"], path)
        if "pixel_size_a" in lower and len(df)
        else None
    )
    px = pixel_size_A if pixel_size_A is not None else file_px
    if unit.lower() in ("a", "å", "angstrom"):
        if px is None:
            raise CoordinateFileError(
                f"{path.name} gives coordinates in Å but no usable pixel size; give the pixel size."
            )
        xyz = xyz / px
    drop = {lower[k] for k in ("x", "y", "z", "unit", "pixel_size_a") if k in lower}
    features = df.drop(columns=list(drop))
    return ParticleTable(xyz[:, ::-1], features, px)


def _read_txt(path: Path, pixel_size_A) -> ParticleTable:
    try:
        xyz = np.loadtxt(path, comments="#", ndmin=2, dtype=float)
    except UnicodeDecodeError as err:
        raise CoordinateFileError(f"{path.name} is not UTF-8 text (byte {err.start} cannot be decoded).") from err
    except ValueError as err:
        text = " ".join(str(err).split()).split("; use `usecols`")[0]
        raise CoordinateFileError(f"{path.name} is not a plain 'x y z' text file: {text}.") from err
    if xyz.size == 0:
        return ParticleTable(np.zeros((0, 3)), pd.DataFrame(), pixel_size_A)
    if xyz.shape[1] < 3:
        raise CoordinateFileError(f"{path.name} has {xyz.shape[1]} columns per line; expected 'x y z'.")
    bad = np.flatnonzero(~np.all(np.isfinite(xyz[:, :3]), axis=1))
    if bad.size:
        raise CoordinateFileError(
            f"{path.name}, particle {bad[0] + 1}: {xyz[bad[0], :3].tolist()} is not a finite position "
            f"({bad.size} such rows); fix or remove them."
        )
    return ParticleTable(xyz[:, 2::-1], pd.DataFrame(), pixel_size_A)


def read_coordinates(
    path: str | os.PathLike,
    pixel_size_A: float | None = None,
    tomogram_shape_zyx: tuple[int, int, int] | None = None,
) -> ParticleTable:
    """Read particle coordinates from STAR, CSV or TXT.

    Parameters
    ----------
    path : path-like
        ``.star``, ``.csv``, ``.txt`` or ``.coords`` (plain ``x y z``).
    pixel_size_A : float, optional
        Overrides the file's pixel size; needed for Å coordinates when the file lacks it.
    tomogram_shape_zyx : tuple of int, optional
        Tomogram size in voxels, needed for RELION 5 centred coordinates.

    Returns
    -------
    ParticleTable

    Raises
    ------
    CoordinateFileError
        Missing coordinate columns, an empty file, or missing pixel/tomogram size.
    """
    path = require_regular_file(path, "coordinate file")
    pixel_size_A = check_voxel_size(pixel_size_A, "pixel size")
    if tomogram_shape_zyx is not None and (
        len(tomogram_shape_zyx) != 3 or not all(int(n) >= 1 for n in tomogram_shape_zyx)
    ):
        raise ValueError(f"The tomogram shape must be three positive sizes in voxels; got {tomogram_shape_zyx!r}.")
    if path.stat().st_size == 0:
        raise CoordinateFileError(f"{path.name} is empty: it holds no particles.")
    suffix = path.suffix.lower()
    if suffix == ".star":
        df, optics = _read_star_table(path)
        table = _star_to_table(df, path, pixel_size_A, tomogram_shape_zyx, optics)
    elif suffix == ".csv":
        table = _read_csv(path, pixel_size_A)
    elif suffix in (".txt", ".coords"):
        table = _read_txt(path, pixel_size_A)
    else:
        raise CoordinateFileError(f"Unknown coordinate format {suffix!r}; use one of {', '.join(COORD_EXTENSIONS)}.")
    if len(table) == 0:
        raise CoordinateFileError(f"{path.name} holds no particles.")
    log.info("read %d particles from %s", len(table), path)
    return table


def _feature_columns(features: pd.DataFrame) -> dict[str, np.ndarray]:
    reverse = {v: k for k, v in STAR_FEATURES.items()}
    return {reverse.get(c, str(c)): features[c].to_numpy() for c in features.columns}


def _check_star_text(features: dict[str, np.ndarray], path: Path) -> None:
    """Refuse text features STAR cannot hold (a line break would end the row)."""
    for name, values in features.items():
        if values.dtype.kind not in "OSU":
            continue
        for i, value in enumerate(values):
            if isinstance(value, str) and ("\n" in value or "\r" in value):
                raise CoordinateFileError(
                    f"Cannot write {path.name}: feature {name!r} of particle {i + 1} contains a line break, "
                    "which STAR cannot hold. Remove it, or save as CSV (which quotes it)."
                )


def write_coordinates(
    path: str | os.PathLike,
    table: ParticleTable,
    star_form: str = "pixels",
    tomogram_shape_zyx: tuple[int, int, int] | None = None,
    comment: str | None = None,
) -> Path:
    """Write a particle table atomically; the format follows the extension.

    Parameters
    ----------
    path : path-like
        ``.star``, ``.csv`` or ``.txt``/``.coords``.
    table : ParticleTable
    star_form : {"pixels", "centred"}
        For STAR: ``rlnCoordinateX/Y/Z`` or RELION 5 ``rlnCenteredCoordinate*Angst``
        (needs ``table.pixel_size_A`` and ``tomogram_shape_zyx``).
    tomogram_shape_zyx : tuple of int, optional
        Tomogram size in voxels, for the centred form.
    comment : str, optional
        Provenance written as a ``#`` comment line (STAR and TXT).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    xyz = table.coords_zyx[:, ::-1]
    bad = np.flatnonzero(~np.all(np.isfinite(xyz), axis=1))
    if bad.size:
        raise CoordinateFileError(
            f"Cannot write {path.name}: particle {bad[0] + 1} has the position {xyz[bad[0]].tolist()} (x, y, z); "
            f"{bad.size} particles have NaN or infinite coordinates. Remove them first."
        )
    check_voxel_size(table.pixel_size_A, "pixel size to write")
    features = _feature_columns(table.features)
    if suffix == ".star":
        _check_star_text(features, path)
        if star_form == "centred":
            if table.pixel_size_A is None or tomogram_shape_zyx is None:
                raise CoordinateFileError("RELION 5 centred coordinates need the pixel size and the tomogram size.")
            size_xyz = np.asarray(tomogram_shape_zyx, float)[::-1]
            ang = (xyz - size_xyz / 2.0) * table.pixel_size_A
            cols = dict(zip(CENTRED_COLS, ang.T))
        elif star_form == "pixels":
            cols = dict(zip(PIXEL_COLS, xyz.T))
        else:
            raise ValueError(f"star_form must be 'pixels' or 'centred', not {star_form!r}.")
        df = pd.DataFrame({**cols, **features})
        blocks = {"particles": df}
        if table.optics is not None:
            blocks = {"optics": table.optics, "particles": df}
        elif table.pixel_size_A is not None:
            df["rlnImagePixelSize"] = table.pixel_size_A
        with atomic_path(path) as tmp:
            starfile.write(blocks, tmp, overwrite=True)
            if comment:
                text = tmp.read_text()
                tmp.write_text(f"# {comment}\n{text}")
    elif suffix == ".csv":
        df = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "unit": "px"})
        if table.pixel_size_A is not None:
            df["pixel_size_A"] = table.pixel_size_A
        for name in table.features.columns:
            df[str(name)] = table.features[name].to_numpy()
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
    elif suffix in (".txt", ".coords"):
        with atomic_path(path) as tmp:
            header = comment or "x y z (voxels, 0-based)"
            np.savetxt(tmp, xyz, fmt="%.3f", header=header)
    else:
        raise CoordinateFileError(f"Unknown coordinate format {suffix!r}; use one of {', '.join(COORD_EXTENSIONS)}.")
    log.info("wrote %d particles to %s", len(table), path)
    return path
