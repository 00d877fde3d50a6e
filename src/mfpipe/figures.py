"""`mfpipe figures`: every figure, from parquet (or csv) tables only, as PNG and PDF.

==================  ==========================================================  ======================
name                what (paper figure)                                          input flag(s)
==================  ==========================================================  ======================
phase_diagram       ξ_c over (σ_w², σ_b²) with the critical line χ1 = 1          --theory (≥ 3 σ_b²)
                    (Schoenholz Fig. 1a)
iterates            |q^l − q*| and |c^l − c*| against depth; measured vs         --iterates
                    predicted ξ_q, ξ_c (Figs. 1b,c and 2b,c)                     (mfpipe iterates -o)
dropout_depth       c* and ξ_c against σ_w² for several ρ, c-map (Fig. 3)        --theory (ρ values)
gradient_norms      ‖∇_{W^l} E‖² against layer for several σ_w², real vs          --gradients [--theory]
                    independent backward weights, measured vs theory ξ_∇ (Fig. 4)
trainability        accuracy heatmaps depth × σ_w² per panel with the fitted      --fit
                    n·ξ overlays (Figs. 5–8; Huang Fig. 7)
universality        variance vs mean over initialisations of per-layer            --gradients and/or
                    gradient statistics, against V ∝ m² (Huang)                   --huang-gradients
fit_summary         boundaries against σ_w² with fitted curves and bootstrap     --fit
                    bands
==================  ==========================================================  ======================

``mfpipe figures --theory results/theory.parquet --fit results/fit.parquet -d results/figures``
renders every figure whose inputs were given into ``<dir>/<name>.png`` and ``.pdf``;
``--only trainability,fit_summary`` restricts the set (then a missing input is an error), and
``--output trainability=path/heat.png`` sets a figure's path (the PDF goes beside it).  The fit
flag takes the ``fit.parquet`` written by ``mfpipe fit``; its sibling tables
(``fit.cells.parquet``, ``fit.boundaries.parquet``, ``fit.curves.parquet``) are read from
beside it.  Theory lines (ξ_∇ in Fig. 4, the c-map in Fig. 3) come from the theory table when
it covers the points and otherwise from ``mfpipe.theory`` (cheap; no experiment is rerun).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mfpipe.errors import InputError
from mfpipe.grid import FIGURE_TABLES
from mfpipe.store import atomic_path, read_table

FIGURES = tuple(FIGURE_TABLES)

#: Symbols of the papers, used on every axis.
SYM = {
    "sigma_w2": r"$\sigma_w^2$", "sigma_b2": r"$\sigma_b^2$", "keep_rate": r"$\rho$",
    "depth": r"depth $L$", "layer": r"layer $l$", "xi_c": r"$\xi_c$", "xi_q": r"$\xi_q$",
    "xi_1": r"$\xi_1$", "xi_min": r"$\min(\xi_c, \xi_1)$", "xi_grad": r"$\xi_\nabla$",
    "c_star": r"$c^*$", "q_star": r"$q^*$", "chi_1": r"$\chi_1$",
}
FORM_LABEL = {"n*xi_c": r"$n\,\xi_c$", "n*xi_1": r"$n\,\xi_1$", "n*min(xi_c,xi_1)": r"$n\,\min(\xi_c,\xi_1)$",
              "a*xi_c+b": r"$a\,\xi_c + b$", "a*xi_c^beta": r"$a\,\xi_c^{\beta}$"}
FORM_COLOR = {"n*xi_c": "#d62728", "n*xi_1": "#1f77b4", "n*min(xi_c,xi_1)": "#2ca02c",
              "a*xi_c+b": "#9467bd", "a*xi_c^beta": "#ff7f0e"}
FORMATS = ("png", "pdf")


# ------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--theory", help="theory table (mfpipe theory -o): figures 1, 3, theory lines of 4")
    parser.add_argument("--iterates", help="iterates table (mfpipe iterates -o): figure 2")
    parser.add_argument("--gradients", help="aggregated gradient rows: figures 4 and 6")
    parser.add_argument("--huang-gradients",
                        help="Huang et al.'s huang2019_gradients.csv.gz (its univer rows): figure 6")
    parser.add_argument("--fit", help="fit.parquet from mfpipe fit (siblings read beside it): figures 5 and 7")
    parser.add_argument("-d", "--outdir", default="results/figures", help="directory of the figures")
    parser.add_argument("--only", default="", help=f"comma-separated figures to render ({', '.join(FIGURES)})")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=PATH",
                        help="path of one figure's PNG (the PDF is written beside it); repeatable")
    parser.add_argument("--forms", default="n*xi_c,n*xi_1,n*min(xi_c,xi_1)",
                        help="fitted forms overlaid on the heatmaps and the fit summary")
    parser.add_argument("--reference", default="6*xi_c",
                        help="fixed published rules drawn in white on the heatmaps, e.g. "
                             "'6*xi_c' (Schoenholz) or '12*xi_1,6*xi_c,12*xi_c' (Huang); the * may "
                             "be left out (6xi_c, shell-safe); '' for none")


def run(args: argparse.Namespace) -> int:
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    for name in only:
        if name not in FIGURES:
            raise InputError("only", name, ", ".join(FIGURES))
    outputs = {}
    for text in args.output:
        name, _, path = text.partition("=")
        if name not in FIGURES or not path:
            raise InputError("output", text, "NAME=PATH with NAME one of " + ", ".join(FIGURES))
        outputs[name] = Path(path)
    wanted = only or list(outputs) or list(FIGURES)
    forms = _split_forms(args.forms)
    made = render(wanted, theory=args.theory, iterates=args.iterates, gradients=args.gradients,
                  huang_gradients=args.huang_gradients, fit=args.fit, outdir=Path(args.outdir),
                  outputs=outputs, strict=bool(only or outputs), forms=forms, reference=args.reference)
    for path in made:
        print(path)
    return 0


def _split_forms(text: str) -> list[str]:
    from mfpipe.fit import _parse_forms

    return _parse_forms(text) if text.strip() else []


def render(wanted, *, theory=None, iterates=None, gradients=None, huang_gradients=None, fit=None,
           outdir=Path("results/figures"), outputs=None, strict=False, forms=(), reference="6*xi_c"):
    """Render the ``wanted`` figures whose inputs are given; returns the PNG paths written."""
    given = {"theory": theory, "iterates": iterates, "gradients": gradients,
             "huang_gradients": huang_gradients, "fit": fit}
    for key, path in given.items():
        if path is not None and not Path(path).exists():
            raise InputError(key.replace("_", "-"), str(path), "an existing table (parquet or csv)")
    outputs = outputs or {}
    made, skipped = [], []
    cache: dict = {}

    def table(key):
        if key not in cache:
            cache[key] = read_table(given[key])
        return cache[key]

    for name in wanted:
        need = FIGURE_TABLES[name][0]
        if not any(given[k] for k in need.split("|")):
            if strict:
                raise InputError(name, "no input", f"--{need.replace('_', '-').replace('|', ' or --')} for this figure")
            print(f"mfpipe figures: skip {name} (no --{need.split('|')[0].replace('_', '-')})", file=sys.stderr)
            continue
        style()
        try:
            fig = _figure(name, table, given, forms, reference)
        except InputError as err:
            if strict:
                raise
            print(f"mfpipe figures: skip {name}: {err}", file=sys.stderr)
            skipped.append(err)
            continue
        png = outputs.get(name, outdir / f"{name}.png")
        made.append(save(fig, png))
    if skipped and not made:  # tables were given, and not one figure could be drawn from them
        raise skipped[0]
    return made


def _figure(name, table, given, forms, reference):
    """One figure by name (inputs through ``table(key)``)."""
    theory, gradients, huang_gradients, fit = (given[k] for k in ("theory", "gradients", "huang_gradients", "fit"))
    if name == "phase_diagram":
        fig = phase_diagram(table("theory"))
    elif name == "iterates":
        fig = iterates_figure(table("iterates"))
    elif name == "dropout_depth":
        fig = dropout_depth(table("theory"))
    elif name == "gradient_norms":
        fig = gradient_norms(table("gradients"), table("theory") if theory else None)
    elif name == "universality":
        frames = []
        if gradients:
            frames.append(universality_rows(table("gradients"), source="mfpipe"))
        if huang_gradients:
            frames.append(huang_universality_rows(table("huang_gradients")))
        fig = universality(pd.concat(frames, ignore_index=True))
    else:
        fits, cells, boundaries, curves = read_fit_outputs(fit)
        if name == "trainability":
            fig = trainability(cells, boundaries, curves, fits, forms=forms, reference=reference)
        else:
            fig = fit_summary(boundaries, curves, fits, forms=forms)
    return fig


def read_fit_outputs(fit_path):
    fit_path = Path(fit_path)
    stem = fit_path.with_suffix("")
    tables = [read_table(fit_path)]
    missing = [c for c in ("panel", "form", "kind", "n") if c not in tables[0]]
    if missing:
        raise InputError("fit", str(fit_path), "the fit table written by mfpipe fit -o (columns panel, "
                         f"form, kind, n, …; this table lacks {', '.join(missing)}), e.g. results/fit.parquet")
    for part in ("cells", "boundaries", "curves"):
        path = Path(f"{stem}.{part}.parquet")
        if not path.exists():
            raise InputError("fit", str(fit_path), f"a fit.parquet with its sibling {path.name} (written by mfpipe fit)")
        tables.append(read_table(path))
    return tuple(tables)


# ------------------------------------------------------------------------------- style

def style():
    """The one style of every mfpipe figure."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.1,
                  rc={"axes.grid": True, "grid.alpha": 0.25, "figure.dpi": 110, "savefig.dpi": 160,
                      "axes.spines.top": False, "axes.spines.right": False,
                      "legend.frameon": False, "image.cmap": "viridis", "mathtext.fontset": "dejavusans"})


