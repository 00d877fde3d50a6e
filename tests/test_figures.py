"""`mfpipe figures`: every figure renders from synthetic or real tables, PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfpipe import figures
from mfpipe.cli import main
from mfpipe.theory import depth_scales

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "huang2019"


def theory_table(path, sigma_w2=np.linspace(0.5, 4, 15), sigma_b2=np.linspace(0, 0.3, 7),
                 keep_rate=(1.0, 0.98, 0.9)):
    W, B, R = np.meshgrid(np.round(sigma_w2, 6), np.round(sigma_b2, 6), keep_rate, indexing="ij")
    out = depth_scales("tanh", W, B, keep_rate=R)
    frame = pd.DataFrame({"activation": "tanh", "noise": "dropout", "sigma_w2": W.ravel(),
                          "sigma_b2": B.ravel(), "keep_rate": R.ravel(),
                          **{k: np.asarray(v).ravel() for k, v in out.items()}})
    frame.to_parquet(path, index=False)
    return frame


def iterates_table(path):
    """The theory engine's own iterates command (its tidy output is the figure's input)."""
    assert main(["iterates", "--sigma-w2", "0.5,1,1.5,2.5,3", "--sigma-b2", "0.05", "--q0", "0.8",
                 "--c0", "0.6", "--depth", "40", "-o", str(path)]) == 0


def gradient_rows(depth=30, sigma_w2=(1.0, 1.5, 2.5, 3.5), inits=6, seed=0):
    """grad_sq_norm = χ1^(L−1−l) times log-normal noise per init: the exact theory slope."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in sigma_w2:
        chi = float(depth_scales("tanh", s, 0.05)["chi_1"])
        for mode in ("real", "independent"):
            for init in range(inits):
                layer = np.arange(depth)
                value = chi ** (depth - 1 - layer) * np.exp(rng.normal(0, 0.3, depth))
                rows.append(pd.DataFrame({"activation": "tanh", "sigma_w2": s, "sigma_b2": 0.05,
                                          "keep_rate": 1.0, "depth": depth, "width": 64, "seed": 0,
                                          "init_index": init, "layer": layer, "mode": mode,
                                          "grad_sq_norm": value, "g_aa": value / 64 ** 2,
                                          "g_ab": value / 64 ** 2 * rng.normal(0.5, 0.2, depth)}))
    return pd.concat(rows, ignore_index=True)


def assert_rendered(png: Path):
    assert png.exists() and png.stat().st_size > 20_000, png
    assert png.with_suffix(".pdf").exists() and png.with_suffix(".pdf").stat().st_size > 5_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_theory_and_iterate_figures_render(tmp_path):
    theory_table(tmp_path / "theory.parquet")
    iterates_table(tmp_path / "iterates.parquet")
    code = main(["figures", "--theory", str(tmp_path / "theory.parquet"), "--iterates",
                 str(tmp_path / "iterates.parquet"), "-d", str(tmp_path / "figs"),
                 "--only", "phase_diagram,iterates,dropout_depth"])
    assert code == 0
    for name in ("phase_diagram", "iterates", "dropout_depth"):
        assert_rendered(tmp_path / "figs" / f"{name}.png")


def test_phase_diagram_draws_the_critical_line_where_chi1_is_one(tmp_path):
    figures.style()
    frame = theory_table(tmp_path / "t.parquet", keep_rate=(1.0,))
    fig = figures.phase_diagram(frame)
    ax = fig.axes[0]
    # the χ1 = 1 contour (two line collections: white halo + dashed black)
    segments = [seg for coll in ax.collections[1:] for path in coll.get_paths() for seg in [path.vertices]]
    assert segments
    pts = np.concatenate(segments)
    chi = depth_scales("tanh", pts[:, 0], pts[:, 1])["chi_1"]
    assert np.allclose(chi, 1.0, atol=0.05)  # linear interpolation of a 15 × 7 grid
    with pytest.raises(Exception, match="≥ 3"):
        figures.phase_diagram(frame[frame["sigma_b2"] == 0.05])


def test_gradient_figure_measures_the_theory_slope(tmp_path):
    rows = gradient_rows()
    slope = figures.measured_gradient_scale(np.arange(30), np.exp(0.1 * np.arange(30)))
    assert slope == pytest.approx(0.1)
    figures.style()
    fig = figures.gradient_norms(rows)
    ax = fig.axes[2]
    measured = [line for line in ax.get_lines() if line.get_marker() in ("o", "s")]
    theory_line = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    tx, ty = np.asarray(theory_line.get_xdata(), float), np.asarray(theory_line.get_ydata(), float)
    assert len(tx) > 50  # a smooth theory curve, not straight segments between the measurements
    for line in measured:
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            want = -np.log(float(depth_scales("tanh", x, 0.05)["chi_1"]))
            assert np.interp(x, tx, ty) == pytest.approx(want, abs=1e-3)
            assert y == pytest.approx(want, abs=0.03)  # noise 0.3 per layer, 6 inits
    path = tmp_path / "g.parquet"
    rows.to_parquet(path, index=False)
    out = tmp_path / "custom" / "grads.png"
    assert main(["figures", "--gradients", str(path), "--output", f"gradient_norms={out}"]) == 0
    assert_rendered(out)


