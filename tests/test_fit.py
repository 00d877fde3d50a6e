"""`mfpipe fit`: empirical boundaries, L_max = n·ξ and rival forms, bootstrap, model comparison.

Synthetic tables are generated from the real theory engine's depth scales with a known rule
(trainable iff depth ≤ n·ξ) and noisy accuracies; the fit must give the rule back.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfpipe import fit
from mfpipe.cli import main
from mfpipe.errors import InputError

SIGMA_W2 = np.round(np.arange(1.0, 4.01, 0.1), 2)
HUANG = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "huang2019" / "huang2019_heatmaps.csv"


def theory(sigma_w2, keep_rate=1.0, sigma_b2=0.05):
    s = np.asarray(sigma_w2, float)
    scales = fit._depth_scales("tanh", s, np.full_like(s, sigma_b2), np.full_like(s, keep_rate),
                               "dropout", np.zeros_like(s))
    xi_c = np.abs(np.asarray(scales["xi_c"], float))
    with np.errstate(divide="ignore"):
        xi_1 = 1 / np.abs(np.log(np.asarray(scales["chi_1"], float)))
    return xi_c, xi_1


def synthetic(n=6.0, xi="xi_c", seeds=3, depths=range(4, 304, 4), keep_rate=1.0, noise=0.03,
              rng_seed=0, **extra):
    """Accuracy 0.95 where depth ≤ n ξ, chance (0.1) beyond, plus Gaussian noise."""
    rng = np.random.default_rng(rng_seed)
    xi_c, xi_1 = theory(SIGMA_W2, keep_rate)
    scale = {"xi_c": xi_c, "xi_1": xi_1, "xi_min": np.fmin(xi_c, xi_1)}[xi]
    depths = np.asarray(list(depths))
    rows = []
    for s2, x in zip(SIGMA_W2, scale):
        for seed in range(seeds):
            ok = depths <= n * x
            acc = np.where(ok, 0.95, 0.1) + rng.normal(0, noise, len(depths))
            rows.append(pd.DataFrame(dict(dataset="mnist", optimizer="sgd", keep_rate=keep_rate,
                                          sigma_w2=s2, sigma_b2=0.05, activation="tanh",
                                          depth=depths, step=1000, seed=seed,
                                          train_accuracy=acc, **extra)))
    return pd.concat(rows, ignore_index=True)


def fits_by_form(result):
    return result.fits.set_index("form")


def test_known_multiplier_of_xi_c_is_recovered_with_an_interval():
    result = fit.fit_table(synthetic(n=6.0), n_boot=200, seed=1)
    f = fits_by_form(result)
    row = f.loc["n*xi_c"]
    assert row["n_low"] <= 6.0 <= row["n_high"] * 1.01  # midpoint boundaries: ≈ unbiased
    assert abs(row["n"] - 6.0) < 0.2 and row["n_high"] - row["n_low"] < 1.0
    assert row["classification_accuracy"] > 0.97
    assert abs(row["n_classifier"] - 6.0) < 0.3
    # the power law contains the true form (β = 1) and must find it
    assert abs(f.loc["a*xi_c^beta", "beta"] - 1.0) < 0.1
    # the true form beats ξ_1 on AIC and held-out error
    assert f.loc["n*xi_c", "aic"] < f.loc["n*xi_1", "aic"]
    assert f.loc["n*xi_c", "cv_rmse_log"] < f.loc["n*xi_1", "cv_rmse_log"]
    assert f["delta_aic"].idxmin() in ("n*xi_c", "a*xi_c^beta", "a*xi_c+b")  # a ξ_c form wins
    assert "n*xi_c" in result.summary and "Model comparison" in result.summary


def test_known_multiplier_of_xi_1_picks_xi_1():
    result = fit.fit_table(synthetic(n=12.0, xi="xi_1", depths=range(5, 305, 5)), n_boot=100)
    f = fits_by_form(result)
    assert abs(f.loc["n*xi_1", "n"] - 12.0) < 0.6
    assert f.loc["n*xi_1", "aic"] < f.loc["n*xi_c", "aic"]
    assert f.loc["n*xi_1", "classification_accuracy"] > f.loc["n*xi_c", "classification_accuracy"]


def test_censoring_marks_columns_that_train_everywhere_or_nowhere():
    table = synthetic(n=6.0, depths=range(40, 130, 10))
    result = fit.fit_table(table, n_boot=0)
    b = result.boundaries.set_index("sigma_w2")
    xi_c, _ = theory(b.index.to_numpy())
    deep = 6 * xi_c >= 120       # deepest tested depth (120) still trains
    shallow = 6 * xi_c < 40      # not even the shallowest (40) trains
    assert deep.any() and shallow.any()
    assert (b["censored"][deep] == "above").all()
    assert (b["censored"][shallow] == "none").all()
    assert (b["censored"][~deep & ~shallow] == "observed").all()
    assert b["depth_max_trainable"][shallow].isna().all()
    assert (b["depth_max_trainable"][deep] == 120).all()
    row = fits_by_form(result).loc["n*xi_c"]
    assert row["n_censored_above"] == deep.sum() and row["n_censored_none"] == shallow.sum()
    assert row["n_observed"] == (~deep & ~shallow).sum()


def test_seeds_are_averaged_and_threshold_options():
    base = dict(dataset="mnist", optimizer="sgd", keep_rate=1.0, sigma_b2=0.05,
                activation="tanh", step=10, sigma_w2=1.5)
    rows = [dict(base, depth=10, seed=s, train_accuracy=a) for s, a in ((0, 0.9), (1, 0.9), (2, 0.1))]
    rows += [dict(base, depth=20, seed=s, train_accuracy=a) for s, a in ((0, 0.3), (1, 0.35), (2, 0.3))]
    rows += [dict(base, depth=30, seed=s, train_accuracy=np.nan, diverged=True) for s in range(3)]
    rows += [dict(base, depth=40, seed=s, train_accuracy=np.nan, diverged=False) for s in range(3)]  # not measured
    table = pd.DataFrame(rows)
    table["diverged"] = table["diverged"].fillna(False).astype(bool)
    cells = fit.fit_table(table, n_boot=0).cells.set_index("depth")
    assert cells.loc[10, "accuracy"] == pytest.approx((0.9 + 0.9 + 0.1) / 3)
    assert cells.loc[10, "frac_seeds_trainable"] == pytest.approx(2 / 3)
    assert cells.loc[30, "accuracy"] == pytest.approx(0.1)  # a diverged run is at chance
    assert 40 not in cells.index  # a missing measurement is no cell
    best = (0.9 + 0.9 + 0.1) / 3
    assert cells.loc[10, "threshold"] == pytest.approx(0.1 + 0.5 * (best - 0.1))
    assert list(cells["trainable"]) == [True, False, False]
    rel = fit.fit_table(table, n_boot=0, threshold="relative:0.7").cells.set_index("depth")
    assert rel.loc[10, "threshold"] == pytest.approx(0.7 * best)
    assert list(rel["trainable"]) == [True, False, False]
    absolute = fit.fit_table(table, n_boot=0, threshold="absolute:0.3").cells.set_index("depth")
    assert list(absolute["trainable"]) == [True, True, False]
    for bad in ("half", "between:1.5", "absolute:x"):
        with pytest.raises(InputError, match="threshold"):
            fit.fit_table(table, threshold=bad)


def test_panels_split_by_step_keep_rate_and_dataset():
    a = synthetic(n=6.0, seeds=1, depths=range(10, 210, 10))
    b = synthetic(n=6.0, seeds=1, depths=range(10, 210, 10), keep_rate=0.98)
    c = a.assign(step=100)
    result = fit.fit_table(pd.concat([a, b, c]), n_boot=20, forms=["n*xi_c"])
    panels = result.fits[~result.fits["pooled"]]
    assert panels["panel"].nunique() == 3
    assert set(zip(panels["keep_rate"], panels["step"])) == {(1.0, 1000), (0.98, 1000), (1.0, 100)}
    # one rule for all panels: the pooled fit gives the common n back
    pooled = result.fits[result.fits["pooled"]].set_index("form")
    assert pooled.loc["n*xi_c", "panel"] == fit.POOLED
    assert abs(pooled.loc["n*xi_c", "n"] - 6.0) < 0.4
    assert pooled.loc["n*xi_c", "n_low"] < pooled.loc["n*xi_c", "n"] < pooled.loc["n*xi_c", "n_high"]
    assert "pooled fit" in result.summary
    last = fit.fit_table(pd.concat([a, c]), n_boot=0, forms=["n*xi_c"], step="last")
    assert list(last.fits.query("not pooled")["step"]) == [1000]
    at_init = a.assign(step=0, train_accuracy=0.1)  # step 0: the untrained network, no panel
    assert fit.fit_table(pd.concat([a, at_init]), n_boot=0, forms=["n*xi_c"]).fits["step"].tolist() == [1000]
    assert fit.fit_table(pd.concat([a, at_init]), n_boot=0, forms=["n*xi_c"], step="0").fits["step"].tolist() == [0]


def test_input_contract_errors_name_the_missing_column():
    table = synthetic(seeds=1, depths=[10, 20]).drop(columns=["sigma_b2"])
    with pytest.raises(InputError, match="sigma_b2.*--set"):
        fit.fit_table(table)
    with pytest.raises(InputError, match="forms"):
        fit._parse_forms("n*xi_q")
    assert fit._parse_forms("n*xi_c,n*min(xi_c,xi_1)") == ["n*xi_c", "n*min(xi_c,xi_1)"]
    assert fit._parse_forms("xi_c,xi_min,power") == ["n*xi_c", "n*min(xi_c,xi_1)", "a*xi_c^beta"]


def test_cli_reads_csv_with_set_and_exclude_and_writes_all_outputs(tmp_path, capsys):
    table = synthetic(n=6.0, seeds=1, depths=range(10, 210, 10)).drop(columns=["sigma_b2", "activation", "step"])
    table["steps"] = 500
    table["placeholder"] = False
    junk = table.iloc[:40].assign(train_accuracy=0.0, placeholder=True)
    src = tmp_path / "published.csv"
    pd.concat([table, junk]).to_csv(src, index=False)
    out = tmp_path / "fit" / "fit.parquet"
    code = main(["fit", str(src), "-o", str(out), "--set", "sigma_b2=0.05", "--set", "activation=tanh",
                 "--exclude", "placeholder=true", "--bootstrap", "50"])
    assert code == 0
    fits = pd.read_parquet(out)
    assert set(fits["form"]) == set(fit.FORMS)
    assert {"n", "n_low", "n_high", "classification_accuracy", "dataset", "keep_rate", "steps"} <= set(fits.columns)
    assert abs(fits.set_index("form").loc["n*xi_c", "n"] - 6.0) < 0.6
    for suffix in (".boundaries.parquet", ".cells.parquet", ".curves.parquet", ".md"):
        assert (tmp_path / "fit" / f"fit{suffix}").exists()
    cells = pd.read_parquet(tmp_path / "fit" / "fit.cells.parquet")
    assert len(cells) == len(table)  # the placeholder rows were dropped, not averaged in
    assert "Model comparison" in capsys.readouterr().out
    assert main(["fit", str(src), "-o", str(out)]) == 2  # no --set: names the missing columns
    assert "sigma_b2" in capsys.readouterr().err


def test_bootstrap_is_reproducible_for_a_seed():
    table = synthetic(n=6.0, seeds=2, depths=range(10, 210, 10))
    one = fit.fit_table(table, n_boot=50, seed=3, forms=["n*xi_c"]).fits
    two = fit.fit_table(table, n_boot=50, seed=3, forms=["n*xi_c"]).fits
    pd.testing.assert_frame_equal(one, two)


def huang_table():
    if not HUANG.exists():
        pytest.skip(f"reference data not present at {HUANG}")
    return pd.read_csv(HUANG)


def test_huang2019_heatmaps_go_through_the_same_fit(tmp_path):
    """Huang et al.'s published heatmaps, per family, placeholder files excluded."""
    out = tmp_path / "huang_fit.parquet"
    code = main(["fit", str(HUANG) if HUANG.exists() else "missing.csv", "-o", str(out),
                 "--set", "sigma_b2=0.05", "--set", "activation=tanh",
                 "--exclude", "duplicate_placeholder_file=true", "--bootstrap", "200"]) if HUANG.exists() else None
    if code is None:
        pytest.skip("reference data not present")
    assert code == 0
    fits = pd.read_parquet(out)
    assert fits["family"].nunique() == 9
    xi_c = fits[(fits["form"] == "n*xi_c") & ~fits["pooled"]].set_index("family")
    assert len(xi_c) == 9
    assert xi_c["n"].notna().all()
    assert (xi_c["n_low"] <= xi_c["n"]).all() and (xi_c["n"] <= xi_c["n_high"]).all()
    # the published heatmaps show a boundary that a multiple of ξ_c describes: the fitted
    # multipliers are of the order of the papers' 6–12 and the rule classifies most cells
    assert xi_c["n"].between(2, 30).all()
    assert (xi_c["classification_accuracy"] > 0.75).all()
    cells = pd.read_parquet(tmp_path / "huang_fit.cells.parquet")
    placeholders = huang_table().query("duplicate_placeholder_file")
    assert len(cells) == len(huang_table()) - len(placeholders)


