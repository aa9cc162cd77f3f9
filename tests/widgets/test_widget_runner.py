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


def test_status_text_gives_the_whole_message_the_stage_time_and_time_left():
    from tomolens._widgets._runner import status_text

    p = Progress(1, 5, "predicting patches")
    assert status_text(p, 0.2) == "predicting patches (1/5)"
    assert status_text(p, 10.0) == "predicting patches (1/5) · 10 s, about 40 s left"
    assert status_text(Progress(5, 5, "predicting patches"), 10.0) == "predicting patches (5/5) · 10 s"
    assert status_text(Progress(0, 0, "measuring"), 3.0) == "measuring · 3 s"


def _slow(n, pause_s):
    for i in range(n):
        time.sleep(pause_s)
        yield Progress(i + 1, n, "predicting patches of a long tomogram")
    return n


def test_status_line_wraps_and_moves_every_second_within_a_step(qtbot, qapp):
    runner = JobRunner("Run")
    assert runner.status.native.wordWrap()  # a narrow dock wraps the message instead of cutting it
    seen = []
    runner.start(_slow(2, 1.6), lambda result: None)
    qtbot.waitUntil(lambda: runner.last_progress is not None, timeout=10000)
    t0 = time.monotonic()
    while runner.running and time.monotonic() - t0 < 10:
        qapp.processEvents()
        seen.append(runner.status.value)
        time.sleep(0.05)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    # during the second step (1.6 s) the clock ticked: the stage time and the time left appeared
    assert any(s.startswith("predicting patches of a long tomogram (1/2) · ") and "s left" in s for s in seen), seen
    assert runner.status.value == "Done"


def test_a_job_imports_napari_lazy_layer_modules_in_its_worker(qtbot, qapp, tmp_path, monkeypatch):
    import sys
    import threading

    import tomolens._widgets._runner as module

    # a probe module that records the thread importing it, standing in for pandas and friends
    (tmp_path / "tomolens_warm_probe.py").write_text("import threading\nTHREAD = threading.current_thread()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tomolens_warm_probe", raising=False)
    monkeypatch.setattr(module, "LAZY_LAYER_MODULES", ("tomolens_warm_probe", "tomolens_no_such_module"))
    runner = JobRunner("Run")
    got = []
    runner.start(_job(7), got.append)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert got == [7] and runner.status.value == "Done"
    probe = sys.modules["tomolens_warm_probe"]
    assert probe.THREAD is not threading.main_thread()  # imported by the worker, not the GUI thread


def test_prepare_runs_in_the_worker_and_its_value_reaches_the_handler(qtbot, qapp):
    import threading

    runner = JobRunner("Run")
    threads, got = [], []

    def prepare(result):
        threads.append(threading.current_thread())
        return result, result * 2

    runner.start(_job(21), got.append, prepare=prepare)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert got == [(21, 42)] and runner.status.value == "Done"
    assert threads and threads[0] is not threading.main_thread()


def test_prepare_error_is_reported_as_a_failed_job(qtbot, qapp, monkeypatch):
    import tomolens._widgets._runner as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    runner = JobRunner("Run", title="Thing")
    got = []

    def prepare(result):
        raise ValueError("cannot build the layer")

    runner.start(_job(1), got.append, prepare=prepare)
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert got == [] and shown == ["Thing failed: cannot build the layer"]
    assert runner.run_button.enabled


def test_warming_fills_vispys_dash_pattern_cache_off_the_gui_thread():
    from vispy.visuals.line import dash_atlas

    from tomolens._widgets._runner import warm_layer_imports

    dash_atlas._make_pattern.cache_clear()
    warm_layer_imports()  # what every job's worker runs first
    # the 13 patterns the first Labels layer's polygon overlay would otherwise compute on the GUI thread
    assert dash_atlas._make_pattern.cache_info().currsize == 13


def test_start_latest_runs_now_or_after_the_running_job_and_keeps_only_the_last_request(qtbot, qapp):
    from tomolens._widgets._runner import computing

    runner = JobRunner("Run")
    started, shown = [], []

    def request(value):
        def make_job():
            started.append(value)
            return computing(f"value {value}", lambda: value)

        runner.start_latest(make_job, shown.append)

    runner.start(_slow(1, 0.5), shown.append)  # a running job
    for value in (1, 2, 3):  # three requests while it runs: only the last one waits
        request(value)
    assert started == []
    qtbot.waitUntil(lambda: shown == [1, 3] and not runner.running, timeout=10000)
    assert started == [3]
    request(4)  # nothing running: starts at once
    assert started == [3, 4] and runner.running
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert shown == [1, 3, 4]
    runner.start(_slow(1, 0.5), shown.append)
    request(5)
    runner.cancel()  # Cancel also drops the waiting request
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert started == [3, 4] and shown == [1, 3, 4]
