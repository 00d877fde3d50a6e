"""mfpipe.grid: config → cells (paths, flags, identities), validation, the schema, status."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest
import yaml

from mfpipe import cells as cellmod
from mfpipe.errors import InputError
from mfpipe.grid import (ConfigError, build_studies, cell_id, config_schema, engine_versions,
                         runtime_minutes, resources_of, schema_path)

REPO = Path(__file__).resolve().parents[1]


def study(grid=None, settings=None, extra=None, kind="train"):
    spec = {"kind": kind, "grid": grid or {}}
    if settings is not None:
        spec["settings"] = settings
    if extra is not None:
        spec["extra_cells"] = extra
    return spec


def cells_of(config, name="s"):
    return build_studies(config)[name].cells


def test_product_paths_and_canonical_numbers():
    config = {"studies": {"s": study({"depth": [2, 4], "sigma_w2": "1:2:3",
                                      "keep_rate": [1.0, "0.98"], "seed": [0, 1]},
                                     {"steps": 10})}}
    got = cells_of(config)
    assert len(got) == 2 * 3 * 2 * 2
    paths = [c.path for c in got]
    assert len(set(paths)) == len(paths)
    # the dataset is always the first level (here the default, mnist5k)
    assert paths[0] == "results/cells/s/dataset=mnist5k/depth=2/sigma_w2=1/keep_rate=1/seed=0.parquet"
    assert "results/cells/s/dataset=mnist5k/depth=4/sigma_w2=1.5/keep_rate=0.98/seed=1.parquet" in paths
    # 1, 1.0 and "1.00" are one value; a range gives clean numbers (no 1.4999999999)
    again = {"studies": {"s": study({"depth": "2,4", "sigma_w2": [1, 1.5, "2.00"],
                                     "keep_rate": "1,0.98", "seed": [0, 1]}, {"steps": 10})}}
    assert [c.path for c in cells_of(again)] == paths
    assert [c.args for c in cells_of(again)] == [c.args for c in got]


def test_cell_params_are_the_cells_own_identity_and_flags_round_trip():
    """What the workflow passes is what `train-cell` computes: same completed params, same id."""
    config = {"studies": {"s": study({"depth": [3, 250], "sigma_w2": [1.76]},
                                     {"lr": "1e-3,200:1e-4", "steps": 50,
                                      "checkpoints": [10, 45], "dropout_input": True}),
                          "g": study({"depth": 5, "keep_rate": [0.9]}, {"inits": 3}, kind="grad")}}
    studies = build_studies(config)
    for st in studies.values():
        for cell in st.cells:
            full, identity = cellmod.cell_identity(cell.kind, cell.params)
            assert full == cell.params
            assert cell.id == identity == cell_id(full)
            parser = argparse.ArgumentParser()
            cellmod.add_common_arguments(parser, cell.kind)
            args = parser.parse_args(cell.args.split())
            assert cellmod.complete_params(cell.kind, cellmod.params_from_args(args, cell.kind)) == full
    lrs = {c.params["depth"]: c.params["lr"] for c in studies["s"].cells}
    assert lrs == {3: 0.001, 250: 0.0001}  # the depth rule, resolved per cell
    # the final step is always recorded
    assert studies["s"].cells[0].params["checkpoints"] == [10, 45, 50]
    assert "--dropout-input" in studies["s"].cells[0].args


def test_new_grid_value_adds_paths_and_setting_change_touches_only_its_study():
    base = {"studies": {"a": study({"depth": [2, 4], "seed": [0]}, {"steps": 10}),
                        "b": study({"depth": [2]}, {"steps": 10})}}
    old = {c.path: c.args for st in build_studies(base).values() for c in st.cells}

    more = json.loads(json.dumps(base))
    more["studies"]["a"]["grid"]["seed"] = [0, 1]
    new = {c.path: c.args for st in build_studies(more).values() for c in st.cells}
    assert all(new[p] == a for p, a in old.items())  # existing cells unchanged
    assert len(set(new) - set(old)) == 2

    steps = json.loads(json.dumps(base))
    steps["studies"]["a"]["settings"]["steps"] = 20
    new = {c.path: c.args for st in build_studies(steps).values() for c in st.cells}
    assert set(new) == set(old)
    changed = sorted(p for p in old if new[p] != old[p])
    assert changed == sorted(p for p in old if p.startswith("results/cells/a/"))


def test_extra_cells():
    config = {"studies": {"s": study({"depth": [2, 4], "sigma_w2": 1.5}, {"steps": 10},
                                     extra=[{"depth": 8}, {"depth": 2, "sigma_w2": 1.5}])}}
    got = cells_of(config)
    assert [c.params["depth"] for c in got] == [2, 4, 8]  # the repeat of a grid cell is one cell
    # an extra cell that differs only in a non-grid setting cannot have its own path
    clash = {"studies": {"s": study({"depth": [2, 4]}, {"steps": 10},
                                    extra=[{"depth": 2, "steps": 99}])}}
    with pytest.raises(ConfigError, match=r"extra_cells\[0\].*differs .* only in .*steps"):
        build_studies(clash)
    # a grid parameter with several values must be named
    vague = {"studies": {"s": study({"depth": [2, 4], "seed": [0, 1]}, extra=[{"seed": 5}])}}
    with pytest.raises(ConfigError, match=r"extra_cells\[0\]\.depth.*several: 2, 4"):
        build_studies(vague)


def test_every_problem_is_named_with_allowed_values():
    config = {"studies": {
        "t": study({"activation": ["tanh", "sigmoid"], "keep_rate": [1, 1.5], "colour": 1},
                   {"optimizer": "lbfgs", "lr": "fast"}),
        "g": {"kind": "gradient"}}}
    with pytest.raises(ConfigError) as info:
        build_studies(config)
    text = str(info.value)
    for needle in ("studies.t.grid.activation", "tanh, relu, erf", "studies.t.grid.keep_rate",
                   "≤ 1", "colour", "studies.t.settings.optimizer", "sgd, rmsprop, adam",
                   "studies.t.settings.lr", "depth rule", "studies.g.kind", "train, grad"):
        assert needle in text, needle
    assert len(info.value.problems) == 6
    assert isinstance(info.value, InputError)


def test_semantic_checks_beyond_the_schema():
    with pytest.raises(ConfigError, match=r"studies.s.grid.depth.*integer"):
        build_studies({"studies": {"s": study({"depth": "1:4:3"})}})  # 1, 2.5, 4
    with pytest.raises(ConfigError, match=r"studies.s.grid.sigma_w2.*> 0"):
        build_studies({"studies": {"s": study({"sigma_w2": "0:2:3"})}})
    with pytest.raises(ConfigError, match="grid or in settings, not both"):
        build_studies({"studies": {"s": study({"depth": 2}, {"depth": 3})}})


def test_schema_file_is_the_generated_schema():
    on_disk = yaml.safe_load(schema_path().read_text())
    assert on_disk == json.loads(json.dumps(config_schema())), \
        "run `python -m mfpipe.grid --write-schema`"


@pytest.mark.parametrize("name", ["config.yaml", "schoenholz2017.yaml", "huang2019.yaml",
                                  "pretorius2018.yaml"])
def test_shipped_configs_are_valid(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    studies = build_studies(config)
    assert sum(len(s.cells) for s in studies.values()) > 0
    for st in studies.values():
        for cell in st.cells[:50]:
            assert cellmod.complete_params(cell.kind, cell.params) == cell.params


def test_resource_estimates_grow_with_the_cell_and_retries():
    config = {"studies": {"s": study({"depth": [10, 100], "width": [100, 400]},
                                     {"steps": 1000, "dataset": "mnist"})}}
    got = {(c.params["depth"], c.params["width"]): c for c in cells_of(config)}
    assert got[100, 400].seconds > got[10, 400].seconds > got[10, 100].seconds
    assert got[100, 400].mem_mb > got[10, 100].mem_mb
    res = resources_of(config)
    assert runtime_minutes(got[100, 400].seconds, res, attempt=2) == \
        2 * runtime_minutes(got[100, 400].seconds, res, attempt=1)
    assert runtime_minutes(0.0, res) == res["min_runtime_minutes"]


def test_engine_versions_come_from_the_cell_code():
    versions = engine_versions()
    assert set(versions) >= {"train", "grad"}
    assert all(isinstance(v, int) for v in versions.values())


def test_status_reads_snakemake_records(tmp_path, capsys):
    from mfpipe import status

    config = {"studies": {"s": study({"depth": [2, 4, 8]}, {"steps": 10})}}
    studies = build_studies(config)
    done, stale, _missing = studies["s"].cells
    engine = repr(engine_versions()["train"])
    for cell, args in ((done, done.args), (stale, done.args)):
        (tmp_path / cell.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cell.path).write_bytes(b"x")
        record = status._record_path(tmp_path / ".snakemake" / "metadata", cell.path, 255)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"params": sorted([repr(args), engine])}))
    states = status.cell_states(studies, tmp_path)["s"]
    assert [len(states[k]) for k in ("done", "stale", "missing")] == [1, 1, 1]
    assert states["stale"][0].path == stale.path

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    from mfpipe.cli import main

    assert main(["status", "--configfile", str(cfg), "-d", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] | {"gpu_hours_left": 0} == {"cells": 3, "done": 1, "stale": 1,
                                                         "missing": 1, "jobs_left": 2,
                                                         "gpu_hours_left": 0}
    assert summary["total"]["gpu_hours_left"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies: {s: {kind: train, grid: {activation: sigmoid}}}\n")
    assert main(["status", "--configfile", str(bad)]) == 2
    assert "studies.s.grid.activation" in capsys.readouterr().err


def test_cells_command_lists_paths(tmp_path, capsys):
    from mfpipe.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"studies": {"s": study({"depth": [2, 4]})}}))
    out = tmp_path / "list.txt"
    assert main(["cells", "--configfile", str(cfg), "-o", str(out)]) == 0
    assert out.read_text().split() == ["results/cells/s/dataset=mnist5k/depth=2.parquet",
                                       "results/cells/s/dataset=mnist5k/depth=4.parquet"]
    assert main(["cells", "--configfile", str(cfg), "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["depth"] for r in rows] == [2, 4] and all(len(r["cell_id"]) == 16 for r in rows)


INJECTION = "xi_c; touch pwned $(touch pwned2) `touch pwned3`"


@pytest.mark.parametrize("section,key", [("fit", "forms"), ("fit", "step"), ("fit", "threshold"),
                                         ("fit", "accuracy"), ("fit", "boundary"),
                                         ("figures", "forms"), ("figures", "reference")])
def test_config_values_that_reach_a_command_are_refused_unless_well_formed(section, key):
    config = {"studies": {"s": study({"depth": 2})}, section: {key: INJECTION}}
    with pytest.raises(ConfigError, match=rf"{section}.{key}"):
        build_studies(config)


def test_fit_and_figure_flags_are_quoted_and_well_formed_values_pass():
    from mfpipe.grid import FIGURE_FLAGS, FIT_FLAGS, section_flags

    good = {"fit": {"forms": "n*xi_c,xi_min,n*min(xi_c,xi_1)", "step": "100, 200", "bootstrap": 5,
                    "threshold": "between:0.5", "boundary": "largest"},
            "figures": {"forms": "xi_c", "reference": "6*xi_c,12xi_1"},
            "studies": {"s": study({"depth": 2})}}
    build_studies(good)  # valid
    assert shlex.split(section_flags(good, "fit", FIT_FLAGS)) == [
        "--bootstrap", "5", "--threshold", "between:0.5", "--step", "100, 200",
        "--boundary", "largest", "--forms", "n*xi_c,xi_min,n*min(xi_c,xi_1)"]
    # whatever a value holds, it stays one argument
    assert shlex.split(section_flags({"fit": {"forms": INJECTION}}, "fit", FIT_FLAGS)) == [
        "--forms", INJECTION]
    assert shlex.split(section_flags(good, "figures", FIGURE_FLAGS)) == [
        "--forms", "xi_c", "--reference", "6*xi_c,12xi_1"]
    assert section_flags({}, "fit", FIT_FLAGS) == ""


def test_yaml_errors_name_the_file_and_line(tmp_path):
    from mfpipe.grid import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("studies:\n  s:\n    kind: train\n    grid: {depth: [2, 4}\n")
    with pytest.raises(InputError, match=r"config: .*bad.yaml, line 4 column \d+"):
        load_config(bad)
    with pytest.raises(InputError, match="an existing YAML file"):
        load_config(tmp_path)


def test_checkpoints_beyond_steps_are_refused_unless_steps_is_a_grid_axis():
    with pytest.raises(ConfigError, match=r"studies.s.checkpoints: got \[2000\]; .*steps=1000"):
        build_studies({"studies": {"s": study({"depth": 2}, {"steps": 1000,
                                                             "checkpoints": [10, 2000]})}})
    cells = cells_of({"studies": {"s": study({"depth": 2, "steps": [100, 1000]},
                                             {"checkpoints": [10, 500]})}})
    assert [c.params["checkpoints"] for c in cells] == [[10, 100], [10, 500, 1000]]


@pytest.mark.parametrize("name", ["batch_size", "eval_size"])
def test_sizes_beyond_the_training_split_are_refused_up_front(name):
    with pytest.raises(ConfigError, match=rf"studies.s.{name}: got 5000; .* 4000, the size of "
                                          r"mnist5k's training split"):
        build_studies({"studies": {"s": study({"depth": [2, 3], "dataset": "mnist5k"},
                                              {name: 5000})}})


def bundles_of(config, name="s"):
    return build_studies(config)[name]


def test_cells_form_bundles_over_the_member_axes():
    st = bundles_of({"studies": {"s": study(
        {"depth": [2, 4], "sigma_w2": [1, 2, 3], "keep_rate": [1, 0.9], "seed": [0, 1]},
        {"steps": 10})}})
    assert len(st.bundles) == 2 and st.unbundled == []  # one bundle per depth
    assert [len(b.cells) for b in st.bundles] == [12, 12]
    b = st.bundles[1]
    assert b.group == "dataset=mnist5k/depth=4"
    assert b.stamp == "results/bundles/s/dataset=mnist5k/depth=4/bundle0.json"
    assert {c.params["depth"] for c in b.cells} == {4}
    # what a bundle job reconstructs from its flags and each member's path is that cell
    parser = argparse.ArgumentParser()
    cellmod.add_common_arguments(parser, "train")
    shared = cellmod.params_from_args(parser.parse_args(b.args.split()), "train")
    for cell in b.cells:
        assert "--sigma-w2" not in b.args and "--seed" not in b.args
        assert cellmod.complete_params("train", {**shared, **cellmod.params_from_path(
            "train", cell.path)}) == cell.params
    # a bundle costs its members' FLOPs but one latency floor
    assert b.seconds < sum(c.seconds for c in b.cells)


def test_member_axes_need_not_be_the_last_ones():
    """init and seed are member axes before depth and width: one bundle per (depth, width)."""
    st = bundles_of({"studies": {"s": study(
        {"init": ["gaussian", "orthogonal"], "seed": [0, 1], "depth": [2, 4], "width": [8, 16]},
        {"steps": 10})}})
    assert st.unbundled == [] and len(st.bundles) == 4
    for b in st.bundles:
        assert len(b.cells) == 4 and "init=" not in b.group and "seed=" not in b.group
        assert len({(c.params["depth"], c.params["width"]) for c in b.cells}) == 1
        assert "--init" not in b.args and "--seed" not in b.args


def test_bundle_size_and_memory_cut_bundles_and_a_size_of_one_is_one_job_per_cell():
    config = {"studies": {"s": study({"depth": [2, 4], "sigma_w2": [1, 2, 3], "seed": [0, 1, 2]},
                                     {"steps": 10})}}
    assert [len(b.cells) for b in bundles_of(config).bundles] == [9, 9]
    config["resources"] = {"bundle_size": 4}
    st = bundles_of(config)
    assert [len(b.cells) for b in st.bundles] == [3, 3, 3, 3, 3, 3]  # balanced, ≤ 4
    assert [b.index for b in st.bundles] == [0, 1, 2, 0, 1, 2]
    assert len({b.stamp for b in st.bundles}) == 6
    config["resources"] = {"bundle_size": 1}
    st = bundles_of(config)
    assert st.bundles == [] and len(st.unbundled) == 18
    config["studies"]["s"]["grid"].update(depth=[2, 200], width=256)
    st = bundles_of(config)
    deep = max(c.mem_mb for c in st.cells) - 4000
    shallow = min(c.mem_mb for c in st.cells) - 4000
    assert 9 * shallow < 2 * deep
    config["resources"] = {"bundle_mem_mb": 4000 + 2 * deep}  # two of the deepest members
    st = bundles_of(config)
    # memory is per group: the shallow depth bundles all 9, the deep one 2, 2, 1 → a cell job, 2, 2
    assert [len(b.cells) for b in st.bundles] == [9, 2, 2, 2, 2]
    assert len(st.unbundled) == 1 and st.unbundled[0].params["depth"] == 200


def test_cells_without_member_axes_and_extra_cells_are_one_job_each():
    st = bundles_of({"studies": {"s": study({"depth": [2, 4, 8]}, {"steps": 10})}})
    assert st.bundles == [] and len(st.unbundled) == 3
    st = bundles_of({"studies": {"s": study({"depth": [2, 4], "seed": [0, 1]}, {"steps": 10},
                                            extra=[{"depth": 16, "seed": 5},
                                                   {"depth": 2, "seed": 7}])}})
    assert len(st.bundles) == 2 and [c.key for c in st.unbundled] == [
        "dataset=mnist5k/depth=16/seed=5", "dataset=mnist5k/depth=2/seed=7"]
    grad = bundles_of({"studies": {"s": study({"depth": 3, "seed": [0, 1]}, kind="grad")}})
    assert grad.bundles == []


def test_members_vanished_or_rewritten_after_their_bundle_job_count_only_while_its_stamp_holds(
        tmp_path, monkeypatch):
    """A stamp that describes the bundle as it is (members, identities, engine) reports a member
    whose file vanished (retrained alone) or was rewritten after it (retrained alone earlier);
    a stamp of other settings does not (the bundle's job reruns and trains what it lacks)."""
    import os

    monkeypatch.chdir(tmp_path)
    config = {"studies": {"s": study({"depth": [2], "seed": [0, 1, 2]}, {"steps": 10})}}
    (bundle,) = bundles_of(config).bundles
    assert bundle.after_job() == ([], [])  # never ran
    for cell in bundle.cells[1:]:
        Path(cell.path).parent.mkdir(parents=True, exist_ok=True)
        Path(cell.path).write_bytes(b"x")
        os.utime(cell.path, (1000, 1000))
    record = {"kind": "train", "engine_version": engine_versions()["train"],
              "cells": {c.path: c.id for c in bundle.cells}}
    Path(bundle.stamp).parent.mkdir(parents=True)
    Path(bundle.stamp).write_text(json.dumps(record))
    os.utime(bundle.stamp, (2000, 2000))
    first = bundle.cells[0]
    assert bundle.after_job() == ([first], [])
    config["studies"]["s"]["settings"]["steps"] = 20  # other identities: the bundle reruns
    (changed,) = bundles_of(config).bundles
    assert changed.stamp == bundle.stamp and changed.after_job() == ([], [])
    Path(first.path).write_bytes(b"x")  # retrained alone: newer than the stamp
    assert bundle.after_job() == ([], [first]) and changed.after_job() == ([], [])
    for text in (json.dumps({**record, "engine_version": -1}), "{damaged"):
        Path(bundle.stamp).write_text(text)
        os.utime(bundle.stamp, (2000, 2000))
        assert bundle.after_job() == ([], [])
    Path(bundle.stamp).write_text(json.dumps(record))
    os.utime(bundle.stamp, (2000, 2000))
    assert bundle.after_job() == ([], [first])


def test_a_grid_too_large_is_refused_with_its_size_before_it_is_built():
    with pytest.raises(ConfigError, match=r"studies.s.grid: got '100,000,000 cells \(100000 "
                                          r"sigma_w2 × 1000 sigma_b2\)'; allowed: at most 1,000,000"):
        build_studies({"studies": {"s": study({"sigma_w2": "1:4:100000", "sigma_b2": "1:2:1000"})}})


def test_status_of_bundled_cells_reads_their_bundle_stamps(tmp_path):
    """A bundle member is done when its bundle's stamp records its current identity, stale when
    it records another or none; without a stamp (or with one of paths only) its file tells.  Jobs left count bundles with anything
    to train, not cells."""
    from mfpipe import status

    config = {"studies": {"s": study({"depth": [2, 4], "seed": [0, 1, 2]}, {"steps": 10})}}
    studies = build_studies(config)
    first, second = studies["s"].bundles
    engine = engine_versions()["train"]
    for cell in first.cells + second.cells[:1]:
        (tmp_path / cell.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cell.path).write_bytes(b"x")  # unreadable: not this cell without a stamp
    for bundle in (first, second):
        (tmp_path / bundle.stamp).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / bundle.stamp).write_text(json.dumps(
            {"engine_version": engine, "cells": {c.path: c.id for c in bundle.cells}}))
    states = status.cell_states(studies, tmp_path)
    assert [len(states["s"][k]) for k in ("done", "stale", "missing")] == [4, 0, 2]
    (tmp_path / first.stamp).write_text(json.dumps(  # its job did not write the first member
        {"engine_version": engine, "cells": {c.path: c.id for c in first.cells[1:]}}))
    assert [len(status.cell_states(studies, tmp_path)["s"][k])
            for k in ("done", "stale", "missing")] == [3, 1, 2]
    (tmp_path / first.stamp).write_text(json.dumps(  # a stamp from before stamps held identities
        {"engine_version": engine, "trained": [c.path for c in first.cells]}))
    assert [len(status.cell_states(studies, tmp_path)["s"][k])  # unreadable files: not these cells
            for k in ("done", "stale", "missing")] == [1, 3, 2]
    (tmp_path / first.stamp).write_text(json.dumps(
        {"engine_version": engine, "cells": {c.path: "another" for c in first.cells}}))
    assert [len(status.cell_states(studies, tmp_path)["s"][k])
            for k in ("done", "stale", "missing")] == [1, 3, 2]
    (tmp_path / first.stamp).unlink()
    assert [len(status.cell_states(studies, tmp_path)["s"][k])
            for k in ("done", "stale", "missing")] == [1, 3, 2]
    summary = status.summarise(studies, states, resources_of(config))
    assert summary["total"]["jobs_left"] == 1  # the second bundle, for its 2 missing members


def test_the_workflow_draws_a_figure_when_a_table_it_needs_exists():
    """grid.FIGURE_TABLES says what each figure needs (mfpipe figures checks by it too): the
    workflow names its files per flag, and gets the figures it can draw with their inputs."""
    from mfpipe.grid import FIGURE_TABLES, drawable_figures
    from mfpipe import figures

    assert figures.FIGURES == tuple(FIGURE_TABLES)
    drawn = drawable_figures({
        "phase_diagram": {"theory": False},  # no theory map: not drawn
        "gradient_norms": {"gradients": "g.parquet", "theory": "t.parquet"},
        "universality": {"gradients": "g.parquet", "fit": "f.parquet"},  # fit: not its flag
        "trainability": {"fit": None},
        "fit_summary": {"fit": "f.parquet"},
    })
    assert drawn == {"gradient_norms": {"gradients": "g.parquet", "theory": "t.parquet"},
                     "universality": {"gradients": "g.parquet"}, "fit_summary": {"fit": "f.parquet"}}
    assert drawable_figures({"gradient_norms": {"theory": "t.parquet"}}) == {}  # optional alone