def test_a_panel_without_observed_boundary_gives_no_fit_and_no_warnings():
    import warnings

    table = synthetic(n=1000.0, seeds=1, depths=[10, 20])  # every cell trains: all columns 'above'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit.fit_table(table, n_boot=20)
    f = fits_by_form(result)
    assert (result.boundaries["censored"] == "above").all()
    assert f["n"].isna().all() and f["classification_accuracy"].isna().all()
    assert f["n_classifier"].isna().all()  # only a lower bound: every cell trains


def cell_rows(depths, accuracy, *, sigma_w2=1.5, seeds=(0,), **columns):
    """Rows of one σ_w² column: one per (depth, seed), the given accuracies per depth."""
    base = dict(dataset="mnist", optimizer="sgd", keep_rate=1.0, sigma_b2=0.05, activation="tanh",
                step=1000, sigma_w2=sigma_w2, lr=0.01, diverged=False, train_loss=0.3)
    return pd.DataFrame([dict(base, depth=d, seed=s, train_accuracy=a, **columns)
                         for d, a in zip(depths, accuracy) for s in seeds])


def test_a_panel_at_chance_has_no_trainable_cell():
    """between:0.5 of a panel whose best is chance must not put the threshold at chance."""
    table = pd.concat([cell_rows([4, 8], [0.1, 0.1], sigma_w2=s) for s in (1.0, 2.0)])
    result = fit.fit_table(table, n_boot=0)
    assert not result.cells["trainable"].any()
    assert (result.cells["threshold"] > 0.1).all()
    assert (result.boundaries["censored"] == "none").all()
    # a fixed threshold below chance is raised to clearly above chance too
    low = fit.fit_table(table.assign(train_accuracy=0.11), n_boot=0, threshold="absolute:0.05")
    assert not low.cells["trainable"].any()
    assert low.cells["threshold"].iloc[0] == pytest.approx(0.1 + fit.CHANCE_MARGIN * 0.9)