def test_universality_recovers_v_proportional_to_m_squared():
    rng = np.random.default_rng(0)
    # per-layer means spanning decades, per-init values log-normal: V = (e^{σ²} − 1) m²
    layer = np.arange(20)
    frames = [pd.DataFrame({"activation": "tanh", "keep_rate": 1.0, "sigma_w2": 2.0, "sigma_b2": 0.05,
                            "depth": 20, "width": 64, "mode": "real", "seed": 0, "init_index": i,
                            "layer": layer, "g_aa": 10.0 ** (-layer / 2) * np.exp(rng.normal(0, 0.5, 20)),
                            "g_ab": 10.0 ** (-layer / 3) * np.exp(rng.normal(0, 0.5, 20))})
              for i in range(50)]
    rows = figures.universality_rows(pd.concat(frames))
    figures.style()
    fig = figures.universality(rows)
    titles = [ax.get_title() for ax in fig.axes]
    slopes = [float(t.split("slope ")[1].rstrip(")")) for t in titles]
    assert all(abs(s - 2.0) < 0.15 for s in slopes), titles
    assert any("Huang" not in t for t in titles)


@pytest.mark.slow
def test_universality_figure_with_huang_reference_rows(tmp_path):
    path = tmp_path / "g.parquet"
    gradient_rows().to_parquet(path, index=False)
    args = ["figures", "--gradients", str(path), "-d", str(tmp_path), "--only", "universality"]
    huang = REFERENCE / "huang2019_gradients.csv.gz"
    if huang.exists():
        args += ["--huang-gradients", str(huang)]
    assert main(args) == 0
    assert_rendered(tmp_path / "universality.png")


def synthetic_training(n=6.0):
    rng = np.random.default_rng(2)
    sig = np.round(np.arange(1.0, 4.01, 0.25), 2)
    depths = np.arange(10, 160, 10)
    rows = []
    for rho in (1.0, 0.98):
        xi = np.abs(depth_scales("tanh", sig, 0.05, keep_rate=rho)["xi_c"])
        for s, x in zip(sig, xi):
            for seed in range(2):
                acc = np.where(depths <= n * x, 0.9, 0.1) + rng.normal(0, 0.03, len(depths))
                rows.append(pd.DataFrame(dict(dataset="mnist5k", optimizer="sgd", keep_rate=rho, sigma_w2=s,
                                              sigma_b2=0.05, activation="tanh", depth=depths, step=300,
                                              seed=seed, train_accuracy=acc)))
    return pd.concat(rows, ignore_index=True)


def test_trainability_and_fit_summary_from_fit_outputs(tmp_path):
    src = tmp_path / "training.parquet"
    synthetic_training().to_parquet(src, index=False)
    fit_out = tmp_path / "fit.parquet"
    assert main(["fit", str(src), "-o", str(fit_out), "--bootstrap", "50"]) == 0
    fits, cells, boundaries, curves = figures.read_fit_outputs(fit_out)
    figures.style()
    fig = figures.trainability(cells, boundaries, curves, fits, forms=["n*xi_c", "n*xi_1"], reference="6*xi_c")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_visible()]
    assert len(panels) >= 2
    labels = [t.get_text() for t in panels[0].get_legend().get_texts()]
    assert any("ξ" in lab or "xi" in lab for lab in labels) and len(labels) == 3
    assert main(["figures", "--fit", str(fit_out), "-d", str(tmp_path / "figs"),
                 "--only", "trainability,fit_summary", "--reference", "12*xi_1,6*xi_c"]) == 0
    for name in ("trainability", "fit_summary"):
        assert_rendered(tmp_path / "figs" / f"{name}.png")


