"""File ▸ Open Sample: the committed files of ``sample_data/`` (made by its own script).

``sample_data/make_sample_data.py`` regenerates them bit for bit from the simulator: a
dark-contrast crowded tomogram (64 × 256 × 256, 10 Å) with membranes and filaments, its
labels, and its particles as RELION 5 STAR, Dynamo table and copick project.  They live
at the top of the source tree (beside ``src/``), so they are there in a clone or an
editable install; a plain wheel has the generated sample only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tomolens._napari.layers import class_colormap, volume_layer_data
from tomolens._napari.pick_layers import pick_layers

SAMPLE_NAME = "crowded_dark"


def sample_data_dir() -> Path:
    """The ``sample_data/`` folder of the source tree.

    Raises
    ------
    FileNotFoundError
        When tomolens runs from a wheel without the source tree.
    """
    folder = Path(__file__).resolve().parents[3] / "sample_data"
    if not (folder / f"{SAMPLE_NAME}.mrc").is_file():
        raise FileNotFoundError(
            f"The sample files are not at {folder} (they come with the source tree, not the wheel). "
            "Clone napari-tomolens and run `python sample_data/make_sample_data.py`, or open the "
            "generated sample 'Crowded tomogram with ground truth'."
        )
    return folder


def dark_sample() -> list[tuple[Any, dict, str]]:
    """The dark-contrast sample tomogram, its labels and its RELION 5 picks (with orientations)."""
    from tomolens.io.coords import read_coordinates
    from tomolens.io.mrc import read_mrc

    folder = sample_data_dir()
    tomogram = volume_layer_data(read_mrc(folder / f"{SAMPLE_NAME}.mrc"))
    labels_data, labels_kwargs, _ = volume_layer_data(read_mrc(folder / f"{SAMPLE_NAME}_labels.mrc"))
    names = [line.split(maxsplit=1)[1] for line in (folder / "labels.txt").read_text().splitlines()]
    labels_kwargs.update(
        opacity=0.4,
        visible=False,
        colormap=class_colormap(len(names)),
        metadata={**labels_kwargs["metadata"], "class_names": names},
    )
    picks = read_coordinates(folder / f"{SAMPLE_NAME}_particles.star")
    return [
        tomogram,
        (labels_data, labels_kwargs, "labels"),
        *pick_layers(picks, f"{SAMPLE_NAME} particles", f"{SAMPLE_NAME}_particles.star"),
    ]


def dark_sample_copick() -> list[tuple[Any, dict, str]]:
    """The sample's copick project: its picks per object (user tomolens, session 0)."""
    from tomolens._napari.format_layers import copick_run_layers

    return copick_run_layers(sample_data_dir() / "copick" / "copick_config.json", SAMPLE_NAME, 10.0)
