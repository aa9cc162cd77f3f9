"""Recover orientations from pairwise distances (step ii of Banjac et al. 2021).

Unit quaternions ``q_1…q_N`` are optimised with torch's Adam so that the distances they
imply, ``d(q_i, q_j) = 2 arccos |<q_i, q_j>|``, match the estimated distances ``d̂_ij`` on
many randomly sampled pairs per step:

    L = mean over sampled pairs of  w_ij (d̂_ij − d(q_i, q_j))²

The estimates come from a callable (``pairs → distances``): :class:`ExactDistances` (the
true distances, to test the optimiser) or :class:`EmbeddingDistances` (the Siamese
network's Euclidean distance between image embeddings, computed once per image, so
that any pair costs a subtraction).  The result is defined up to the O(4) ambiguity of
the distances (see :func:`tomolens.orient.rotations.align_orientations`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tomolens.jobs import Progress, relay
from tomolens.orient.project import MIN_PROJECTIONS
from tomolens.orient.rotations import canonical

if TYPE_CHECKING:  # torch is imported lazily at run time; annotations only
    import torch

log = logging.getLogger(__name__)


class ExactDistances:
    """True geodesic distances between known orientations (quaternions (N, 4)), up to a point group if given.

    With ``symmetry`` (a :class:`tomolens.orient.symmetry.Symmetry` or name) the distance is
    ``min_g d(q_i, q_j g)``, what a distance network trained up to that group estimates.
    """

    def __init__(self, quats: np.ndarray, symmetry=None) -> None:
        import torch

        from tomolens.orient.symmetry import expand_quats

        self.quats = torch.as_tensor(canonical(quats), dtype=torch.float64)
        self.expanded = torch.as_tensor(expand_quats(canonical(quats), symmetry))  # (N, K, 4)

    def __len__(self) -> int:
        return int(self.quats.shape[0])

    def __call__(self, i, j):
        import torch

        dot = torch.einsum("pd,pkd->pk", self.quats[i], self.expanded[j]).abs().amax(dim=-1).clamp(max=1.0)
        return 2.0 * torch.arccos(dot)


class EmbeddingDistances:
    """Estimated distances ``‖e_i − e_j‖`` from Siamese-network embeddings (N, D)."""

    def __init__(self, embeddings) -> None:
        import torch

        self.embeddings = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __call__(self, i, j):
        return (self.embeddings[i] - self.embeddings[j]).norm(dim=-1)


@dataclass
class RecoveryResult:
    """Recovered orientations.

    Attributes
    ----------
    quats : ndarray, float64, shape (N, 4)
        Unit quaternions (x, y, z, w), up to a global O(4) transform.
    loss_history : list of float
        Loss every ``log_every`` steps (radians²).
    settings : dict
        Optimiser settings.
    """

    quats: np.ndarray
    loss_history: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def _implied_distances(qa: "torch.Tensor", qb: "torch.Tensor", group: "torch.Tensor | None", tau: float = 0.0):
    """Distances (radians) of rows (P, 4) to rows (P, 4): plain, ``min_g d(qa, qb g)``, or a soft minimum (τ > 0)."""
    import torch

    from tomolens.orient.symmetry import _quat_multiply

    if group is None:
        return 2.0 * torch.arccos(torch.abs((qa * qb).sum(-1)).clamp(max=1.0 - 1e-9))
    copies = _quat_multiply(qb[:, None, :], group[None])  # (P, K, 4)
    dots = torch.einsum("pd,pkd->pk", qa, copies).abs().clamp(max=1.0 - 1e-9)
    if tau > 0:
        return -tau * torch.logsumexp(-2.0 * torch.arccos(dots) / tau, dim=-1)
    return 2.0 * torch.arccos(dots.amax(dim=-1))


def _optimise(
    distances: Callable,
    index: "torch.Tensor",
    q0: "torch.Tensor",
    fixed: "torch.Tensor | None",
    steps: int,
    pairs_per_step: int,
    learning_rate: float,
    local_scale: float | None,
    gen: "torch.Generator",
    message: str,
    log_every: int,
    history: list[float],
    group: "torch.Tensor | None" = None,
    anneal_rad: float = 0.0,
) -> Generator[Progress, None, "torch.Tensor"]:
    """Adam on the quaternions ``q0`` of images ``index``; ``fixed`` (anchors) stay put.

    Pairs are (free, free) when ``fixed`` is None, else (free, random fixed).  With ``group``
    (quaternions (K, 4) of a point group in its canonical frame) the implied distance is
    ``min_g d(q_i, q_j g)``; with ``anneal_rad`` > 0 the minimum is a soft one,
    ``−τ log Σ_g exp(−d(q_i, q_j g) / τ)``, with τ falling linearly from ``anneal_rad`` to 0 over
    the first half of the steps (a smoother loss early on, the exact one after).
    """
    import torch

    q = torch.nn.Parameter(q0.clone())
    opt = torch.optim.Adam([q], lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=0.05 * learning_rate)
    n = len(index)
    running = 0.0
    for step in range(1, steps + 1):
        a = torch.randint(0, n, (pairs_per_step,), generator=gen)
        if fixed is None:
            b = (a + torch.randint(1, n, (pairs_per_step,), generator=gen)) % n
            pair_j = index[b]
        else:
            b = torch.randint(0, len(fixed[0]), (pairs_per_step,), generator=gen)
            pair_j = fixed[0][b]
        with torch.no_grad():
            target = distances(index[a], pair_j).to(torch.float64)
            weight = None if local_scale is None else torch.exp(-target / local_scale)
        unit = q / q.norm(dim=1, keepdim=True)
        other = unit[b] if fixed is None else fixed[1][b]
        tau = anneal_rad * max(0.0, 1.0 - 2.0 * step / steps)
        err = (_implied_distances(unit[a], other, group, tau) - target) ** 2
        loss = err.mean() if weight is None else (weight * err).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % log_every == 0 or step == steps:
            k = log_every if step % log_every == 0 else step % log_every
            history.append(running / k)
            running = 0.0
            yield Progress(step, steps, message, info={"loss": history[-1]})
    with torch.no_grad():
        return (q / q.norm(dim=1, keepdim=True)).detach()


def _nearest_rotations(mats: np.ndarray) -> np.ndarray:
    """Project 3×3 matrices (N, 3, 3) onto SO(3) (nearest rotation, SVD)."""
    u, _, vt = np.linalg.svd(mats)
    det = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= det[:, None]
    return u @ vt


def spectral_orientations(dist: np.ndarray, starts: int = 10, iterations: int = 40, seed: int = 0) -> np.ndarray:
    """Orientations from a full matrix of distances, without iterative descent from random starts.

    ``tr(R_iᵀ R_j) = 1 + 2 cos d_ij`` is the Gram matrix of the vectors ``vec(R_i)`` (9-D),
    so its top 9 eigenvectors give those vectors up to an orthogonal 9×9 matrix ``O``; ``O``
    is found by alternating between projecting every row onto SO(3) and orthogonal
    Procrustes, from a few random starts (the best fit wins).  Exact for exact distances
    and robust to noisy ones; used to start the Adam recovery.

    Parameters
    ----------
    dist : ndarray, shape (K, K)
        Symmetric distances in radians.

    Returns
    -------
    ndarray, float64, shape (K, 4)
        Quaternions (x, y, z, w).
    """
    from scipy.spatial.transform import Rotation

    gram = 1.0 + 2.0 * np.cos(np.asarray(dist, dtype=np.float64))
    gram = 0.5 * (gram + gram.T)
    values, vectors = np.linalg.eigh(gram)
    x = vectors[:, -9:] * np.sqrt(np.clip(values[-9:], 0.0, None))
    rng = np.random.default_rng(seed)
    best, best_res = None, np.inf
    for _ in range(max(1, starts)):
        o, _ = np.linalg.qr(rng.standard_normal((9, 9)))
        for _ in range(iterations):
            rots = _nearest_rotations((x @ o.T).reshape(-1, 3, 3))
            u, _, vt = np.linalg.svd(rots.reshape(-1, 9).T @ x)
            o = u @ vt
        res = float(np.linalg.norm(x @ o.T - rots.reshape(-1, 9)))
        if res < best_res:
            best, best_res = rots, res
    return canonical(Rotation.from_matrix(best).as_quat())


def place_by_anchors(anchor_quats: np.ndarray, dist_to_anchors: np.ndarray) -> np.ndarray:
    """Orientations of images from their distances to anchors of known orientation.

    Solves ``vec(R_a) · vec(R_i) = 1 + 2 cos d_ia`` for ``vec(R_i)`` by least squares over
    the anchors and projects the result onto SO(3).

    Parameters
    ----------
    anchor_quats : ndarray, shape (K, 4)
    dist_to_anchors : ndarray, shape (M, K)
        Distances (radians) of M images to the K anchors.

    Returns
    -------
    ndarray, shape (M, 4)
    """
    from scipy.spatial.transform import Rotation

    a = Rotation.from_quat(anchor_quats).as_matrix().reshape(-1, 9)  # (K, 9)
    rhs = 1.0 + 2.0 * np.cos(np.asarray(dist_to_anchors, dtype=np.float64))  # (M, K)
    sol, *_ = np.linalg.lstsq(a, rhs.T, rcond=None)  # (9, M)
    rots = _nearest_rotations(sol.T.reshape(-1, 3, 3))
    return canonical(Rotation.from_matrix(rots).as_quat())


def _distance_block(distances: Callable, rows, cols) -> np.ndarray:
    """Estimated distances between index tensors ``rows`` (M) and ``cols`` (K): (M, K)."""
    import torch

    out = np.empty((len(rows), len(cols)))
    step = max(1, 2_000_000 // max(1, len(cols)))
    with torch.no_grad():
        for s in range(0, len(rows), step):
            block = rows[s : s + step]
            d = distances(block[:, None].expand(-1, len(cols)).reshape(-1), cols.repeat(len(block)))
            out[s : s + step] = d.reshape(len(block), len(cols)).numpy()
    return out


def recover_orientations(
    distances: Callable,
    n_projections: int | None = None,
    initialisation: str = "spectral",
    steps: int = 1000,
    pairs_per_step: int = 20000,
    learning_rate: float = 0.01,
    n_anchors: int = 500,
    local_scale: float | None = None,
    seed: int = 0,
    log_every: int = 50,
    symmetry=None,
    starts: int | None = None,
    anneal_rad: float = 0.6,
) -> Generator[Progress, None, RecoveryResult]:
    """Optimise unit quaternions to match estimated pairwise distances (job).

    The optimisation is the paper's: Adam on all N quaternions, minimising the mean
    squared difference between estimated and implied distances over random pairs drawn
    afresh every step.  From random starts it often stalls in a local minimum when N is
    in the thousands (each quaternion sees few pairs per step), so by default
    (``initialisation="spectral"``) it starts from a closed-form estimate instead:

    1. *anchors*: ``n_anchors`` random images; the full matrix of their estimated
       distances gives their orientations by :func:`spectral_orientations`;
    2. *placement*: every other image from its distances to the anchors,
       :func:`place_by_anchors` (linear least squares);
    3. *Adam*: all quaternions together on random pairs (``steps`` steps).

    ``initialisation="random"`` runs step 3 alone from random quaternions (the paper).

    Parameters
    ----------
    distances : callable
        ``distances(i, j)`` → torch tensor of estimated distances (radians) for index
        tensors ``i``, ``j``; :class:`ExactDistances` or :class:`EmbeddingDistances`.
    n_projections : int, optional
        N; taken from ``len(distances)`` when omitted.
    initialisation : {"spectral", "random"}
    steps : int
        Adam steps.
    pairs_per_step : int
        Random pairs (i ≠ j) drawn afresh at every step.
    learning_rate : float
        Adam's initial step size (cosine decay to 5 % of it).
    n_anchors : int
        Images of the spectral start (all when N ≤ n_anchors).
    local_scale : float, optional
        Weight pairs by ``exp(−d̂_ij / local_scale)`` (radians): trust short estimated
        distances more than long ones.  None weights every pair equally (as the paper).
    seed : int
        Seed of anchors, initial quaternions and pair sampling.
    log_every : int
        Steps between Progress reports.
    symmetry : tomolens.orient.symmetry.Symmetry or str, optional
        Point group of the particle, when the distances are up to it (a network trained with
        that symmetry): Adam then fits ``min_g d(q_i, q_j g)`` with the group in its canonical
        frame (the spectral start still treats the distances as plain ones).
    starts : int, optional
        Independent runs (start and Adam; run k uses seed ``seed + k``); the one whose
        orientations fit the distances best (mean squared misfit on a fixed sample of pairs,
        with the exact minimum over the group) is kept.  Default: 3 with a symmetry (where one
        run can stall in a wrong basin: D3 from the spectral start), 1 without.
    anneal_rad : float
        With a symmetry, runs after the first start Adam on a soft minimum over the group,
        ``−τ log Σ_g exp(−d_g / τ)``, with τ falling from ``anneal_rad`` (radians) to 0 over the
        first half of the steps (a smoother loss that leaves wrong basins); the first run uses
        the exact minimum throughout, so the result never fits worse than a single plain run.

    Returns
    -------
    RecoveryResult
    """
    import torch

    n = int(n_projections if n_projections is not None else len(distances))
    if n < MIN_PROJECTIONS:
        raise ValueError(
            f"Recovery needs at least {MIN_PROJECTIONS} projections (thousands for useful accuracy); got {n}."
        )
    if initialisation not in ("spectral", "random"):
        raise ValueError(f"initialisation must be 'spectral' or 'random'; got {initialisation!r}.")
    from tomolens.orient.symmetry import as_symmetry

    sym = as_symmetry(symmetry)
    group = None if sym.name == "C1" else torch.as_tensor(as_symmetry(sym.name).quats())
    n_starts = (1 if group is None else 3) if starts is None else int(starts)
    if n_starts < 1:
        raise ValueError(f"starts must be at least 1; got {starts}.")
    per_start = steps + (2 if initialisation == "spectral" else 0)
    total = n_starts * per_start
    # the runs are compared on the same pairs, with the exact minimum over the group
    check_gen = torch.Generator().manual_seed(int(seed) + 7919)
    check_i = torch.randint(0, n, (min(200_000, 50 * n),), generator=check_gen)
    check_j = (check_i + torch.randint(1, n, check_i.shape, generator=check_gen)) % n
    with torch.no_grad():
        check_target = distances(check_i, check_j).to(torch.float64)
    best = None  # (misfit, quats, history, run)
    misfits = []
    for run in range(n_starts):
        offset = run * per_start
        gen = torch.Generator().manual_seed(int(seed) + run)
        history: list[float] = []
        start = yield from relay(
            _initial_quats(distances, n, initialisation, n_anchors, gen, int(seed) + run),
            lambda p, offset=offset: Progress(offset + p.done, total, p.message, p.info),
        )
        job = _optimise(
            distances,
            torch.arange(n),
            start,
            None,
            steps,
            pairs_per_step,
            learning_rate,
            local_scale,
            gen,
            "recovering orientations (Adam)" + (f", start {run + 1} of {n_starts}" if n_starts > 1 else ""),
            log_every,
            history,
            group,
            anneal_rad if group is not None and run > 0 else 0.0,  # the first run: the exact minimum
        )
        offset += per_start - steps
        quats = yield from relay(job, lambda p, offset=offset: Progress(offset + p.done, total, p.message, p.info))
        with torch.no_grad():
            misfit = float(((_implied_distances(quats[check_i], quats[check_j], group) - check_target) ** 2).mean())
        misfits.append(misfit)
        if best is None or misfit < best[0]:
            best = (misfit, quats, history, run)
    _, quats, history, kept = best
    settings = {
        "initialisation": initialisation,
        "steps": steps,
        "pairs_per_step": pairs_per_step,
        "learning_rate": learning_rate,
        "n_anchors": n_anchors,
        "local_scale": local_scale,
        "seed": seed,
        "symmetry": sym.name,
        "starts": n_starts,
        "anneal_rad": anneal_rad if group is not None else 0.0,
        "misfits": misfits,
        "kept_run": kept,
    }
    log.info(
        "recovery finished, misfit %.3g rad² (run %d of %d; all: %s)",
        misfits[kept],
        kept + 1,
        n_starts,
        ", ".join(f"{m:.3g}" for m in misfits),
    )
    return RecoveryResult(canonical(quats.numpy()), history, settings)


def _initial_quats(
    distances: Callable, n: int, initialisation: str, n_anchors: int, gen: "torch.Generator", seed: int
) -> Generator[Progress, None, "torch.Tensor"]:
    """Starting quaternions (job): random, or spectral from anchors and placement of the others."""
    import torch

    if initialisation == "random":
        return torch.randn(n, 4, generator=gen, dtype=torch.float64)
    n_anchor = min(n, int(n_anchors))
    perm = torch.randperm(n, generator=gen)
    anchors, others = perm[:n_anchor], perm[n_anchor:]
    yield Progress(0, 2, f"spectral start from {n_anchor} anchors")
    anchor_q = spectral_orientations(_distance_block(distances, anchors, anchors), seed=seed)
    quats = np.empty((n, 4))
    quats[anchors.numpy()] = anchor_q
    yield Progress(1, 2, "placing images by their distances to the anchors")
    if len(others):
        quats[others.numpy()] = place_by_anchors(anchor_q, _distance_block(distances, others, anchors))
    return torch.as_tensor(quats)
