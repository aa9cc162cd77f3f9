"""The "Tomogram" dock widget: file facts, voxel size, contrast polarity, display filter, binning.

The **contrast** line shows the polarity measured from the data (:mod:`tomolens.polarity`),
measured in a worker whenever another tomogram is chosen: what the models' ``auto``
polarity will decide.  The **display filter** helps a person see particles in a raw,
noisy tomogram without changing the data: *slab mean* averages N slices around the current
one in the view (napari's mean projection over a thick slice of the same layer); *Gaussian
low-pass* adds a smoothed copy as a separate layer (``<name> display σ=…Å``, marked
``display_only`` in its metadata) — analyses keep using the original layer.
"""

from __future__ import annotations

import napari
import numpy as np
from collections.abc import Generator

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._napari.layers import ANGSTROM, voxel_size_from_layer
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._runner import JobRunner
from tomolens.io.mrc import contrast_limits
from tomolens.jobs import Progress
from tomolens.polarity import PolarityEstimate, estimate_polarity
from tomolens.preprocess import bin_volume

#: Display filters offered by the widget.
DISPLAY_FILTERS = ("none", "slab mean", "Gaussian low-pass")


def measure_polarity(data, voxel_size_A: float | None) -> Generator[Progress, None, PolarityEstimate]:
    """The polarity estimate of ``data`` as a job (for a worker thread)."""
    yield Progress(0, 1, "measuring the contrast polarity")
    estimate = estimate_polarity(data, voxel_size_A)
    yield Progress(1, 1, "contrast measured")
    return estimate


def describe_polarity(estimate: PolarityEstimate) -> str:
    """One line for the Tomogram widget."""
    stat = estimate.statistic
    if estimate.polarity is None:
        return f"contrast: undecided ({stat}; {estimate.why_undecided}); models assume their own — set the polarity if needed"
    meaning = "dense matter dark, raw cryo-ET" if estimate.polarity == "dark" else "dense matter bright, inverted"
    return f"contrast: {estimate.polarity} ({meaning}; {stat}); models with polarity 'auto' use this"


def low_pass(data, sigma_voxels: float) -> Generator[Progress, None, np.ndarray]:
    """Gaussian low-pass copy of a volume (float32) as a job, slab by slab along z."""
    from scipy import ndimage

    data = np.asarray(data, np.float32)
    yield Progress(0, 2, f"Gaussian low-pass, σ = {sigma_voxels:.2g} voxels")
    out = ndimage.gaussian_filter(data, sigma_voxels)
    yield Progress(2, 2, "filtered")
    return out


