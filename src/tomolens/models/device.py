"""Device choice for torch: CUDA → MPS → CPU, and CPU thread count."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def choose_device(requested: str = "auto") -> str:
    """Return ``"cuda"``, ``"mps"`` or ``"cpu"``.

    ``"auto"`` picks the first available of CUDA, MPS, CPU; an explicit request for an
    unavailable device raises ``ValueError`` saying which devices exist.
    """
    import torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.insert(len(available) - 1, "mps")
    if requested == "auto":
        return available[0]
    if requested not in available:
        raise ValueError(f"Device {requested!r} is not available here; available: {available}.")
    return requested


def set_cpu_threads(leave_free: int = 1) -> int:
    """Use all cores but ``leave_free`` (at least 1) for torch; returns the count."""
    import torch

    n = max(1, (os.cpu_count() or 1) - leave_free)
    torch.set_num_threads(n)
    return n


def prepare_device(requested: str = "auto", threads: int = 0) -> str:
    """Choose the device and set torch's CPU threads for a training or inference run.

    Parameters
    ----------
    requested : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"`` (see :func:`choose_device`).
    threads : int
        CPU threads for torch; 0 = all cores but one when running on the CPU.

    Returns
    -------
    str
        The chosen device.
    """
    import torch

    device = choose_device(requested)
    if threads:
        torch.set_num_threads(threads)
    elif device == "cpu":
        set_cpu_threads()
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX), as torch reports them.

    Training on such a CPU may run its forward passes in bfloat16 (``cpu_precision`` "auto", see
    :class:`tomolens.models.training.TrainConfig`).  oneDNN's own check is not used: it also
    accepts AVX-512 CPUs without these instructions, where bfloat16 is emulated and slower than
    float32.  False when torch cannot tell (other architectures, older torch).
    """
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError as err:
        log.debug("could not ask torch for bfloat16 support: %s", err)
        return False
