"""A seeded generator of malformed reader inputs: MRC headers mutated at every field, truncations,
random bytes, corrupted data, and STAR/CSV/TXT variants.  Deterministic for a given seed.

``generate(folder, seed)`` writes the files and returns their paths (at least 1,000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from malformed import patch_header
from malformed import valid_mrc as _write_valid_mrc
from tomolens.io.coords import ParticleTable, write_coordinates

#: Integer values that break naive size arithmetic.
NASTY_INTS = (0, -1, 1, 2, 3, 4, 401, 2**15, 2**31 - 1, -(2**31), 2**16 + 1, 65)
NASTY_FLOATS = (0.0, -1.0, 1.0, np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-38, 1e30)


_VALID_CACHE: dict[tuple, bytes] = {}


def valid_mrc(path: Path, **kwargs) -> Path:
    """A valid MRC file's bytes at ``path`` (written once per set of arguments, then copied)."""
    key = tuple(sorted(kwargs.items()))
    if key not in _VALID_CACHE:
        _VALID_CACHE[key] = _write_valid_mrc(path, **kwargs).read_bytes()
    path.write_bytes(_VALID_CACHE[key])
    return path


def _leaf_fields():
    """(label, byte offset, dtype) of every field and sub-field of the MRC header."""
    for name in HEADER_DTYPE.names:
        dtype, offset = HEADER_DTYPE.fields[name][:2]
        if dtype.names:
            for sub in dtype.names:
                sub_dtype, sub_offset = dtype.fields[sub][:2]
                yield f"{name}_{sub}", offset + sub_offset, sub_dtype
        else:
            yield name, offset, dtype


def _values_for(dtype: np.dtype, rng: np.random.Generator) -> list:
    base = dtype.base
    if base.kind in "iu":
        return [v for v in NASTY_INTS if np.iinfo(base).min <= v <= np.iinfo(base).max]
    if base.kind == "f":
        return list(NASTY_FLOATS)
    return [bytes(rng.integers(0, 256, dtype.itemsize, dtype=np.uint8)) for _ in range(3)] + [b""]


def _mutate_field(path: Path, offset: int, dtype: np.dtype, value) -> None:
    """Write ``value`` into the header field at ``offset`` (every element of an array field)."""
    if isinstance(value, bytes):
        encoded = value.ljust(dtype.itemsize, b"\0")[: dtype.itemsize]
    else:
        encoded = np.full(dtype.shape, value, dtype=dtype.base).tobytes()
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(encoded)] = encoded
    path.write_bytes(bytes(raw))


def _mrc_header_cases(folder: Path, rng: np.random.Generator) -> list[Path]:
    out = []
    bases = [
        ("vol", dict(shape=(6, 8, 10))),
        ("img", dict(shape=(1, 8, 10))),
        ("lab", dict(shape=(4, 6, 8), is_labels=True)),
    ]
    for label, offset, dtype in _leaf_fields():
        for i, value in enumerate(_values_for(dtype, rng)):
            base, kwargs = bases[i % len(bases)]
            path = valid_mrc(folder / f"hdr_{label}_{i}_{base}.mrc", seed=i, **kwargs)
            _mutate_field(path, offset, dtype, value)
            out.append(path)
    # several fields at once, drawn at random
    fields = list(_leaf_fields())
    for i in range(120):
        path = valid_mrc(folder / f"hdr_multi_{i}.mrc", shape=(3, 5, 7), seed=i)
        for k in rng.choice(len(fields), size=int(rng.integers(2, 6)), replace=False):
            _, offset, dtype = fields[k]
            values = _values_for(dtype, rng)
            _mutate_field(path, offset, dtype, values[int(rng.integers(0, len(values)))])
        out.append(path)
    # volume stacks (ispg 401..630) with every kind of mz
    for i, (nz, mz) in enumerate([(4, 2), (4, 0), (4, 3), (4, 4), (4, -1), (6, 2), (4, 1)]):
        path = valid_mrc(folder / f"stack4d_{i}.mrc", shape=(4 if nz == 4 else 6, 5, 5))
        out.append(patch_header(path, ispg=401 + i, nz=nz, mz=mz))
    return out


def _mrc_body_cases(folder: Path, rng: np.random.Generator) -> list[Path]:
    out = []
    for i in range(60):  # truncations at telling and random lengths
        path = valid_mrc(folder / f"trunc_{i}.mrc", shape=(5, 7, 9), is_labels=i % 3 == 0, seed=i)
        raw = path.read_bytes()
        cut = [0, 1, 4, 100, 1023, 1024, 1025, len(raw) - 1][i] if i < 8 else int(rng.integers(0, len(raw)))
        path.write_bytes(raw[:cut])
        out.append(path)
    for i in range(60):  # random bytes, some behind a plausible "MAP " header
        size = int(rng.integers(0, 5000))
        data = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        if i % 2 and size >= 1024:
            data[208:212] = b"MAP "
            data[212:216] = bytes([0x44, 0x44, 0, 0])
        suffix = (".mrc", ".mrcs", ".st", ".map", ".rec", ".ali")[i % 6]
        path = folder / f"random_{i}{suffix}"
        path.write_bytes(bytes(data))
        out.append(path)
    for i in range(50):  # NaN / Inf / extreme values in the data
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 17)), int(rng.integers(1, 17)))
        path = valid_mrc(folder / f"data_{i}.mrc", shape=shape, seed=i)
        data = np.memmap(path, dtype=np.float32, mode="r+", offset=1024, shape=(int(np.prod(shape)),))
        value = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 0.0][i % 6]
        if i % 6 >= 3:
            data[:] = value  # constant data
        else:
            data[int(rng.integers(0, data.size))] = value
        data.flush()
        del data
        out.append(path)
    for i, mode in enumerate((0, 1, 6, 12)):  # integer and half-float modes written by other programs
        import mrcfile

        dtype = {0: np.int8, 1: np.int16, 6: np.uint16, 12: np.float16}[mode]
        path = folder / f"mode_{mode}.mrc"
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(rng.integers(0, 100, (3, 4, 5)).astype(dtype))
        out.append(path)
    return out


