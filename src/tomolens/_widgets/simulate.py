"""The "Simulate" dock widget: a crowded tomogram with its ground truth as layers."""

from __future__ import annotations

from collections.abc import Iterator

import napari
from magicgui.widgets import Container, Label
from napari.utils.notifications import show_error, show_info

from tomolens._napari.layers import show_layer_particles
from tomolens._napari.sample import simulation_layers
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._layers import build_layer
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._runner import JobRunner
from tomolens.simulate.cli import PARAMS, config_from_values
from tomolens.simulate.tomogram import simulate_tomogram


class SimulateWidget(Container):
    """Simulate a tomogram (settings shared with ``tomolens simulate``) and add the
    tomogram Image, semantic and instance Labels and particle Points at its scale."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.panel = ParamPanel(PARAMS)
        self.summary = Label(value="")
        self.runner = JobRunner("Simulate", title="Simulation")
        self.last_result = None
        super().__init__(widgets=[self.panel, self.runner, self.summary])
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.runner.run_button.changed.connect(self.start)

    def start(self, *_) -> None:
        """Check the settings and run the simulation in a worker thread."""
        try:
            cfg = config_from_values(self.panel.values())
            cfg.check()
        except ValueError as err:  # shown to the user, not swallowed
            show_error(f"Simulation settings: {err}")
            return
        n_runs = sum(1 for layer in self.viewer.layers if layer.name.startswith("simulated"))
        prefix = "simulated" if n_runs == 0 else f"simulated {n_runs // 4 + 1}"
        self.runner.start(
            simulate_tomogram(cfg),
            self._add_layers,
            prepare=lambda sim: (sim, [build_layer(*spec) for spec in simulation_layers(sim, prefix=prefix)]),
        )

    def _add_layers(self, prepared: tuple) -> Iterator[None]:
        """Add the simulation's layers (built in the worker) one per event-loop turn (the runner advances this)."""
        sim, layers = prepared
        self.last_result = sim
        for layer in layers:
            self.viewer.layers.append(layer)
            yield
            if isinstance(layer, napari.layers.Points):
                show_layer_particles(self.viewer, layer)
                yield
        text = (
            f"{len(sim.particles)} particles, volume fraction {sim.volume_fraction:.3f}, "
            f"SNR {sim.measured_snr:.3g} (on the {sim.snr_domain})"
        )
        self.summary.value = text
        show_info(f"Simulated: {text}")
