"""Fine-tuning from a model with other classes: which output channels are copied, which are new."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_toy import TOY_CLASSES, make_toy

from tomolens.jobs import run_job
from tomolens.models.card import ModelCard, load_model, save_model
from tomolens.segment.labels import evenly_spaced_slices, sparse_from_classes
from tomolens.segment.networks import build_segmentation_network
from tomolens.segment.predict import classes_from_probabilities, predict_probabilities
from tomolens.segment.simulated import dice_per_class
from tomolens.segment.start import (
    describe_output_layer,
    load_start_model,
    output_channel_sources,
    output_layer_record,
    start_note,
)
from tomolens.segment.train import save_segmenter, train_segmenter

START_CLASSES = ["background", "membrane", "microtubule", "actin", "macromolecule"]
SEED = 0


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tiny_model(path, classes=START_CLASSES, kind="2d", seed=3, **extra):
    """A small random slice U-Net saved with its card (weights perturbed so no two channels are alike)."""
    torch.manual_seed(seed)
    net, arch, kwargs = build_segmentation_network(kind, len(classes), base_channels=8, depth=2, context=1)
    with torch.no_grad():
        for module in net.modules():  # batch-norm statistics are weights too: make them distinctive
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    card = ModelCard(
        name=path.stem,
        task="segment",
        architecture=arch,
        arch_kwargs=kwargs,
        classes=list(classes),
        voxel_size_A=10.0,
        patch_size=[32, 32] if kind == "2d" else [16, 16, 16],
        polarity="bright",
        extra={"model_kind": kind, "context_slices": 1} | extra,
    )
    save_model(net, card, path)
    return path


def test_channel_sources_names_synonyms_and_background():
    # background maps to background whatever its name; names match case-insensitively
    assert output_channel_sources(START_CLASSES, ["bg", "Membrane", "vesicle"]) == [0, 1, None]
    # synonyms: filament ← microtubule, particle ← macromolecule
    assert output_channel_sources(START_CLASSES, ["background", "membrane", "filament", "particle"]) == [0, 1, 2, 4]
    # an exact name wins its channel; a synonym then takes the next free one, or none
    assert output_channel_sources(START_CLASSES, ["background", "filament", "microtubule"]) == [0, 3, 2]
    assert output_channel_sources(["background", "filament"], ["background", "microtubule", "actin"]) == [0, 1, None]
    assert output_layer_record(START_CLASSES, ["background", "particle", "ice"]) == {
        "copied": {"background": "background", "particle": "macromolecule"},
        "new": ["ice"],
    }
    note = describe_output_layer("m", START_CLASSES, ["background", "filament", "ice"])
    assert (
        "new output layer" in note
        and "filament ← microtubule" in note
        and "new, learnt from your painting only: ice" in note
    )
    assert describe_output_layer("m", START_CLASSES, START_CLASSES) == ""


def test_new_output_layer_copies_matching_channels_and_keeps_every_other_weight(tmp_path):
    path = _tiny_model(tmp_path / "start.pt")
    start_net, _ = load_model(path)
    start = start_net.state_dict()
    names = ["background", "membrane", "filament", "ice"]
    net, card, record = load_start_model(path, names, seed=0)
    assert net.training and card.name == "start" and net.head.out_channels == 4
    assert record == {
        "copied": {"background": "background", "membrane": "membrane", "filament": "microtubule"},
        "new": ["ice"],
    }
    state = net.state_dict()
    assert set(state) == set(start)
    for key, value in state.items():  # every weight and statistic but the output layer's, bit for bit
        if not key.startswith("head."):
            assert torch.equal(value, start[key]), key
    for key in ("head.weight", "head.bias"):
        for i, j in enumerate([0, 1, 2]):
            assert torch.equal(state[key][i], start[key][j]), (key, i)
        new = state[key][3]
        assert torch.isfinite(new).all() and not any(torch.equal(new, start[key][j]) for j in range(5))
    # the new channel is a fresh output layer's, drawn from the seed
    again = load_start_model(path, names, seed=0)[0].state_dict()
    other = load_start_model(path, names, seed=1)[0].state_dict()
    assert torch.equal(again["head.weight"], state["head.weight"])
    assert not torch.equal(other["head.weight"][3], state["head.weight"][3])
    assert torch.equal(other["head.weight"][:3], state["head.weight"][:3])
    assert float(state["head.weight"][3].abs().max()) <= 1 / np.sqrt(net.head.in_channels) + 1e-6  # PyTorch's init
    # a changed network gives a changed prediction only in the channels it changed
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        old, new = start_net.eval()(x), net.eval()(x)
    assert torch.allclose(new[:, :3], old[:, :3], atol=1e-6) and not torch.allclose(new[:, 3], old[:, 3])


def test_the_model_own_classes_leave_it_unchanged(tmp_path):
    path = _tiny_model(tmp_path / "start.pt")
    start = load_model(path)[0].state_dict()
    net, card, record = load_start_model(path, START_CLASSES, seed=5)
    assert record is None and card.arch_kwargs["out_channels"] == 5
    assert all(torch.equal(v, start[k]) for k, v in net.state_dict().items())
    assert start_note(str(path), START_CLASSES) == "" and start_note("none", ["background", "x"]) == ""
    assert start_note(str(tmp_path / "missing.pt"), ["background", "x"]) == ""  # training then says what is wrong
    assert "start segments background, membrane" in start_note(str(path), ["background", "x"])


def test_bad_start_models_are_refused_clearly(tmp_path):
    mismatch = _tiny_model(tmp_path / "mismatch.pt", model_kind="3d")  # a 2D U-Net whose card says 3d
    with pytest.raises(ValueError, match="its card says it is a 3d model, but its network is .*UNet2D"):
        load_start_model(mismatch, ["background", "x"])
    unknown = _tiny_model(tmp_path / "unknown.pt")
    text = unknown.with_suffix(".json").read_text().replace("tomolens.models.unet:UNet2D", "mypackage.nets:Net")
    unknown.with_suffix(".json").write_text(text)
    with pytest.raises(ValueError, match="Unknown architecture 'mypackage.nets:Net'"):
        load_start_model(unknown, ["background", "x"])
    detect = _tiny_model(tmp_path / "detect.pt")
    detect.with_suffix(".json").write_text(detect.with_suffix(".json").read_text().replace('"segment"', '"detect"'))
    with pytest.raises(ValueError, match="is a 'detect' model; this step needs a 'segment' model"):
        load_start_model(detect, ["background", "x"])


def test_fine_tuning_a_model_with_other_classes_learns_the_painted_ones(tmp_path):
    """A toy model of sheets and rods ('membrane', 'filament') fine-tuned to 'membrane' (copied) and 'rod' (new)."""
    tomo, classes = make_toy(0)
    slices = evenly_spaced_slices(5, classes.shape[0])
    painted = sparse_from_classes(classes, slices)
    fast = dict(patch=32, batch_size=4, learning_rate=5e-3, val_patches=4, device="cpu", polarity="bright", seed=SEED)
    source = run_job(
        train_segmenter(
            [(tomo, painted)], TOY_CLASSES, 10.0, context=1, base_channels=8, epochs=3, steps_per_epoch=10, **fast
        )
    )
    start = save_segmenter(source, tmp_path / "start.pt")
    names = ["background", "membrane", "rod"]
    tuned = run_job(
        train_segmenter(
            [(tomo, painted)], names, 10.0, start_from=str(start), epochs=4, steps_per_epoch=10, hold_out="none", **fast
        )
    )
    card = tuned.card
    assert card.classes == names and card.arch_kwargs["out_channels"] == 3 and tuned.model.head.out_channels == 3
    assert card.extra["start_from"]["classes"] == TOY_CLASSES
    assert card.extra["start_from"]["output_layer"] == {
        "copied": {"background": "background", "membrane": "membrane"},
        "new": ["rod"],
    }
    assert "with a new output layer" in card.training_data and card.extra["context_slices"] == 1
    keep = np.ones(classes.shape[0], bool)
    keep[slices] = False
    probs = run_job(predict_probabilities(tuned.model, card, tomo, 10.0, orthogonal=False, polarity="bright"))
    assert probs.shape == (3, *classes.shape)
    dice = dice_per_class(classes_from_probabilities(probs)[keep], classes[keep], names)
    assert dice["rod"] > 0.5 and dice["membrane"] > 0.5, dice


def test_command_line_fine_tunes_a_model_with_other_classes(tmp_path, capsys):
    import json

    from tomolens.cli import main
    from tomolens.io.mrc import write_mrc

    start = _tiny_model(tmp_path / "start.pt")
    tomo, classes = make_toy(1)
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    write_mrc(tmp_path / "t_painted.mrc", sparse_from_classes(classes, [3, 8, 12]), 10.0, is_labels=True)
    out = tmp_path / "tuned.pt"
    args = ["train", "--task", "segment", "--segment-classes", "background,membrane,filament", "--segment-start-from"]
    files = ["--tomograms", str(tmp_path / "t.mrc"), "--labels", str(tmp_path / "t_painted.mrc")]
    budget = ["--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--val-patches", "2", "--device", "cpu"]
    assert main([*args, str(start), *files, *budget, "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "start segments background, membrane, microtubule, actin, macromolecule: training keeps its weights" in printed
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["classes"] == ["background", "membrane", "filament"] and card["arch_kwargs"]["out_channels"] == 3
    assert card["extra"]["start_from"]["output_layer"]["copied"]["filament"] == "microtubule"
    # a start model the network cannot be built for: one line, exit code 2
    start.with_suffix(".json").write_text(
        start.with_suffix(".json").read_text().replace('"model_kind": "2d"', '"model_kind": "3d"')
    )
    assert main([*args, str(start), *files, *budget, "--out", str(tmp_path / "bad.pt")]) == 2
    assert "its card says it is a 3d model" in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()
