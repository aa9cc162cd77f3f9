import pytest

from tomolens.jobs import JobCancelled, Progress, run_job


def counting(n, closed):
    try:
        for i in range(n):
            yield Progress(i + 1, n, f"step {i + 1}")
        return n * 10
    finally:
        closed.append(True)


def test_run_job_returns_result_and_reports_every_step():
    seen, closed = [], []
    assert run_job(counting(4, closed), on_progress=seen.append) == 40
    assert [p.done for p in seen] == [1, 2, 3, 4]
    assert seen[-1].fraction == 1.0
    assert closed == [True]


def test_cancel_stops_at_next_yield_and_closes_generator():
    seen, closed = [], []
    with pytest.raises(JobCancelled):
        run_job(counting(100, closed), on_progress=seen.append, should_stop=lambda: len(seen) >= 3)
    assert len(seen) == 3
    assert closed == [True]


def test_progress_fraction_with_unknown_total():
    assert Progress(3, 0).fraction == 0.0
