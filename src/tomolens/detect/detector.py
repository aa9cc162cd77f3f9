"""``detect_particles``: network + post-processing as one job.

The detection model of seed 002 has two outputs, **MaskNet** (particle probability)
and **CenterNet** (normalised distance to the particle boundary, 1 at centres).  In
tomolens both are the two output channels of one :class:`tomolens.models.unet.UNet3D`
(channel 0 = mask head, channel 1 = centre head, both through a sigmoid), sharing the
encoder: half the compute of two networks on a CPU, the same two targets and losses
(BCE for the mask, MSE for the centre map).  The card's ``classes`` name the channels
``["mask", "centre"]``.

The result keeps the probability maps so that :func:`tomolens.detect.postprocess`
re-applies thresholds and size limits without re-running the network.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tomolens.detect.postprocess import POSTPROCESS_PARAMS, card_postprocess_defaults, postprocess
from tomolens.io.checks import check_voxel_size, warn_if_voxel_size_assumed
from tomolens.io.coords import ParticleTable
from tomolens.jobs import Progress
from tomolens.params import Param, validate_values
from tomolens.polarity import POLARITY_PARAM

log = logging.getLogger(__name__)

#: Name of the shipped default detection model.
DEFAULT_MODEL = "detect_default"

#: Inference settings (besides the post-processing ones).
INFERENCE_PARAMS = (
    Param("model", DEFAULT_MODEL, "Shipped model name or path to a .pt/.json model file", type=str),
    Param("device", "auto", "Torch device (auto = CUDA, then MPS, then CPU)", choices=("auto", "cpu", "cuda", "mps")),
    Param("batch_size", 2, "Patches per forward pass", min=1, max=64, advanced=True),
    Param(
        "overlap",
        0.25,
        "Overlap of neighbouring patches (fraction of the patch)",
        min=0.0,
        max=0.75,
        step=0.05,
        advanced=True,
    ),
    Param("patch", 0, "Patch edge in voxels (0 = the model's training patch × 2)", min=0, advanced=True),
    POLARITY_PARAM,
)

DETECT_PARAMS = INFERENCE_PARAMS + POSTPROCESS_PARAMS


@dataclass
class DetectionResult:
    """What :func:`detect_particles` returns.

    The network runs — and post-processing works — on the model's grid (the tomogram
    rescaled to the model's voxel size); mask, instances and centres are then mapped
    onto the tomogram's own grid.

    Attributes
    ----------
    prob_maps : ndarray, float32, shape (2, z', y', x')
        Mask probability and centre map on the model's grid, kept for live
        re-thresholding.
    mask : ndarray, uint8, shape (z, y, x)
        On the tomogram's grid.
    instances : ndarray, int32, shape (z, y, x)
        On the tomogram's grid.
    particles : ParticleTable
        Centres in the tomogram's voxels with ``score``, ``volume_A3``, ``instance_id``.
    voxel_size_A : float
        The tomogram's voxel size, Å.
    map_voxel_size_A : float
        Voxel size of ``prob_maps``, Å (the model's).
    params : dict
        The settings used.
    calibration : dict or None
        The model card's checked score calibration (:mod:`tomolens.detect.calibrate`), if any.
    """

    prob_maps: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    particles: ParticleTable
    voxel_size_A: float
    map_voxel_size_A: float
    params: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    def reapply(self, **changes: Any) -> DetectionResult:
        """A new result with changed post-processing settings, from the kept maps."""
        params = {**self.params, **changes}
        post = {k: v for k, v in params.items() if k in {p.name for p in POSTPROCESS_PARAMS}}
        mask, instances, particles = to_image_grid(
            *postprocess(self.prob_maps, self.map_voxel_size_A, post, self.calibration),
            self.mask.shape,
            self.voxel_size_A,
        )
        return replace(self, mask=mask, instances=instances, particles=particles, params=params)


def to_image_grid(
    mask: np.ndarray, instances: np.ndarray, particles: ParticleTable, shape: tuple[int, ...], voxel_size_A: float
):
    """Map post-processing output from the model's grid onto the tomogram's grid.

    Labels are resampled nearest-neighbour; centres scale by (n − 1)/(n' − 1) per axis
    (``scipy.ndimage.zoom``'s corner convention, used by the rescaling too).
    """
    from tomolens.models.tiling import rescale_labels

    if tuple(mask.shape) == tuple(shape):
        return mask, instances, ParticleTable(particles.coords_zyx, particles.features, voxel_size_A)
    factors = np.array([(n - 1) / max(m - 1, 1) for n, m in zip(shape, mask.shape)])
    table = ParticleTable(particles.coords_zyx * factors, particles.features, voxel_size_A)
    return rescale_labels(mask, shape), rescale_labels(instances, shape), table


def detect_particles(
    volume: np.ndarray,
    voxel_size_A: float | None,
    model: Any = DEFAULT_MODEL,
    **params: Any,
) -> Generator[Progress, None, DetectionResult]:
    """Detect particles: tiled network inference, then :func:`postprocess`.

    Parameters
    ----------
    volume : array, shape (z, y, x)
        Tomogram of either contrast: the ``polarity`` parameter (default ``"auto"``, measured
        from the data) decides whether it is inverted for the model (:mod:`tomolens.polarity`);
        the decision is in ``result.params["polarity_decision"]``.  May be a memmap.
    voxel_size_A : float or None
        Voxel size in Å; None uses the model's with a warning.
    model : str, path or (torch.nn.Module, ModelCard)
        Shipped model name, model file, or an already loaded model and its card.
    **params
        Values of :data:`DETECT_PARAMS` (``device``, ``mask_threshold`` …).

    Yields
    ------
    Progress
        One per batch of patches, then one for post-processing.

    Returns
    -------
    DetectionResult
    """
    from tomolens.models.card import load_model
    from tomolens.models.device import choose_device, set_cpu_threads
    from tomolens.models.tiling import predict_tiled
    from tomolens.polarity import model_input_normalisation

    params.pop("model", None)
    p = validate_values(params, tuple(q for q in DETECT_PARAMS if q.name != "model"))
    if volume.ndim != 3:
        raise ValueError(
            f"Particle detection needs a 3D tomogram (z, y, x); got a {volume.ndim}D image of shape {volume.shape}."
        )
    device = choose_device(p["device"])
    log.info("detection on %s", device)
    if device == "cpu":
        set_cpu_threads()
    if isinstance(model, tuple):
        net, card = model
    else:
        net, card = load_model(model, device=device, expected_task="detect")
    calibration = card_calibration(card)  # checked before the network runs: a bad card fails at once
    if voxel_size_A is not None and voxel_size_A != 0:
        voxel_size_A = check_voxel_size(voxel_size_A)
    if voxel_size_A is None or voxel_size_A == 0:
        if not card.voxel_size_A:
            raise ValueError("The voxel size is unknown and the model does not state one; give it in Å.")
        warn_if_voxel_size_assumed(None, card.voxel_size_A)
        voxel_size_A = float(card.voxel_size_A)
    edge = p["patch"] or 2 * int(card.patch_size[0] if card.patch_size else 32)
    multiple = getattr(net, "size_multiple", 1)
    edge = max(multiple, edge // multiple * multiple)
    model_vs = float(card.voxel_size_A or voxel_size_A)
    work_shape = [int(round(s * voxel_size_A / model_vs)) for s in volume.shape]
    # shrink the patch along short axes (multiples of the network's size factor)
    patch = tuple(min(edge, -(-n // multiple) * multiple) for n in work_shape)
    norm, decision = model_input_normalisation(volume, p["polarity"], card, voxel_size_A)
    yield Progress(0, 1, decision.message)
    prob_maps = yield from predict_tiled(
        net,
        volume,
        patch,
        overlap=p["overlap"],
        batch_size=p["batch_size"],
        device=device,
        out_channels=2,
        activation="sigmoid",
        voxel_size_A=voxel_size_A,
        model_voxel_size_A=model_vs,
        map_back=False,
        normalisation=norm,
    )
    map_vs = model_vs if tuple(prob_maps.shape[1:]) != tuple(volume.shape) else float(voxel_size_A)
    post = {k: p[k] for k in (q.name for q in POSTPROCESS_PARAMS)}
    for key, value in card_postprocess_defaults(card).items():
        if key not in params:
            post[key] = value
    mask, instances, particles = to_image_grid(
        *postprocess(prob_maps, map_vs, post, calibration), volume.shape, voxel_size_A
    )
    yield Progress(1, 1, f"found {len(particles)} particles")
    return DetectionResult(
        np.asarray(prob_maps),
        mask,
        instances,
        particles,
        float(voxel_size_A),
        float(map_vs),
        {
            **p,
            **post,
            "model": card.name,
            "score": "calibrated" if calibration is not None else "raw",
            "polarity_decision": decision.to_dict(),
            "normalisation": norm.to_dict(),
        },
        calibration,
    )


def card_calibration(card) -> dict[str, Any] | None:
    """The card's checked score calibration (``extra["score_calibration"]``), or None when it has none."""
    from tomolens.detect.calibrate import check_calibration

    extra = card.extra if isinstance(getattr(card, "extra", None), dict) else {}
    if "score_calibration" not in extra:
        return None
    return check_calibration(extra["score_calibration"], f"the card of model '{card.name}'")