def test_diverged_runs_are_never_trainable_whatever_their_accuracy():
    # relu at lr 1e6: diverged, accuracy recorded at chance, alone in its panel
    relu = cell_rows([4], [0.1], activation="relu", lr=1e6, diverged=True, train_loss=np.nan)
    good = cell_rows([4, 8, 16], [0.95, 0.95, 0.95])
    # a diverged run whose recorded accuracy is high: still not trainable
    bad = cell_rows([4, 8, 16], [0.95, 0.95, 0.95], sigma_w2=2.0, diverged=True)
    result = fit.fit_table(pd.concat([relu, good, bad]), n_boot=0)
    cells = result.cells.set_index(["activation", "sigma_w2", "depth"])
    assert not cells.loc[("relu", 1.5, 4), "trainable"]
    assert cells.loc[("tanh", 1.5), "trainable"].all()
    assert not cells.loc[("tanh", 2.0), "trainable"].any()
    # counted at chance (a pandas Series == approx compares element by element, and wrongly)
    assert cells.loc[("tanh", 2.0), "accuracy"].to_numpy() == pytest.approx(0.1)
    assert (cells.loc[("tanh", 2.0), "n_diverged"] == 1).all()
    bounds = result.boundaries.set_index(["activation", "sigma_w2"])["censored"]
    assert bounds[("relu", 1.5)] == "none" and bounds[("tanh", 2.0)] == "none"


