"""Conversion between tomolens objects and napari layer-data tuples (no Qt).

Layers carry the voxel size in Å as their ``scale`` (z, y, x) with ``units`` of
``angstrom``; a layer whose voxel size is unknown has scale 1 and units ``pixel``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tomolens.classify.unknown import UNKNOWN_CLASS
from tomolens.io.coords import ParticleTable
from tomolens.io.mrc import MrcVolume, contrast_limits

ANGSTROM = "angstrom"
PIXEL = "pixel"


def scale_kwargs(voxel_size_A: tuple[float, ...] | float | None, ndim: int, kind: str = "volume") -> dict:
    """``scale``, ``units`` and ``axis_labels`` for a layer of ``ndim`` dimensions."""
    spatial = ("z", "y", "x")[-ndim:] if ndim <= 3 else tuple(f"axis {i}" for i in range(ndim - 3)) + ("z", "y", "x")
    labels = spatial if kind != "stack" else ("image", "y", "x")
    if voxel_size_A is None:
        return {"scale": (1.0,) * ndim, "units": (PIXEL,) * ndim, "axis_labels": labels}
    vs = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_A, float), (ndim,)))
    units = (ANGSTROM,) * ndim
    if kind == "stack":
        vs = (1.0,) + vs[1:]
        units = (PIXEL,) + units[1:]
    return {"scale": vs, "units": units, "axis_labels": labels}


#: Colours of label values 1, 2, 3, … in painted and predicted segmentation layers (value 1 =
#: painted background, grey; then the structures in colours far apart, so that classes such as
#: filament and particle are not two shades of purple as with napari's default colours).
CLASS_COLOURS = (
    "#9e9e9e",
    "#00e5ff",
    "#ffb300",
    "#e040fb",
    "#76ff03",
    "#ff1744",
    "#2979ff",
    "#ffea00",
    "#1de9b6",
    "#ff6d00",
)


def class_colormap(n_values: int = 64):
    """A napari ``DirectLabelColormap`` for class label values: 0 transparent, value v the colour
    ``CLASS_COLOURS[(v - 1) % len(CLASS_COLOURS)]`` for v = 1 … ``n_values``, white beyond."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {None: "white", 0: "transparent"}
    colours |= {v: CLASS_COLOURS[(v - 1) % len(CLASS_COLOURS)] for v in range(1, int(n_values) + 1)}
    return DirectLabelColormap(color_dict=colours)


def voxel_size_from_layer(scale, units) -> tuple[float, ...] | None:
    """The voxel size in Å from a layer's scale and units, or None when unknown."""
    unit_names = [str(u) for u in (units or ())]
    if not unit_names or not any(ANGSTROM in u for u in unit_names):
        return None
    return tuple(float(s) for s in scale)


#: Metadata key of the layers a tomolens dock makes as a result (value: the task, e.g. "detect", "segment").
RESULT_KEY = "tomolens_result"
#: Metadata key of the Labels layers made for painting (the Segment dock's "New painting layer").
PAINTING_KEY = "tomolens_painting"


def is_plausibly_painted(layer) -> bool:
    """Whether a Labels layer may hold painted training labels: made for painting, or anything but a tomolens
    result (a detection mask or instances, a segmentation), which the Segment dock must not offer by default."""
    meta = layer.metadata or {}
    return bool(meta.get(PAINTING_KEY)) or not (meta.get(RESULT_KEY) or "tomolens" in meta)


def layer_voxel_size_A(layer) -> float:
    """The (x) voxel size in Å of a tomogram layer, for a model to run on it.

    Raises
    ------
    ValueError
        When the layer has none (pixel units: the file's header said 0 or 1): the docks refuse, as the
        command line does, rather than run the model on a guessed voxel size.
    """
    vs = voxel_size_from_layer(layer.scale, layer.units)
    if not vs:
        raise ValueError(
            f"The voxel size of {layer.name!r} is unknown and the models need it: type it in the Tomogram dock's "
            "'voxel size (Å)' box and press 'Set voxel size' (or fix the file's header)."
        )
    return float(vs[-1])


