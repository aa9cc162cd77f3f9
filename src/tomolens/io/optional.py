"""Optional file-format libraries (the ``formats`` extra), imported only when needed."""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

#: Module name → the package to install (pip name), for the error message.
PACKAGES = {
    "copick": "copick",
    "zarr": "zarr",
    "ome_zarr": "ome-zarr",
    "imodmodel": "imodmodel",
    "dynamotable": "dynamotable",
    "tifffile": "tifffile",
}


class MissingFormatLibrary(ImportError, RuntimeError):
    """A file format needs a library of the ``formats`` extra that is not installed."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingFormatLibrary` saying what to install.

    Parameters
    ----------
    module : str
        Importable module name (``"dynamotable"``).
    what : str
        What the library is for, for the message (``"Dynamo tables"``).
    """
    if module in sys.modules:
        return sys.modules[module]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = PACKAGES.get(module, module)
        raise MissingFormatLibrary(
            f"Reading and writing {what} needs the {package!r} package: "
            f"pip install 'napari-tomolens[formats]' (or pip install {package})."
        ) from err
    finally:
        # copick's import reconfigures the root logger (basicConfig(force=True) with its own
        # handler at INFO); give the application its logging back
        root.handlers[:] = handlers
        root.setLevel(level)
