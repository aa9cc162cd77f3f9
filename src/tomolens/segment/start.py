"""The model a segmentation training starts from, and its output layer when the classes differ.

Fine-tuning a model on painted classes that are not its own keeps every weight of the model
(and the batch-normalisation statistics) except its output layer (``head``, a 1×1 convolution:
one channel per class).  The new output layer has one channel per class named for the training:

- the first class (background) copies the start model's background channel, whatever its name;
- a class named like one of the start model's classes (case-insensitive) copies that channel's
  weights and bias;
- else a class listed in :data:`CLASS_SYNONYMS` copies the first of its synonyms that the start
  model has;
- every other class is a new channel, initialised as a fresh network's output layer is
  (PyTorch's default, drawn from the training seed).

A channel of the start model is copied at most once (exact names first, then synonyms in the order
the classes are named), so that no two new classes start identical.  With the start model's own
classes in its order, nothing is replaced: the network is the start model's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tomolens.segment.predict import model_kind_of
from tomolens.segment.settings import NEW_NETWORK, start_model

#: Painted class name → start model classes whose output channel it copies (the first present).
#: filament ← microtubule: on validation tomograms 7100–7101 of the first simulator (whose
#: "filament" is microtubules and actin rods alike), ``segment_domain`` called 34 % / 18 % of the
#: filament voxels microtubule and 0.5 % / 0.6 % actin; particle ← macromolecule (11 % of the
#: particle voxels, against under 2 % for any other structure).  The reverse pairs let a model
#: trained on the first simulator's classes start the domain classes.
CLASS_SYNONYMS = {
    "filament": ("microtubule", "actin"),
    "particle": ("macromolecule",),
    "microtubule": ("filament",),
    "actin": ("filament",),
    "macromolecule": ("particle",),
}

#: Name of the output layer of the engine's U-Nets (:class:`tomolens.models.unet.UNet2D`/``UNet3D``).
HEAD = "head"

#: Architecture import path → model kind it must be.
_ARCH_KINDS = {"tomolens.models.unet:UNet2D": "2d", "tomolens.models.unet:UNet3D": "3d"}


def output_channel_sources(start_classes: Sequence[str], class_names: Sequence[str]) -> list[int | None]:
    """For every class named for training, the start model's channel it copies (None = a new channel).

    Parameters
    ----------
    start_classes : sequence of str
        The start model's classes (output channels), background first.
    class_names : sequence of str
        The classes of the training, background first.

    Returns
    -------
    list of (int or None), one per ``class_names``
        Channel index in the start model, or None for a new channel (see the module's rule).
    """
    start = [str(c).strip().casefold() for c in start_classes]
    names = [str(n).strip().casefold() for n in class_names]
    sources: list[int | None] = [0] + [None] * (len(names) - 1)
    used = {0}
    for i, name in enumerate(names[1:], 1):  # exact names first
        if name in start[1:]:
            sources[i] = start.index(name, 1)
            used.add(sources[i])
    for i, name in enumerate(names[1:], 1):
        if sources[i] is None:
            for synonym in CLASS_SYNONYMS.get(name, ()):
                j = start.index(synonym, 1) if synonym in start[1:] else None
                if j is not None and j not in used:
                    sources[i] = j
                    used.add(j)
                    break
    return sources


def output_layer_record(start_classes: Sequence[str], class_names: Sequence[str]) -> dict:
    """What the card records of a replaced output layer: ``{"copied": {class: start class}, "new": [class]}``."""
    sources = output_channel_sources(start_classes, class_names)
    return {
        "copied": {n: start_classes[j] for n, j in zip(class_names, sources) if j is not None},
        "new": [n for n, j in zip(class_names, sources) if j is None],
    }


def describe_output_layer(model_name: str, start_classes: Sequence[str], class_names: Sequence[str]) -> str:
    """One sentence on what fine-tuning ``model_name`` does with the named classes ("" when they are its own)."""
    if [str(c) for c in start_classes] == [str(n).strip() for n in class_names]:
        return ""
    record = output_layer_record(start_classes, class_names)
    copied = ", ".join(n if n == s else f"{n} ← {s}" for n, s in record["copied"].items())
    return (
        f"{model_name} segments {', '.join(start_classes)}: training keeps its weights and gives it a new output "
        f"layer for your classes (copied from it: {copied}"
        + (f"; new, learnt from your painting only: {', '.join(record['new'])}" if record["new"] else "")
        + ")."
    )


def load_start_model(start_from: str | Path, class_names: Sequence[str], seed: int = 0):
    """The network to fine-tune (training mode) and its card, with an output layer for ``class_names``.

    Parameters
    ----------
    start_from : str or path
        A shipped segmentation model's name or a ``.pt``/``.json`` path.
    class_names : sequence of str
        The classes of the training (checked), background first.
    seed : int
        Seeds the initial weights of new output channels.

    Returns
    -------
    (torch.nn.Module, ModelCard, dict or None)
        The network, the start model's card, and the output-layer record
        (:func:`output_layer_record`; None when the classes are the start model's, in its order:
        the network is then the start model's unchanged).

    Raises
    ------
    ValueError
        Not a segmentation model, weights that do not match the card, an unknown architecture, a
        card whose kind or classes contradict its network, or a network without an output layer
        to replace.
    """
    import dataclasses

    import torch

    from tomolens.models.card import build_network, load_model

    net, card = load_model(start_from, expected_task="segment")
    kind = _ARCH_KINDS.get(card.architecture)
    if kind is not None and model_kind_of(card) != kind:
        raise ValueError(
            f"Cannot start from {card.name}: its card says it is a {model_kind_of(card)} model, but its network is "
            f"{card.architecture} ({kind}); fix extra.model_kind on the card or start from another model."
        )
    if list(card.classes) == list(class_names):
        return net.train(), card, None
    head = getattr(net, HEAD, None)
    if not isinstance(head, torch.nn.Module) or getattr(head, "out_channels", None) != len(card.classes):
        raise ValueError(
            f"Cannot start from {card.name} for the classes {list(class_names)}: its network {card.architecture} "
            f"has no output layer '{HEAD}' with one channel per class of its {list(card.classes)}. Name the model's "
            f"classes in its order, or train a new network (widget: 'segment start from' = {NEW_NETWORK}; CLI: "
            f"--segment-start-from {NEW_NETWORK})."
        )
    torch.manual_seed(seed)  # new channels: a fresh output layer's initial weights, drawn from the seed
    new_card = dataclasses.replace(card, arch_kwargs={**card.arch_kwargs, "out_channels": len(class_names)})
    new_net = build_network(new_card)
    state, fresh = net.state_dict(), new_net.state_dict()
    sources = output_channel_sources(card.classes, class_names)
    prefix = f"{HEAD}."
    for key in (k for k in fresh if k.startswith(prefix)):
        value = fresh[key].clone()
        for i, j in enumerate(sources):
            if j is not None:
                value[i] = state[key][j]
        state[key] = value
    new_net.load_state_dict(state)
    return new_net.train(), card, output_layer_record(card.classes, class_names)


def start_note(start_from: str | Path | None, class_names: Sequence[str]) -> str:
    """:func:`describe_output_layer` for a ``segment_start_from`` value ("" for a new network, the model's
    own classes, or a model that cannot be read: training then says what is wrong)."""
    from tomolens.models.card import read_card, resolve_model

    name = start_model(start_from)
    if name is None:
        return ""
    try:
        card = read_card(resolve_model(name))
    except (ValueError, OSError):
        return ""
    return describe_output_layer(card.name, card.classes, class_names) if card.task == "segment" else ""
