"""The "Tomogram" dock widget: file facts, voxel size, binning."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._napari.layers import ANGSTROM, voxel_size_from_layer
from tomolens._widgets._runner import JobRunner
from tomolens.io.mrc import contrast_limits
from tomolens.preprocess import bin_volume


def describe_layer(layer) -> str:
    """A few lines on the layer's file, shape, voxel size, dtype and value range."""
    if layer is None:
        return "No image layer selected."
    data = layer.data
    vs = voxel_size_from_layer(layer.scale, layer.units)
    lo, hi = contrast_limits(data) if isinstance(layer, napari.layers.Image) else (data.min(), data.max())
    path = layer.metadata.get("path") or (layer.source.path if layer.source.path else "(not from a file)")
    vs_text = " × ".join(f"{v:g}" for v in vs) + " Å (z, y, x)" if vs else "unknown — set it below"
    return (
        f"file: {path}\nshape (z, y, x): {tuple(data.shape)}\nvoxel size: {vs_text}\n"
        f"dtype: {data.dtype}\nvalue range (sampled): {lo:.4g} … {hi:.4g}"
    )


class TomogramWidget(Container):
    """Show a tomogram's facts, set its voxel size, bin it by 2 or 4 into a new layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.layer_picker = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.layer_picker.tooltip = "The tomogram to describe, rescale or bin."
        self.info = Label(value="")
        self.voxel_size = FloatSpinBox(
            value=10.0, min=0.01, max=1000.0, step=0.1, label="voxel size (Å)",
            tooltip="Voxel size in Å, for files whose header does not say (0 or 1).",
        )
        self.apply_voxel = PushButton(text="Set voxel size", tooltip="Scale the layer to this voxel size (Å)")
        self.bin_factor = ComboBox(choices=[2, 4], value=2, label="bin by",
                                   tooltip="Average 2×2×2 or 4×4×4 voxels into one.")
        self.runner = JobRunner("Bin", title="Binning")
        super().__init__(widgets=[self.layer_picker, self.info, self.voxel_size, self.apply_voxel,
                                  self.bin_factor, self.runner])
        self.layer_picker.changed.connect(self._refresh)
        self.apply_voxel.changed.connect(self.set_voxel_size)
        self.runner.run_button.changed.connect(self.start_binning)
        self._refresh()

    def _refresh(self, *_) -> None:
        layer = self.layer_picker.value
        self.info.value = describe_layer(layer)
        if layer is not None:
            vs = voxel_size_from_layer(layer.scale, layer.units)
            if vs:
                self.voxel_size.value = float(vs[-1])

    def set_voxel_size(self, *_) -> None:
        """Apply the voxel size to the selected layer and to layers of the same shape."""
        layer = self.layer_picker.value
        if layer is None:
            show_warning("Choose a tomogram layer first.")
            return
        vs = float(self.voxel_size.value)
        targets = [
            other for other in self.viewer.layers
            if other is layer or (getattr(other.data, "shape", None) == layer.data.shape)
            or (isinstance(other, napari.layers.Points) and other.ndim == layer.ndim)
        ]
        for target in targets:
            target.scale = (vs,) * target.ndim
            target.units = (ANGSTROM,) * target.ndim
            target.metadata["voxel_size_known"] = True
        show_info(f"Voxel size set to {vs:g} Å on {', '.join(t.name for t in targets)}.")
        self._refresh()

    def start_binning(self, *_) -> None:
        layer = self.layer_picker.value
        if layer is None:
            show_warning("Choose a tomogram layer to bin.")
            return
        if layer.ndim != 3:
            show_warning(f"Binning needs a 3D tomogram; {layer.name!r} has {layer.ndim} dimensions.")
            return
        factor = int(self.bin_factor.value)
        data, scale, units, name = layer.data, tuple(layer.scale), layer.units, layer.name

        def add_result(binned: np.ndarray) -> None:
            self.viewer.add_image(
                binned, name=f"{name} bin{factor}", scale=tuple(s * factor for s in scale),
                units=units, contrast_limits=contrast_limits(binned),
            )

        self.runner.start(bin_volume(data, factor), add_result)
