"""Batch runs: resumable, provenance everywhere, failures retried, dask LocalCluster, CLI."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
from batch_helpers import read_centres

from tomolens.batch import (
    BatchInterrupted,
    Pipeline,
    find_tomograms,
    load_pipeline,
    make_step,
    pipeline_from_dict,
    run_batch,
    save_pipeline,
    sidecar_path,
)
from tomolens.batch import steps as batch_steps
from tomolens.cli import main
from tomolens.detect.detector import detect_particles
from tomolens.io import read_mrc
from tomolens.jobs import run_job
from tomolens.models.card import sha256_of


def _pipeline(model: str, **detect) -> Pipeline:
    return Pipeline(
        (make_step("detect", {"model": model, "device": "cpu", **detect}), make_step("export", {"format": "csv"}))
    )


def test_find_tomograms_files_folders_globs(batch_data, tmp_path):
    paths = batch_data["paths"]
    assert find_tomograms([batch_data["tomo_dir"]]) == [p.resolve() for p in paths]
    assert find_tomograms([str(batch_data["tomo_dir"] / "tomo_[13].mrc"), paths[1]]) == [
        paths[1].resolve(),
        paths[3].resolve(),
    ]
    with pytest.raises(ValueError, match="No such tomogram"):
        find_tomograms([tmp_path / "missing.mrc"])
    with pytest.raises(ValueError, match="holds no tomograms"):
        find_tomograms([tmp_path])
    (tmp_path / "tomo_0.mrc").write_bytes(paths[0].read_bytes())
    with pytest.raises(ValueError, match="outputs would collide"):
        find_tomograms([paths[0], tmp_path / "tomo_0.mrc"])


def test_batch_presets_json_yaml_and_errors(batch_data, tmp_path):
    model = batch_data["model"]
    detect_preset = tmp_path / "detect.json"
    detect_preset.write_text(json.dumps({"task": "detect", "params": {"mask_threshold": 0.4, "model": model}}))
    (tmp_path / "batch.yaml").write_text(
        "task: batch\nvoxel_size_A: 10\npipeline:\n"
        "  - {task: detect, preset: detect.json, params: {centre_threshold: 0.2}}\n"
        "  - {task: export, params: {format: star, star_form: centred}}\n"
    )
    pipe = load_pipeline(tmp_path / "batch.yaml")
    assert [s.task for s in pipe.steps] == ["detect", "export"]
    assert pipe.steps[0].params == {"mask_threshold": 0.4, "model": model, "centre_threshold": 0.2}
    assert pipe.voxel_size_A == 10.0
    save_pipeline(tmp_path / "copy.json", pipe)
    assert load_pipeline(tmp_path / "copy.json") == pipe
    # a widget's single-task preset is a one-step pipeline
    assert [s.task for s in load_pipeline(detect_preset).steps] == ["detect"]
    from tomolens.batch.cli import EXAMPLE  # what 'tomolens batch-example' prints is a valid preset

    assert [s.task for s in pipeline_from_dict(EXAMPLE).steps] == ["detect", "classify", "export"]
    with pytest.raises(ValueError, match="Unknown batch task 'segmentt'"):
        pipeline_from_dict({"task": "batch", "pipeline": [{"task": "segmentt"}]})
    with pytest.raises(ValueError, match=r"step 1 \(detect\).*Unknown settings \['mask_treshold'\]"):
        pipeline_from_dict({"pipeline": [{"task": "detect", "params": {"mask_treshold": 0.3}}]})
    with pytest.raises(ValueError, match="above the maximum"):
        pipeline_from_dict({"pipeline": [{"task": "detect", "params": {"mask_threshold": 3}}]})
    with pytest.raises(ValueError, match="needs particles"):
        pipeline_from_dict({"pipeline": [{"task": "export"}]})
    with pytest.raises(ValueError, match="is a 'detect' preset"):
        pipeline_from_dict({"pipeline": [{"task": "export", "preset": str(detect_preset)}]})


def test_batch_interrupted_then_resumed_skips_finished(batch_data, tmp_path, monkeypatch):
    model, paths = batch_data["model"], batch_data["paths"][:3]
    pipe = _pipeline(model)
    out = tmp_path / "out"
    calls = []
    real = batch_steps.run_detect

    def killed_on_second(ctx, params):
        calls.append(ctx.path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill during the second tomogram")
        return (yield from real(ctx, params))

    monkeypatch.setattr(batch_steps, "run_detect", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_batch(pipe, paths, out, progress=False)
    assert sidecar_path(paths[0], out).is_file()
    assert not sidecar_path(paths[1], out).exists()
    assert not list((out / "tomo_1").glob("*.tmp")) and not list((out / "tomo_1").glob("*.mrc"))
    first_mtime = sidecar_path(paths[0], out).stat().st_mtime_ns
    monkeypatch.setattr(batch_steps, "run_detect", real)
    summary = run_batch(pipe, paths, out, progress=False)
    assert [r.status for r in summary.results] == ["skipped", "done", "done"]
    assert [r.attempts for r in summary.results] == [0, 1, 1]
    assert sidecar_path(paths[0], out).stat().st_mtime_ns == first_mtime
    # outputs equal a direct call of the capability with the model card's defaults
    direct = run_job(detect_particles(read_mrc(paths[1]).data, 10.0, model=model, device="cpu"))
    np.testing.assert_allclose(
        read_centres(out / "tomo_1" / "tomo_1_particles.csv"), read_centres_from(direct.particles.coords_zyx), atol=1e-3
    )
    assert summary.results[1].particles == len(direct.particles)
    # provenance in every output: sidecar, STAR comment, MRC header labels
    sha = sha256_of(model)
    record = json.loads(sidecar_path(paths[1], out).read_text())
    assert record["steps"][0]["model_sha256"] == sha
    assert record["steps"][0]["params"] == {"model": model, "device": "cpu"}
    assert [s["task"] for s in record["steps"]] == ["detect", "export"]
    star_head = (out / "tomo_1" / "tomo_1_detected.star").read_text().splitlines()[0]
    assert star_head.startswith("# tomolens-provenance") and sha in star_head
    with mrcfile.open(out / "tomo_1" / "tomo_1_instances.mrc", permissive=True) as mrc:
        labels = [bytes(x).decode().strip() for x in mrc.header.label[: mrc.header.nlabl]]
    assert any(sha in label for label in labels) and any("tomolens" in label for label in labels)
    assert "detect done" in (out / "tomo_1" / "tomo_1.log").read_text()
    # a changed setting runs everything again; should_stop stops between tomograms
    stopped = run_batch(_pipeline(model, mask_threshold=0.7), paths[:1], out, progress=False)
    assert stopped.results[0].status == "done"
    with pytest.raises(BatchInterrupted, match="after 0 of 3"):
        run_batch(_pipeline(model, mask_threshold=0.6), paths, out, progress=False, should_stop=lambda: True)


def read_centres_from(coords: np.ndarray) -> np.ndarray:
    return coords[np.lexsort(coords.T[::-1])] if len(coords) else coords


def test_transient_failure_is_retried_bad_input_is_not_and_both_are_reported(batch_data, tmp_path, monkeypatch):
    """A transient error (RuntimeError) is tried again and passes; a file that is not an MRC (MrcReadError, a
    ValueError: the input's fault) fails once, is not retried (it would fail the same way), and the summary says
    so and why."""
    model = batch_data["model"]
    broken = tmp_path / "in" / "broken.mrc"
    broken.parent.mkdir()
    broken.write_bytes(b"not an mrc file at all")
    flaky_calls = []
    real = batch_steps.run_detect

    def flaky(ctx, params):  # fails on its first attempt at tomo_2 only
        flaky_calls.append(ctx.path.name)
        if ctx.path.name == "tomo_2.mrc" and flaky_calls.count("tomo_2.mrc") == 1:
            raise RuntimeError("transient failure")
        return (yield from real(ctx, params))

    monkeypatch.setattr(batch_steps, "run_detect", flaky)
    out = tmp_path / "out"
    summary = run_batch(_pipeline(model), [batch_data["paths"][2], broken], out, progress=False)
    by_name = {r.tomogram: r for r in summary.results}
    assert (by_name["tomo_2.mrc"].status, by_name["tomo_2.mrc"].attempts) == ("done", 2)
    assert (by_name["broken.mrc"].status, by_name["broken.mrc"].attempts) == ("failed", 1)
    assert by_name["broken.mrc"].not_retried.startswith("MrcReadError is the input's fault")
    assert not by_name["tomo_2.mrc"].not_retried
    assert "MrcReadError" in by_name["broken.mrc"].error or "mrc" in by_name["broken.mrc"].error.lower()
    assert "broken.mrc failed" in (out / "broken" / "broken.log").read_text()
    assert not sidecar_path(broken, out).exists()
    saved = json.loads((out / "batch_summary.json").read_text())
    assert [row["status"] for row in saved] == ["done", "failed"]
    assert "1 done, 0 skipped (already finished), 1 failed" in summary.table()
    assert "broken.mrc: not retried: MrcReadError is the input's fault (fix it and run again)" in summary.table()
    assert saved[1]["not_retried"] == by_name["broken.mrc"].not_retried


def test_batch_on_local_cluster_of_two_workers_matches_in_process(batch_data, tmp_path):
    distributed = pytest.importorskip("distributed")
    model, paths = batch_data["model"], batch_data["paths"]
    pipe = _pipeline(model)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = run_batch(pipe, [batch_data["tomo_dir"]], tmp_path / "dask", scheduler=client, progress=False)
        workers = {json.loads(sidecar_path(p, tmp_path / "dask").read_text())["host"] for p in paths}
    assert [r.status for r in summary.results] == ["done"] * 4
    assert workers  # every tomogram left a sidecar
    local = run_batch(pipe, paths[:2], tmp_path / "local", progress=False)
    for p in paths[:2]:
        name = p.stem
        np.testing.assert_allclose(
            read_centres(tmp_path / "dask" / name / f"{name}_particles.csv"),
            read_centres(tmp_path / "local" / name / f"{name}_particles.csv"),
            atol=1e-4,
        )
    assert [r.particles for r in local.results] == [r.particles for r in summary.results[:2]]


def test_batch_cli_exit_status_and_summary(batch_data, tmp_path, capsys):
    preset = save_pipeline(tmp_path / "batch.json", _pipeline(batch_data["model"]))
    out = tmp_path / "out"
    assert main(["batch", str(preset), str(batch_data["paths"][0]), "--out", str(out), "--no-progress"]) == 0
    assert main(["batch", str(preset), str(batch_data["paths"][0]), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1 done, 0 skipped" in text and "0 done, 1 skipped" in text
    assert main(["batch", str(preset), str(tmp_path / "nothing.mrc"), "--out", str(out)]) == 2
    assert "No such tomogram" in capsys.readouterr().err
    assert (
        main(
            ["batch", str(preset), str(batch_data["paths"][0]), "--out", str(out), "--force", "--scheduler", "local:x"]
        )
        == 2
    )
    assert "local:N" in capsys.readouterr().err


def test_segment_detect_classify_export_with_shipped_models(batch_data, tmp_path):
    from tomolens.io.coords import read_coordinates
    from tomolens.models.card import shipped_models

    needed = {"segment_default", "detect_default", "classify_phantoms_resnet"}
    if not needed <= set(shipped_models()):
        pytest.skip(f"shipped models missing: {sorted(needed - set(shipped_models()))}")
    pipe = pipeline_from_dict(
        {
            "task": "batch",
            "pipeline": [
                {"task": "segment", "params": {"device": "cpu"}},
                {"task": "detect", "params": {"device": "cpu"}},
                {"task": "classify", "params": {"device": "cpu"}},
                {"task": "export", "params": {"format": "csv", "min_confidence": 0.2}},
            ],
        }
    )
    tomo = batch_data["paths"][2]
    summary = run_batch(pipe, [tomo], tmp_path, progress=False)
    assert summary.results[0].status == "done", summary.results[0].error
    folder = tmp_path / tomo.stem
    with mrcfile.open(folder / f"{tomo.stem}_labels.mrc", permissive=True) as mrc:
        assert mrc.data.shape == read_mrc(tomo).data.shape
    classified = read_coordinates(folder / f"{tomo.stem}_classified.star")
    exported = read_coordinates(folder / f"{tomo.stem}_particles.csv")
    assert {"class", "confidence"} <= set(classified.features.columns)
    assert len(exported) == int((classified.features["confidence"] >= 0.2).sum())
    record = json.loads(sidecar_path(tomo, tmp_path).read_text())
    shas = {s["task"]: s.get("model_sha256") for s in record["steps"]}
    assert shas["classify"] == sha256_of(shipped_models()["classify_phantoms_resnet"].with_suffix(".pt"))
    assert all(shas[t] for t in ("segment", "detect", "classify")) and not shas["export"]
