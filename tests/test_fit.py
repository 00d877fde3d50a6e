"""`mfpipe fit`: empirical boundaries, L_max = n·ξ and rival forms, bootstrap, model comparison.

Synthetic tables are generated from the real theory engine's depth scales with a known rule
(trainable iff depth ≤ n·ξ) and noisy accuracies; the fit must give the rule back.
"""

from __future__ import annotations

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