def warm_up() -> None:
    """For a pool server: import matplotlib and seaborn and draw a small figure with mathtext into
    memory, so that its children find the fonts, the mathtext parser and the backends loaded."""
    import io

    import matplotlib.pyplot as plt

    style()
    fig, (ax,) = _grid(1)
    ax.plot([0, 1], [0, 1], label=r"$\xi_c$")
    ax.set(xlabel=r"$\sigma_w^2$", ylabel="depth $L$")
    ax.legend()
    for fmt in FORMATS:
        fig.savefig(io.BytesIO(), format=fmt)  # as save() writes them
    plt.close(fig)


def save(fig, png: Path) -> Path:
    """Write ``png`` and the PDF beside it, atomically."""
    import matplotlib.pyplot as plt

    png = Path(png)
    if png.suffix.lower() != ".png":
        png = png.with_suffix(".png")
    for fmt in FORMATS:
        with atomic_path(png.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt)
    plt.close(fig)
    return png


def _grid(n, ncols=3, size=(4.0, 3.2)):
    import matplotlib.pyplot as plt

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _colors(values, cmap="viridis"):
    import matplotlib as mpl

    values = sorted(values)
    cm = mpl.colormaps[cmap]
    if len(values) == 1:
        return {values[0]: cm(0.5)}
    lo, hi = min(values), max(values)
    return {v: cm(0.05 + 0.9 * (v - lo) / (hi - lo)) for v in values}