STAR_HEAD = "data_particles\n\nloop_\n"


def _star_text(columns, rows) -> str:
    head = "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns))
    return STAR_HEAD + head + "".join(" ".join(map(str, r)) + "\n" for r in rows)


def _coordinate_cases(folder: Path, rng: np.random.Generator) -> list[Path]:
    out = []
    bad_values = ["nan", "inf", "-inf", "1e400", "abc", "", "0x10", "1,5", "--", "None", "1e-400", "٣"]
    cols = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
    centred = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
    extra = ["rlnImagePixelSize", "rlnAngleRot", "rlnClassNumber", "rlnTomoName", "rlnAutopickFigureOfMerit"]
    for i in range(260):
        variant = i % 13
        rows = rng.normal(50, 20, (int(rng.integers(0, 6)), 3)).round(2).tolist()
        columns = list(centred if variant == 1 else cols)
        if variant == 2:
            columns = columns[:2]  # no Z
        if variant == 3:
            columns = columns[:1]  # only X
        if variant >= 4:
            columns = columns + list(rng.choice(extra, size=int(rng.integers(1, 4)), replace=False))
            rows = [
                r + [str(rng.choice(["0", "-3", "nan", "inf", "10.5", "abc", "1"])) for _ in columns[3:]] for r in rows
            ]
        if variant in (5, 6, 7) and rows:
            r = int(rng.integers(0, len(rows)))
            rows[r][int(rng.integers(0, 3))] = str(rng.choice(bad_values))
        if variant == 8 and rows:
            rows[0] = rows[0][:-1]  # a short row
        text = _star_text(columns, rows)
        if variant == 9:
            text = text.replace("loop_\n", "")  # a simple block, not a loop
        if variant == 10:
            text = text[: int(rng.integers(0, len(text) + 1))]  # truncated
        if variant == 11:
            text = text.replace("data_particles", "data_")
        path = folder / f"star_{i}.star"
        if variant == 12:
            raw = bytearray(text.encode())
            for _ in range(int(rng.integers(1, 6))):
                if raw:
                    raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
            path.write_bytes(bytes(raw))
        else:
            path.write_text(text)
        out.append(path)
    csv_headers = [
        "x,y,z",
        "x,y,z,unit",
        "x,y,z,unit,pixel_size_A",
        "X, Y ,Z,score",
        "x,y",
        "a,b,c",
        "",
        "x,y,z,x",
        "x;y;z",
    ]
    for i in range(230):
        header = csv_headers[i % len(csv_headers)]
        n_cols = len(header.split(",")) if header else 3
        lines = [header] if header else []
        for _ in range(int(rng.integers(0, 6))):
            values = [f"{v:.2f}" for v in rng.normal(50, 20, n_cols)]
            if "unit" in header:
                values[3] = str(rng.choice(["px", "A", "Å", "nm", ""]))
            if "pixel_size_A" in header:
                values[4] = str(rng.choice(["10", "0", "-5", "nan", "inf", "abc", "1e400"]))
            if rng.random() < 0.3:
                values[int(rng.integers(0, n_cols))] = str(rng.choice(bad_values))
            if rng.random() < 0.1:
                values = values[:-1]
            lines.append(",".join(values))
        text = "\n".join(lines) + ("\n" if lines else "")
        path = folder / f"csv_{i}.csv"
        if i % 11 == 0:
            path.write_bytes(text.encode("utf-16"))
        elif i % 11 == 1:
            path.write_bytes((text + "caf\xe9\n").encode("latin-1", "replace"))
        elif i % 11 == 2:
            path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
        else:
            path.write_text(text)
        out.append(path)
    for i in range(160):
        lines = []
        for _ in range(int(rng.integers(0, 6))):
            n = int(rng.choice([1, 2, 3, 3, 3, 4, 7]))
            values = [f"{v:.2f}" for v in rng.normal(50, 20, n)]
            if rng.random() < 0.3:
                values[int(rng.integers(0, n))] = str(rng.choice(bad_values))
            lines.append(("\t" if i % 2 else " ").join(values))
            if rng.random() < 0.2:
                lines.append("# comment")
        suffix = ".txt" if i % 3 else ".coords"
        path = folder / f"txt_{i}{suffix}"
        if i % 13 == 0:
            path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
        else:
            path.write_text("\n".join(lines) + "\n")
        out.append(path)
    # our own writer's output for edge tables: empty, one particle, text features
    for i, n in enumerate((0, 1, 2)):
        for suffix in (".star", ".csv", ".txt"):
            path = folder / f"ours_{i}{suffix}"
            write_coordinates(path, ParticleTable(np.full((n, 3), 4.0), pixel_size_A=10.0))
            out.append(path)
    return out


def generate(folder: Path, seed: int = 2022) -> list[Path]:
    """Write every malformed input into ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    return _mrc_header_cases(folder, rng) + _mrc_body_cases(folder, rng) + _coordinate_cases(folder, rng)