def test_a_blown_up_finite_loss_counts_as_diverged():
    """tanh at lr 1e6: finite loss 1.6e6, diverged = false, accuracy 0.28: not trainable."""
    blown = cell_rows([4, 8], [0.28, 0.25], lr=1e6, train_loss=1.6e6)
    blown.loc[blown["depth"] == 8, "train_loss"] = np.inf
    cells = fit.fit_table(blown, n_boot=0).cells.set_index("depth")
    assert not cells["trainable"].any() and (cells["n_diverged"] == 1).all()
    assert cells["accuracy"].to_numpy() == pytest.approx(0.1)
    # a high loss below the limit (10 ln 10 = 23.0 for 10 classes) is a result, not a divergence
    good = cell_rows([4, 8, 16], [0.95, 0.9, 0.6])
    good.loc[good["depth"] == 16, "train_loss"] = 20.0
    cells = fit.fit_table(good, n_boot=0).cells.set_index("depth")
    assert cells["trainable"].all() and (cells["n_diverged"] == 0).all()
    # the limit is a multiple of ln(num_classes): --max-loss inf keeps only the diverged flag
    loose = fit.fit_table(blown, n_boot=0, max_loss=math.inf).cells.set_index("depth")
    assert loose.loc[4, "trainable"] and loose.loc[4, "n_diverged"] == 0
    # the loss column follows the accuracy column (batch_accuracy -> batch_loss)
    batch = blown.assign(batch_accuracy=blown["train_accuracy"], batch_loss=0.3)
    other = fit.fit_table(batch, n_boot=0, accuracy="batch_accuracy").cells
    assert (other["n_diverged"] == 0).all()
    with pytest.raises(InputError, match="max-loss"):
        fit.fit_table(blown, n_boot=0, max_loss=0)


