"""Packaging: the manifest, light imports, the CLI entry point."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((ROOT / "napari.yaml").read_text())
CORE_PACKAGES = [
    "tomolens",
    "tomolens.io",
    "tomolens.jobs",
    "tomolens.params",
    "tomolens.cli",
    "tomolens.models",
    "tomolens.preprocess",
    "tomolens.simulate",
    "tomolens.detect",
    "tomolens.segment",
    "tomolens.classify",
    "tomolens.cluster",
    "tomolens.orient",
    "tomolens.evaluate",
    "tomolens.batch",
]


@pytest.mark.parametrize("command", MANIFEST["contributions"]["commands"], ids=lambda c: c["id"])
def test_every_manifest_python_name_imports(command):
    module_name, _, attr = command["python_name"].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))


def test_manifest_is_shipped_inside_the_package():
    import tomolens

    shipped = Path(tomolens.__file__).parent / "napari.yaml"
    assert shipped.read_text() == (ROOT / "napari.yaml").read_text()


def test_npe2_finds_and_validates_the_plugin():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("napari-tomolens")
    assert mf.contributions.readers and mf.contributions.writers and mf.contributions.widgets


def _loaded_modules(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", CORE_PACKAGES)
def test_core_imports_no_napari_or_qt(module):
    loaded = _loaded_modules(module)
    heavy = {
        m for m in loaded if m.split(".")[0] in {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"}
    }
    assert not heavy, f"{module} imports {sorted(heavy)[:5]}"


def test_import_tomolens_loads_no_torch():
    loaded = _loaded_modules("tomolens")
    assert "torch" not in loaded and "napari" not in loaded


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "tomolens.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "info" in out.stdout and "convert-coords" in out.stdout


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run([str(npe2), "validate", "napari-tomolens"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


@pytest.mark.parametrize("command", ["segment", "train"])
def test_cli_command_help_has_no_docstring_markup(command, capsys):
    """``tomolens COMMAND -h`` speaks to users: no reST markup or 'CLI:' left over from a module docstring."""
    from tomolens.cli import main

    with pytest.raises(SystemExit):
        main([command, "-h"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert "``" not in description and not description.startswith("CLI:")
    if command == "segment":
        assert "STEM_labels.mrc" in description
