"""CLI commands for files: ``tomolens info`` and ``tomolens convert-coords``."""

from __future__ import annotations

import argparse

from tomolens.cli_args import length_A, output_file
from tomolens.io.coords import read_coordinates, write_coordinates
from tomolens.io.mrc import contrast_limits, read_mrc


def _info(args: argparse.Namespace) -> int:
    vol = read_mrc(args.path)
    lo, hi = contrast_limits(vol.data)
    print(f"file:        {vol.path}")
    print(f"kind:        {vol.kind}{' (labels)' if vol.is_labels else ''}")
    print(f"shape (zyx): {vol.data.shape}")
    print(f"dtype:       {vol.data.dtype}")
    print(f"voxel (Å):   {vol.voxel_size_A if vol.voxel_size_A else 'unknown'}")
    print(f"range (sub): {lo:.4g} .. {hi:.4g}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    shape = tuple(args.tomogram_shape[::-1]) if args.tomogram_shape else None
    table = read_coordinates(args.src, pixel_size_A=args.pixel_size, tomogram_shape_zyx=shape)
    write_coordinates(args.dst, table, star_form=args.star_form, tomogram_shape_zyx=shape)
    print(f"wrote {len(table)} particles to {args.dst}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show an MRC file's shape, voxel size and value range")
    p.add_argument("path", help="MRC file (.mrc .rec .map .mrcs .st .ali)")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "convert-coords", help="convert particle coordinates between STAR, CSV and TXT"
    )
    p.add_argument("src", help="input .star/.csv/.txt")
    p.add_argument("dst", type=output_file, help="output .star/.csv/.txt (format from the extension)")
    p.add_argument("--pixel-size", type=length_A, default=None, help="pixel size in Å")
    p.add_argument(
        "--tomogram-shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
        help="tomogram size in voxels (needed for RELION 5 centred coordinates)",
    )
    p.add_argument(
        "--star-form", choices=("pixels", "centred"), default="pixels",
        help="STAR output: rlnCoordinateX/Y/Z in pixels or RELION 5 rlnCenteredCoordinate*Angst",
    )
    p.set_defaults(func=_convert)
