"""Optional format libraries: a clear message when missing; copick leaves our logging alone."""

import subprocess
import sys

import pytest

from tomolens.io.optional import MissingFormatLibrary, require


def test_missing_library_says_what_to_install():
    with pytest.raises(MissingFormatLibrary, match=r"pip install 'napari-tomolens\[formats\]'"):
        require("tomolens_no_such_module", "imaginary tables")


def test_importing_copick_keeps_the_root_logger_as_it_was():
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING, stream=sys.stdout);"
        "before = list(logging.getLogger().handlers);"
        "from tomolens.io.optional import require; require('copick', 'copick projects');"
        "root = logging.getLogger(); print(root.handlers == before, root.level == logging.WARNING)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_core_import_needs_no_format_library():
    code = (
        "import tomolens.io.picks, tomolens.io.zarr_io, tomolens.io.copick_io, sys; "
        "print(sorted(m for m in ('copick', 'zarr', 'dynamotable', 'imodmodel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