def test_panels_split_on_every_varying_parameter_lr_included():
    base = synthetic(n=6.0, seeds=1, depths=range(10, 210, 10)).assign(lr=0.01)
    # one run at lr 1e6 at a grid point of the lr 0.01 study: its own panel, not mixed in
    wild = base[(base["sigma_w2"] == 2.0) & (base["depth"] == 10)].assign(lr=1e6, train_accuracy=0.28)
    result = fit.fit_table(pd.concat([base, wild]), n_boot=0, forms=["n*xi_c"])
    panels = result.fits.query("not pooled")
    assert sorted(panels["lr"]) == [0.01, 1e6]
    cells = result.cells.set_index(["lr", "sigma_w2", "depth"])
    assert cells.loc[(0.01, 2.0, 10), "accuracy"] == pytest.approx(
        base.query("sigma_w2 == 2.0 and depth == 10")["train_accuracy"].iloc[0])
    assert "lr" in result.summary
    # any other varying cell parameter splits too (here preprocess)
    two = pd.concat([base.assign(preprocess="standardize"), base.assign(preprocess="unit")])
    assert fit.fit_table(two, n_boot=0, forms=["n*xi_c"]).fits.query("not pooled")["preprocess"].nunique() == 2


def test_a_learning_rate_depth_rule_is_one_panel_named_in_the_summary():
    table = synthetic(n=6.0, seeds=1, depths=range(10, 210, 10))
    table["lr"] = np.where(table["depth"] < 100, 1e-3, 1e-4)  # Schoenholz's rule, at depth 100
    result = fit.fit_table(table, n_boot=0, forms=["n*xi_c"])
    assert result.fits.query("not pooled")["panel"].nunique() == 1
    assert "0.001,100:0.0001" in result.summary


def test_cli_max_loss_is_checked(tmp_path, capsys):
    src = tmp_path / "t.parquet"
    cell_rows([4, 8], [0.9, 0.9]).to_parquet(src)
    assert main(["fit", str(src), "-o", str(tmp_path / "fit.parquet"), "--max-loss", "0"]) == 2
    assert "max-loss" in capsys.readouterr().err
    assert main(["fit", str(src), "-o", str(tmp_path / "fit.parquet"), "--max-loss", "inf",
                 "--bootstrap", "0"]) == 0
    assert "never trainable" in (tmp_path / "fit.md").read_text()


def test_an_unwritable_fit_output_is_refused_before_fitting(tmp_path, capsys):
    from mfpipe.cli import main

    table = tmp_path / "t.csv"
    synthetic(n=6.0, seeds=1, depths=range(10, 60, 10)).to_csv(table, index=False)
    (tmp_path / "afile").write_text("")
    assert main(["fit", str(table), "-o", str(tmp_path / "afile" / "fit.parquet")]) == 2
    assert "output" in capsys.readouterr().err
    assert main(["fit", str(table), "-o", str(tmp_path / "fit.txt")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "t.csv"]
