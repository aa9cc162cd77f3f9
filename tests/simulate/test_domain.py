"""Domain-randomised tomograms: configs, determinism, polarity, labels, the shifted preset, CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from tomolens.cli import main
from tomolens.io import read_coordinates, read_mrc
from tomolens.jobs import run_job
from tomolens.simulate import DOMAIN_CLASSES, TRAINING_RANGES, simulate_domain_tomogram
from tomolens.simulate.domain import (
    HELD_OUT_MAPS,
    TRAINING_MAPS,
    DomainConfig,
    DomainRanges,
    default_maps_dir,
    outside_training,
    sample_domain_config,
    shifted_domain_config,
)
from tomolens.simulate.pseudoproteins import HELD_OUT_FAMILIES, TRAINING_FAMILIES, PseudoProteinSpec

SHAPE = (48, 80, 80)
#: training ranges made cheap for tests: few tilts, small fine grids
FAST = replace(
    TRAINING_RANGES,
    binning=(1, 2),
    tilt_step_deg=(4.0, 5.0),
    pseudo_size_nm=(6.0, 20.0),
    macromolecule_fraction=(0.03, 0.06),
    vesicle_radius_nm=(20.0, 60.0),
    actin=(0, 2),
)


def _rich_config(seed=4, **changes) -> DomainConfig:
    """Every structure class present: a vesicle (decorated), a microtubule, actin, gold, carbon."""
    cfg = sample_domain_config(FAST, seed, SHAPE, maps_dir=None)
    base = dict(
        voxel_size_A=10.0,
        binning=2,
        supersampling=2,
        vesicle_radii_nm=(22.0,),
        sheet_curvature_radii_nm=(),
        n_microtubules=1,
        n_actin=1,
        n_gold=2,
        carbon=True,
        carbon_thickness_nm=10.0,
        carbon_coverage=0.12,
        decorated_probability=1.0,
        bundle_probability=0.0,
        pseudoproteins=(PseudoProteinSpec("compact", 8.0, 1), PseudoProteinSpec("hollow", 12.0, 2)),
    )
    return replace(cfg, **{**base, **changes})


@pytest.fixture(scope="module")
def rich():
    return run_job(simulate_domain_tomogram(_rich_config()))


def test_sampling_is_deterministic_and_in_range():
    a, b = sample_domain_config(FAST, 12, SHAPE), sample_domain_config(FAST, 12, SHAPE)
    assert a == b and a.to_dict() == b.to_dict()
    assert sample_domain_config(FAST, 13, SHAPE) != a
    for seed in range(20):
        c = sample_domain_config(TRAINING_RANGES, seed, (64, 256, 256), maps_dir=None)
        r = TRAINING_RANGES
        assert r.voxel_size_A[0] <= c.voxel_size_A <= r.voxel_size_A[1]
        assert r.tilt_range_deg[0] <= c.tilt_range_deg <= r.tilt_range_deg[1]
        assert r.snr[0] <= c.snr <= r.snr[1] and r.defocus_um[0] <= c.defocus_um <= r.defocus_um[1]
        assert c.reconstruction in r.reconstructions and c.polarity in ("bright", "dark")
        assert 1 <= c.supersampling <= c.binning <= 4 and c.voxel_size_A / c.supersampling >= 4.0
        assert {s.family for s in c.pseudoproteins} <= set(TRAINING_FAMILIES) and not c.map_names
        # pseudo-proteins are 6-40 nm, at least 5 voxels across and at most 0.8 of the slab
        assert all(max(6.0, 0.5 * c.voxel_size_A) - 0.01 <= s.size_nm <= 40.0 for s in c.pseudoproteins)
        assert all(
            s.size_nm <= max(0.8 * 64 * c.voxel_size_A / 10, 0.5 * c.voxel_size_A) + 0.01 for s in c.pseudoproteins
        )
        assert DomainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert {sample_domain_config(TRAINING_RANGES, s, maps_dir=None).polarity for s in range(20)} == {"bright", "dark"}
    json.dumps(TRAINING_RANGES.to_dict())  # JSON-ready for model cards


def test_same_seed_same_tomogram_and_dark_is_negative():
    cfg = sample_domain_config(FAST, 7, (32, 48, 48), maps_dir=None)
    one = run_job(simulate_domain_tomogram(replace(cfg, polarity="bright")))
    two = run_job(simulate_domain_tomogram(replace(cfg, polarity="bright")))
    dark = run_job(simulate_domain_tomogram(replace(cfg, polarity="dark")))
    assert np.array_equal(one.tomogram, two.tomogram) and np.array_equal(one.instances, two.instances)
    assert np.array_equal(dark.tomogram, -one.tomogram)
    assert np.array_equal(dark.semantic, one.semantic)
    other = run_job(simulate_domain_tomogram(sample_domain_config(FAST, 8, (32, 48, 48), maps_dir=None)))
    assert not np.array_equal(other.semantic, one.semantic)


def test_output_contract_and_labels_consistent(rich):
    cfg = rich.config
    assert rich.tomogram.shape == rich.semantic.shape == rich.instances.shape == SHAPE
    assert rich.tomogram.dtype == np.float32 and rich.semantic.dtype == np.uint8 and rich.instances.dtype == np.uint32
    assert abs(float(rich.tomogram.mean())) < 1e-3 and float(rich.tomogram.std()) == pytest.approx(1, abs=1e-3)
    assert rich.class_names == list(DOMAIN_CLASSES) and rich.voxel_size_A == cfg.voxel_size_A
    present = {DOMAIN_CLASSES[i] for i in np.unique(rich.semantic)}
    assert present == set(DOMAIN_CLASSES)
    # every instance has exactly one class, and background is background in both
    assert np.array_equal(rich.semantic == 0, rich.instances == 0)
    ids, first = np.unique(rich.instances, return_index=True)
    cls_of = dict(zip(ids, rich.semantic.ravel()[first]))
    for i in ids[ids > 0]:
        assert np.all(rich.semantic[rich.instances == i] == cls_of[i])
    # particles 1..N with class macromolecule at their centres; structures after them with their kind
    table, feats = rich.particles, rich.particles.features
    assert list(feats["instance_id"]) == list(range(1, len(table) + 1))
    assert set(feats["class_name"]) == {"macromolecule"} and (feats["radius_A"] > 0).all()
    assert {"template", "family", "rot", "tilt", "psi", "anchored_to"} <= set(feats.columns)
    membranes = {s["instance_id"] for s in rich.structures.to_dict("records") if s["kind"] == "membrane"}
    anchored = set(feats["anchored_to"]) - {0}
    assert anchored and anchored <= membranes  # the decorated vesicle carries proteins
    for iid in feats["instance_id"]:
        if iid in cls_of:
            assert DOMAIN_CLASSES[cls_of[iid]] == "macromolecule"
    # listed centres are the centres of mass of the particles' labels (to within the binning)
    labelled = [i for i in feats["instance_id"] if i in cls_of]
    assert len(labelled) >= 0.9 * len(feats)
    com = np.array(ndimage.center_of_mass(np.ones(SHAPE), rich.instances, labelled))
    listed = table.coords_zyx[np.searchsorted(feats["instance_id"].to_numpy(), labelled)]
    err = np.linalg.norm(com - listed, axis=1)
    assert np.median(err) < 0.75 and np.quantile(err, 0.9) < 1.5
    for st in rich.structures.to_dict("records"):
        if st["instance_id"] in cls_of:
            assert DOMAIN_CLASSES[cls_of[st["instance_id"]]] == st["kind"]
    # the dense objects follow the polarity: bright tomogram -> membrane/macromolecule above the mean
    sign = 1 if cfg.polarity == "bright" else -1
    assert sign * rich.tomogram[rich.semantic == 5].mean() > 1.0  # gold is very dense


def test_shifted_settings_lie_outside_training():
    for seed in range(5):
        cfg = shifted_domain_config(seed, (64, 256, 256), maps_dir=None)
        outside = outside_training(cfg)
        assert outside["reconstruction"] and outside["tilt_range_deg"] and outside["voxel_size_A"]
        assert outside["pseudo_families"] and {s.family for s in cfg.pseudoproteins} == set(HELD_OUT_FAMILIES)
        assert cfg.reconstruction not in TRAINING_RANGES.reconstructions
        lo, hi = TRAINING_RANGES.voxel_size_A
        assert not lo <= cfg.voxel_size_A <= hi
        train = sample_domain_config(TRAINING_RANGES, seed, (64, 256, 256), maps_dir=None)
        assert not any(outside_training(train).values())
    assert not set(HELD_OUT_MAPS) & set(TRAINING_MAPS) and len(TRAINING_MAPS) == 8


def test_maps_used_and_held_out_when_present():
    maps = default_maps_dir()
    if maps is None:
        pytest.skip("../shared/data/maps_10A is absent (set TOMOLENS_MAPS_DIR to the maps_10A folder)")
    train = [sample_domain_config(FAST, s, SHAPE, maps_dir=maps) for s in range(10)]
    assert set().union(*(c.map_names for c in train)) <= set(TRAINING_MAPS)
    assert any(c.map_names for c in train)
    # the rest of a seed's settings does not depend on whether the maps are there
    bare = sample_domain_config(FAST, 3, SHAPE, maps_dir=None)
    assert replace(train[3], map_names=(), maps_dir=None) == bare
    shifted = shifted_domain_config(3, SHAPE, maps_dir=maps)
    assert shifted.map_names and set(shifted.map_names) <= set(HELD_OUT_MAPS)
    cfg = _rich_config(
        map_names=("1bxn",), maps_dir=str(maps), n_microtubules=0, vesicle_radii_nm=(), macromolecule_fraction=0.05
    )
    sim = run_job(simulate_domain_tomogram(cfg))
    assert "1bxn" in set(sim.particles.features["template"])


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="voxel_size_A must be a"):
        DomainRanges(voxel_size_A=(20.0, 5.0)).check()
    with pytest.raises(ValueError, match="reconstructions must be"):
        DomainRanges(reconstructions=("fbp",)).check()
    with pytest.raises(ValueError, match="probability must be in"):
        DomainRanges(dark_probability=1.5).check()
    with pytest.raises(ValueError, match="pseudo_families"):
        DomainRanges(pseudo_families=("cube",)).check()
    with pytest.raises(ValueError, match="is not a folder"):
        sample_domain_config(FAST, 0, SHAPE, maps_dir="/no/such/maps_10A")
    with pytest.raises(ValueError, match="No macromolecule source"):
        DomainRanges(pseudo_families=(), map_templates=(0, 0)).check()
    good = _rich_config()
    for change, message in (
        ({"polarity": "grey"}, "polarity"),
        ({"reconstruction": "art"}, "reconstruction"),
        ({"shape_zyx": (8, 64, 64)}, "shape_zyx"),
        ({"supersampling": 3}, "supersampling"),
        ({"tilt_range_deg": 95.0}, "tilt_range_deg"),
        ({"map_names": ("1bxn",)}, "maps_dir"),
        ({"pseudoproteins": (), "map_names": ()}, "No macromolecule"),
    ):
        with pytest.raises(ValueError, match=message):
            run_job(simulate_domain_tomogram(replace(good, **change)))


def test_cli_domain_tomogram_and_dataset(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--domain",
            "randomised",
            "--seed",
            "3",
            "--size-z",
            "32",
            "--size-y",
            "48",
            "--size-x",
            "48",
            "--maps-dir",
            "none",
            "--out",
            str(tmp_path / "one"),
        ]
    )
    assert rc == 0
    meta = json.loads((tmp_path / "one" / "config.json").read_text())
    assert meta["domain"] == "randomised" and meta["class_names"] == list(DOMAIN_CLASSES)
    assert meta["config"]["seed"] == 3 and meta["polarity"] in ("bright", "dark")
    assert meta["training_ranges"] == TRAINING_RANGES.to_dict() | {} or meta["training_ranges"]["snr"] == [0.02, 0.5]
    tomo = read_mrc(tmp_path / "one" / "tomogram.mrc")
    assert tomo.data.shape == (32, 48, 48) and tomo.voxel_size_A[0] == pytest.approx(meta["config"]["voxel_size_A"])
    assert read_mrc(tmp_path / "one" / "semantic.mrc").is_labels
    table = read_coordinates(tmp_path / "one" / "particles.star")
    assert len(table) == meta["n_particles"] and "template" in table.features.columns
    rc = main(["simulate", "--domain", "shifted", "--seed", "1", "--snr", "0.3", "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--snr" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    rc = main(
        [
            "simulate-dataset",
            "--domain",
            "shifted",
            "--n",
            "2",
            "--first-seed",
            "50",
            "--size-z",
            "24",
            "--size-y",
            "32",
            "--size-x",
            "32",
            "--maps-dir",
            "none",
            "--out",
            str(tmp_path / "set"),
        ]
    )
    assert rc == 0
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert [t["seed"] for t in manifest["tomograms"]] == [50, 51] and manifest["domain"] == "shifted"
    assert manifest["shifted_settings"]["reconstruction"] == "sirt"
    assert (tmp_path / "set" / "tomo_000051" / "instances.mrc").is_file()
    sub = json.loads((tmp_path / "set" / "tomo_000050" / "config.json").read_text())
    assert all(sub["outside_training"].values())
    rc = main(["simulate-dataset", "--n", "1", "--maps-dir", "none", "--out", str(tmp_path / "set")])
    assert rc == 2 and "exists" in capsys.readouterr().err


def test_bundles_and_branches_are_recorded():
    common = dict(vesicle_radii_nm=(), carbon=False, n_gold=0, n_microtubules=0, n_actin=2, macromolecule_fraction=0.01)
    bundles = run_job(
        simulate_domain_tomogram(_rich_config(seed=2, bundle_probability=1.0, branch_probability=0.0, **common))
    )
    branched = run_job(
        simulate_domain_tomogram(_rich_config(seed=2, bundle_probability=0.0, branch_probability=1.0, **common))
    )
    members = [s for s in bundles.structures.to_dict("records") if s["kind"] == "actin"]
    assert len(members) >= 3 and all(s["bundle_size"] >= 2 for s in members)
    actin = [s for s in branched.structures.to_dict("records") if s["kind"] == "actin"]
    ids = {s["instance_id"] for s in actin}
    children = [s for s in actin if s.get("branch_of", 0) > 0]  # NaN > 0 is False
    assert children and all(int(s["branch_of"]) in ids - {s["instance_id"]} for s in children)
    for sim, objs in ((bundles, members), (branched, actin)):  # every placed filament is labelled actin
        for s in objs:
            assert np.all(sim.semantic[sim.instances == s["instance_id"]] == DOMAIN_CLASSES.index("actin"))
