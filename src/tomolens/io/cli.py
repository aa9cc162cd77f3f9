"""CLI commands for files: ``tomolens info`` and ``tomolens convert-coords``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tomolens.cli_args import length_A
from tomolens.io.formats_cli import CopickTarget, volume_lines, describe_path, read_any_picks, write_any_picks
from tomolens.io.mrc import MRC_EXTENSIONS, read_mrc, subsample


def _info(args: argparse.Namespace) -> int:
    if Path(args.path).suffix.lower() not in MRC_EXTENSIONS:
        print("\n".join(describe_path(args.path)))
        return 0
    vol = read_mrc(args.path)
    sample = subsample(vol.data)
    lo, hi = (float(np.min(sample)), float(np.max(sample))) if sample.size else (0.0, 0.0)
    print(f"file:        {vol.path}")
    print("\n".join(volume_lines(vol.data, vol.voxel_size_A, vol.kind + (" (labels)" if vol.is_labels else ""))))
    print(f"values:      {lo:.4g} .. {hi:.4g} (sampled)" if hi > lo else f"values:      all {lo:.4g} (sampled)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tomolens.io.star_tomo import select_tomogram, write_per_tomogram

    shape = tuple(args.tomogram_shape[::-1]) if args.tomogram_shape else None
    copick = CopickTarget(args.run, args.object, args.user, args.session, args.voxel_size)
    src, dst = Path(args.src), Path(args.dst)
    table = read_any_picks(src, args.pixel_size, shape, copick)
    if args.tomogram:
        table = select_tomogram(table, args.tomogram, src.name, strict=True)
    if args.tomo_name:
        table.features["tomo_name"] = args.tomo_name  # rlnTomoName in STAR, which RELION 5 needs to import picks
    star_kwargs = {"star_form": args.star_form, "tomogram_shape_zyx": shape} if dst.suffix.lower() == ".star" else {}
    if args.per_tomogram:
        written = write_per_tomogram(dst, table, stem=src.stem, suffix=args.per_tomogram, **star_kwargs)
        print(f"wrote {len(table)} particles to {len(written)} files in {dst}")
        return 0
    where = write_any_picks(dst, table, copick, **star_kwargs)
    print(f"wrote {len(table)} particles to {where}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a tomogram (MRC, TIFF, OME-Zarr), a copick project or a pick file")
    p.add_argument(
        "path",
        help="MRC (.mrc .rec .map .mrcs .st .ali), TIFF, OME-Zarr folder, copick config "
        "(.json) or picks (.star .csv .txt .tbl .mod)",
    )
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "convert-coords",
        help="convert particle picks between RELION STAR, CSV, TXT, Dynamo .tbl, IMOD .mod and copick "
        "(positions and Euler-angle conventions)",
    )
    p.add_argument("src", help="input .star/.csv/.txt/.tbl/.mod, or a copick config .json")
    p.add_argument(
        "dst",
        help="output (format from the extension; a copick config .json writes into the "
        "project; a folder with --per-tomogram)",
    )
    p.add_argument(
        "--tomogram",
        default=None,
        help="keep only the rows of this tomogram (rlnTomoName, Dynamo tomo, or a tomogram file name)",
    )
    p.add_argument(
        "--tomo-name",
        default=None,
        help="name every pick's tomogram (rlnTomoName in STAR; RELION 5 imports picks by it)",
    )
    p.add_argument(
        "--per-tomogram",
        metavar="EXT",
        default=None,
        help="write one file per tomogram into the folder DST, with extension EXT (.star, .tbl…)",
    )
    p.add_argument("--run", default=None, help="copick run (default: the only run)")
    p.add_argument("--object", default=None, help="copick object name (read: all objects)")
    p.add_argument("--user", default=None, help="copick user id (write default: tomolens)")
    p.add_argument("--session", default=None, help="copick session id (write default: 0)")
    p.add_argument(
        "--voxel-size",
        type=length_A,
        default=None,
        help="voxel size in Å of the coordinates read from copick (copick stores Å)",
    )
    p.add_argument("--pixel-size", type=length_A, default=None, help="pixel size in Å")
    p.add_argument(
        "--tomogram-shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="tomogram size in voxels (needed for RELION 5 centred coordinates)",
    )
    p.add_argument(
        "--star-form",
        choices=("pixels", "centred"),
        default="pixels",
        help="STAR output: rlnCoordinateX/Y/Z in pixels or RELION 5 rlnCenteredCoordinate*Angst",
    )
    p.set_defaults(func=_convert)