def _fitted_curves(panel_curves, fits, panel, forms):
    """(form, curve rows, fit row) for each form fitted in ``panel`` (forms with no observed
    boundary in the panel have n = NaN and no curve)."""
    for form in forms:
        fc = panel_curves[panel_curves["form"] == form]
        if fc.empty:
            continue
        fr = fits[(fits["panel"] == panel) & (fits["form"] == form)].iloc[0]
        if np.isfinite(fr["n"]):
            yield form, fc, fr


def _num(x):
    from mfpipe.values import format_number

    return format_number(x) if isinstance(x, (int, float, np.integer, np.floating)) and np.isfinite(x) else str(x)


def _require(frame, columns, what):
    missing = [c for c in columns if c not in frame]
    if missing:
        raise InputError(what, f"missing columns {missing}", "a table with " + ", ".join(columns))


# ------------------------------------------------------------------------------- 1 phase diagram

def phase_diagram(theory: pd.DataFrame):
    """ξ_c over (σ_w², σ_b²) at ρ = 1 (or the largest ρ) with the critical line χ1 = 1."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    _require(theory, ["sigma_w2", "sigma_b2", "keep_rate", "chi_1", "xi_c"], "phase_diagram theory table")
    rho = theory["keep_rate"].max()
    t = theory[np.isclose(theory["keep_rate"], rho)]
    if "activation" in t:
        act = t["activation"].iloc[0]
        t = t[t["activation"] == act]
    w = np.unique(t["sigma_w2"])
    b = np.unique(t["sigma_b2"])
    if len(w) < 3 or len(b) < 3:
        raise InputError("phase_diagram theory table", f"{len(w)} σ_w² × {len(b)} σ_b² values",
                         "a grid with ≥ 3 values of each, e.g. mfpipe theory --sigma-w2 0.5:4:141 "
                         "--sigma-b2 0:0.3:31 -o theory_map.parquet")
    grid = t.pivot_table(index="sigma_b2", columns="sigma_w2", values=["xi_c", "chi_1"], aggfunc="first")
    xi = np.abs(grid["xi_c"].to_numpy(float))
    chi = grid["chi_1"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(5.4, 4.2), constrained_layout=True)
    finite = xi[np.isfinite(xi) & (xi > 0)]
    vmax = min(np.nanpercentile(finite, 99), 1e3) if finite.size else 10
    mesh = ax.pcolormesh(w, b, np.clip(np.where(np.isfinite(xi), xi, vmax), None, vmax), shading="nearest",
                         norm=mcolors.LogNorm(vmin=max(finite.min(), 0.1) if finite.size else 0.1, vmax=vmax),
                         cmap="magma")
    fig.colorbar(mesh, ax=ax, label=r"$\xi_c$ (clipped)")
    ax.contour(w, b, chi, levels=[1.0], colors="white", linewidths=2.2)
    ax.contour(w, b, chi, levels=[1.0], colors="black", linewidths=1.0, linestyles="--")
    # label the phases at their centres of mass
    W, B = np.meshgrid(w, b)
    for mask, text in ((chi < 1, "ordered\n" + r"$\chi_1 < 1$"), (chi > 1, "chaotic\n" + r"$\chi_1 > 1$")):
        if mask.any():
            ax.text(W[mask].mean(), B[mask].mean(), text, ha="center", va="center", color="white",
                    fontsize=11, fontweight="bold")
    ax.set_xlabel(SYM["sigma_w2"])
    ax.set_ylabel(SYM["sigma_b2"])
    act = f"{t['activation'].iloc[0]}, " if "activation" in t else ""
    ax.set_title(f"Phase diagram ({act}" + r"$\rho$" + f" = {_num(rho)}); dashed: " + r"$\chi_1 = 1$")
    ax.grid(False)
    return fig


# ------------------------------------------------------------------------------- 2 iterates

RESIDUAL_FLOOR = 1e-13  # relative to the fixed point: below it a residual is float64 rounding


def iterates_figure(iterates: pd.DataFrame):
    """Residuals |q^l − q*|, |c^l − c*| against l (log), and measured vs predicted depth scales.

    Input: the tidy table of ``mfpipe iterates -o`` (one row per grid point, quantity q|c, start
    and layer: sigma_w2, quantity, start, layer, residual, fixed_point, xi_predicted,
    xi_measured).  One σ_b² (the closest to 0.05) and the largest ρ are drawn."""
    import matplotlib.pyplot as plt

    _require(iterates, ["sigma_w2", "quantity", "layer", "residual", "fixed_point"], "iterates table")
    it = iterates
    if "activation" in it:
        it = it[it["activation"] == it["activation"].iloc[0]]
    if "sigma_b2" in it:
        b_values = np.unique(it["sigma_b2"])
        it = it[np.isclose(it["sigma_b2"], b_values[np.argmin(np.abs(b_values - 0.05))])]
    if "keep_rate" in it:
        it = it[it["keep_rate"] == it["keep_rate"].max()]
    if "noise_var" in it:
        it = it[it["noise_var"] == it["noise_var"].min()]
    if "start" not in it:
        it = it.assign(start=0.0)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), constrained_layout=True)
    sig = np.unique(it["sigma_w2"])
    colors = _colors(sig, "plasma")
    for ax, quantity, ylabel in ((axes[0], "q", r"$|q^l - q^*|$"), (axes[1], "c", r"$|c^l - c^*|$")):
        sub = it[it["quantity"] == quantity]
        for (s2, start), g in sub.groupby(["sigma_w2", "start"], sort=True):
            g = g.sort_values("layer")
            resid = g["residual"].to_numpy(float)
            # stop a curve where it reaches the float64 floor (the residual is then rounding noise)
            floor = RESIDUAL_FLOOR * max(abs(float(g["fixed_point"].iloc[0])), 1e-300)
            below = np.flatnonzero(~(resid > floor))
            stop = below[0] if len(below) else len(resid)
            ax.semilogy(g["layer"].to_numpy()[:stop], resid[:stop], color=colors[s2], lw=1.1)
        ax.set_xlabel(SYM["layer"])
        ax.set_ylabel(ylabel)
    _colorbar(fig, axes[1], sig, "plasma", SYM["sigma_w2"])
    ax = axes[2]
    for quantity, marker, color in (("q", "o", "#1f77b4"), ("c", "s", "#d62728")):
        sub = it[it["quantity"] == quantity]
        if sub.empty:
            continue
        per = sub.groupby("sigma_w2").agg(predicted=("xi_predicted", "first"),
                                         measured=("xi_measured", "median")).reset_index() \
            if {"xi_predicted", "xi_measured"} <= set(sub.columns) else None
        if per is None:
            continue
        ax.plot(per["sigma_w2"], np.abs(per["predicted"]), "--", lw=1.4, color=color,
                label=rf"$\xi_{quantity}$ theory")
        ax.plot(per["sigma_w2"], np.abs(per["measured"]), marker, ms=5, mfc="none", color=color,
                label=rf"$\xi_{quantity}$ measured (exponential fit)")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 12)  # head room for the legend
    ax.set_xlabel(SYM["sigma_w2"])
    ax.set_ylabel("depth scale")
    ax.legend(loc="upper left", fontsize=8)
    axes[0].set_title("(a) length map: " + r"$|q^l - q^*| \sim e^{-l/\xi_q}$")
    axes[1].set_title("(b) correlation map: " + r"$|c^l - c^*| \sim e^{-l/\xi_c}$")
    axes[2].set_title("(c) measured vs predicted depth scales")
    return fig


def _colorbar(fig, ax, values, cmap, label):
    import matplotlib as mpl

    values = np.asarray(values, float)
    if len(values) < 2:
        return
    norm = mpl.colors.Normalize(values.min(), values.max())
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=mpl.colormaps[cmap]), ax=ax, label=label)


# ------------------------------------------------------------------------------- 3 dropout

def c_map_curves(activation, sigma_w2, sigma_b2, keep_rates, c=None):
    """c^{l+1} as a function of c^l at q = q* for several ρ (one map step of the theory engine)."""
    from mfpipe import theory as th

    c = np.linspace(0.0, 1.0, 201) if c is None else np.asarray(c, float)
    out = {rho: th.iterate_c(activation, sigma_w2, sigma_b2, c, 1, keep_rate=rho)[1] for rho in keep_rates}
    return c, out


def dropout_depth(theory: pd.DataFrame, c_map=None):
    """(a) c-map near criticality for several ρ, (b) c* and (c) ξ_c against σ_w² for several ρ."""
    import matplotlib.pyplot as plt

    _require(theory, ["sigma_w2", "sigma_b2", "keep_rate", "c_star", "xi_c"], "dropout_depth theory table")
    t = theory
    if "activation" in t:
        t = t[t["activation"] == t["activation"].iloc[0]]
    b_values = np.unique(t["sigma_b2"])
    sb2 = b_values[np.argmin(np.abs(b_values - 0.05))]
    t = t[np.isclose(t["sigma_b2"], sb2)]
    rhos = sorted(np.unique(t["keep_rate"]), reverse=True)
    ranks = _colors(range(len(rhos)), "viridis")  # by rank: ρ = 1, .99, .98 stay distinguishable
    colors = {rho: ranks[i] for i, rho in enumerate(rhos)}
    act = t["activation"].iloc[0] if "activation" in t else "tanh"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), constrained_layout=True)
    if c_map is None:
        try:
            from mfpipe.theory import critical_sigma_w2
            w_crit = float(np.asarray(critical_sigma_w2(act, sb2, keep_rate=1.0)))
            c_map = (w_crit,) + c_map_curves(act, w_crit, sb2, rhos)
        except (ImportError, AttributeError, TypeError):
            c_map = None
    ax = axes[0]
    if c_map is not None:
        w_crit, c, maps = c_map
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        for rho in rhos:
            if rho in maps:
                ax.plot(c, maps[rho], color=colors[rho], label=rf"$\rho$ = {_num(rho)}")
                gap = maps[rho] - c  # the fixed point c*: where the map crosses the diagonal
                cross = np.flatnonzero((gap[:-1] > 0) & (gap[1:] <= 0))
                c_star = None
                if abs(gap[-1]) < 1e-6:
                    c_star = c[-1]  # c = 1 is a fixed point (no dropout)
                elif len(cross):
                    k = cross[-1]
                    c_star = c[k] + gap[k] / (gap[k] - gap[k + 1]) * (c[k + 1] - c[k])
                if c_star is not None:
                    ax.plot([c_star], [c_star], "o", color=colors[rho], ms=5, mec="black", mew=0.5)
        ax.set_title(rf"(a) c-map at $\sigma_w^2$ = {w_crit:.3g} (critical for $\rho$ = 1); dots: $c^*$")
        ax.set_xlabel(r"$c^l$")
        ax.set_ylabel(r"$c^{l+1}$")
        ax.legend(loc="upper left")
    else:
        ax.set_visible(False)
    for ax, col, label in ((axes[1], "c_star", SYM["c_star"]), (axes[2], "xi_c", SYM["xi_c"])):
        for rho in rhos:
            g = t[np.isclose(t["keep_rate"], rho)].sort_values("sigma_w2")
            ax.plot(g["sigma_w2"], np.abs(g[col]), color=colors[rho], label=rf"$\rho$ = {_num(rho)}")
        ax.set_xlabel(SYM["sigma_w2"])
        ax.set_ylabel(label)
    axes[2].set_yscale("log")
    axes[1].set_title(rf"(b) fixed point $c^*$ ($\sigma_b^2$ = {_num(sb2)})")
    axes[2].set_title(r"(c) correlation depth scale $\xi_c$")
    axes[2].legend()
    return fig


# ------------------------------------------------------------------------------- 4 gradients

def measured_gradient_scale(layers, values, trim=2):
    """1/ξ_∇ measured: slope of ln(value) against layer over the interior layers (first and
    last ``trim`` dropped: the input and readout layers have other fan-ins/outs)."""
    layers = np.asarray(layers, float)
    values = np.asarray(values, float)
    keep = (layers >= layers.min() + trim) & (layers <= layers.max() - trim) & (values > 0) & np.isfinite(values)
    if keep.sum() < 3:
        return np.nan
    return float(np.polyfit(layers[keep], np.log(values[keep]), 1)[0])


def gradient_norms(gradients: pd.DataFrame, theory: pd.DataFrame | None = None, max_curves=8, max_rows=3):
    """Per keep rate ρ (one row each, largest first): (a) real and (b) independent backward
    weights, mean ‖∇_{W^l}E‖² over inits against l, one curve per σ_w² (theory slope
    e^{−(L−l)/ξ_∇} dashed); (c) measured vs theory 1/ξ_∇ = −ln χ1 (with the 1/ρ of dropout)."""
    import matplotlib.pyplot as plt

    _require(gradients, ["sigma_w2", "layer", "mode", "grad_sq_norm"], "gradients table")
    g = gradients
    if "keep_rate" not in g:
        g = g.assign(keep_rate=1.0)
    fixed = [c for c in ("activation", "sigma_b2", "depth", "width", "dataset") if c in g]
    if fixed:  # one setting of the other parameters: the most common one
        top = g.groupby(fixed, dropna=False).size().idxmax()
        top = top if isinstance(top, tuple) else (top,)
        for col, val in zip(fixed, top):
            g = g[g[col] == val]
    setting = {c: g[c].iloc[0] for c in fixed}
    rhos = sorted(np.unique(g["keep_rate"]), reverse=True)[:max_rows]
    fig, rows = plt.subplots(len(rhos), 3, figsize=(14.5, 4.2 * len(rhos)), constrained_layout=True,
                             squeeze=False)
    for axes, rho in zip(rows, rhos):
        _gradient_row(fig, axes, g[g["keep_rate"] == rho], {**setting, "keep_rate": rho}, theory,
                      max_curves, prefix=rf"$\rho$ = {_num(rho)}: " if len(rhos) > 1 else "")
    names = {"sigma_b2": SYM["sigma_b2"], "keep_rate": SYM["keep_rate"], "depth": r"$L$", "width": r"$N$"}
    shown = {**setting, **({"keep_rate": rhos[0]} if len(rhos) == 1 else {})}
    label = ", ".join(f"{names.get(k, k)} = {_num(v)}" for k, v in shown.items())
    fig.suptitle(f"Per-layer gradient norms at initialisation ({label}); dashed: theory", fontsize=10)
    return fig


def _gradient_row(fig, axes, g, setting, theory, max_curves, prefix=""):
    mean = g.groupby(["mode", "sigma_w2", "layer"])["grad_sq_norm"].mean().reset_index()
    sig = np.unique(mean["sigma_w2"])
    if len(sig) > max_curves:
        sig = sig[np.unique(np.linspace(0, len(sig) - 1, max_curves).round().astype(int))]
    colors = _colors(sig, "coolwarm")
    scales = _theory_scales(setting, np.unique(mean["sigma_w2"]), theory)
    modes = [("real", "(a) real backward pass (same W)"),
             ("independent", "(b) independent backward weights (GIA)")]
    measured = []
    for ax, (mode, title) in zip(axes[:2], modes):
        m = mean[mean["mode"] == mode]
        for s2 in np.unique(m["sigma_w2"]):
            curve = m[m["sigma_w2"] == s2].sort_values("layer")
            slope = measured_gradient_scale(curve["layer"], curve["grad_sq_norm"])
            measured.append((mode, s2, slope))
            if s2 not in sig:
                continue
            ax.semilogy(curve["layer"], curve["grad_sq_norm"], color=colors[s2], lw=1.3)
            chi = scales.get(s2)
            if chi is not None and np.isfinite(chi) and chi > 0:
                anchor_l = curve["layer"].max() - 2
                anchor = curve.loc[curve["layer"] == anchor_l, "grad_sq_norm"]
                if len(anchor) and anchor.iloc[0] > 0:
                    ls = curve["layer"].to_numpy(float)
                    ax.semilogy(ls, anchor.iloc[0] * chi ** (anchor_l - ls), color=colors[s2], ls="--", lw=0.8)
        ax.set_xlabel(SYM["layer"])
        ax.set_ylabel(r"$\|\nabla_{W^l} E\|_2^2$")
        ax.set_title(prefix + title)
    lims = [ax.get_ylim() for ax in axes[:2]]
    for ax in axes[:2]:
        ax.set_ylim(min(lim[0] for lim in lims), max(lim[1] for lim in lims))
    _colorbar(fig, axes[1], sig, "coolwarm", SYM["sigma_w2"])
    ax = axes[2]
    meas = pd.DataFrame(measured, columns=["mode", "sigma_w2", "slope"])
    fine = np.unique(mean["sigma_w2"])
    if len(fine) > 1:  # a smooth theory curve between the measured σ_w² (computed: cheap)
        dense = np.linspace(fine.min(), fine.max(), 200)
        dense_scales = _theory_scales(setting, dense, None)
        if all(v is not None for v in dense_scales.values()):
            fine, scales = dense, dense_scales
    th_slope = np.array([-math.log(scales[s]) if scales.get(s, 0) and scales[s] > 0 else np.nan for s in fine])
    if np.isfinite(th_slope).any():
        ax.plot(fine, th_slope, "k--", lw=1.4, label=r"theory $-\ln\chi_1$")
    for mode, marker, color in (("real", "o", "#d62728"), ("independent", "s", "#1f77b4")):
        mm = meas[meas["mode"] == mode]
        ax.plot(mm["sigma_w2"], mm["slope"], marker, color=color, mfc="none" if mode == "independent" else color,
                ms=5, label=f"measured, {mode}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(SYM["sigma_w2"])
    ax.set_ylabel(r"$1/\xi_\nabla$ (slope of $\ln\|\nabla_{W^l}E\|^2$ in $l$)")
    ax.set_title(prefix + r"(c) gradient depth scale: $1/\xi_\nabla = -\ln\chi_1$")
    ax.legend()


def _theory_scales(setting, sigma_w2, theory):
    """χ1 per σ_w² for the setting: from the theory table when it has the points, else computed."""
    chi = {}
    if theory is not None and {"sigma_w2", "chi_1"} <= set(theory.columns):
        t = theory
        for col in ("activation", "sigma_b2", "keep_rate"):
            if col in t and col in setting:
                t = t[t[col] == setting[col]] if col == "activation" else t[np.isclose(t[col], setting[col])]
        chi = {s: float(v) for s, v in zip(t["sigma_w2"].round(12), t["chi_1"])}
    missing = [s for s in sigma_w2 if round(float(s), 12) not in chi]
    if missing:
        try:
            from mfpipe.theory import depth_scales
            out = depth_scales(setting.get("activation", "tanh"), np.asarray(missing, float),
                               setting.get("sigma_b2", 0.05), keep_rate=setting.get("keep_rate", 1.0))
            chi.update({round(float(s), 12): float(v) for s, v in zip(missing, np.asarray(out["chi_1"]))})
        except ImportError:
            pass
    return {s: chi.get(round(float(s), 12)) for s in sigma_w2}


# ------------------------------------------------------------------------------- 5 trainability

def _panel_title(row: pd.Series, varying) -> str:
    """A short two-line panel title from the columns that vary between panels."""
    import textwrap

    names = {"keep_rate": r"$\rho$", "sigma_b2": r"$\sigma_b^2$", "step": "step", "steps": "steps",
             "lr_rule": "lr"}
    cols = [c for c in varying if not (c == "step" and "steps" in varying and row.get("steps") == row.get("step"))]
    parts = [f"{names[c]}={_num(row[c])}" if c in names else str(row[c]) for c in cols if c != "family"]
    text = ", ".join(parts)
    head = f"{row['family']}\n" if "family" in cols else ""
    return head + "\n".join(textwrap.wrap(text, 48))


def _panels(cells: pd.DataFrame, fits: pd.DataFrame):
    meta_cols = [c for c in fits.columns if c in cells.columns and c not in ("panel", "threshold")]
    if "lr_rule" in meta_cols:  # the panel's learning rate, a number or a depth rule, as text
        meta_cols = [c for c in meta_cols if c != "lr"]
    meta = cells.groupby("panel").first().reset_index()
    varying = [c for c in meta_cols if c in meta and meta[c].nunique(dropna=False) > 1
               and c not in ("sigma_w2", "depth")]
    return meta, varying or ["panel"]


def _parse_reference(text: str):
    """'12*xi_1,6xi_c' -> [(12.0, 'xi_1'), (6.0, 'xi_c')]."""
    import re

    from mfpipe.fit import REFERENCE_RULE

    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        match = re.fullmatch(REFERENCE_RULE, item)
        if not match:
            raise InputError("reference", item, "rules like 6*xi_c, 12*xi_1 or 6xi_min")
        out.append((float(match.group(1)), match.group(2)))
    return out


def trainability(cells, boundaries, curves, fits, forms=("n*xi_c",), reference="6*xi_c", ncols=3):
    """Accuracy heatmaps (depth × σ_w²) per panel with the fitted n·ξ curves and published rules."""
    import matplotlib.pyplot as plt

    meta, varying = _panels(cells, fits)
    refs = _parse_reference(reference or "")
    fig, axes = _grid(len(meta), ncols=ncols, size=(4.3, 3.5))
    chance = fits.groupby("panel")["chance"].first() if "chance" in fits else None
    for ax, (_, row) in zip(axes, meta.iterrows()):
        p = row["panel"]
        c = cells[cells["panel"] == p]
        grid = c.pivot_table(index="depth", columns="sigma_w2", values="accuracy")
        w, d = grid.columns.to_numpy(float), grid.index.to_numpy(float)
        log_depth = _is_geometric(d)
        w_edges, d_edges = _edges(w, log=False), _edges(d, log=log_depth)
        lo = float(chance.get(p, 0.1)) if chance is not None else float(np.nanmin(grid.values))
        mesh = ax.pcolormesh(w_edges, d_edges, grid.to_numpy(float), shading="flat", cmap="viridis",
                             vmin=lo, vmax=max(np.nanmax(grid.values), lo + 1e-3))
        if log_depth:
            _log_depth_axis(ax)
        cv = curves[curves["panel"] == p]
        top = d_edges[-1]
        for form, fc, fr in _fitted_curves(cv, fits, p, forms):
            label = FORM_LABEL.get(form, form)
            if fr["kind"] == "prop":
                label = label.replace("n", _num(round(float(fr["n"]), 2)), 1)
            ax.plot(fc["sigma_w2"], np.clip(fc["depth_pred"], d_edges[0], top), color=FORM_COLOR.get(form, "w"),
                    lw=1.6, label=label)
        for (mult, xi), ls in zip(refs, REFERENCE_STYLES):
            src = cv[cv["form"].map(lambda f: f in FORMS_BY_XI.get(xi, ()))]
            if src.empty:
                continue
            src = src[src["form"] == src["form"].iloc[0]]
            ax.plot(src["sigma_w2"], np.clip(mult * src["xi"], d_edges[0], top), color="white", lw=1.1, ls=ls,
                    label=f"{_num(mult)}" + SYM[xi] + " (published)")
        b = boundaries[boundaries["panel"] == p]
        obs = b[b["censored"] == "observed"]
        ax.plot(obs["sigma_w2"], obs["boundary"], "o", ms=2.5, color="white", mec="black", mew=0.4)
        above = b[b["censored"] == "above"]  # the deepest tested depth still trains
        if len(above):
            ax.plot(above["sigma_w2"], above["depth_max_trainable"], "^", ms=4, color="white",
                    mec="black", mew=0.4, label="boundary ≥ (deepest tested)")
        ax.set_ylim(d_edges[0], top)
        ax.set_xlim(w_edges[0], w_edges[-1])
        ax.set_title(_panel_title(row, varying), fontsize=9)
        ax.set_xlabel(SYM["sigma_w2"])
        ax.set_ylabel(SYM["depth"])
        ax.grid(False)
        # on a dark frame: a searched study leaves untested cells blank (white)
        ax.legend(loc="upper right", fontsize=7, labelcolor="white", handlelength=1.5,
                  frameon=True, facecolor="0.25", edgecolor="none", framealpha=0.75)
    fig.colorbar(mesh, ax=axes, label="training accuracy", shrink=0.8)
    fig.suptitle("Trainability: accuracy over (" + SYM["sigma_w2"] + ", L); lines: fitted rules, "
                 "white: published rules, dots: boundary; blank: not trained", fontsize=10)
    return fig


def _log_depth_axis(ax) -> None:
    """A log depth axis labelled with plain numbers (20, 50, 100, 200), also within a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _is_geometric(values) -> bool:
    """Whether grid values are spaced evenly in log rather than linearly (depths 4, 8, …, 128)."""
    values = np.asarray(values, float)
    if len(values) < 3 or values.min() <= 0:
        return False
    lin, geo = np.diff(values), np.diff(np.log(values))
    return bool(np.ptp(geo) / geo.mean() < np.ptp(lin) / lin.mean())


