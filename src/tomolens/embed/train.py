"""Metric-learning training of the embedding (a job) and ``tomolens train --task embed``.

Loss: **supervised contrastive** (SupCon, Khosla et al. 2020).  Every step draws ``P``
structures and ``K`` domain-randomised views of each (:func:`tomolens.embed.data.render_views`);
every view is pulled towards all ``K - 1`` views of its structure and pushed from all
``(P - 1) K`` others at once.  We chose it over a triplet loss because one step uses
every positive and negative pair of the batch (no mining, no margin to tune), which matters
when the whole budget is about a thousand steps on one CPU core; the labels are only
"same structure or not", so the endless stream of pseudo-proteins needs no class list.

Curriculum: a network that meets the full noise range from its first step collapses to a
constant embedding (the loss stays at log(PK − 1)); the lowest SNR drawn therefore falls
log-linearly from the range's top to its bottom over the first 40 % of the steps.

The budget is a number of **steps** (``--embed-steps``); the learning rate warms up over
the first 5 % of steps and then follows a cosine to zero.  Every ``--embed-eval-every``
steps a checkpoint (model, optimiser, step, history, elapsed time) is written atomically;
``--resume`` continues from it.  Every step's random draws come from ``(seed, step)``, so
a resumed run draws the same data as an uninterrupted one.  A validation set of unseen
pseudo-proteins (other seeds than the training bank) is scored for the history only
(recall@1 of the nearest other view); it does not stop training.  The held-out maps are
never drawn here.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tomolens.embed.data import (
    EmbedDataConfig,
    StructureBank,
    imaging_filters,
    render_views,
)
from tomolens.jobs import Progress

log = logging.getLogger(__name__)

ARCHITECTURE = "tomolens.embed.network:EmbedNet3D"


@dataclass
class EmbedTrainConfig:
    """Settings of one embedding training run.

    Attributes
    ----------
    steps : int
        Optimiser steps in total (the budget).
    structures, views : int
        P structures × K views per step.
    dim, width : int
        Embedding size and the network's first-stage channels.
    temperature : float
        SupCon temperature.
    learning_rate, weight_decay : float
        AdamW settings (peak learning rate).
    eval_every : int
        Steps between validation scores and checkpoints.
    snapshots : tuple of int
        Steps after which the weights are also written to ``OUT.stepN.pt`` (for the
        step-budget benchmark).
    checkpoint : str
        Checkpoint path ('' = none); ``resume`` continues from it.
    max_minutes : float
        Stop (after a checkpoint) once this much time was spent in this run (0 = no limit).
    init_from : str
        A classifier (shipped name or model file) whose ``ResNet3DSmall`` body of the same
        width initialises the embedding's body ('' = random initialisation).
    body_lr_scale : float
        The body's learning rate relative to the head's (below 1 keeps more of an initialised
        body's features).
    """

    steps: int = 1200
    structures: int = 12
    views: int = 3
    dim: int = 48
    width: int = 16
    temperature: float = 0.1
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    snapshots: tuple = ()
    checkpoint: str = ""
    resume: bool = False
    max_minutes: float = 0.0
    seed: int = 0
    init_from: str = ""
    body_lr_scale: float = 1.0
    data: EmbedDataConfig = field(default_factory=EmbedDataConfig)

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.steps < 1:
            raise ValueError(f"The step budget must be at least 1; got {self.steps}.")
        if self.structures < 2 or self.views < 2:
            raise ValueError(
                "Metric learning needs at least 2 structures and 2 views per step; got "
                f"{self.structures} and {self.views}."
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive; got {self.temperature}.")
        self.data.check()


@dataclass
class EmbedTrainResult:
    """The trained network, its history (one dict per evaluation) and the time spent."""

    model: object
    history: list
    steps_done: int
    seconds: float
    config: EmbedTrainConfig


def supcon_loss(z, labels, temperature: float = 0.1):
    """Supervised contrastive loss of unit-norm embeddings.

    Parameters
    ----------
    z : torch.Tensor float32 (N, D), unit rows
    labels : torch.Tensor int64 (N,)
    temperature : float

    Returns
    -------
    torch.Tensor, scalar: mean over anchors that have a positive of
    −mean over positives p of log softmax_{a≠anchor}(z·z_a / T)[p].
    """
    import torch

    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp_min(1)
    return per_anchor[n_pos > 0].mean()


def recall_at_1(emb: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose nearest other row (cosine) has the same label."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[sim.argmax(1)] == labels))


def validation_set(config: EmbedTrainConfig, n_structures: int = 24, n_views: int = 6, snr: float = 0.05):
    """Views of pseudo-proteins the training bank does not hold (other seeds), at one SNR.

    Returns
    -------
    (torch.Tensor float32 (n × views, 1, b, b, b), ndarray int64 labels)
    """
    from dataclasses import replace

    data = replace(config.data, maps=(), n_pseudo=n_structures)
    bank = StructureBank.build(data, seed_offset=10_000)
    rng = np.random.default_rng([config.seed, 10_000])
    x, labels = render_views(bank, np.arange(len(bank)), n_views, rng, snr=snr)
    return x, labels.numpy()


def embed_tensor(model, x, batch_size: int = 64) -> np.ndarray:
    """Embeddings (N, D) float32 of a tensor of cubes (N, 1, b, b, b), in eval mode."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i : i + batch_size]).numpy())
    return np.concatenate(out).astype(np.float32)


def _learning_rate(step: int, config: EmbedTrainConfig) -> float:
    warm = max(1, int(0.05 * config.steps))
    if step < warm:
        return config.learning_rate * (step + 1) / warm
    frac = (step - warm) / max(1, config.steps - warm)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def snr_range_at(step: int, config: EmbedTrainConfig) -> tuple[float, float]:
    """The SNR range of a step under the curriculum (see the module docstring)."""
    lo, hi = config.data.snr
    frac = min(1.0, step / max(1.0, 0.4 * config.steps))
    return float(np.exp(np.log(hi) + frac * (np.log(lo) - np.log(hi)))), float(hi)


def _config_json(config: EmbedTrainConfig) -> str:
    d = asdict(config)
    d["data"] = config.data.to_dict()
    d["snapshots"] = list(config.snapshots)
    return json.dumps(d, sort_keys=True)


def _network_key(config: EmbedTrainConfig) -> str:
    return json.dumps({"dim": config.dim, "width": config.width, "box": config.data.box})


def init_body(model, classifier: str) -> None:
    """Copy the residual body of a ``ResNet3DSmall`` classifier of the same width into ``model``.

    Raises
    ------
    ValueError
        The classifier is not a ResNet3DSmall of the embedding's width.
    """
    from tomolens.models.card import load_model

    net, card = load_model(classifier, expected_task="classify")
    if not card.architecture.endswith(":ResNet3DSmall"):
        raise ValueError(
            f"{card.name!r} is a {card.architecture}; only a ResNet3DSmall classifier's body fits "
            "the embedding network."
        )
    try:
        model.body.load_state_dict(net.body.state_dict())
    except RuntimeError as err:
        raise ValueError(
            f"The body of {card.name!r} does not fit the embedding network (use --embed-width "
            f"{card.arch_kwargs.get('width')}): {str(err).splitlines()[0]}"
        ) from None
    log.info("embedding body initialised from the classifier %s", card.name)


def train_embedding(config: EmbedTrainConfig) -> Generator[Progress, None, EmbedTrainResult]:
    """Train the embedding for ``config.steps`` steps (a job; resumable).

    Yields
    ------
    Progress
        After every step (``done`` = step); ``info`` holds the validation scores after an
        evaluation.

    Returns
    -------
    EmbedTrainResult
    """
    import torch

    from tomolens.embed.network import EmbedNet3D
    from tomolens.io.atomic import atomic_path

    config.check()
    torch.manual_seed(config.seed)
    model = EmbedNet3D(config.dim, config.data.box, config.width)
    groups = [
        {"params": model.body.parameters(), "lr_scale": config.body_lr_scale},
        {"params": model.head.parameters(), "lr_scale": 1.0},
    ]
    opt = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    start, history, elapsed = 0, [], 0.0
    if config.init_from and not config.resume:
        init_body(model, config.init_from)
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if config.resume:
        if ckpt is None or not ckpt.is_file():
            raise ValueError(f"Cannot resume: no checkpoint at {ckpt}. Train without --resume first.")
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if state.get("network") != _network_key(config):
                raise ValueError(f"the checkpoint's network {state.get('network')} differs from {_network_key(config)}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimiser"])
        except Exception as err:
            raise ValueError(
                f"Cannot resume from {ckpt.name}: {err}. Train without --resume, or use the "
                "same --embed-dim/--embed-width/box as the checkpoint."
            ) from err
        start, history, elapsed = int(state["step"]), json.loads(state["history"]), float(state["elapsed"])
        log.info("resumed at step %d of %d (%.0f s spent before)", start, config.steps, elapsed)
    bank = StructureBank.build(config.data)
    filters = imaging_filters(config.data, np.random.default_rng([config.seed, 1]))[:2]
    x_val, y_val = validation_set(config)
    t0 = time.monotonic()
    step = start
    losses: list[float] = []
    while step < config.steps:
        model.train()
        rng = np.random.default_rng([config.seed, step])
        x, labels = render_views(
            bank, bank.draw(config.structures, rng), config.views, rng, filters, snr=snr_range_at(step, config)
        )
        for group in opt.param_groups:
            group["lr"] = _learning_rate(step, config) * group["lr_scale"]
        loss = supcon_loss(model(x), labels, config.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        info = {}
        spent = time.monotonic() - t0
        out_of_time = bool(config.max_minutes) and spent > 60 * config.max_minutes
        if step % config.eval_every == 0 or step == config.steps or out_of_time:
            info = {
                "step": step,
                "loss": float(np.mean(losses)),
                "seconds": round(elapsed + spent, 1),
                "val_recall_at_1": recall_at_1(embed_tensor(model, x_val), y_val),
            }
            losses = []
            history.append(info)
            log.info(
                "step %d: loss %.3f, val recall@1 %.3f (%.0f s)",
                step,
                info["loss"],
                info["val_recall_at_1"],
                info["seconds"],
            )
            if ckpt is not None:
                state = {
                    "model": model.state_dict(),
                    "optimiser": opt.state_dict(),
                    "step": step,
                    "history": json.dumps(history),
                    "elapsed": elapsed + spent,
                    "network": _network_key(config),
                    "config": _config_json(config),
                }
                with atomic_path(ckpt) as tmp:
                    torch.save(state, tmp)
        if step in config.snapshots and ckpt is not None:
            with atomic_path(ckpt.with_suffix(f".step{step}.pt")) as tmp:
                torch.save(model.state_dict(), tmp)
        yield Progress(step, config.steps, f"step {step}: loss {losses[-1] if losses else info['loss']:.3f}", info=info)
        if out_of_time:
            log.info("time budget of %.1f min used at step %d; resume to continue", config.max_minutes, step)
            break
    model.eval()
    return EmbedTrainResult(model, history, step, elapsed + time.monotonic() - t0, config)


def save_embedding(result: EmbedTrainResult, path: str, training_command: str = "", metrics: dict | None = None):
    """Save a trained embedding with its card (task ``"embed"``); returns (weights, card) paths."""
    from tomolens.models.card import ModelCard, save_model

    cfg = result.config
    data = cfg.data
    card = ModelCard(
        name=Path(path).stem,
        task="embed",
        architecture=ARCHITECTURE,
        arch_kwargs={"dim": cfg.dim, "box": data.box, "width": cfg.width},
        voxel_size_A=float(data.voxel_size_A),
        patch_size=[data.box] * 3,
        normalisation="zscore per subtomogram",
        polarity="bright",
        training_command=training_command,
        training_data=(
            f"domain-randomised views rendered on the fly (tomolens.embed.data): the {len(data.maps)} "
            f"training maps of maps_10A ({', '.join(data.maps)}; the held-out maps never) with "
            f"probability {data.map_probability} per structure, else one of {data.n_pseudo} procedural "
            f"pseudo-proteins ({', '.join(data.families)}, {data.pseudo_size_nm[0]:g}-"
            f"{data.pseudo_size_nm[1]:g} nm); {cfg.structures} structures x {cfg.views} views per "
            f"step, {result.steps_done} steps, both polarities, imaging ranges of "
            "tomolens.simulate.domain.TRAINING_RANGES (see extra.data)"
        ),
        seed=cfg.seed,
        metrics=metrics or {},
        extra={
            "steps": result.steps_done,
            "body_initialised_from": cfg.init_from or None,
            "training_seconds": round(result.seconds, 1),
            "history": result.history,
            "loss": "supervised contrastive",
            "train_config": json.loads(_config_json(cfg)),
            "data": data.to_dict(),
        },
    )
    return save_model(result.model, card, path)


def register_train_args(group) -> None:
    """Embedding-only options of ``tomolens train`` (engine options used: --out, --learning-rate,
    --seed, --threads, --max-minutes, --checkpoint, --resume)."""
    group.add_argument("--embed-steps", type=int, default=1200, help="embed: optimiser steps (the budget)")
    group.add_argument("--embed-structures", type=int, default=12, help="embed: structures per step")
    group.add_argument("--embed-views", type=int, default=3, help="embed: views of each structure per step")
    group.add_argument("--embed-dim", type=int, default=48, help="embed: embedding size")
    group.add_argument("--embed-width", type=int, default=16, help="embed: first-stage channels")
    group.add_argument("--embed-pseudo", type=int, default=600, help="embed: procedural pseudo-proteins in the bank")
    group.add_argument(
        "--embed-eval-every", type=int, default=100, help="embed: steps between validation scores and checkpoints"
    )
    group.add_argument(
        "--embed-init",
        default="",
        metavar="CLASSIFIER",
        help="embed: initialise the body from this ResNet3DSmall classifier (shipped name or .pt)",
    )
    group.add_argument(
        "--embed-body-lr-scale",
        type=float,
        default=1.0,
        help="embed: the body's learning rate relative to the head's (e.g. 0.1 with --embed-init)",
    )
    group.add_argument(
        "--embed-snapshots",
        default="",
        metavar="N,N,…",
        help="embed: also write the weights after these steps to OUT.stepN.pt",
    )


def run_train(args) -> int:
    """``tomolens train --task embed``."""
    import torch

    from tomolens.jobs import log_progress, run_job
    from tomolens.models.cli import command_line

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        snapshots = tuple(int(s) for s in args.embed_snapshots.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--embed-snapshots must be comma-separated step numbers; got {args.embed_snapshots!r}.")
    config = EmbedTrainConfig(
        steps=args.embed_steps,
        structures=args.embed_structures,
        views=args.embed_views,
        dim=args.embed_dim,
        width=args.embed_width,
        learning_rate=args.learning_rate,
        eval_every=args.embed_eval_every,
        snapshots=snapshots,
        checkpoint=args.checkpoint or str(Path(args.out).with_suffix(".ckpt")),
        resume=args.resume,
        max_minutes=args.max_minutes,
        seed=args.seed,
        init_from=args.embed_init,
        body_lr_scale=args.embed_body_lr_scale,
        data=EmbedDataConfig(n_pseudo=args.embed_pseudo, seed=args.seed),
    )
    result = run_job(train_embedding(config), on_progress=log_progress)
    if result.steps_done < config.steps:
        print(
            f"stopped at step {result.steps_done} of {config.steps} (time budget); the checkpoint "
            f"{config.checkpoint} continues with --resume. No model written."
        )
        return 0
    metrics = {"val_recall_at_1_unseen_pseudo_snr0.05": result.history[-1]["val_recall_at_1"]}
    weights, card = save_embedding(result, args.out, command_line(args), metrics)
    print(f"trained {result.steps_done} steps in {result.seconds / 60:.1f} min; wrote {weights} and {card}")
    return 0
