"""The "Picks and copick" dock widget: multi-tomogram pick files and copick projects.

- **Pick file**: open a STAR/Dynamo/CSV/TXT/IMOD file either as one Points layer per
  tomogram, or only the rows of the chosen tomogram layer (matched to ``rlnTomoName``).
- **copick**: choose a project config, a run, a voxel spacing and an object from the
  project's list; open the run (tomogram, picks, segmentations) or save the selected Points
  layer as picks of that object (with the user and session), or a Labels layer as a
  segmentation.
"""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, create_widget
from napari.utils.notifications import show_error, show_info

from tomolens._napari.format_layers import copick_run_layers
from tomolens._napari.layers import table_from_points, voxel_size_from_layer
from tomolens._napari.pick_layers import pick_layers, tomogram_pick_layers
from tomolens._widgets._docking import tabify_when_docked

PER_TOMOGRAM = "one layer per tomogram"
ONE_TOMOGRAM = "only the chosen tomogram's rows"


def _layer_path(layer) -> str:
    return layer.metadata.get("path") or (layer.source.path or "") or layer.name


class PicksWidget(Container):
    """Open pick files tomogram by tomogram, and read/write copick projects."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.pick_file = FileEdit(
            label="pick file",
            mode="r",
            filter="*.star *.tbl *.csv *.txt *.coords *.mod",
            tooltip="RELION STAR, Dynamo table, CSV, TXT or IMOD model",
        )
        self.mode = ComboBox(
            label="tomograms",
            choices=[PER_TOMOGRAM, ONE_TOMOGRAM],
            value=PER_TOMOGRAM,
            tooltip="A file may list the picks of many tomograms (rlnTomoName): open each as "
            "its own layer, or only those of the tomogram chosen below.",
        )
        self.tomogram = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.tomogram.tooltip = "The open tomogram whose picks to keep (its name or file name is matched)."
        self.open_file = PushButton(text="Open picks", tooltip="Read the pick file into Points layers")
        self.config = FileEdit(
            label="copick config",
            mode="r",
            filter="*.json",
            tooltip="The project's copick_config.json (local filesystem project)",
        )
        self._root = None
        # choices are functions of the open project, so napari's reset_choices keeps them
        self.run = ComboBox(label="run", choices=self._run_choices, tooltip="The copick run to open or write")
        self.spacing = ComboBox(
            label="voxel spacing (Å)", choices=self._spacing_choices, tooltip="The run's voxel spacings"
        )
        self.object = ComboBox(
            label="object", choices=self._object_choices, tooltip="Pickable object from the project's list"
        )
        self.user = LineEdit(label="user", value="tomolens", tooltip="copick user id of written picks")
        self.session = LineEdit(label="session", value="0", tooltip="copick session id of written picks")
        self.open_run = PushButton(text="Open run", tooltip="Tomogram, picks and segmentations of the run")
        self.save_picks = PushButton(
            text="Save selected Points as picks",
            tooltip="Store the selected Points layer as picks of the chosen object",
        )
        self.save_seg = PushButton(
            text="Save selected Labels as segmentation",
            tooltip="Store the selected Labels layer as a multilabel segmentation",
        )
        super().__init__(
            widgets=[
                self.pick_file,
                self.mode,
                self.tomogram,
                self.open_file,
                self.config,
                self.run,
                self.spacing,
                self.object,
                self.user,
                self.session,
                self.open_run,
                self.save_picks,
                self.save_seg,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.open_file.changed.connect(self.open_picks)
        self.config.changed.connect(self.load_project)
        self.run.changed.connect(self._refresh_spacings)
        self.open_run.changed.connect(self.open_copick_run)
        self.save_picks.changed.connect(self.save_copick_picks)
        self.save_seg.changed.connect(self.save_copick_segmentation)

    def _run_choices(self, *_) -> list[str]:
        return [r.name for r in self._root.runs] if self._root is not None else []

    def _spacing_choices(self, *_) -> list[float]:
        run = self._root.get_run(self.run.value) if self._root is not None and self.run.value else None
        return sorted(v.voxel_size for v in run.voxel_spacings) if run is not None else []

    def _object_choices(self, *_) -> list[str]:
        from tomolens.io.copick_io import project_objects

        return [o.name for o in project_objects(self._root)] if self._root is not None else []

    def _add(self, layers) -> None:
        for data, kwargs, kind in layers:
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def open_picks(self, *_) -> None:
        """Open the pick file per tomogram, or only the chosen tomogram's rows."""
        from tomolens.io.picks import read_picks

        from tomolens.io.star_tomo import is_centred_star

        path = Path(str(self.pick_file.value))
        layer = self.tomogram.value if self.mode.value == ONE_TOMOGRAM else None
        try:
            if layer is not None and is_centred_star(path):
                # RELION 5 Å from the tomogram's centre: the chosen tomogram gives size and voxel size
                vs = voxel_size_from_layer(layer.scale, layer.units)
                table = read_picks(path, vs[-1] if vs else None, tuple(layer.data.shape[-3:]))
            else:
                table = read_picks(path)
            if self.mode.value == PER_TOMOGRAM:
                layers = pick_layers(table, path.stem, path.name)
            else:
                layers = tomogram_pick_layers(table, _layer_path(layer) if layer else None, path.stem, path.name)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        self._add(layers)

    def load_project(self, *_) -> None:
        """Read the config and fill the run and object lists."""
        from tomolens.io.copick_io import open_project

        try:
            self._root = open_project(Path(str(self.config.value)))
        except (ValueError, OSError, ImportError) as err:
            self._root = None
            show_error(str(err))
        self.run.reset_choices()
        self.object.reset_choices()
        self._refresh_spacings()

    def _refresh_spacings(self, *_) -> None:
        self.spacing.reset_choices()

    def open_copick_run(self, *_) -> None:
        """Add the chosen run's tomogram (at the chosen spacing), picks and segmentations."""
        if self._root is None or not self.run.value:
            show_error("Choose a copick config with at least one run first.")
            return
        try:
            self._add(copick_run_layers(Path(str(self.config.value)), self.run.value, self.spacing.value))
        except (ValueError, OSError) as err:
            show_error(str(err))

    def _selected(self, kind):
        layer = self.viewer.layers.selection.active
        return layer if isinstance(layer, kind) else None

    def save_copick_picks(self, *_) -> None:
        """Store the selected Points layer as picks of the chosen object, user and session."""
        from tomolens.io.copick_io import write_copick_picks

        layer = self._selected(napari.layers.Points)
        if layer is None or self._root is None or not self.run.value or not self.object.value:
            show_error("Select a Points layer, and choose a copick config, run and object first.")
            return
        table = table_from_points(
            layer.data,
            {"features": layer.features, "scale": layer.scale, "units": layer.units, "metadata": layer.metadata},
        )
        try:
            write_copick_picks(
                self._root, self.run.value, self.object.value, table, self.user.value, self.session.value
            )
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        show_info(
            f"Saved {len(table)} {self.object.value} picks to run {self.run.value} "
            f"({self.user.value}/{self.session.value})."
        )

    def save_copick_segmentation(self, *_) -> None:
        """Store the selected Labels layer as a multilabel segmentation of the run."""
        from tomolens.io.copick_io import copick_name, write_copick_segmentation

        layer = self._selected(napari.layers.Labels)
        vs = voxel_size_from_layer(layer.scale, layer.units) if layer is not None else None
        if layer is None or self._root is None or not self.run.value or not vs:
            show_error("Select a Labels layer with a voxel size in Å, and choose a copick config and run first.")
            return
        try:
            write_copick_segmentation(
                self._root,
                self.run.value,
                copick_name(layer.name),
                layer.data,
                vs[-1],
                self.user.value,
                self.session.value,
            )
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        show_info(f"Saved {layer.name} as a segmentation of run {self.run.value} at {vs[-1]:g} Å.")