def _edges(values, log=False):
    """Cell edges around grid values (midpoints, geometric on a log axis), also for uneven grids."""
    v = np.log(values) if log else np.asarray(values, float)
    if len(v) == 1:
        inner, step = np.array([]), 1.0 if not log else 0.5
        out = np.array([v[0] - step / 2, v[0] + step / 2])
    else:
        inner = (v[1:] + v[:-1]) / 2
        out = np.concatenate([[v[0] - (inner[0] - v[0])], inner, [v[-1] + (v[-1] - inner[-1])]])
    return np.exp(out) if log else out


REFERENCE_STYLES = (":", "--", "-.", (0, (1, 3)), (0, (5, 1)))
FORMS_BY_XI = {"xi_c": ("n*xi_c", "a*xi_c+b", "a*xi_c^beta"), "xi_1": ("n*xi_1",), "xi_min": ("n*min(xi_c,xi_1)",)}


# ------------------------------------------------------------------------------- 6 universality

def universality_rows(gradients: pd.DataFrame, source="mfpipe") -> pd.DataFrame:
    """Long rows (setting, metric, layer, init, value) from mfpipe gradient rows."""
    _require(gradients, ["layer", "mode"], "gradients table")
    init = [c for c in ("seed", "init_index") if c in gradients]
    metrics = [m for m in ("g_aa", "g_ab", "grad_sq_norm") if m in gradients]
    setting = [c for c in ("activation", "keep_rate", "sigma_w2", "sigma_b2", "depth", "width", "mode", "dataset")
               if c in gradients]
    long = gradients.melt(id_vars=setting + init + ["layer"], value_vars=metrics, var_name="metric")
    long["init"] = long[init].astype(str).agg("/".join, axis=1) if init else "0"
    long["source"] = source
    return long.drop(columns=init)


