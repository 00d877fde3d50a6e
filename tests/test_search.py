"""The boundary search (mfpipe.search) on synthetic trainability oracles: the real planner and
the fit's rule, no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfpipe import search
from mfpipe.errors import InputError
from mfpipe.grid import ConfigError, build_studies, key_without

DEPTHS = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128, 181, 256]
SIGMAS = [1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0]


def study_of(depths=DEPTHS, sigmas=SIGMAS, seeds=(0, 1), keep_rates=(1, 0.98), **spec):
    config = {"studies": {"s": {"kind": "train", "search": True, **spec,
                                "grid": {"dataset": "digits", "width": 8, "depth": list(depths),
                                         "sigma_w2": list(sigmas), "keep_rate": list(keep_rates),
                                         "seed": list(seeds)},
                                "settings": {"steps": 10, "batch_size": 16, "eval_size": 50}}}}
    return build_studies(config)["s"]


def column_key(cell) -> str:
    return key_without(cell.key, ("depth", "seed"))


def run_search(study, boundary, options=None, results=None, flip=lambda cell: False, seed=0):
    """Search with the oracle 'trainable iff depth ≤ boundary(column key)' (``flip`` inverts
    chosen cells); returns (plans, results, the cells trained in order)."""
    rng = np.random.default_rng(seed)
    trained = []

    def oracle(cell):
        trained.append(cell)
        ok = cell.params["depth"] <= boundary(column_key(cell))
        return search.oracle_rows(cell, ok != flip(cell), rng)

    options = options or dict(search.SEARCH_DEFAULTS)
    plans = search.simulate(study, options, search.fit_options({}), oracle, results)
    return plans, trained


def true_bracket(boundary: float, depths=DEPTHS):
    good = [d for d in depths if d <= boundary]
    bad = [d for d in depths if d > boundary]
    return (good[-1] if good else None, bad[0] if bad else None)


def xi_boundary(study, n=5.0):
    columns = {c.key: c for c in search.columns_of(study, 6.0)}
    return lambda key: n * min(columns[key].xi_c, 1e9)


def test_the_search_finds_every_known_boundary_with_a_fraction_of_the_cells():
    study = study_of()
    boundary = xi_boundary(study)
    plans, trained = run_search(study, boundary)
    final = plans[-1]
    assert final.summary()["complete"] and not final.cells
    for column in final.columns:
        expected = true_bracket(boundary(column.key))
        assert column.bracket == expected, column.key
        if expected[1] is None:
            assert column.state == "censored_above"  # σ_w² near criticality: 256 still trains
        else:
            assert column.state == "bracketed"
    assert len({c.key for c in trained}) == len(trained)  # no cell twice
    assert len(trained) * 3 < len(study.cells)  # 15 depths: ≥ 3× fewer cells than the grid
    # every probed depth has all its seeds (seeds are pooled, as in the fit)
    per_depth = {}
    for cell in trained:
        per_depth.setdefault((column_key(cell), cell.params["depth"]), set()).add(cell.params["seed"])
    assert all(seeds == {0, 1} for seeds in per_depth.values())


def test_first_round_probes_the_two_depths_around_the_theory_prediction():
    study = study_of(sigmas=[1.0, 4.0], keep_rates=[1])
    columns = search.columns_of(study, 6.0)
    plan = search.plan_round(study, columns, {}, dict(search.SEARCH_DEFAULTS),
                             search.fit_options({}), 0)
    anchor = max(columns, key=lambda c: c.xi_c)  # σ_w² = 4: ξ_c 7.0 against 3.6
    for column in columns:
        prediction = 6.0 * column.xi_c
        pair = column.probe[1:] if column is anchor else column.probe
        lo, hi = (column.depths[i] for i in pair)
        assert lo <= prediction < hi
    # the anchor of the panel's threshold: its best cell, at the shallowest depth
    assert anchor.probe[0] == 0 and anchor.sigma_w2 == 4.0
    assert len(plan.cells) == (2 * 2 + 1) * 2  # (2 columns × 2 depths + the anchor) × 2 seeds


def test_censored_columns_are_reported_as_the_fit_reports_them():
    study = study_of(sigmas=[1.0, 4.0], keep_rates=[1])
    always = run_search(study, lambda key: math.inf)[0][-1]
    assert {c.state for c in always.columns} == {"censored_above"}
    assert all(c.bracket == (256, None) for c in always.columns)
    never = run_search(study, lambda key: 1)[0][-1]
    assert {c.state for c in never.columns} == {"censored_below"}
    assert all(c.bracket == (None, 2) for c in never.columns)


def test_a_non_monotone_column_is_sampled_densely_and_reported():
    # a column known to fail at 8 but train at 2 and 16 (a hole in depth): every depth between
    # the failing one and the deepest that trains is sampled, and the column is flagged
    study = study_of(sigmas=[2.5], keep_rates=[1], depths=[2, 4, 8, 11, 16, 23, 32, 45, 64])
    results = {}
    rng = np.random.default_rng(1)
    columns = search.columns_of(study, 6.0)
    for cell in study.cells:  # known: fails at 8, trains at 16 and at 2
        if cell.params["depth"] in (2, 8, 16):
            results[cell.key] = search.oracle_rows(cell, cell.params["depth"] != 8, rng)
    plan = search.plan_round(study, columns, results, dict(search.SEARCH_DEFAULTS),
                             search.fit_options({}), 1)
    (column,) = plan.columns
    assert column.non_monotone
    assert {cell.params["depth"] for cell in plan.cells} >= {11}  # every depth between 8 and 16
    # run to the end (the oracle: trainable to 16 but not at 8): reported, bracketed at the top
    plans, trained = run_search(study, lambda key: 16, results=results,
                                flip=lambda cell: cell.params["depth"] == 8)
    (column,) = plans[-1].columns
    assert column.non_monotone and column.bracket == (16, 23) and column.state == "bracketed"
    assert 11 in {c.params["depth"] for c in trained}


def test_seeds_that_disagree_at_a_bracket_end_widen_the_sampling():
    study = study_of(sigmas=[2.5], keep_rates=[1], seeds=(0, 1, 2))
    # at depth 45 (the deepest that trains) seed 2 fails: 2 of 3 seeds train, the mean passes
    plans, trained = run_search(study, lambda key: 45,
                                flip=lambda cell: cell.params["depth"] == 45 and cell.params["seed"] == 2)
    (column,) = plans[-1].columns
    assert column.seeds_disagree and column.bracket == (45, 64)
    assert 32 in {c.params["depth"] for c in trained}  # below the trainable end they split on


def test_existing_cells_are_reused_and_a_new_seed_trains_only_its_own_cells():
    study = study_of(sigmas=[1.0, 2.5, 4.0], keep_rates=[1])
    boundary = xi_boundary(study)
    rng = np.random.default_rng(0)
    # a full grid computed before: the search trains nothing and finds the same brackets
    full = {c.key: search.oracle_rows(c, c.params["depth"] <= boundary(column_key(c)), rng)
            for c in study.cells}
    plans, trained = run_search(study, boundary, results=dict(full))
    assert trained == [] and len(plans) == 1
    for column in plans[0].columns:
        assert column.bracket == true_bracket(boundary(column.key))
    # a finished search, then a third seed: only seed-2 cells, at depths already probed
    plans, first = run_search(study, boundary)
    results = {c.key: search.oracle_rows(c, c.params["depth"] <= boundary(column_key(c)), rng)
               for c in first}
    probed = {(column_key(c), c.params["depth"]) for c in first}
    bigger = study_of(sigmas=[1.0, 2.5, 4.0], keep_rates=[1], seeds=(0, 1, 2))
    _, second = run_search(bigger, boundary, results=results)
    assert second and all(c.params["seed"] == 2 for c in second)
    assert {(column_key(c), c.params["depth"]) for c in second} == probed


def test_the_round_limit_stops_the_search_and_leaves_columns_open():
    study = study_of(sigmas=[2.5], keep_rates=[1])
    plans, _ = run_search(study, lambda key: 3, options={"n0": 1000.0, "max_rounds": 1})
    assert len(plans) == 2 and plans[-1].cells == []
    (column,) = plans[-1].columns
    assert column.state == "open" and column.probe  # it would go on


def test_parts_split_a_round_into_bundles_of_at_most_the_bundle_size():
    study = study_of()
    columns = search.columns_of(study, 6.0)
    plan = search.plan_round(study, columns, {}, dict(search.SEARCH_DEFAULTS),
                             search.fit_options({}), 0)
    parts = search.plan_parts(study, plan.cells, {"bundle_size": 5})
    assert sum(len(p) for p in parts) == len(plan.cells)
    assert max(len(p) for p in parts) <= 5
    for part in parts:  # one depth per part: a stacked bundle
        assert len({c.params["depth"] for c in part}) == 1


@pytest.mark.parametrize("spec, field", [
    ({"search": {"n0": 0}}, "studies.s.search"),
    ({"search": {"max_rounds": 0}}, "studies.s.search"),
    ({"search": {"rounds": 3}}, "studies.s.search"),
    ({"search": "yes"}, "studies.s.search"),
])
def test_bad_search_options_are_refused_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as err:
        study_of(**spec)
    assert field in str(err.value)


def test_a_search_needs_a_train_study_with_several_depths_and_no_extra_cells():
    with pytest.raises(ConfigError, match=r"studies\.s\.grid\.depth"):
        study_of(depths=[8])
    with pytest.raises(ConfigError, match="extra_cells"):
        study_of(extra_cells=[{"depth": 2, "sigma_w2": 1.0, "keep_rate": 1, "seed": 0}])
    with pytest.raises(InputError, match="n0"):
        search.search_options({"n0": -1}, "studies.s.search")
    assert search.search_options(True, "x") == search.SEARCH_DEFAULTS
    assert search.search_options(None, "x") is None


def test_the_search_command_plans_a_round_and_refuses_a_study_without_search(tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from mfpipe.cli import main

    config = {"studies": {
        "s": {"kind": "train", "search": {"n0": 6, "max_rounds": 3},
              "grid": {"dataset": "digits", "width": 8, "depth": [2, 4, 8, 16],
                       "sigma_w2": [1.0, 4.0], "seed": [0, 1]},
              "settings": {"steps": 10, "batch_size": 16, "eval_size": 50}},
        "g": {"kind": "train", "grid": {"dataset": "digits", "width": 8, "depth": [2, 4]},
              "settings": {"steps": 10, "batch_size": 16, "eval_size": 50}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", str(path), "--study", "s", "--round", "0",
                 "-o", "results/search/s/round0", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["summary"]["cells_to_train"] == 6 and state["summary"]["open"] == 2
    plan = json.loads((tmp_path / "results/search/s/round0/plan.json").read_text())
    parts = [json.loads((tmp_path / f"results/search/s/round0/part{j['part']}.json").read_text())
             for j in plan["jobs"]]
    # both predictions (6·ξ_c = 22 and 42) lie beyond depth 16: each column trains only 16, and
    # σ_w² = 4 (the panel's threshold anchor) depth 2 as well, × 2 seeds
    assert sum(len(p) for p in parts) == 6
    assert all(c["output"].startswith("results/cells/s/dataset=digits/") for p in parts for c in p)
    assert main(["search", "--config", str(path), "--study", "g"]) == 2  # not a searched study
    err = capsys.readouterr().err
    assert "study" in err and "a study with a search section: s" in err


def test_a_column_that_must_widen_jumps_to_the_multiplier_its_panel_shows():
    depths = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]
    column = search.Column("c", "p", depths, [[] for _ in depths], 2.0, xi_c=4.0)
    unknown = [None] * len(depths)
    both_fail = list(unknown)
    both_fail[8] = both_fail[9] = False  # 32 and 45 fail (the first guess 6·ξ_c = 24 was deep)
    search.next_probe(column, both_fail, [False] * len(depths), 6.0)
    assert column.probe == [7]  # no calibration: one step down
    search.next_probe(column, both_fail, [False] * len(depths), 6.0, n_estimate=2.0)
    assert column.probe == [4]  # the panel's columns say n = 2: straight to 2·ξ_c = 8
    both_train = list(unknown)
    both_train[2] = both_train[3] = True
    search.next_probe(column, both_train, [False] * len(depths), 6.0, n_estimate=8.0)
    assert column.probe == [8]  # up to 8·ξ_c = 32
    # without an estimate, widening reaches at least the theory's n0·ξ_c: a column whose only
    # cell is the panel's anchor (its shallowest depth, trainable) goes straight to 6·ξ_c = 24
    only_anchor = list(unknown)
    only_anchor[0] = True
    search.next_probe(column, only_anchor, [False] * len(depths), 6.0)
    assert [depths[i] for i in column.probe] == [23]
    critical = search.Column("k", "p", depths, [[] for _ in depths], 1.76, xi_c=math.inf)
    search.next_probe(critical, only_anchor, [False] * len(depths), 6.0)
    assert critical.probe == [len(depths) - 1]  # ξ_c = ∞: the deepest depth
    # a column without cells starts around the estimate instead of n0: 2·ξ_c = 8 -> (8, 11)
    search.next_probe(column, unknown, [False] * len(depths), 6.0, n_estimate=2.0)
    assert [depths[i] for i in column.probe] == [8, 11]


def test_the_panel_multiplier_is_a_line_in_log_n_against_log_sigma_w2():
    from mfpipe.fit import identric_mean

    depths = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]
    a = search.Column("a", "p", depths, [], 1.0, xi_c=4.0, state="bracketed", bracket=(8, 11))
    b = search.Column("b", "p", depths, [], 4.0, xi_c=8.0, state="bracketed", bracket=(16, 23))
    c = search.Column("c", "p", depths, [], 1.76, xi_c=math.inf, state="censored_above")
    d = search.Column("d", "p", depths, [], 2.0, xi_c=3.0, state="open", bracket=(None, 8))
    n_a = float(identric_mean(8, 11)) / 4.0
    n_b = float(identric_mean(16, 23)) / 8.0
    trend = search.multiplier_trend([a, b, c, d])
    assert trend["a"] == pytest.approx(n_a) and trend["b"] == pytest.approx(n_b)
    # σ_w² = 2 lies halfway between 1 and 4 in log: the geometric mean of the two n
    assert trend["d"] == pytest.approx(math.sqrt(n_a * n_b))
    # a column far off the line does not tilt it (near criticality, ξ_c ≫ the boundary: its n
    # is tiny): the median of the pairwise slopes keeps the line through a and b
    e = search.Column("e", "p", depths, [], 1.5, xi_c=5000.0, state="bracketed", bracket=(32, 45))
    robust = search.multiplier_trend([a, e, b, d])
    assert robust["a"] == pytest.approx(n_a) and robust["b"] == pytest.approx(n_b)
    assert robust["d"] == pytest.approx(math.sqrt(n_a * n_b))
    # censored and open columns do not count; one bracketed column gives its n to all
    assert search.multiplier_trend([a, c, d]) == pytest.approx({k: n_a for k in "acd"})
    assert search.multiplier_trend([c, d]) == {}


def test_a_prediction_off_the_depth_axis_trains_only_the_depth_beside_it():
    depths = [2, 4, 8, 16]
    assert search.first_probe(depths, 5.0) == [1, 2]  # around it: 4 and 8
    assert search.first_probe(depths, 16.0) == [3]  # at or beyond the deepest: 16 only
    assert search.first_probe(depths, math.inf) == [3]  # a critical column
    assert search.first_probe(depths, 1.5) == [0]  # below the shallowest: 2 only
    # a column whose deepest depth trains is settled (censored above) by that one depth
    study = study_of(sigmas=[1.0, 4.0], keep_rates=[1], depths=[2, 4, 8, 16])
    plans, trained = run_search(study, lambda key: math.inf)
    assert {c.state for c in plans[-1].columns} == {"censored_above"}
    assert sorted(c.params["depth"] for c in trained) == [2, 2, 16, 16, 16, 16]  # + the anchor


def test_pilots_calibrate_the_panel_and_the_other_columns_start_from_what_they_show():
    # 7 columns: pilots at σ_w² = 1.0, 2.0 and 4.0 (√7 ≈ 3, ends included); the truth n = 3
    # while n0 = 6, so the pilots' first guesses fail and they search
    study = study_of(keep_rates=[1])
    columns = search.columns_of(study, 6.0)
    by_sigma = {c.sigma_w2: c for c in columns}
    assert search.pilot_columns(sorted(columns, key=lambda c: c.sigma_w2)) == {
        by_sigma[s].key for s in (1.0, 2.0, 4.0)}
    boundary = xi_boundary(study, n=3.0)
    plans, trained = run_search(study, boundary)
    first_round = {}
    for r, plan in enumerate(plans):
        for cell in plan.cells:
            first_round.setdefault(column_key(cell), r)
    pilots = {by_sigma[s].key for s in (1.0, 2.0, 4.0)}
    anchor = max(columns, key=lambda c: c.xi_c).key
    assert {k for k, r in first_round.items() if r == 0} == pilots | {anchor}
    for column in plans[-1].columns:
        assert column.bracket == true_bracket(boundary(column.key)), column.key
        if column.key in pilots or column.key == anchor:
            continue
        # a waiting column starts only once the pilots beside it are settled, from the n the
        # panel shows (≈ 3): its first pair is at most one depth value from its bracket
        start = first_round[column.key]
        assert start > 0
        before = search.plan_round(study, search.columns_of(study, 6.0),
                                   {c.key: search.oracle_rows(c, c.params["depth"] <= boundary(
                                       column_key(c)), np.random.default_rng(0))
                                    for p in plans[:start] for c in p.cells},
                                   dict(search.SEARCH_DEFAULTS), search.fit_options({}), start)
        planned = {c.key: c for c in before.columns}[column.key]
        assert len(planned.probe) == 2
        good, bad = (DEPTHS.index(d) for d in column.bracket)
        assert abs(planned.probe[0] - good) <= 1 and abs(planned.probe[1] - bad) <= 1

