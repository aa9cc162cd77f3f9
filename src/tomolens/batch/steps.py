"""Pipeline steps: each runs one capability on one tomogram and writes its outputs.

A step is a job (``yield Progress``, ``return`` a :class:`StepOutput`) taking the
:class:`TomogramContext` shared by the steps of one tomogram and the step's settings.
Only the settings the preset names are passed on, so a capability's own defaults (for
example the post-processing thresholds tuned on a detection model's card) apply to the
rest, exactly as in its widget.  Every file is written atomically and carries
provenance: MRC header labels, a ``#`` comment line in STAR/TXT files, and the
per-tomogram sidecar JSON written by :mod:`tomolens.batch.process`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tomolens import __version__
from tomolens.io.checks import tomogram_voxel_size
from tomolens.io.coords import ParticleTable, write_coordinates
from tomolens.io.mrc import MrcVolume, read_mrc, write_mrc
from tomolens.jobs import Progress
from tomolens.params import Param

log = logging.getLogger(__name__)

#: Settings of the ``export`` step (batch only: the widgets save points with napari's writers).
EXPORT_PARAMS = (
    Param("format", "star", "Particle file format", choices=("star", "csv", "txt")),
    Param(
        "star_form",
        "pixels",
        "STAR coordinates: rlnCoordinateX/Y/Z in pixels or RELION 5 centred Å",
        choices=("pixels", "centred"),
    ),
    Param("min_score", 0.0, "Leave out particles scoring below this (needs a score column)", min=0.0, max=1.0),
    Param(
        "min_confidence",
        0.0,
        "Leave out particles classified with a lower confidence (needs classify)",
        min=0.0,
        max=1.0,
    ),
)


@dataclass
class TomogramContext:
    """What the steps of one tomogram share.

    Attributes
    ----------
    path : Path
        The input tomogram.
    out_dir : Path
        This tomogram's output folder.
    stem : str
        Name stem of every output file.
    voxel_size_A : float or None
        Override for a header without a voxel size, Å.
    particles : ParticleTable or None
        Particles found so far (coordinates in voxels, z, y, x) with their columns.
    provenance : dict
        ``{"tomolens_version", "input", "steps": [...]}`` filled as steps run.
    """

    path: Path
    out_dir: Path
    stem: str
    voxel_size_A: float | None = None
    particles: ParticleTable | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    _volume: MrcVolume | None = None

    @property
    def volume(self) -> MrcVolume:
        """The tomogram, memory-mapped on first use."""
        if self._volume is None:
            self._volume = read_mrc(self.path)
        return self._volume

    def voxel(self) -> float:
        """Voxel size in Å: the override, else the header's x voxel size.

        Raises
        ------
        ValueError
            When neither is known (the models would run on a guessed voxel size).
        """
        return tomogram_voxel_size(self.voxel_size_A, self.volume.voxel_size_A, self.path)

    def output(self, suffix: str) -> Path:
        """``out_dir / (stem + suffix)``."""
        return self.out_dir / f"{self.stem}{suffix}"

    def star_comment(self) -> str:
        """One-line provenance (version, models with sha256, every step's settings) as JSON."""
        return "tomolens-provenance " + json.dumps(self.provenance, separators=(",", ":"), default=str)

    def mrc_labels(self) -> tuple[str, ...]:
        """Short provenance for MRC headers (80 characters each, at most 9)."""
        labels = [f"tomolens {__version__} batch: {' > '.join(s['task'] for s in self.provenance['steps'])}"]
        for step in self.provenance["steps"]:
            if step.get("model_sha256"):
                labels.append(f"{step['task']} model {step.get('model_name', '')}"[:80])
                labels.append(f"sha256 {step['model_sha256']}"[:80])
        labels.append(f"settings {self.stem}.tomolens.json"[:80])
        return tuple(labels[:9])


@dataclass
class StepOutput:
    """What a step reports: files written and figures for the summary."""

    files: list[Path] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def model_identity(model: str) -> dict[str, str]:
    """``{"model_name", "model_sha256", "model_path"}`` of a shipped name or model file.

    Raises
    ------
    ValueError
        If the model cannot be found (from :func:`tomolens.models.card.resolve_model`).
    """
    from tomolens.models.card import read_card, resolve_model

    card_path = resolve_model(model)
    card = read_card(card_path)
    return {"model_name": card.name, "model_sha256": card.sha256, "model_path": str(card_path.with_suffix(".pt"))}


def _need_particles(ctx: TomogramContext, task: str) -> ParticleTable:
    if ctx.particles is None:
        raise ValueError(f"The {task!r} step needs particles: put a 'detect' step before it in the pipeline.")
    return ctx.particles


def run_detect(ctx: TomogramContext, params: dict[str, Any]) -> Generator[Progress, None, StepOutput]:
    """Detect particles; writes ``STEM_instances.mrc`` (labels) and ``STEM_detected.star``."""
    from tomolens.detect.detector import DEFAULT_MODEL, detect_particles

    params = dict(params)
    model = params.pop("model", DEFAULT_MODEL)
    result = yield from detect_particles(ctx.volume.data, ctx.voxel(), model=model, **params)
    ctx.particles = result.particles
    labels_path = write_mrc(
        ctx.output("_instances.mrc"), result.instances, result.voxel_size_A, is_labels=True, labels=ctx.mrc_labels()
    )
    star_path = write_coordinates(ctx.output("_detected.star"), result.particles, comment=ctx.star_comment())
    return StepOutput(
        [labels_path, star_path], {"particles": len(result.particles), "polarity": result.params["polarity_decision"]}
    )


def run_segment(ctx: TomogramContext, params: dict[str, Any]) -> Generator[Progress, None, StepOutput]:
    """Semantic segmentation; writes ``STEM_labels.mrc`` (0 background, class k as k + 1)."""
    from tomolens.segment.predict import PREDICT_PARAMS, segment_tomogram
    from tomolens.params import validate_values

    result = yield from segment_tomogram(ctx.volume.data, ctx.voxel(), **validate_values(params, PREDICT_PARAMS))
    legend = " ".join(f"{k + 1 if k else 0}={n}" for k, n in enumerate(result.class_names))
    labels = (*ctx.mrc_labels()[:8], legend[:80])
    path = write_mrc(ctx.output("_labels.mrc"), result.labels, result.voxel_size_A, is_labels=True, labels=labels)
    counts = {n: int((result.classes == k).sum()) for k, n in enumerate(result.class_names)}
    return StepOutput([path], {"voxels_per_class": counts, "polarity": result.info["polarity"]})


def _merge_features(table: ParticleTable, features: pd.DataFrame) -> ParticleTable:
    kept = table.features.drop(columns=[c for c in features.columns if c in table.features.columns])
    features = features.copy()
    features["class"] = features["class"].astype(str)
    return ParticleTable(
        table.coords_zyx, kept.reset_index(drop=True).join(features.reset_index(drop=True)), table.pixel_size_A
    )


def run_classify(ctx: TomogramContext, params: dict[str, Any]) -> Generator[Progress, None, StepOutput]:
    """Classify the particles; writes ``STEM_classified.star`` with class columns."""
    from tomolens.classify.predict import CLASSIFY_PARAMS, classify_points
    from tomolens.params import validate_values

    table = _need_particles(ctx, "classify")
    p = validate_values(params, CLASSIFY_PARAMS)
    if len(table) == 0:
        log.warning("no particles to classify in %s", ctx.path.name)
        return StepOutput([], {"classified": 0})
    result = yield from classify_points(
        ctx.volume.data,
        table.coords_zyx,
        p["model"],
        ctx.voxel(),
        box_A=p["box_A"] or None,
        edge=p["edge"],
        batch_size=p["batch_size"],
        device=p["device"],
        polarity=p["polarity"],
        unknown_scale=p["unknown_scale"],
    )
    ctx.particles = _merge_features(table, result.features)
    path = write_coordinates(ctx.output("_classified.star"), ctx.particles, comment=ctx.star_comment())
    counts = result.features["class"].astype(str).value_counts()
    return StepOutput(
        [path],
        {
            "classified": int(len(result.indices)),
            "polarity": result.info["polarity"],
            "unknown": result.info["unknown"],
            "classes": {str(k or "(skipped)"): int(v) for k, v in counts.items()},
        },
    )


def run_subdivide(ctx: TomogramContext, params: dict[str, Any]) -> Generator[Progress, None, StepOutput]:
    """Cluster the particles by a classifier's features; writes ``STEM_subdivided.star`` and cluster averages."""
    from tomolens.classify.predict import CLASSIFY_PARAMS
    from tomolens.cluster.subdivide import SUBDIVIDE_PARAMS, subdivide_points
    from tomolens.params import validate_values

    table = _need_particles(ctx, "subdivide")
    p = validate_values(params, CLASSIFY_PARAMS + SUBDIVIDE_PARAMS)
    if p["box_A"]:
        raise ValueError("subdivide uses the classifier's own box; leave box_A at 0.")
    del p["box_A"]
    result = yield from subdivide_points(ctx.volume.data, table.coords_zyx, voxel_size_A=ctx.voxel(), **p)
    features = result.features.copy()
    features["embed_x"], features["embed_y"] = result.embedding_2d[:, 0], result.embedding_2d[:, 1]
    ctx.particles = _merge_features(table, features)
    files = [write_coordinates(ctx.output("_subdivided.star"), ctx.particles, comment=ctx.star_comment())]
    for k, cube in result.averages.items():
        files.append(
            write_mrc(
                ctx.output(f"_cluster_{k:02d}.mrc"),
                cube,
                result.info.get("model_voxel_size_A") or ctx.voxel(),
                labels=ctx.mrc_labels(),
            )
        )
    return StepOutput(files, {"clusters": int(result.clustering.n_clusters), "polarity": result.info["polarity"]})


def run_export(ctx: TomogramContext, params: dict[str, Any]) -> Generator[Progress, None, StepOutput]:
    """Write the particles with every column gathered so far as ``STEM_particles.<format>``."""
    from tomolens.params import validate_values

    table = _need_particles(ctx, "export")
    p = validate_values(params, EXPORT_PARAMS)
    keep = np.ones(len(table), bool)
    for column, limit in (("score", p["min_score"]), ("confidence", p["min_confidence"])):
        if limit > 0:
            if column not in table.features.columns:
                raise ValueError(
                    f"export: min_{column} needs a {column!r} column; the particles have "
                    f"{list(table.features.columns)}."
                )
            keep &= table.features[column].to_numpy(float) >= limit
    subset = ParticleTable(table.coords_zyx[keep], table.features[keep].reset_index(drop=True), table.pixel_size_A)
    path = write_coordinates(
        ctx.output(f"_particles.{p['format']}"),
        subset,
        star_form=p["star_form"],
        tomogram_shape_zyx=tuple(ctx.volume.data.shape),
        comment=ctx.star_comment(),
    )
    yield Progress(1, 1, f"exported {len(subset)} particles")
    return StepOutput([path], {"exported": int(keep.sum())})