#: What the voxel-size box shows while the voxel size is unknown (its value 0).
UNKNOWN_VOXEL_SIZE = "unknown"


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
            value=0.0,
            min=0.0,
            max=1000.0,
            step=0.1,
            label="voxel size (Å)",
            tooltip="Voxel size in Å, for files whose header does not say (0 or 1); 'unknown' until you type it.",
        )
        # 0 = unknown: shown as "unknown", never as a made-up value that 'Set voxel size' would apply
        self.voxel_size.native.setSpecialValueText(UNKNOWN_VOXEL_SIZE)
        self.apply_voxel = PushButton(text="Set voxel size", tooltip="Scale the layer to this voxel size (Å)")
        self.bin_factor = ComboBox(
            choices=[2, 4], value=2, label="bin by", tooltip="Average 2×2×2 or 4×4×4 voxels into one."
        )
        self.runner = JobRunner("Bin", title="Binning")
        self.contrast = Label(value="contrast: not measured")
        self.contrast.native.setWordWrap(True)
        self.contrast_runner = JobRunner("Measure contrast", title="Contrast measurement")
        self.display_filter = ComboBox(
            choices=DISPLAY_FILTERS,
            value="none",
            label="display filter",
            tooltip="See particles in a raw tomogram without changing the data: slab mean = average N slices "
            "around the current one in the view; Gaussian low-pass = a smoothed copy as a new layer.",
        )
        self.slab_slices = SpinBox(
            value=9,
            min=1,
            max=201,
            label="slab slices",
            tooltip="Slices averaged by the slab mean (odd numbers centre the slab).",
        )
        self.sigma_A = FloatSpinBox(
            value=20.0,
            min=1.0,
            max=500.0,
            step=5.0,
            label="low-pass σ (Å)",
            tooltip="Gaussian σ of the low-pass display copy, Å.",
        )
        self.apply_display = PushButton(
            text="Apply display filter", tooltip="Apply the display filter to the chosen tomogram"
        )
        self.filter_runner = JobRunner("Low-pass copy", title="Display filter")
        self.filter_runner.run_button.visible = False
        super().__init__(
            widgets=[
                self.layer_picker,
                self.info,
                self.voxel_size,
                self.apply_voxel,
                self.contrast,
                self.contrast_runner,
                self.display_filter,
                self.slab_slices,
                self.sigma_A,
                self.apply_display,
                self.filter_runner,
                self.bin_factor,
                self.runner,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.layer_picker.changed.connect(self._refresh)
        self.layer_picker.changed.connect(self.start_contrast)
        self.apply_voxel.changed.connect(self.set_voxel_size)
        self.runner.run_button.changed.connect(self.start_binning)
        self.contrast_runner.run_button.changed.connect(self.start_contrast)
        self.apply_display.changed.connect(self.apply_display_filter)
        self.estimate: PolarityEstimate | None = None
        self._refresh()

    def _refresh(self, *_) -> None:
        layer = self.layer_picker.value
        self.info.value = describe_layer(layer)
        if layer is not None:
            vs = voxel_size_from_layer(layer.scale, layer.units)
            self.voxel_size.value = float(vs[-1]) if vs else 0.0

    def set_voxel_size(self, *_) -> None:
        """Apply the voxel size to the selected layer and to layers of the same shape."""
        layer = self.layer_picker.value
        if layer is None:
            show_warning("Choose a tomogram layer first.")
            return
        vs = float(self.voxel_size.value)
        if vs <= 0:
            show_warning("Type the voxel size in Å in the 'voxel size (Å)' box first (it is unknown).")
            return
        targets = [
            other
            for other in self.viewer.layers
            if other is layer
            or (getattr(other.data, "shape", None) == layer.data.shape)
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

        spec = {"name": f"{name} bin{factor}", "scale": tuple(s * factor for s in scale), "units": units}
        # the layer (with its contrast limits) is built in the worker; the GUI thread only places it
        self.runner.start(
            bin_volume(data, factor),
            lambda layer: place_layer(self.viewer, layer),
            prepare=lambda binned: build_layer(binned, spec, "image"),
        )

    def reset_choices(self, *args) -> None:
        """Refresh the layer choices (napari calls this when layers change); measure a newly chosen tomogram."""
        super().reset_choices(*args)
        layer = self.layer_picker.value
        if layer is not None and layer is not getattr(self, "_measured_layer", None):
            self._refresh()
            self.start_contrast()

    # ------------------------------------------------------------- contrast
    def start_contrast(self, *_) -> None:
        """Measure the chosen tomogram's contrast polarity in a worker."""
        layer = self.layer_picker.value
        if layer is None or layer.ndim != 3 or self.contrast_runner.running:
            return
        self._measured_layer = layer
        vs = voxel_size_from_layer(layer.scale, layer.units)
        self.contrast.value = "contrast: measuring…"

        def shown(estimate: PolarityEstimate) -> None:
            layer.metadata["polarity_estimate"] = {
                "polarity": estimate.polarity,
                "skewness": estimate.skewness,
                "standard_error": estimate.standard_error,
            }
            if self.layer_picker.value is not layer:
                return  # another tomogram was chosen meanwhile: its own measurement follows
            self.estimate = estimate
            self.contrast.value = describe_polarity(estimate)
            show_info(f"{layer.name}: {self.contrast.value}")

        def finished() -> None:
            if self.layer_picker.value is not None and self.layer_picker.value is not layer:
                self.start_contrast()  # chosen while this one was measured

        self.contrast_runner.start(measure_polarity(layer.data, vs[-1] if vs else None), shown, on_finish=finished)

    # ------------------------------------------------------- display filter
    def apply_display_filter(self, *_) -> None:
        """Apply the chosen display filter (the layer's data are never changed)."""
        layer = self.layer_picker.value
        if layer is None:
            show_warning("Choose a tomogram layer first.")
            return
        choice = self.display_filter.value
        if choice in ("none", "slab mean"):
            slices = int(self.slab_slices.value) if choice == "slab mean" else 1
            layer.projection_mode = "mean" if slices > 1 else "none"
            axis = self.viewer.dims.not_displayed[0] if self.viewer.dims.not_displayed else 0
            thickness = list(self.viewer.dims.thickness)
            thickness[axis] = slices * float(layer.scale[axis])
            self.viewer.dims.thickness = tuple(thickness)
            show_info(f"{layer.name}: " + (f"showing the mean of {slices} slices" if slices > 1 else "one slice"))
            return
        if layer.ndim != 3:
            show_warning(f"The low-pass display copy needs a 3D tomogram; {layer.name!r} has {layer.ndim} dimensions.")
            return
        vs = voxel_size_from_layer(layer.scale, layer.units)
        sigma = float(self.sigma_A.value) / (vs[-1] if vs else 10.0)
        data, name, scale, units = layer.data, layer.name, tuple(layer.scale), layer.units
        key = f"{name} display σ={self.sigma_A.value:g}Å"

        spec = {"name": key, "scale": scale, "units": units, "metadata": {"display_only": True, "source_layer": name}}
        # built in the worker; an earlier copy of the same name gets the new data in place
        self.filter_runner.start(
            low_pass(data, sigma),
            lambda layer: place_layer(self.viewer, layer),
            prepare=lambda filtered: build_layer(filtered, spec, "image"),
        )