def volume_layer_data(vol: MrcVolume, name: str | None = None) -> tuple[Any, dict, str]:
    """A napari layer-data tuple for an MRC volume (Image, or Labels when tagged)."""
    meta = {
        "path": str(vol.path) if vol.path else None,
        "voxel_size_known": vol.voxel_size_A is not None,
        "kind": vol.kind,
    }
    kwargs = {
        "name": name or (vol.path.stem if vol.path else "tomogram"),
        "metadata": meta,
        **scale_kwargs(vol.voxel_size_A, vol.data.ndim, vol.kind),
    }
    if vol.is_labels:  # copy-on-write memory map: paintable, never loaded whole nor written back
        return vol.data, kwargs, "labels"
    kwargs["contrast_limits"] = contrast_limits(vol.data)
    kwargs["projection_mode"] = "none"  # the slice itself, also when the slab is widened for picks
    return vol.data, kwargs, "image"


#: Particle diameter (Å) drawn when a file says nothing of its particles' size (a mid-sized complex).
DEFAULT_PARTICLE_DIAMETER_A = 150.0
#: Point size (voxels) when neither the particle size nor the pixel size is known.
DEFAULT_POINT_SIZE_PX = 8.0
#: Feature columns (Å) that give each particle's size: radius, or diameter.
RADIUS_FEATURES = ("radius_A",)
DIAMETER_FEATURES = ("diameter_A", "rlnParticleDiameter", "rlnMaskDiameter")


def particle_diameters_px(table: ParticleTable) -> np.ndarray | float:
    """Point sizes in voxels that match the particles: ``2 radius_A`` (or a diameter column
    in Å) over the pixel size, per point; else :data:`DEFAULT_PARTICLE_DIAMETER_A` over the
    pixel size; else :data:`DEFAULT_POINT_SIZE_PX` when the pixel size is unknown."""
    px = table.pixel_size_A
    if not px or not np.isfinite(px) or px <= 0:
        return DEFAULT_POINT_SIZE_PX
    features = table.features
    for names, factor in ((RADIUS_FEATURES, 2.0), (DIAMETER_FEATURES, 1.0)):
        for col in names:
            if col in features.columns and len(features):
                values = pd.to_numeric(features[col], errors="coerce").to_numpy(float) * factor
                good = np.isfinite(values) & (values > 0)
                if good.any():
                    fallback = float(np.median(values[good]))
                    return np.where(good, values, fallback) / px
    return DEFAULT_PARTICLE_DIAMETER_A / px


def points_layer_data(
    table: ParticleTable, name: str = "particles", color_by: str | None = None, size_px: float | None = None
) -> tuple[Any, dict, str]:
    """A napari Points layer-data tuple: coordinates in voxels with per-point features.

    Point sizes (voxels) follow the particles (:func:`particle_diameters_px`) unless
    ``size_px`` is given.

    Points use the ``rescale_linear`` projection mode (one of napari 0.9's replacements for
    ``out_of_slice_display``): with a z slice thickness of about one particle diameter
    (see :func:`show_particles_in_slab`) each pick shows on every slice of that slab,
    drawn smaller the farther the slice is from its centre.  Colour: float columns (score)
    by the viridis colormap, other columns (class names, cluster numbers) by a categorical
    cycle of 20 colours; by default ``class_name``, ``class``, ``score`` or ``cluster``,
    whichever exists.
    """
    features = table.features.reset_index(drop=True)
    text = [
        c
        for c in features.columns
        if not (pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))
    ]
    if text:  # text columns may mix in NaN or numbers (a file's typo): all strings, which napari can sort
        features = features.copy()
        for column in text:
            features[column] = [str(v) for v in features[column]]
    kwargs: dict[str, Any] = {
        "name": name,
        "features": features,
        "size": particle_diameters_px(table) if size_px is None else size_px,
        "opacity": 0.5,  # particle-sized discs: the density shows through
        "metadata": {
            "pixel_size_A": table.pixel_size_A,
            "star_optics": None if table.optics is None else table.optics.to_dict("list"),
        },
        "projection_mode": "rescale_linear",
        **scale_kwargs(table.pixel_size_A, 3),
    }
    if color_by is None:
        color_by = next((c for c in ("class_name", "class", "score", "cluster") if c in features.columns), None)
    if color_by is not None and color_by in features.columns and len(features):
        kwargs["face_color"] = color_by
        if pd.api.types.is_float_dtype(features[color_by]):
            kwargs["face_colormap"] = "viridis"
        elif (features[color_by].astype(str) == UNKNOWN_CLASS).any():  # classified with unknown marking
            kwargs["face_color_cycle"] = category_colours(features[color_by], {UNKNOWN_CLASS: UNKNOWN_COLOUR})
        else:
            kwargs["face_color_cycle"] = _CATEGORICAL
    return table.coords_zyx, kwargs, "points"