def test_bad_requests_exit_2(tmp_path, capsys):
    assert main(["figures", "--only", "phase_diagram", "-d", str(tmp_path)]) == 2
    assert "--theory" in capsys.readouterr().err
    assert main(["figures", "--only", "heatmap"]) == 2
    assert main(["figures", "--output", "nonsense"]) == 2
    assert main(["figures", "--theory", str(tmp_path / "missing.parquet")]) == 2
    # nothing given and nothing asked: every figure skipped, not an error
    assert main(["figures", "-d", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_huang_fig7_heatmaps_with_overlays(tmp_path):
    heatmaps = REFERENCE / "huang2019_heatmaps.csv"
    if not heatmaps.exists():
        pytest.skip("reference data not present")
    fit_out = tmp_path / "huang_fit.parquet"
    assert main(["fit", str(heatmaps), "-o", str(fit_out), "--set", "sigma_b2=0.05", "--set", "activation=tanh",
                 "--exclude", "duplicate_placeholder_file=true", "--bootstrap", "100"]) == 0
    assert main(["figures", "--fit", str(fit_out), "-d", str(tmp_path), "--only", "trainability,fit_summary",
                 "--reference", "12*xi_1,6*xi_c,12*xi_c"]) == 0
    assert_rendered(tmp_path / "trainability.png")
    assert_rendered(tmp_path / "fit_summary.png")


def test_iterates_figure_draws_measured_and_predicted_depth_scales(tmp_path):
    iterates_table(tmp_path / "it.parquet")
    figures.style()
    fig = figures.iterates_figure(pd.read_parquet(tmp_path / "it.parquet"))
    a, b, c = fig.axes[:3]
    assert len(a.get_lines()) == 5 and len(b.get_lines()) == 5  # one curve per σ_w²
    theory = {line.get_label(): line for line in c.get_lines()}
    xi_c = theory[r"$\xi_c$ theory"].get_ydata()
    want = np.abs(depth_scales("tanh", np.array([0.5, 1, 1.5, 2.5, 3]), 0.05)["xi_c"])
    assert np.allclose(xi_c, want)


@pytest.mark.slow
def test_a_figure_whose_table_cannot_make_it_is_skipped_unless_asked_for(tmp_path, capsys):
    theory_table(tmp_path / "line.parquet", sigma_b2=[0.05])  # one σ_b²: no phase diagram
    assert main(["figures", "--theory", str(tmp_path / "line.parquet"), "-d", str(tmp_path)]) == 0
    assert "skip phase_diagram" in capsys.readouterr().err
    assert not (tmp_path / "phase_diagram.png").exists()
    assert (tmp_path / "dropout_depth.png").exists()
    assert main(["figures", "--theory", str(tmp_path / "line.parquet"), "-d", str(tmp_path),
                 "--only", "phase_diagram"]) == 2


@pytest.mark.slow
def test_real_cells_go_through_aggregate_fit_and_figures(tmp_path):
    """The stage contracts end to end: train-cell and grad-cell files -> aggregate -> fit -> figures."""
    cells = tmp_path / "cells"
    for depth in (2, 12):
        for s2 in (1.0, 3.0):
            assert main(["train-cell", "--dataset", "digits", "--depth", str(depth), "--width", "16",
                         "--sigma-w2", str(s2), "--steps", "30", "--checkpoints", "10,30", "--batch-size", "32",
                         "--lr", "0.05", "--data-dir", str(tmp_path / "data"),
                         "-o", str(cells / "training" / f"d{depth}_s{s2}.parquet")]) == 0
    for s2 in (1.2, 2.5):
        assert main(["grad-cell", "--depth", "12", "--width", "32", "--sigma-w2", str(s2), "--inits", "3",
                     "-o", str(cells / "gradients" / f"s{s2}.parquet")]) == 0
    assert main(["aggregate", str(cells / "training"), "-o", str(tmp_path / "training.parquet")]) == 0
    assert main(["aggregate", str(cells / "gradients"), "-o", str(tmp_path / "gradients.parquet")]) == 0
    assert main(["fit", str(tmp_path / "training.parquet"), "-o", str(tmp_path / "fit.parquet"),
                 "--bootstrap", "20"]) == 0
    fits = pd.read_parquet(tmp_path / "fit.parquet")
    assert set(fits.loc[~fits["pooled"], "step"]) == {10, 30}
    assert main(["figures", "--gradients", str(tmp_path / "gradients.parquet"), "--fit", str(tmp_path / "fit.parquet"),
                 "-d", str(tmp_path / "figs"), "--only", "gradient_norms,universality,trainability,fit_summary"]) == 0
    for name in ("gradient_norms", "universality", "trainability", "fit_summary"):
        assert (tmp_path / "figs" / f"{name}.png").exists()


def test_a_wrong_fit_table_draws_nothing_and_says_so(tmp_path, capsys):
    """--fit given the training table: not one figure can be drawn: exit 2 naming --fit."""
    src = tmp_path / "training.parquet"
    synthetic_training().to_parquet(src, index=False)
    assert main(["figures", "--fit", str(src), "-d", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert "fit:" in err and "mfpipe fit" in err and "training.parquet" in err
    assert not (tmp_path / "figs").exists() or not list((tmp_path / "figs").glob("*.png"))


@pytest.mark.parametrize("inits", [1, 2])
def test_universality_from_a_study_with_one_or_two_inits(tmp_path, capsys, inits):
    """A gradient study with inits: 2 draws its figure (the variance needs two); with 1 there is
    nothing to draw and the message names the inits a study needs."""
    path = tmp_path / "g.parquet"
    gradient_rows(inits=inits, sigma_w2=(1.0, 2.5)).to_parquet(path, index=False)
    code = main(["figures", "--gradients", str(path), "-d", str(tmp_path), "--only", "universality"])
    if inits == 2:
        assert code == 0
        assert_rendered(tmp_path / "universality.png")
    else:
        assert code == 2
        assert "inits ≥ 2" in capsys.readouterr().err
