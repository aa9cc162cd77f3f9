"""Model cards and safe save/load of weights.

A model is two files side by side: ``NAME.pt`` (a plain ``state_dict`` saved with
``torch.save``) and ``NAME.json`` (the :class:`ModelCard`).  Loading uses
``torch.load(weights_only=True)`` — no arbitrary unpickling — and refuses weights whose
sha256 differs from the card's (a card without a sha256 is refused).  The network is
named on the card by one of the architectures of :data:`NETWORK_REGISTRY`
(``"tomolens.models.unet:UNet3D"``…) and built only from the keyword arguments that
architecture accepts, each checked for type and range: a card cannot make tomolens call
any other function.

Shipped default models live in ``tomolens/models/weights/``; :func:`shipped_models` lists
them and :func:`resolve_model` accepts a shipped name or a path to a card or weights file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomolens import __version__
from tomolens.io.atomic import atomic_path

WEIGHTS_DIR = Path(__file__).parent / "weights"


class ModelFileError(ValueError):
    """A model file is missing, not a tomolens model, or fails its hash check."""


@dataclass
class ModelCard:
    """Everything needed to rebuild, trust and reproduce a model.

    Attributes
    ----------
    name : str
        Short name (file stem).
    task : str
        ``"detect"``, ``"segment"``, ``"classify"``, ``"orient"``…
    architecture : str
        Import path ``"tomolens.package.module:ClassName"`` of the network.
    arch_kwargs : dict
        Keyword arguments of the network's constructor.
    classes : list of str
        Output classes (index = class id) or output channels' names.
    voxel_size_A : float or None
        Voxel (pixel) size the model was trained at, Å.
    patch_size : list of int
        Training/inference patch size, voxels (z, y, x).
    normalisation : str
        How inputs are normalised (for example ``"zscore"``: mean 0, std 1 per volume).
    training_command : str
        The exact ``tomolens train …`` command that produced the weights.
    training_data : str
        What it was trained on (simulator settings, seeds).
    seed : int
        Random seed of training.
    metrics : dict
        Held-out figures (data never used for training or stopping).
    sha256 : str
        Hash of the weights file.
    extra : dict
        Anything task-specific (thresholds, default sizes…).
    polarity : str
        Contrast polarity of the inputs the model was trained on: ``"bright"`` (dense matter
        bright, the project's convention) or ``"dark"``.  Empty on cards older than the
        setting: treated as bright with a warning (:func:`tomolens.polarity.model_polarity`).
    """

    name: str
    task: str
    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    voxel_size_A: float | None = None
    patch_size: list[int] = field(default_factory=list)
    normalisation: str = "zscore"
    training_command: str = ""
    training_data: str = ""
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    tomolens_version: str = __version__
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    polarity: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, source: str = "card") -> ModelCard:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelFileError(f"{source} is not a tomolens model card (invalid JSON: {err}).") from err
        if not isinstance(raw, dict) or not {"name", "task", "architecture"} <= set(raw):
            raise ModelFileError(f"{source} is not a tomolens model card (needs name, task and architecture).")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _int_arg(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return check


def _float_arg(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise ValueError(f"a number from {low} to {high}")
        return float(value)

    return check


def _bool_arg(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _int_list_arg(length: int, low: int, high: int) -> Callable[[Any], list[int]]:
    element = _int_arg(low, high)

    def check(value: Any) -> list[int]:
        try:
            if not isinstance(value, (list, tuple)) or len(value) != length:
                raise ValueError
            return [element(v) for v in value]
        except ValueError:
            raise ValueError(f"a list of {length} integers from {low} to {high}") from None

    return check


_UNET_ARGS = {
    "in_channels": _int_arg(1, 64),
    "out_channels": _int_arg(1, 256),
    "base_channels": _int_arg(1, 256),
    "depth": _int_arg(1, 6),
    "batch_norm": _bool_arg,
    "dropout": _float_arg(0.0, 1.0),
    "channel_growth": _int_arg(1, 4),
}
#: The only networks a card can name: architecture → (module, class, {argument: checker}).
#: A checker returns the value or raises ValueError naming what is allowed.
NETWORK_REGISTRY: dict[str, tuple[str, str, dict[str, Callable[[Any], Any]]]] = {
    "tomolens.models.unet:UNet3D": ("tomolens.models.unet", "UNet3D", _UNET_ARGS),
    "tomolens.models.unet:UNet2D": ("tomolens.models.unet", "UNet2D", _UNET_ARGS),
    "tomolens.classify.networks:SeedCNN3D": (
        "tomolens.classify.networks",
        "SeedCNN3D",
        {"n_classes": _int_arg(1, 1000), "box": _int_arg(4, 256), "dropout": _float_arg(0.0, 1.0)},
    ),
    "tomolens.classify.networks:ResNet3DSmall": (
        "tomolens.classify.networks",
        "ResNet3DSmall",
        {
            "n_classes": _int_arg(1, 1000),
            "box": _int_arg(8, 256),
            "width": _int_arg(1, 256),
            "dropout": _float_arg(0.0, 1.0),
        },
    ),
    "tomolens.embed.network:EmbedNet3D": (
        "tomolens.embed.network",
        "EmbedNet3D",
        {"dim": _int_arg(2, 1024), "box": _int_arg(8, 256), "width": _int_arg(1, 256)},
    ),
    "tomolens.orient.network:SiameseDistanceNet": (
        "tomolens.orient.network",
        "SiameseDistanceNet",
        {"input_size": _int_arg(8, 256), "channels": _int_list_arg(4, 1, 1024), "embedding_dim": _int_arg(1, 4096)},
    ),
}


def build_network(card: ModelCard):
    """Instantiate the card's network (untrained) from :data:`NETWORK_REGISTRY`.

    Raises
    ------
    ModelFileError
        The architecture is not in the registry, or an argument is unknown, of the
        wrong type or out of range.
    """
    entry = NETWORK_REGISTRY.get(card.architecture) if isinstance(card.architecture, str) else None
    if entry is None:
        raise ModelFileError(
            f"Unknown architecture {card.architecture!r}; tomolens builds only {', '.join(NETWORK_REGISTRY)}."
        )
    module_name, class_name, allowed = entry
    if not isinstance(card.arch_kwargs, dict):
        raise ModelFileError(f"arch_kwargs of {card.name!r} must be a mapping; got {card.arch_kwargs!r}.")
    kwargs = {}
    for key, value in card.arch_kwargs.items():
        if key not in allowed:
            raise ModelFileError(f"{card.architecture} has no argument {key!r}; allowed: {', '.join(allowed)}.")
        try:
            kwargs[key] = allowed[key](value)
        except ValueError as err:
            raise ModelFileError(
                f"{card.architecture} argument {key}={value!r} is invalid: it must be {err}."
            ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{card.architecture} cannot be built from {kwargs}: {err}") from err


def save_model(model, card: ModelCard, path: str | os.PathLike) -> tuple[Path, Path]:
    """Save ``model.state_dict()`` to ``path`` (``.pt``) and the card beside it (``.json``).

    Both writes are atomic; the card gets the weights' sha256 and a timestamp.
    """
    import torch

    weights = Path(path).with_suffix(".pt")
    card_path = weights.with_suffix(".json")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        torch.save(state, tmp)
    card.sha256 = sha256_of(weights)
    card.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    card.tomolens_version = __version__
    with atomic_path(card_path) as tmp:
        tmp.write_text(card.to_json())
    return weights, card_path


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read the card of a model given its ``.json`` or its ``.pt`` path."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        raise ModelFileError(
            f"No model card {card_path.name} beside {Path(path).name}: a tomolens model is a "
            ".pt weights file with its .json card."
        )
    return ModelCard.from_json(card_path.read_text(), source=card_path.name)


def load_model(path: str | os.PathLike, device: str = "cpu", expected_task: str | None = None):
    """Load a model safely: card, hash check, ``weights_only`` state dict.

    Parameters
    ----------
    path : path-like
        The ``.pt`` or ``.json`` of a model, or the name of a shipped model.
    device : str
        Torch device for the returned module.
    expected_task : str, optional
        Refuse a model trained for another task.

    Returns
    -------
    (torch.nn.Module, ModelCard)
        The network in eval mode on ``device`` and its card.
    """
    import torch

    path = resolve_model(path)
    card = read_card(path)
    if expected_task is not None and card.task != expected_task:
        raise ModelFileError(f"{path.name} is a {card.task!r} model; this step needs a {expected_task!r} model.")
    weights = path.with_suffix(".pt")
    if not weights.is_file():
        raise ModelFileError(f"The weights file {weights.name} named by the card is missing.")
    if not isinstance(card.sha256, str) or len(card.sha256) != 64:
        raise ModelFileError(
            f"The card of {weights.name} has no valid sha256 of its weights, so they cannot be "
            "checked; tomolens loads only weights whose hash the card records (save_model writes it)."
        )
    actual = sha256_of(weights)
    if actual != card.sha256.lower():
        raise ModelFileError(
            f"{weights.name} does not match its card (sha256 {actual[:12]}… ≠ {card.sha256[:12]}…): "
            "the file is corrupt or was replaced. Re-train or re-install the model."
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files
        raise ModelFileError(f"{weights.name} is not a loadable weights file: {err}") from err
    model = build_network(card)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{weights.name} does not fit {card.architecture}: {err}") from err
    return model.to(device).eval(), card


def shipped_models(task: str | None = None) -> dict[str, Path]:
    """Shipped models ``{name: card path}``, optionally only those of one task."""
    out = {}
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            card = ModelCard.from_json(card_path.read_text(), source=card_path.name)
        except ModelFileError:
            continue
        if task is None or card.task == task:
            out[card.name] = card_path
    return out


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's name, or a path to its ``.pt``/``.json`` → the card path."""
    text = str(name_or_path)
    shipped = shipped_models()
    if text in shipped:
        return shipped[text]
    path = Path(text).expanduser()
    if path.suffix not in (".pt", ".json"):
        raise ModelFileError(
            f"{text!r} is neither a shipped model ({', '.join(shipped) or 'none shipped'}) nor a .pt/.json model file."
        )
    if not path.exists():
        raise ModelFileError(f"No such model file: {text!r}")
    return path.with_suffix(".json")