def particle_slab_A(radius_A, default_A: float | None = None) -> float | None:
    """A z slice thickness (Å) that shows each pick on the slices its particle spans: twice
    the median of ``radius_A`` (values in Å), else ``default_A``."""
    radii = np.asarray(radius_A, float)
    if radii.size:
        diameter = 2.0 * float(np.nanmedian(radii))
        if np.isfinite(diameter) and diameter > 0:
            return diameter
    return default_A


def show_layer_particles(viewer: Any, layer: Any) -> None:
    """:func:`show_particles_in_slab` with one median particle diameter from a Points layer's
    ``radius_A`` feature (layers scaled in Å only; otherwise nothing changes)."""
    units = [str(u) for u in (layer.units or ())]
    if "radius_A" in layer.features.columns and len(layer.data) and units and all(ANGSTROM in u for u in units):
        diameter = particle_slab_A(layer.features["radius_A"])
        if diameter:
            show_particles_in_slab(viewer, diameter)


def show_particles_in_slab(viewer: Any, thickness_A: float) -> None:
    """Widen the viewer's slice along the first non-displayed axis to at least ``thickness_A``
    (world units, Å for tomolens layers), so Points layers in ``rescale_linear`` mode show
    particles within half that distance of the slice.  tomolens image layers use the
    ``none`` projection mode and keep showing the single slice (a user can choose ``mean``
    in the layer controls for a slab average).  Never narrows a thicker slice the user
    chose.  Right-click the z slider in napari to change it."""
    dims = viewer.dims
    if dims.ndisplay != 2 or not dims.not_displayed:
        return
    axis = dims.not_displayed[0]
    thickness = list(dims.thickness)
    if thickness[axis] < thickness_A:
        thickness[axis] = float(thickness_A)
        dims.thickness = tuple(thickness)


def table_from_points(data: np.ndarray, meta: dict) -> ParticleTable:
    """A ParticleTable from a Points layer's data and state (as napari writers get it)."""
    features = meta.get("features")
    if features is None or not isinstance(features, pd.DataFrame):
        features = pd.DataFrame(index=range(len(data)))
    vs = voxel_size_from_layer(meta.get("scale", (1, 1, 1)), meta.get("units"))
    layer_meta = meta.get("metadata") or {}
    pixel = layer_meta.get("pixel_size_A") if vs is None else vs[-1]
    optics = layer_meta.get("star_optics")
    optics = pd.DataFrame(optics) if optics else None
    return ParticleTable(np.asarray(data, float)[:, -3:], features, pixel, optics)


_CATEGORICAL = [  # matplotlib's tab20, strong colours first: the 13 built-in phantoms get distinct colours
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]

#: Colour of particles a classifier calls ``unknown`` (the palette's greys go to no class then).
UNKNOWN_COLOUR = "#999999"


def category_colours(values: pd.Series, fixed: dict[str, str]) -> dict:
    """A colour per category of ``values``: ``fixed`` ones, the rest from the palette without its greys.

    The other values take the palette in the order of the column's categories (or of first
    appearance), so the same classes get the same colours run after run.
    """
    kinds = values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else pd.unique(values)
    palette = [c for c in _CATEGORICAL if c not in ("#7f7f7f", "#c7c7c7")]
    others = [k for k in kinds if k not in fixed]
    return {**{k: palette[i % len(palette)] for i, k in enumerate(others)}, **fixed}