def huang_universality_rows(huang: pd.DataFrame) -> pd.DataFrame:
    """Huang et al.'s per-initialisation rows (folder univer), as universality rows."""
    _require(huang, ["folder", "metric", "layer", "init_index", "value", "activation", "keep_rate"],
             "huang gradients table")
    h = huang[(huang["folder"] == "univer") & (huang["layer"] >= 0)]
    for flag in ("partial_file", "extra_entry"):
        if flag in h:
            h = h[~h[flag].astype(bool)]
    h = h.rename(columns={"init_index": "init"})
    h = h.assign(mode="real", source="Huang et al. 2019")
    keep = [c for c in ("activation", "keep_rate", "sigma_w2", "sigma_b2", "depth", "width", "mode",
                        "layer", "init", "metric", "value", "source") if c in h]
    return h[keep]


def universality(rows: pd.DataFrame, metrics=("g_aa", "g_ab")):
    """Variance V against mean m over initialisations, per layer, log-log, with V ∝ m²."""
    import matplotlib.pyplot as plt

    setting = [c for c in ("source", "activation", "keep_rate", "sigma_w2", "sigma_b2", "depth", "width",
                           "mode", "dataset") if c in rows]
    rows = rows[rows["metric"].isin(metrics)]
    stats = rows.groupby(setting + ["metric", "layer"], dropna=False)["value"].agg(["mean", "var", "count"]).reset_index()
    for src in stats.loc[stats["count"] < 2, "source"].unique():
        print(f"mfpipe figures: universality: rows of {src} with one initialisation per setting have "
              "no variance and are not drawn", file=sys.stderr)
    stats = stats[(stats["count"] >= 2) & (stats["mean"] != 0) & (stats["var"] > 0)]
    stats["abs_mean"] = stats["mean"].abs()
    panels = [(src, m) for src in stats["source"].unique() for m in metrics if ((stats["source"] == src) & (stats["metric"] == m)).any()]
    if not panels:
        raise InputError("universality", "no layer with ≥ 2 initialisations and non-zero statistics",
                         "gradient rows with ≥ 2 initialisations per setting: a gradient study with "
                         "inits ≥ 2 (≥ 10 for a usable variance), or several seeds")
    fig, axes = _grid(len(panels), ncols=2, size=(5.0, 4.2))
    for ax, (src, metric) in zip(axes, panels):
        s = stats[(stats["source"] == src) & (stats["metric"] == metric)]
        hue_col = "activation" if "activation" in s and s["activation"].nunique() > 1 else "keep_rate"
        hues = sorted(s[hue_col].unique(), key=str)
        palette = dict(zip(hues, _palette(len(hues))))
        for hue in hues:
            h = s[s[hue_col] == hue]
            lab = f"{hue}" if hue_col == "activation" else rf"$\rho$ = {_num(hue)}"
            ax.loglog(h["abs_mean"], h["var"], ".", ms=3, alpha=0.6, color=palette[hue], label=lab)
        # V = k m²: k from the median of V/m² (log space)
        k = float(np.exp(np.median(np.log(s["var"] / s["abs_mean"] ** 2))))
        m = np.geomspace(s["abs_mean"].min(), s["abs_mean"].max(), 50)
        ax.loglog(m, k * m ** 2, "k--", lw=1.2, label=rf"$V = {k:.2g}\,m^2$")
        slope = np.polyfit(np.log(s["abs_mean"]), np.log(s["var"]), 1)[0]
        sym = {"g_aa": r"g_{aa}", "g_ab": r"g_{ab}", "grad_sq_norm": r"\|\nabla_W E\|^2"}[metric]
        ax.set_xlabel(rf"mean over initialisations $m = \langle {sym} \rangle$")
        ax.set_ylabel(rf"variance $V$ of ${sym}$")
        inits = s["count"].min()
        more = "+" if s["count"].max() > inits else ""
        ax.set_title(f"{src}: {metric}, {inits}{more} inits (fitted log-log slope {slope:.2f})", fontsize=9)
        ax.legend(fontsize=7, markerscale=3)
    fig.suptitle("Universality of per-layer gradient statistics over initialisations: " + r"$V \propto m^2$",
                 fontsize=10)
    return fig


