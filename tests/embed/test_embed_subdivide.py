"""Subdivision by an embedding (API, CLI); the clear error while no embedding is shipped."""

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from tomolens.jobs import run_job


@pytest.fixture(scope="module")
def phantoms():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "classify"))
    from classify_phantoms import labelled_tomogram

    return labelled_tomogram(["sphere", "rod", "ring"], 8, 32, seed=3)


def test_subdivide_by_an_embedding(phantoms, classifier_embedding):
    from tomolens.cluster import subdivide_points

    tomo, centres, names = phantoms
    result = run_job(
        subdivide_points(
            tomo,
            centres,
            voxel_size_A=10.0,
            n_clusters=3,
            polarity="bright",
            features="embedding",
            embed_model=classifier_embedding,
        )
    )
    assert result.info["features"] == "embedding" and result.info["model"] == "test_embedding"
    assert list(result.features.columns) == ["cluster"]
    assert adjusted_rand_score(names, result.features["cluster"]) > 0.8
    assert sorted(result.averages) == [0, 1, 2] and result.averages[0].shape == (32, 32, 32)
    with pytest.raises(ValueError, match="features must be one of"):
        run_job(subdivide_points(tomo, centres, features="pixels"))
    with pytest.raises(ValueError, match="No embedding model 'embed_default' is shipped"):
        run_job(subdivide_points(tomo, centres, features="embedding"))


def test_subdivide_cli_with_an_embedding(phantoms, classifier_embedding, tmp_path, capsys):
    from tomolens.cli import main
    from tomolens.io import (
        ParticleTable,
        read_coordinates,
        write_coordinates,
        write_mrc,
    )

    tomo, centres, names = phantoms
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    write_coordinates(tmp_path / "p.star", ParticleTable(centres, pd.DataFrame(index=range(len(centres))), 10.0))
    assert (
        main(
            [
                "subdivide",
                str(tmp_path / "t.mrc"),
                str(tmp_path / "p.star"),
                "--out",
                str(tmp_path / "s.star"),
                "--n-clusters",
                "3",
                "--polarity",
                "bright",
                "--features",
                "embedding",
                "--embed-model",
                classifier_embedding,
            ]
        )
        == 0
    )
    sub = read_coordinates(tmp_path / "s.star")
    assert "class" not in sub.features and adjusted_rand_score(names, sub.features["cluster"]) > 0.8
    assert (
        main(
            [
                "subdivide",
                str(tmp_path / "t.mrc"),
                str(tmp_path / "p.star"),
                "--out",
                str(tmp_path / "x.star"),
                "--features",
                "embedding",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "tomolens train --task embed" in err
