"""Run malformed inputs through napari's read path in a separate process with a memory ceiling.

Usage: ``python fuzz_runner.py FOLDER RESULT.json [SECONDS_PER_CASE] [HEADROOM_MIB]``.  Each file of
FOLDER is read with ``npe2.read`` (as napari does) and every layer it returns is built and added to a
headless ``ViewerModel`` (sliced as napari would show it), under a SIGALRM time limit per case; the
address space is capped at the size after imports plus HEADROOM_MIB, so an allocation bomb fails
with MemoryError instead of swapping.  The case being run is written to RESULT.json.current first,
so a hard crash names it.  Outcomes per file: ``read``, ``refused`` (an expected error naming the
file), or a problem (``crash``, ``unnamed``, ``timeout``, ``unshowable``).
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

#: Errors a reader may raise for bad input (the message must name the file).
REFUSALS = (
    "MrcReadError",
    "CoordinateFileError",
    "ValueError",
    "FileNotFoundError",
    "IsADirectoryError",
    "OSError",
    "PermissionError",
)


class CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout


def _showable(layer) -> str:
    """Why napari could not show the layer ('' when it can)."""
    scale = np.asarray(layer.scale, float)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        return f"scale {scale.tolist()}"
    if layer._type_string in ("image", "labels") and 0 in layer.data.shape:
        return f"empty data {layer.data.shape}"
    if hasattr(layer, "contrast_limits") and layer._type_string == "image":
        low, high = layer.contrast_limits
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            return f"contrast limits {(low, high)}"
    if layer._type_string == "points" and not np.all(np.isfinite(layer.data)):
        return "non-finite point coordinates"
    return ""


def run(folder: Path, result_path: Path, seconds: float, headroom_mib: int) -> None:
    import napari.layers
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    viewer = ViewerModel()
    with open("/proc/self/status") as fh:
        vm_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    ceiling = vm_kib * 1024 + headroom_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    signal.signal(signal.SIGALRM, _on_alarm)
    results = []
    current = result_path.with_suffix(".current")
    for path in sorted(folder.iterdir()):
        current.write_text(path.name)
        outcome, detail = "read", ""
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                layer_data = npe2.read([str(path)], stack=False, plugin_name="napari-tomolens")
                for data, meta, kind in layer_data:
                    layer = napari.layers.Layer.create(data, meta, kind)
                    viewer.layers.append(layer)  # napari slices it and computes its thumbnail
                    why = _showable(layer)
                    viewer.layers.clear()
                    if why:
                        outcome, detail = "unshowable", why
                # numpy's overflow / invalid value / divide warnings (napari's own advice is not a problem)
                runtime = [
                    str(w.message)
                    for w in caught
                    if issubclass(w.category, RuntimeWarning) and "encountered" in str(w.message)
                ]
                if runtime and outcome == "read":
                    outcome, detail = "unshowable", "RuntimeWarning: " + runtime[0]
        except CaseTimeout:
            outcome, detail = "timeout", f"over {seconds} s"
        except Exception as err:  # classify every failure; nothing may escape unclassified
            name = type(err).__name__
            message = str(err)
            if name not in REFUSALS:
                outcome = "crash"
            elif path.name not in message:
                outcome = "unnamed"
            else:
                outcome = "refused"
            detail = f"{name}: {message}"[:300]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            viewer.layers.clear()
        results.append(
            {"file": path.name, "outcome": outcome, "detail": detail, "seconds": round(time.perf_counter() - t0, 4)}
        )
    current.unlink(missing_ok=True)
    result_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    run(
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        float(sys.argv[3]) if len(sys.argv) > 3 else 10.0,
        int(sys.argv[4]) if len(sys.argv) > 4 else 1024,
    )