def _palette(n):
    import seaborn as sns

    return sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("viridis", n)


# ------------------------------------------------------------------------------- 7 fit summary

MARKER_LABELS = ("boundary", "trains at every depth", "trains at no depth")


def fit_summary(boundaries, curves, fits, forms=("n*xi_c", "n*xi_1", "n*min(xi_c,xi_1)"), ncols=3):
    """Per panel: the boundary against σ_w² (censored columns as triangles) with each fitted
    form and its bootstrap band, on a log depth axis."""
    meta, varying = _panels(boundaries.assign(depth=0), fits)
    fig, axes = _grid(len(meta), ncols=ncols, size=(4.3, 4.3))
    for ax, (_, row) in zip(axes, meta.iterrows()):
        p = row["panel"]
        b = boundaries[boundaries["panel"] == p]
        obs = b[b["censored"] == "observed"]
        lo = obs["boundary"] - obs["depth_max_trainable"]
        hi = obs["depth_min_untrainable"].fillna(obs["depth_max_trainable"]) - obs["boundary"]
        ax.errorbar(obs["sigma_w2"], obs["boundary"], yerr=[lo.fillna(0), hi.fillna(0)], fmt="o", ms=3.5,
                    color="black", capsize=0, lw=0.8, label="boundary", zorder=5)
        above = b[b["censored"] == "above"]
        ax.plot(above["sigma_w2"], above["depth_max_tested"], "^", color="0.4", ms=5, mfc="none",
                label="trains at every depth", zorder=5)
        none = b[b["censored"] == "none"]
        ax.plot(none["sigma_w2"], none["depth_min_tested"], "v", color="0.4", ms=5, mfc="none",
                label="trains at no depth", zorder=5)
        cv = curves[curves["panel"] == p]
        for form, fc, fr in _fitted_curves(cv, fits, p, forms):
            color = FORM_COLOR.get(form, "C0")
            label = FORM_LABEL.get(form, form)
            if fr["kind"] == "prop":
                label = label.replace("n", f"{fr['n']:.3g}", 1) + f" [{fr['n_low']:.3g}, {fr['n_high']:.3g}]"
            label += f", acc {fr['classification_accuracy']:.2f}"
            ax.plot(fc["sigma_w2"], fc["depth_pred"], color=color, lw=1.4, label=label)
            if fc["depth_low"].notna().any():
                ax.fill_between(fc["sigma_w2"], fc["depth_low"], fc["depth_high"], color=color, alpha=0.18, lw=0)
        depths = pd.concat([b["depth_min_tested"], b["depth_max_tested"]]).dropna()
        if len(depths):
            ax.set_ylim(max(depths.min() / 2, 0.5), depths.max() * 2.5)
        ax.set_yscale("log")
        ax.set_xlabel(SYM["sigma_w2"])
        ax.set_ylabel(r"max. trainable depth $L_{\max}$")
        ax.set_title(_panel_title(row, varying), fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        fitted = [(h, lab) for h, lab in zip(handles, labels) if lab not in MARKER_LABELS]
        if fitted:
            ax.legend(*zip(*fitted), fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                      ncol=1, handlelength=1.5)
    handles, labels = axes[0].get_legend_handles_labels()
    marks = [(h, lab) for h, lab in zip(handles, labels) if lab in MARKER_LABELS]
    if marks:
        fig.legend(*zip(*marks), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(r"Fitted boundaries $L_{\max}(\sigma_w^2)$ with 95% bootstrap bands; [interval] of $n$, "
                 "acc = classification accuracy of the rule", fontsize=10)
    return fig
