"""`mfpipe fit`: the empirical trainability boundary and fits of L_max = n·ξ and rival forms.

Input contract (DESIGN.md): any table (parquet or csv, several files are concatenated) with
``dataset, optimizer, keep_rate, sigma_w2, sigma_b2, activation, depth, step, train_accuracy``
(plus ``seed`` if present).  Columns a table lacks can be supplied with ``--set COL=VALUE``
(Huang et al.'s published heatmaps have no σ_b² or activation column:
``--set sigma_b2=0.05 --set activation=tanh``); a table with ``steps`` but no ``step`` uses
``step = steps`` (one final accuracy per run).  ``--exclude COL=VALUE`` drops rows
(``--exclude duplicate_placeholder_file=True`` for Huang's filler files).

Pipeline, per *panel* (one value of every cell parameter the table has but σ_w², depth and
seed: ``GROUP_COLUMNS`` and the other training-cell parameters such as ``lr`` and
``preprocess``; ``--group-by`` adds more).  A learning-rate depth rule (lr a function of depth,
like 1e-3 below depth 100 and 1e-4 from 100 on) is one panel whose ``lr_rule`` column names the
rule (``0.001,100:0.0001``, the form of ``--lr``); ``lr`` is then NaN in the panel tables and
each cell's own lr in the cell table.  ``fit.md`` says what each panel pools.

1. Cell accuracy = mean over seeds of the accuracy column at each (σ_w², depth).  A diverged
   run counts at chance, whatever accuracy it recorded: ``diverged`` true, or a loss (the column
   beside the accuracy column: ``train_loss`` for ``train_accuracy``) above ``--max-loss`` × ln
   (num_classes) (default 10 × ln 10 ≈ 23 for 10 classes: a blown-up but finite loss; an
   untrained network's loss is ln(num_classes)).  ``n_diverged`` counts them per cell.  A NaN
   accuracy of a run that did not diverge is a missing measurement (row dropped).
2. Trainable iff accuracy ≥ threshold.  Default ``between:0.5``: halfway between chance
   (1/num_classes; 0.1 for the 10-class datasets) and the best cell accuracy of the panel.
   ``relative:F`` uses F × best, ``absolute:A`` a fixed accuracy.  The threshold is never below
   chance + ``CHANCE_MARGIN`` (1 − chance) (0.145 for 10 classes): chance is never trainable,
   and so neither is a diverged run.
3. Boundary per σ_w² column: the largest trainable depth ``depth_max_trainable``, the first
   deeper depth that fails ``depth_min_untrainable``, and ``censored``: ``observed``, ``above``
   (the deepest tested depth still trains: the boundary is at least that) or ``none`` (no tested
   depth trains: the boundary is below the shallowest).  The fitted boundary value is the
   midpoint of the two depths (``--boundary largest`` uses the largest trainable depth).
4. Forms, each fitted on the observed (uncensored) columns with finite ξ, in log space so that
   every column weighs the same whatever its depth scale::

       n*xi_c            L = n ξ_c                  (Schoenholz: n ≈ 6)
       n*xi_1            L = n ξ_1,  ξ_1 = 1/|ln χ1|   (Huang's ξ_1)
       n*min(xi_c,xi_1)  L = n min(ξ_c, ξ_1)
       a*xi_c+b          L = a ξ_c + b              (least squares of relative residuals)
       a*xi_c^beta       L = a ξ_c^β                (power law; β = 1 is n*xi_c)

   ξ comes from ``mfpipe.theory.depth_scales`` at each panel's activation, σ_b², ρ, noise.
5. Uncertainty: bootstrap (``--bootstrap B`` replicates) resampling seeds (whole runs) and
   σ_w² columns with replacement; the boundary, the threshold and the fit are recomputed in each
   replicate; ``n_low``/``n_high`` are the percentile interval (``--interval``, default 95%).
6. Scores: ``classification_accuracy`` of the rule "trainable iff L ≤ rule(σ_w²)" over all
   tested cells of the panel (censored columns included); ``rmse_log`` of the fitted boundary;
   ``cv_rmse_log`` leave-one-column-out; ``aic`` (Gaussian in log L) and ``delta_aic`` within the
   panel.  ``n_classifier`` is, for the proportional forms, the multiplier that maximises the
   classification accuracy directly (it uses the censored columns too).

Outputs (``-o results/fit.parquet``; the others default to siblings of it):
``fit.parquet`` one row per (panel, form); ``fit.boundaries.parquet`` one row per (panel, σ_w²);
``fit.cells.parquet`` one row per (panel, σ_w², depth) with the accuracy and the verdict;
``fit.curves.parquet`` the fitted L(σ_w²) on a fine σ_w² grid with bootstrap bands (what the
figures overlay); ``fit.md`` the readable summary and model comparison.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mfpipe.errors import InputError
from mfpipe.store import check_output, frame_problems, read_table, write_table_atomic

REQUIRED = {
    "dataset": "string", "optimizer": "string", "keep_rate": "number", "sigma_w2": "number",
    "sigma_b2": "number", "activation": "string", "depth": "number", "step": "number",
}

#: Columns that define a panel when present (``--group-by`` adds more), besides every other
#: training-cell parameter (``panel_columns``).  ``lr`` splits panels too, except that a
#: learning-rate depth rule (lr a function of depth, e.g. 1e-3 below depth 100 and 1e-4 from 100
#: on) stays one panel: the panel key is then ``lr_rule``, the rule as text (``0.001,100:0.0001``).
GROUP_COLUMNS = ("family", "dataset", "optimizer", "init", "activation", "noise", "noise_var",
                 "width", "batch_size", "dropout_input", "steps", "step", "keep_rate", "sigma_b2")
#: Cell parameters that are the axes of a panel (σ_w², depth), pooled (seed) or not a value.
NOT_PANEL = ("sigma_w2", "depth", "seed", "checkpoints")

#: The threshold is at least chance + CHANCE_MARGIN (1 − chance): chance is never trainable.
CHANCE_MARGIN = 0.05
#: A run whose loss exceeds MAX_LOSS × ln(num_classes) (the loss of a uniform guess) has blown up:
#: it counts as diverged, like a NaN/inf loss.
MAX_LOSS = 10.0

#: Number of classes of the datasets mfpipe knows (chance = 1 / classes).
NUM_CLASSES = {"mnist": 10, "mnist5k": 10, "fashion_mnist": 10, "cifar10": 10, "digits": 10,
               "cifar100": 100}

#: form name -> (kind, ξ column).  kind: prop (n ξ), affine (a ξ + b), power (a ξ^β).
FORMS: dict[str, tuple[str, str]] = {
    "n*xi_c": ("prop", "xi_c"),
    "n*xi_1": ("prop", "xi_1"),
    "n*min(xi_c,xi_1)": ("prop", "xi_min"),
    "a*xi_c+b": ("affine", "xi_c"),
    "a*xi_c^beta": ("power", "xi_c"),
}
#: Shell-safe names of the forms (no *, ( or ^ to quote in a Snakemake shell command).
FORM_ALIASES = {"xi_c": "n*xi_c", "xi_1": "n*xi_1", "xi_min": "n*min(xi_c,xi_1)",
                "affine": "a*xi_c+b", "power": "a*xi_c^beta"}
#: One published rule of the form multiplier × ξ ('6*xi_c', '12xi_1'): what `mfpipe figures
#: --reference` draws dotted and the config schema accepts (groups: multiplier, ξ name).
REFERENCE_RULE = r"([0-9]*\.?[0-9]+)\s*\*?\s*(xi_c|xi_1|xi_min)"
N_PARAMS = {"prop": 1, "affine": 2, "power": 2}
XI_LABEL = {"xi_c": "ξ_c", "xi_1": "ξ_1", "xi_min": "min(ξ_c, ξ_1)"}
CURVE_POINTS = 241


# ------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="training table(s): .parquet, .csv or .csv.gz (concatenated)")
    parser.add_argument("-o", "--output", required=True,
                        help="fit table (.parquet or .csv): one row per (panel, form)")
    parser.add_argument("--boundaries", help="boundary table (default: <output stem>.boundaries.parquet)")
    parser.add_argument("--cells", help="cell verdict table (default: <output stem>.cells.parquet)")
    parser.add_argument("--curves", help="fitted curves with bands (default: <output stem>.curves.parquet)")
    parser.add_argument("--summary", help="markdown summary (default: <output stem>.md)")
    parser.add_argument("--set", dest="set_columns", action="append", default=[], metavar="COL=VALUE",
                        help="supply a column the table lacks (or override one), e.g. "
                             "--set sigma_b2=0.05 --set activation=tanh (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="COL=VALUE",
                        help="drop rows where COL equals VALUE, e.g. "
                             "--exclude duplicate_placeholder_file=True (repeatable)")
    parser.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                        help="keep only rows where COL equals VALUE (repeatable)")
    parser.add_argument("--group-by", default="", metavar="COLS",
                        help="extra comma-separated panel columns (the default panel columns "
                             f"present in the table are always used: {', '.join(GROUP_COLUMNS)})")
    parser.add_argument("--accuracy", default="train_accuracy",
                        help="accuracy column (default train_accuracy; e.g. batch_accuracy for "
                             "Huang's metric, test_accuracy)")
    parser.add_argument("--step", default="all",
                        help="checkpoints: 'all' (each step its own panel), 'last' (each run's "
                             "final step) or a list of steps (default all; step 0, the network at "
                             "initialisation, is left out unless listed)")
    parser.add_argument("--threshold", default="between:0.5",
                        help="trainable iff accuracy ≥ threshold: between:F = chance + F (best − "
                             "chance) [default between:0.5], relative:F = F × best, absolute:A")
    parser.add_argument("--max-loss", type=float, default=MAX_LOSS,
                        help="a run whose loss (the loss column beside the accuracy column: "
                             "train_loss for train_accuracy) exceeds MAX_LOSS × ln(num_classes) has "
                             f"blown up and counts as diverged (default {MAX_LOSS:g}; inf: only the "
                             "diverged flag)")
    parser.add_argument("--chance", type=float, default=None,
                        help="chance accuracy (default 1/num_classes from the dataset or a "
                             "num_classes column)")
    parser.add_argument("--boundary", choices=("midpoint", "largest"), default="midpoint",
                        help="boundary value fitted: log-space midpoint (identric mean) of the largest "
                             "trainable and the next untrainable depth (default) or the largest trainable depth")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help=f"comma-separated forms to fit (default all: {', '.join(FORMS)}; "
                             f"shell-safe names: {', '.join(FORM_ALIASES)})")
    parser.add_argument("--bootstrap", type=int, default=400, help="bootstrap replicates (default 400)")
    parser.add_argument("--interval", type=float, default=0.95, help="interval coverage (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    stem = Path(args.output).with_suffix("")
    tables = {"output": args.output, "boundaries": args.boundaries or f"{stem}.boundaries.parquet",
              "cells": args.cells or f"{stem}.cells.parquet",
              "curves": args.curves or f"{stem}.curves.parquet"}
    summary = args.summary or f"{stem}.md"
    for field, path in tables.items():  # before any work
        check_output(path, field)
    check_output(summary, "summary", suffixes=(".md", ".txt"))
    frames = [read_table(path) for path in args.inputs]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = apply_filters(frame, args.set_columns, args.exclude, args.where)
    forms = _parse_forms(args.forms)
    result = fit_table(
        frame, accuracy=args.accuracy, step=args.step, threshold=args.threshold,
        chance=args.chance, boundary=args.boundary, forms=forms, n_boot=args.bootstrap,
        max_loss=args.max_loss,
        interval=args.interval, seed=args.seed,
        extra_group=[c for c in args.group_by.split(",") if c.strip()],
    )
    for field, table in (("output", result.fits), ("boundaries", result.boundaries),
                         ("cells", result.cells), ("curves", result.curves)):
        write_table_atomic(table, tables[field], field)
    from mfpipe.store import atomic_path
    with atomic_path(summary, "summary") as tmp:
        tmp.write_text(result.summary)
    print(result.summary)
    print(f"mfpipe fit: {len(frame)} rows -> {len(result.cells)} (σ_w², depth) cells in "
          f"{result.fits.loc[~result.fits['pooled'], 'panel'].nunique()} panels, "
          f"{len(result.fits)} fits -> {args.output} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def _parse_forms(text: str) -> list[str]:
    forms = [f.strip() for f in text.split(",") if f.strip()]
    # "n*min(xi_c,xi_1)" contains a comma: rejoin the pieces split inside parentheses.
    joined, buf = [], ""
    for piece in forms:
        buf = f"{buf},{piece}" if buf else piece
        if buf.count("(") == buf.count(")"):
            joined.append(buf)
            buf = ""
    joined = [FORM_ALIASES.get(form, form) for form in joined]
    for form in joined:
        if form not in FORMS:
            raise InputError("forms", form, ", ".join(FORMS) + " (or the shell-safe names "
                             + ", ".join(FORM_ALIASES) + ")")
    if not joined:
        raise InputError("forms", text, ", ".join(FORMS))
    return joined


def _parse_assignment(text: str, field: str) -> tuple[str, str]:
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise InputError(field, text, "COL=VALUE")
    col, value = text.split("=", 1)
    return col.strip(), value.strip()


def _coerce_like(value: str, series: pd.Series | None):
    """The text VALUE as the type of the column it is compared with (or its natural type)."""
    lowered = value.lower()
    if series is not None and pd.api.types.is_bool_dtype(series):
        if lowered not in ("true", "false", "1", "0"):
            raise InputError(str(series.name), value, "true or false")
        return lowered in ("true", "1")
    if series is not None and pd.api.types.is_numeric_dtype(series):
        try:
            return float(value)
        except ValueError:
            raise InputError(str(series.name), value, "a number") from None
    if series is None:
        if lowered in ("true", "false"):
            return lowered == "true"
        try:
            number = float(value)
            return int(number) if number.is_integer() and "." not in value and "e" not in lowered else number
        except ValueError:
            return value
    return value


def apply_filters(frame: pd.DataFrame, set_columns=(), exclude=(), where=()) -> pd.DataFrame:
    """``--set``, ``--exclude`` and ``--where`` on a table."""
    frame = frame.copy()
    for text in set_columns:
        col, value = _parse_assignment(text, "set")
        frame[col] = _coerce_like(value, None)
    for field, items, keep in (("exclude", exclude, False), ("where", where, True)):
        for text in items:
            col, value = _parse_assignment(text, field)
            if col not in frame.columns:
                raise InputError(field, text, f"a column of the table: {', '.join(map(str, frame.columns))}")
            target = _coerce_like(value, frame[col])
            match = frame[col] == target
            frame = frame[match if keep else ~match]
    return frame.reset_index(drop=True)


# ------------------------------------------------------------------------------- theory

def _depth_scales(activation, sigma_w2, sigma_b2, keep_rate, noise, noise_var):
    """mfpipe.theory.depth_scales (imported lazily; tests may substitute it)."""
    from mfpipe.theory import depth_scales

    return depth_scales(activation, sigma_w2, sigma_b2, keep_rate=keep_rate, noise=noise,
                        noise_var=noise_var)


def xi_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """ξ_c, ξ_1 = 1/|ln χ1| and min(ξ_c, ξ_1) for every row of a frame with activation,
    sigma_w2, sigma_b2, keep_rate (and noise, noise_var when present).  One vectorised theory
    call per (activation, noise)."""
    out = pd.DataFrame(index=frame.index, columns=["xi_c", "xi_1", "xi_min"], dtype=float)
    noise = frame["noise"] if "noise" in frame else pd.Series("dropout", index=frame.index)
    noise_var = frame["noise_var"] if "noise_var" in frame else pd.Series(0.0, index=frame.index)
    keys = pd.DataFrame({"activation": frame["activation"].astype(str), "noise": noise.astype(str)})
    for (activation, noise_name), index in keys.groupby(["activation", "noise"], sort=False).groups.items():
        sub = frame.loc[index]
        scales = _depth_scales(activation, sub["sigma_w2"].to_numpy(float),
                               sub["sigma_b2"].to_numpy(float), sub["keep_rate"].to_numpy(float),
                               noise_name, noise_var.loc[index].to_numpy(float))
        xi_c = np.abs(np.asarray(scales["xi_c"], dtype=float))
        with np.errstate(divide="ignore"):
            xi_1 = 1.0 / np.abs(np.log(np.asarray(scales["chi_1"], dtype=float)))
        out.loc[index, "xi_c"] = xi_c
        out.loc[index, "xi_1"] = xi_1
        out.loc[index, "xi_min"] = np.fmin(xi_c, xi_1)
    return out


# ------------------------------------------------------------------------------- fitting

class FitResult:
    def __init__(self, fits, boundaries, cells, curves, summary):
        self.fits, self.boundaries, self.cells, self.curves, self.summary = (
            fits, boundaries, cells, curves, summary)


def parse_threshold(text: str) -> tuple[str, float]:
    allowed = "between:F (0 < F ≤ 1), relative:F (0 < F ≤ 1) or absolute:A (0 < A ≤ 1)"
    kind, _, value = str(text).partition(":")
    if kind not in ("between", "relative", "absolute"):
        raise InputError("threshold", text, allowed)
    try:
        number = float(value)
    except ValueError:
        raise InputError("threshold", text, allowed) from None
    if not 0 < number <= 1:
        raise InputError("threshold", text, allowed)
    return kind, number


def threshold_value(kind: str, value: float, best, chance: float):
    """The threshold of a panel whose best cell accuracy is ``best``, never below
    chance + CHANCE_MARGIN (1 − chance)."""
    if kind == "between":
        value = chance + value * (best - chance)
    elif kind == "relative":
        value = value * best
    else:
        value = value + 0.0 * best
    return np.maximum(value, chance + CHANCE_MARGIN * (1 - chance))


def _chance_for(panel: pd.DataFrame, chance: float | None) -> float:
    if chance is not None:
        return chance
    if "num_classes" in panel and panel["num_classes"].notna().all():
        return 1.0 / float(panel["num_classes"].iloc[0])
    dataset = str(panel["dataset"].iloc[0])
    if dataset not in NUM_CLASSES:
        raise InputError("chance", dataset, "--chance ACCURACY or a num_classes column, or a dataset of "
                         + ", ".join(NUM_CLASSES))
    return 1.0 / NUM_CLASSES[dataset]


def prepare(frame: pd.DataFrame, accuracy: str = "train_accuracy", step="all",
            extra_group=()) -> tuple[pd.DataFrame, list[str]]:
    """Validate the input contract, pick checkpoints; returns (rows, panel columns)."""
    frame = frame.reset_index(drop=True)  # (a copy) concatenated tables repeat index labels
    if "step" not in frame and "steps" in frame:
        frame["step"] = frame["steps"]
    if "noise" not in frame:
        frame["noise"] = "dropout"
    required = dict(REQUIRED, **{accuracy: "number"})
    problems = frame_problems(frame, required)
    if problems:
        raise InputError("fit input", "; ".join(problems),
                         "a table with " + ", ".join(required)
                         + " (supply constant columns with --set COL=VALUE)")
    if frame.empty:
        raise InputError("fit input", "no rows", "at least one row after --exclude/--where")
    for col in extra_group:
        if col not in frame:
            raise InputError("group-by", col, f"columns of the table: {', '.join(map(str, frame.columns))}")
    group = [c for c in panel_columns() if c in frame]
    group += [c for c in extra_group if c not in group]
    run_cols = [c for c in group if c != "step"] + ["sigma_w2", "depth"] + (["seed"] if "seed" in frame else [])
    if step in ("all", "last"):
        # step 0 is the network at initialisation: nothing has been trained, nothing to fit
        frame = frame[frame["step"] != 0]
        if frame.empty:
            raise InputError("step", "only step 0", "rows after training (step > 0)")
    if step == "last":
        last = frame.groupby(run_cols, dropna=False, sort=False)["step"].transform("max")
        frame = frame[frame["step"] == last]
        group = [c for c in group if c != "step"] + ["step"] if "steps" not in group else [
            c for c in group if c != "step"]
    elif step != "all":
        from mfpipe.values import parse_values
        wanted = parse_values(step, "step", integer=True)
        frame = frame[frame["step"].isin(wanted)]
        if frame.empty:
            raise InputError("step", step, "'all', 'last' or steps present in the table")
    loss = loss_column(accuracy)
    frame = frame.assign(_loss=frame[loss].astype(float) if loss in frame else np.nan)
    frame = frame.rename(columns={accuracy: "_accuracy"})
    # A NaN accuracy is a missing measurement (dropped) unless the run diverged (then: chance).
    diverged = frame["diverged"].fillna(False).astype(bool) if "diverged" in frame else False
    frame = frame.assign(_diverged=diverged)
    frame = frame[frame["_accuracy"].notna() | frame["_diverged"]]
    if frame.empty:
        raise InputError(accuracy, "no values", "a column with accuracies (NaN only for diverged runs)")
    if "lr" in group:
        frame = frame.assign(lr_rule=lr_rules(frame, [c for c in group if c != "lr"]))
        group = ["lr_rule" if c == "lr" else c for c in group]
    keep = list(dict.fromkeys(group + ["sigma_w2", "depth", "_accuracy", "_diverged", "_loss"]
                              + [c for c in ("seed", "lr") if c in frame]))
    return frame[keep].reset_index(drop=True), group


def panel_columns() -> list[str]:
    """GROUP_COLUMNS and every other training-cell parameter but NOT_PANEL: a parameter that
    varies splits the panels."""
    from mfpipe.cells import TRAIN_PARAMS

    return list(GROUP_COLUMNS) + [c for c in TRAIN_PARAMS if c not in GROUP_COLUMNS + NOT_PANEL]


def loss_column(accuracy: str) -> str:
    """The loss measured with an accuracy column: train_accuracy -> train_loss."""
    return accuracy.replace("accuracy", "loss")


def lr_rules(frame: pd.DataFrame, others: list[str]) -> pd.Series:
    """Per row, the learning rate of its panel as text: the number, or the depth rule
    ``LR0,D1:LR1,…`` (mfpipe.cells.parse_lr_rule's form) where, within the rows that agree on
    ``others``, lr varies and is a function of depth (one lr per depth)."""
    from mfpipe.values import format_number

    out = frame["lr"].map(format_number)
    for _, part in frame.groupby(others, dropna=False, sort=False) if others else [(None, frame)]:
        per_depth = part.groupby("depth")["lr"].agg(["nunique", "first"]).sort_index()
        if part["lr"].nunique() < 2 or (per_depth["nunique"] > 1).any():
            continue  # one lr, or several at one depth: the lr values split the panel
        pieces, last = [], None
        for depth, lr in per_depth["first"].items():
            if lr != last:
                pieces.append(format_number(lr) if last is None else f"{int(depth)}:{format_number(lr)}")
                last = lr
        out[part.index] = ",".join(pieces)
    return out


def fit_table(frame: pd.DataFrame, accuracy: str = "train_accuracy", step="all",
              threshold: str = "between:0.5", chance: float | None = None,
              boundary: str = "midpoint", forms=None, n_boot: int = 400, interval: float = 0.95,
              seed: int = 0, extra_group=(), max_loss: float = MAX_LOSS) -> FitResult:
    """The whole fit on a table of training results (see the module docstring)."""
    forms = list(forms or FORMS)
    kind, value = parse_threshold(threshold)
    if not max_loss > 0:
        raise InputError("max-loss", max_loss, "a positive multiple of ln(num_classes), e.g. "
                         f"{MAX_LOSS:g} (default), or inf to count only the diverged flag")
    if n_boot < 0:
        raise InputError("bootstrap", n_boot, "an integer ≥ 0")
    if not 0 < interval < 1:
        raise InputError("interval", interval, "a coverage in (0, 1)")
    rows, group = prepare(frame, accuracy, step, extra_group)
    rng = np.random.default_rng(seed)
    fit_rows, boundary_frames, cell_frames, curve_frames = [], [], [], []
    pooled_parts = []
    alpha = (1 - interval) / 2
    for panel_id, (panel, p) in enumerate(_panels(rows, group, chance, kind, value, boundary,
                                                  max_loss)):
        labels = p.labels
        theta_boot = {}
        boot = p.bootstrap(rng, n_boot)
        pooled_parts.append((p, boot))
        cells = p.cell_frame()
        bounds = p.boundary_frame()
        grid = np.linspace(p.sigma.min(), p.sigma.max(), CURVE_POINTS)
        grid_xi = xi_columns(pd.DataFrame({**{k: [v] * len(grid) for k, v in labels.items()},
                                           "sigma_w2": grid}).assign(
            **{c: labels.get(c, d) for c, d in (("noise", "dropout"), ("noise_var", 0.0))}))
        for form in forms:
            form_kind, xi_name = FORMS[form]
            xi = p.xi[xi_name]
            theta, m = _fit(form_kind, p.value[None, :], p.usable[None, :] & np.isfinite(xi)[None, :],
                            xi[None, :])
            theta = theta[0]
            if boot is not None:
                bvals, bmask, bidx = boot
                bxi = xi[bidx]
                theta_boot[form] = _fit(form_kind, bvals, bmask & np.isfinite(bxi), bxi)[0]
            stats = p.scores(form_kind, theta, xi, int(m[0]))
            row = dict(labels, panel=panel_id, form=form, xi=xi_name, kind=form_kind)
            tb = theta_boot.get(form)
            lo = hi = np.full(2, np.nan)
            if tb is not None and np.isfinite(tb[:, 0]).sum() >= 2:
                ok = np.isfinite(tb).all(axis=1)
                lo, hi = np.nanquantile(tb[ok], alpha, axis=0), np.nanquantile(tb[ok], 1 - alpha, axis=0)
            row.update(n=theta[0], n_low=lo[0], n_high=hi[0])
            if form_kind == "affine":
                row.update(b=theta[1], b_low=lo[1], b_high=hi[1])
            if form_kind == "power":
                row.update(beta=theta[1], beta_low=lo[1], beta_high=hi[1])
            row.update(stats)
            row.update(n_boot=0 if tb is None else int(np.isfinite(tb[:, 0]).sum()),
                       threshold=p.threshold, chance=p.chance, n_cells=int(p.tested.sum()),
                       n_columns=len(p.sigma), n_observed=int(p.usable.sum()),
                       n_censored_above=int((p.status == "above").sum()),
                       n_censored_none=int((p.status == "none").sum()))
            fit_rows.append(row)
            gxi = grid_xi[xi_name].to_numpy()
            curve = pd.DataFrame({"sigma_w2": grid, "xi": gxi, "depth_pred": _predict(form_kind, theta[None, :], gxi)[0]})
            if tb is not None and len(tb):
                pred = _predict(form_kind, tb, gxi)
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no fit in this panel
                    curve["depth_low"] = np.nanquantile(pred, alpha, axis=0)
                    curve["depth_high"] = np.nanquantile(pred, 1 - alpha, axis=0)
            else:
                curve["depth_low"] = curve["depth_high"] = np.nan
            curve_frames.append(curve.assign(**labels, panel=panel_id, form=form))
        boundary_frames.append(bounds.assign(**labels, panel=panel_id))
        cells = cells.assign(**labels, panel=panel_id)
        if "lr_rule" in labels:  # each cell's own learning rate (a depth rule gives one per depth)
            cells["lr"] = cells["depth"].map(panel.groupby("depth")["lr"].first())
        cell_frames.append(cells)
    fits = pd.DataFrame(fit_rows)
    if len(pooled_parts) > 1:
        pooled = pd.DataFrame(_pooled_rows(pooled_parts, forms, group, alpha))
        kinds = fits.dtypes
        fits = pd.concat([fits, pooled], ignore_index=True)
        for col, dtype in kinds.items():  # integers stay integers (nullable) despite pooled rows
            if pd.api.types.is_integer_dtype(dtype):
                fits[col] = fits[col].astype("Int64")
    fits["delta_aic"] = fits["aic"] - fits.groupby("panel")["aic"].transform("min")
    fits["pooled"] = fits["panel"] == POOLED
    front = group + (["lr"] if "lr_rule" in group else []) + ["panel"]
    order = lambda f: f[front + [c for c in f.columns if c not in front]]  # noqa: E731
    boundaries = order(pd.concat(boundary_frames, ignore_index=True))
    cells = order(pd.concat(cell_frames, ignore_index=True))
    curves = order(pd.concat(curve_frames, ignore_index=True))
    fits = order(fits)
    return FitResult(fits, boundaries, cells, curves,
                     summarize(fits, group, threshold, accuracy, boundary, n_boot, interval,
                               pooling=pooled_note(rows, group, cells, max_loss, accuracy)))


def _panels(rows: pd.DataFrame, group: list[str], chance, kind: str, value: float,
            boundary: str, max_loss: float):
    """(rows, _Panel) per panel of prepared rows (``prepare``), in panel order."""
    if "seed" not in rows:
        rows["seed"] = 0
    rows["sigma_w2"] = rows["sigma_w2"].astype(float).round(12)
    rows["depth"] = rows["depth"].astype(float)
    for key, panel in rows.groupby(group, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        labels = dict(zip(group, key))
        if "lr_rule" in labels:  # the number, or NaN for a depth rule (lr_rule names it)
            labels["lr"] = panel["lr"].iloc[0] if panel["lr"].nunique() == 1 else np.nan
        yield panel, _Panel(panel, labels, _chance_for(panel, chance), kind, value, boundary,
                            max_loss)


def verdict_panels(frame: pd.DataFrame, accuracy: str = "train_accuracy", step="last",
                   threshold: str = "between:0.5", chance: float | None = None,
                   max_loss: float = MAX_LOSS) -> list["_Panel"]:
    """The fit's verdicts without the fits (what the boundary search decides with): one
    ``_Panel`` per panel, with ``sigma``, ``depths``, per-seed ``acc``, ``tested``,
    ``trainable`` and ``threshold``."""
    kind, value = parse_threshold(threshold)
    rows, group = prepare(frame, accuracy, step)
    return [p for _, p in _panels(rows, group, chance, kind, value, "midpoint", max_loss)]


def pooled_note(rows: pd.DataFrame, group: list[str], cells: pd.DataFrame, max_loss: float,
                accuracy: str) -> str:
    """What each panel pools, for the summary: seeds, a learning-rate depth rule, diverged runs."""
    seeds = cells["n_seeds"]
    parts = [f"the seeds (a cell's accuracy is the mean over its {seeds.min()}"
             + (f"–{seeds.max()}" if seeds.max() > seeds.min() else "") + " seed(s))"]
    rules = sorted({r for r in rows.get("lr_rule", pd.Series(dtype=str)) if "," in r})
    if rules:
        parts.append("the depths of a learning-rate depth rule (one panel; lr `LR0,D1:LR1` = LR0 "
                     "below depth D1, LR1 from D1 on): " + ", ".join(f"`{r}`" for r in rules))
    blown = (f" or a `{loss_column(accuracy)}` above {max_loss:g} × ln(num_classes)"
             if math.isfinite(max_loss) and rows["_loss"].notna().any() else "")
    parts.append(f"{int(cells['n_diverged'].sum())} diverged runs (the `diverged` flag{blown}), "
                 "counted at chance accuracy and never trainable")
    others = ", ".join(f"`{c}`" for c in group)
    return ("Each panel is one value of " + others + "; it pools " + "; ".join(parts) + ".  "
            "Other columns of the table do not split panels (`--group-by` adds some).")


POOLED = -1  # the panel id of the fits pooled over all panels


def _pooled_rows(parts, forms, group, alpha):
    """One multiplier per proportional form for all panels together (is n universal?).

    The pooled fit uses every panel's observed columns; its bootstrap concatenates the panels'
    replicates (each panel resampled on its own), so the interval reflects every panel's noise.
    """
    rows = []
    for form in forms:
        form_kind, xi_name = FORMS[form]
        if form_kind != "prop":
            continue
        values = np.concatenate([p.value for p, _ in parts])[None, :]
        usable = np.concatenate([p.usable for p, _ in parts])[None, :]
        xi = np.concatenate([p.xi[xi_name] for p, _ in parts])[None, :]
        theta, m = _fit(form_kind, values, usable & np.isfinite(xi), xi)
        theta = theta[0]
        lo = hi = np.nan
        boots = [b for _, b in parts]
        if all(b is not None for b in boots):
            bvals = np.concatenate([b[0] for b in boots], axis=1)
            bmask = np.concatenate([b[1] for b in boots], axis=1)
            bxi = np.concatenate([p.xi[xi_name][b[2]] for p, b in parts], axis=1)
            tb = _fit(form_kind, bvals, bmask & np.isfinite(bxi), bxi)[0][:, 0]
            tb = tb[np.isfinite(tb)]
            if len(tb) >= 2:
                lo, hi = np.quantile(tb, alpha), np.quantile(tb, 1 - alpha)
        correct = tested = rss = 0.0
        for p, _ in parts:
            stats = p.scores(form_kind, theta, p.xi[xi_name], int(p.usable.sum()))
            n_tested = int(p.tested.sum())
            correct += stats["classification_accuracy"] * n_tested if n_tested else 0.0
            tested += n_tested
            if np.isfinite(stats["rmse_log"]):
                rss += stats["rmse_log"] ** 2 * int(p.usable.sum())
        count = int(m[0])
        rows.append({"panel": POOLED, "form": form, "xi": xi_name,
                     "kind": form_kind, "n": theta[0], "n_low": lo, "n_high": hi,
                     "classification_accuracy": correct / tested if tested else np.nan,
                     "rmse_log": math.sqrt(rss / count) if count else np.nan,
                     "aic": count * math.log(max(rss / count, 1e-12)) + 2 if count > 1 else np.nan,
                     "n_params": 1, "n_cells": int(tested), "n_columns": int(values.shape[1]),
                     "n_observed": count})
    return rows


class _Panel:
    """One panel's cells as arrays: accuracy[seed, σ_w² column, depth]."""

    def __init__(self, panel: pd.DataFrame, labels: dict, chance: float, kind: str, value: float,
                 boundary: str, max_loss: float = MAX_LOSS):
        self.labels, self.chance, self.kind, self.tvalue, self.mode = labels, chance, kind, value, boundary
        self.sigma, si = np.unique(panel["sigma_w2"].to_numpy(), return_inverse=True)
        self.depths, di = np.unique(panel["depth"].to_numpy(), return_inverse=True)
        self.seeds, ki = np.unique(panel["seed"].to_numpy(), return_inverse=True)
        # A diverged run, or one whose loss blew up (finite or not), counts at chance.
        diverged = panel["_diverged"].to_numpy(bool) | (
            panel["_loss"].to_numpy(float) > max_loss * math.log(1 / chance))
        acc = np.where(diverged, chance, panel["_accuracy"].to_numpy(float))
        total = np.zeros((len(self.seeds), len(self.sigma), len(self.depths)))
        count = np.zeros_like(total)
        runs_diverged = np.zeros_like(total)
        np.add.at(total, (ki, si, di), acc)   # repeated rows of one run are averaged
        np.add.at(count, (ki, si, di), 1.0)
        np.add.at(runs_diverged, (ki, si, di), diverged)
        self.n_diverged = (runs_diverged > 0).sum(axis=0)
        with np.errstate(invalid="ignore"):
            self.acc = total / count  # NaN where a seed did not run that cell
        self.tested = (count > 0).any(axis=0)
        first = {c: panel[c].iloc[0] for c in ("activation", "sigma_b2", "keep_rate")}
        theory_in = pd.DataFrame({"sigma_w2": self.sigma, **{c: [v] * len(self.sigma) for c, v in first.items()},
                                  "noise": labels.get("noise", "dropout"), "noise_var": labels.get("noise_var", 0.0)})
        self.xi = {c: s.to_numpy(float) for c, s in xi_columns(theory_in).items()}
        mean = _nanmean(self.acc, axis=0)
        self.mean_acc = mean
        self.std_acc = np.sqrt(_nanmean((self.acc - mean) ** 2, axis=0))
        self.n_seeds = (count > 0).sum(axis=0)
        self.threshold = float(self._threshold(mean[None])[0])
        self.trainable = mean >= self.threshold
        lmax, lfail, status = self._boundaries(self.trainable[None], self.tested[None])
        self.lmax, self.lfail, self.status = lmax[0], lfail[0], status[0]
        self.value = self._value(self.lmax, self.lfail)
        self.usable = (self.status == "observed") & np.isfinite(self.value)

    def _threshold(self, mean):
        best = np.nanmax(mean.reshape(mean.shape[0], -1), axis=1)
        return threshold_value(self.kind, self.tvalue, best, self.chance)

    def _boundaries(self, trainable, tested):
        """Vectorised over a leading replicate axis: (R, C, D) -> lmax, lfail, status (R, C)."""
        d = self.depths
        tr = trainable & tested
        fail = tested & ~trainable
        D = tr.shape[-1]
        has = tr.any(axis=-1)
        last_idx = D - 1 - np.argmax(tr[..., ::-1], axis=-1)
        deepest = D - 1 - np.argmax(tested[..., ::-1], axis=-1)
        lmax = np.where(has, d[last_idx], np.nan)
        after = fail & (np.arange(D) > last_idx[..., None])
        after = np.where(has[..., None], after, fail)
        has_fail = after.any(axis=-1)
        lfail = np.where(has_fail, d[np.argmax(after, axis=-1)], np.nan)
        status = np.where(~has, "none", np.where(last_idx == deepest, "above", "observed"))
        status = np.where(tested.any(axis=-1), status, "untested")
        return lmax, lfail, status

    def _value(self, lmax, lfail):
        if self.mode == "largest":
            return lmax
        return np.where(np.isfinite(lfail), identric_mean(lmax, lfail), lmax)

    def bootstrap(self, rng, n_boot):
        """Boundary values resampling seeds and σ_w² columns: (values, usable, column index)."""
        if n_boot == 0:
            return None
        S, C, _ = self.acc.shape
        seed_idx = rng.integers(0, S, size=(n_boot, S))
        acc = self.acc[seed_idx]  # (B, S, C, D)
        mean = _nanmean(acc, axis=1)
        tested = np.isfinite(mean)
        thr = self._threshold(np.where(tested, mean, np.nan))
        trainable = np.where(tested, mean >= thr[:, None, None], False)
        lmax, lfail, status = self._boundaries(trainable, tested)
        values = self._value(lmax, lfail)
        usable = (status == "observed") & np.isfinite(values)
        col_idx = rng.integers(0, C, size=(n_boot, C))
        rows = np.arange(n_boot)[:, None]
        return values[rows, col_idx], usable[rows, col_idx], col_idx

    def scores(self, form_kind, theta, xi, m):
        """Classification of the panel's cells and boundary residuals of one fitted rule."""
        pred_boundary = _predict(form_kind, theta[None, :], xi)[0]
        predicted = self.depths[None, :] <= pred_boundary[:, None]
        tested, actual = self.tested, self.trainable
        correct = (predicted == actual) & tested
        n_tested = tested.sum()
        pos, neg = (actual & tested).sum(), (~actual & tested).sum()
        tpr = (predicted & actual & tested).sum() / pos if pos else np.nan
        tnr = (~predicted & ~actual & tested).sum() / neg if neg else np.nan
        k = N_PARAMS[form_kind]
        if not np.isfinite(theta[:k]).all():  # nothing to fit (no observed column): no rule to score
            correct[:] = False
            n_tested = pos = neg = 0
        usable = self.usable & np.isfinite(xi) & (xi > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = np.log(self.value[usable]) - np.log(np.maximum(pred_boundary[usable], 1e-300))
        rss = float(np.sum(resid ** 2))
        out = dict(classification_accuracy=float(correct.sum() / n_tested) if n_tested else np.nan,
                   balanced_accuracy=float(np.nanmean([tpr, tnr])) if pos or neg else np.nan,
                   rmse_log=math.sqrt(rss / m) if m else np.nan,
                   cv_rmse_log=self._loo(form_kind, xi, usable),
                   aic=(m * math.log(max(rss / m, 1e-12)) + 2 * k) if m > k else np.nan,
                   n_params=k)
        if form_kind == "prop":
            out.update(self._best_classifier(xi))
        return out

    def _loo(self, form_kind, xi, usable):
        idx = np.flatnonzero(usable)
        if len(idx) <= N_PARAMS[form_kind]:
            return np.nan
        masks = np.repeat(usable[None, :], len(idx), axis=0)
        masks[np.arange(len(idx)), idx] = False
        values = np.repeat(self.value[None, :], len(idx), axis=0)
        theta, _ = _fit(form_kind, values, masks, np.repeat(xi[None, :], len(idx), axis=0))
        pred = np.array([_predict(form_kind, theta[j:j + 1], xi[idx[j]:idx[j] + 1])[0, 0]
                         for j in range(len(idx))])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.log(self.value[idx]) - np.log(np.maximum(pred, 1e-300))
        return float(np.sqrt(np.nanmean(err ** 2)))

    def _best_classifier(self, xi):
        """The n that classifies the most cells right with 'trainable iff depth ≤ n ξ'."""
        ci, di = np.nonzero(self.tested)
        x = xi[ci]
        ok = np.isfinite(x) & (x > 0)
        always = (~np.isfinite(x)) & self.trainable[ci, di]  # infinite ξ: predicted trainable
        ratio = self.depths[di[ok]] / x[ok]
        label = self.trainable[ci[ok], di[ok]]
        if len(ratio) == 0:
            return dict(n_classifier=np.nan, classifier_accuracy=np.nan)
        order = np.argsort(ratio)
        r, lab = ratio[order], label[order]
        # n just below r[0] (everything predicted untrainable), then just above each r[j].
        correct_pos = np.concatenate([[0], np.cumsum(lab)])
        correct_neg = (~lab).sum() - np.concatenate([[0], np.cumsum(~lab)])
        correct = correct_pos + correct_neg
        j = int(np.argmax(correct))  # n in [r[j-1], r[j])
        lo = r[j - 1] if j > 0 else r[0] / 2
        hi = r[j] if j < len(r) else r[-1] * 2
        total = len(ratio) + int(((~np.isfinite(x)) | (x <= 0)).sum())
        # the best n lies beyond every cell (all trainable, or none): only a bound, no estimate
        bounded = 0 < j < len(r)
        return dict(n_classifier=float(math.sqrt(lo * hi)) if bounded else np.nan,
                    classifier_accuracy=float((correct[j] + always.sum()) / total))

    def cell_frame(self):
        ci, di = np.nonzero(self.tested)
        return pd.DataFrame({
            "sigma_w2": self.sigma[ci], "depth": self.depths[di],
            "accuracy": self.mean_acc[ci, di], "accuracy_std": self.std_acc[ci, di],
            "n_seeds": self.n_seeds[ci, di], "n_diverged": self.n_diverged[ci, di],
            "frac_seeds_trainable": _nanmean(self.acc[:, ci, di] >= self.threshold, axis=0,
                                             where=np.isfinite(self.acc[:, ci, di])),
            "trainable": self.trainable[ci, di], "threshold": self.threshold,
            "xi_c": self.xi["xi_c"][ci], "xi_1": self.xi["xi_1"][ci],
        })

    def boundary_frame(self):
        return pd.DataFrame({
            "sigma_w2": self.sigma, "depth_max_trainable": self.lmax,
            "depth_min_untrainable": self.lfail, "boundary": self.value, "censored": self.status,
            "depth_min_tested": [self.depths[t].min() if t.any() else np.nan for t in self.tested],
            "depth_max_tested": [self.depths[t].max() if t.any() else np.nan for t in self.tested],
            "xi_c": self.xi["xi_c"], "xi_1": self.xi["xi_1"], "xi_min": self.xi["xi_min"],
            "threshold": self.threshold,
        })


def identric_mean(a, b):
    """exp(E[ln L]) for L uniform on [a, b]: the boundary value whose log is unbiased when the
    true boundary lies anywhere between the deepest trainable depth a and the next failing b
    (the fits are in log space).  = a when a == b; between the geometric and arithmetic means."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.exp((b * np.log(b) - a * np.log(a)) / (b - a) - 1.0)
    return np.where(np.isclose(a, b), a, value)


def _nanmean(a, axis, where=None):
    a = np.asarray(a, dtype=float)
    mask = np.isfinite(a) if where is None else where
    total = np.where(mask, a, 0.0).sum(axis=axis)
    count = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _fit(form_kind: str, values, mask, xi):
    """Closed-form fits, vectorised over replicate rows: values/mask/xi (R, C) -> θ (R, 2), m (R,)."""
    values = np.asarray(values, float)
    xi = np.broadcast_to(np.asarray(xi, float), values.shape)
    mask = mask & np.isfinite(values) & (values > 0) & np.isfinite(xi) & (xi > 0)
    xi = np.where(mask, xi, 1.0)  # 0 × inf would poison the sums
    w = mask.astype(float)
    m = w.sum(axis=1)
    theta = np.full((values.shape[0], 2), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(mask, np.log(np.where(mask, values, 1.0)), 0.0)
        x = np.where(mask, np.log(np.where(mask, xi, 1.0)), 0.0)
        if form_kind == "prop":
            theta[:, 0] = np.where(m > 0, np.exp((w * (y - x)).sum(1) / m), np.nan)
            theta[:, 1] = 1.0
        elif form_kind == "power":
            xm, ym = (w * x).sum(1) / m, (w * y).sum(1) / m
            sxx = (w * (x - xm[:, None]) ** 2).sum(1)
            sxy = (w * (x - xm[:, None]) * (y - ym[:, None])).sum(1)
            beta = np.where((m >= 2) & (sxx > 0), sxy / sxx, np.nan)
            theta[:, 0] = np.exp(ym - beta * xm)
            theta[:, 1] = beta
        elif form_kind == "affine":
            # minimise Σ ((L − a ξ − b)/L)²: weighted least squares with weights 1/L².
            v = np.where(mask, values, 1.0)
            ww = w / v ** 2
            s0, s1, s2 = ww.sum(1), (ww * xi).sum(1), (ww * xi ** 2).sum(1)
            t0, t1 = (ww * v).sum(1), (ww * xi * v).sum(1)
            det = s0 * s2 - s1 ** 2
            ok = (m >= 2) & (np.abs(det) > 1e-12 * np.maximum(s0 * s2, 1e-300))
            theta[:, 0] = np.where(ok, (s0 * t1 - s1 * t0) / det, np.nan)
            theta[:, 1] = np.where(ok, (s2 * t0 - s1 * t1) / det, np.nan)
        else:
            raise InputError("form kind", form_kind, "prop, affine, power")
    return theta, m


def _predict(form_kind: str, theta, xi):
    """Predicted boundary depth for θ rows (R, 2) at ξ values (K,) -> (R, K)."""
    theta = np.asarray(theta, float)
    xi = np.asarray(xi, float)[None, :]
    a, b = theta[:, :1], theta[:, 1:2]
    with np.errstate(invalid="ignore", over="ignore"):
        if form_kind == "prop":
            return a * xi
        if form_kind == "power":
            return a * np.where(np.isinf(xi), np.inf, xi ** b)
        return a * xi + b


# ------------------------------------------------------------------------------- summary

def _label(x) -> str:
    from mfpipe.values import format_number

    if isinstance(x, (bool, np.bool_)) or x is None or x is pd.NA:
        return str(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return format_number(x) if math.isfinite(x) else str(x)
    return str(x)


def _fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def _wins(fits: pd.DataFrame, column: str) -> pd.Series:
    """How many panels each form wins on ``column`` (smallest), panels with no value skipped."""
    known = fits.dropna(subset=[column])
    if known.empty:
        return pd.Series(dtype=int)
    return known.loc[known.groupby("panel")[column].idxmin()]["form"].value_counts()


def summarize(fits: pd.DataFrame, group: list[str], threshold, accuracy, boundary, n_boot, interval,
              pooling: str = "") -> str:
    pooled = fits[fits["panel"] == POOLED]
    fits = fits[fits["panel"] != POOLED]
    varying = [c for c in group if fits[c].nunique(dropna=False) > 1]
    lines = ["# Maximum trainable depth: fits of L_max = n·ξ and rival forms", "",
             f"Accuracy column `{accuracy}`; trainable iff accuracy ≥ threshold `{threshold}` (never "
             f"below chance + {CHANCE_MARGIN:g} × (1 − chance)); "
             f"boundary value: `{boundary}`; {n_boot} bootstrap replicates (seeds and σ_w² columns), "
             f"{interval:.0%} percentile intervals.  Fits use the observed (uncensored) σ_w² columns; "
             "classification accuracy scores the rule 'trainable iff L ≤ rule(σ_w²)' on every tested "
             "cell.  ΔAIC and the held-out (leave-one-column-out) error compare the forms within a panel.",
             ""] + ([pooling, ""] if pooling else [])
    common = [f"{c} = {_label(fits[c].iloc[0])}" for c in group if c not in varying and len(fits)]
    if common:
        lines += ["Common to all panels: " + ", ".join(common) + ".", ""]
    lines += ["## Model comparison over all panels", ""]
    wins, cv_wins = (_wins(fits, col) for col in ("aic", "cv_rmse_log"))
    overall = fits.groupby("form", sort=False).agg(
        mean_classification_accuracy=("classification_accuracy", "mean"),
        median_rmse_log=("rmse_log", "median"), median_cv_rmse_log=("cv_rmse_log", "median"),
        sum_aic=("aic", "sum"))
    lines += ["| form | mean class. acc. | median rmse(log L) | median held-out rmse | Σ AIC | best AIC in | best held-out in |",
              "|---|---|---|---|---|---|---|"]
    for form, r in overall.iterrows():
        lines.append(f"| `{form}` | {_fmt(r.mean_classification_accuracy)} | {_fmt(r.median_rmse_log)} | "
                     f"{_fmt(r.median_cv_rmse_log)} | {_fmt(r.sum_aic, 4)} | {int(wins.get(form, 0))} panels | "
                     f"{int(cv_wins.get(form, 0))} panels |")
    best_overall = overall["sum_aic"].idxmin() if overall["sum_aic"].notna().any() else None
    best_class = overall["mean_classification_accuracy"].idxmax() if overall["mean_classification_accuracy"].notna().any() else None
    lines += ["", f"Best description of the data by total AIC: `{best_overall}`; by mean classification "
              f"accuracy: `{best_class}`.", ""]
    prop = fits[fits["kind"] == "prop"]
    if len(prop):
        lines += ["## Multipliers n of the proportional forms per panel", "",
                  "| " + " | ".join(varying or ["panel"]) + " | form | n | interval | n (best classifier) | class. acc. | observed / above / none columns |",
                  "|" + "---|" * (len(varying or ["panel"]) + 6)]
        for _, r in prop.iterrows():
            label = " | ".join(_label(r[c]) for c in (varying or ["panel"]))
            lines.append(f"| {label} | `{r.form}` | {_fmt(r.n)} | [{_fmt(r.n_low)}, {_fmt(r.n_high)}] | "
                         f"{_fmt(r.n_classifier)} | {_fmt(r.classification_accuracy)} | "
                         f"{_label(r.n_observed)} / {_label(r.n_censored_above)} / {_label(r.n_censored_none)} |")
        lines.append("")
    if len(pooled):
        lines += ["## One multiplier for all panels? (pooled fit)", "",
                  f"Fitted on the observed columns of all {fits['panel'].nunique()} panels together; "
                  "'panels excluding it' counts the panels whose own interval does not contain the "
                  "pooled n (0 = consistent with one universal n).", "",
                  "| form | pooled n | interval | class. acc. | per-panel n (min – max) | panels excluding it |",
                  "|---|---|---|---|---|---|"]
        for _, r in pooled.iterrows():
            own = fits[fits["form"] == r.form]
            excl = int(((own["n_low"] > r.n) | (own["n_high"] < r.n)).sum())
            lines.append(f"| `{r.form}` | {_fmt(r.n)} | [{_fmt(r.n_low)}, {_fmt(r.n_high)}] | "
                         f"{_fmt(r.classification_accuracy)} | {_fmt(own['n'].min())} – {_fmt(own['n'].max())} | "
                         f"{excl} of {len(own)} |")
        lines.append("")
    lines += ["## All fits", "",
              "| " + " | ".join(varying or ["panel"]) + " | form | params | class. acc. | rmse(log L) | held-out | ΔAIC |",
              "|" + "---|" * (len(varying or ["panel"]) + 6)]
    for _, r in fits.iterrows():
        label = " | ".join(_label(r[c]) for c in (varying or ["panel"]))
        params = f"n={_fmt(r.n)} [{_fmt(r.n_low)}, {_fmt(r.n_high)}]"
        if r.kind == "affine":
            params = f"a={_fmt(r.n)} [{_fmt(r.n_low)}, {_fmt(r.n_high)}], b={_fmt(r.b)} [{_fmt(r.b_low)}, {_fmt(r.b_high)}]"
        if r.kind == "power":
            params = f"a={_fmt(r.n)} [{_fmt(r.n_low)}, {_fmt(r.n_high)}], β={_fmt(r.beta)} [{_fmt(r.beta_low)}, {_fmt(r.beta_high)}]"
        lines.append(f"| {label} | `{r.form}` | {params} | {_fmt(r.classification_accuracy)} | "
                     f"{_fmt(r.rmse_log)} | {_fmt(r.cv_rmse_log)} | {_fmt(r.delta_aic)} |")
    return "\n".join(lines) + "\n"
