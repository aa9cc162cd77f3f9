"""JobRunner: a result handler that is a generator runs one step per event-loop turn (issue 22)."""

import time

from tomolens._widgets._runner import JobRunner
from tomolens.jobs import Progress


def _job(value):
    yield Progress(1, 1, "done")
    return value


def test_staged_result_runs_one_step_per_event_loop_turn(qtbot, qapp):
    runner = JobRunner("Run")
    steps, ticks = [], []

    def show(result):
        for k in range(3):
            steps.append((k, len(ticks)))
            time.sleep(0.05)
            yield

    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    runner.start(_job(42), show)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    timer.stop()
    assert [k for k, _ in steps] == [0, 1, 2]
    # the GUI ran between the steps: the 1 ms timer ticked after each step
    assert steps[0][1] < steps[1][1] < steps[2][1]
    assert runner.run_button.enabled and runner.status.value == "Done"


def test_staged_result_error_is_reported_and_the_runner_finishes(qtbot, qapp, monkeypatch):
    import tomolens._widgets._runner as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    runner = JobRunner("Run", title="Thing")

    def show(result):
        yield
        raise ValueError("layer refused")

    runner.start(_job(1), show)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert shown == ["Thing: could not show the result: layer refused"]
    assert runner.status.value == "Failed: layer refused"
