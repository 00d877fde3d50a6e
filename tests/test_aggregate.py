"""`mfpipe aggregate`: per-cell parquet files -> one dataset per kind, with schema checks."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpipe.aggregate import aggregate, collect_inputs
from mfpipe.cli import main
from mfpipe.errors import InputError
from mfpipe.grid import cell_id


def training_cell(depth, sigma_w2, seed, steps=(10, 100), accuracy=0.9):
    params = dict(dataset="mnist5k", optimizer="sgd", activation="tanh", keep_rate=1.0,
                  sigma_w2=sigma_w2, sigma_b2=0.05, depth=depth, width=32, seed=seed)
    rows = [dict(params, cell_id=cell_id(params), step=s, train_accuracy=accuracy,
                 batch_accuracy=accuracy, test_accuracy=accuracy, train_loss=0.3, diverged=False)
            for s in steps]
    return pd.DataFrame(rows)


def gradient_cell(depth, sigma_w2, seed):
    params = dict(activation="tanh", keep_rate=1.0, sigma_w2=sigma_w2, sigma_b2=0.05,
                  depth=depth, width=32, seed=seed)
    rows = [dict(params, cell_id=cell_id(params), layer=l, mode=m, grad_sq_norm=2.0 ** -l,
                 g_aa=1.0, g_ab=0.5, g_ab_abs=0.6, q_l=0.7, c_l=0.9)
            for l in range(depth) for m in ("real", "independent")]
    return pd.DataFrame(rows)


def write(frame, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def test_training_cells_merge_into_one_dataset(tmp_path):
    cells = tmp_path / "cells" / "training"
    frames = []
    for depth in (5, 10):
        for s2 in (1.0, 2.5):
            for seed in (0, 1):
                f = training_cell(depth, s2, seed, accuracy=0.1 * depth + s2)
                frames.append(f)
                write(f, cells / f"d{depth}" / f"s{s2}" / f"seed{seed}.parquet")
    out = tmp_path / "training.parquet"
    summary = aggregate(collect_inputs([str(cells)]), out)
    assert summary == {"kind": "training", "files": 8, "rows": 16, "cells": 8}
    got = pd.read_parquet(out).sort_values(["cell_id", "step"]).reset_index(drop=True)
    want = pd.concat(frames).sort_values(["cell_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


def test_int_and_float_columns_unify_and_optional_columns_fill_with_nulls(tmp_path):
    a = training_cell(5, 2.0, 0)
    a["sigma_w2"] = a["sigma_w2"].astype("int64")  # a writer that stored σ_w² = 2 as an int
    b = training_cell(5, 1.5, 0).drop(columns=["test_accuracy"])
    files = [write(a, tmp_path / "a.parquet"), write(b, tmp_path / "b.parquet")]
    aggregate(files, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert pa.types.is_floating(table.schema.field("sigma_w2").type)
    got = table.to_pandas()
    assert sorted(got["sigma_w2"].unique()) == [1.5, 2.0]
    assert got["test_accuracy"].isna().sum() == 2


def test_missing_and_mistyped_columns_name_the_file(tmp_path):
    good = write(training_cell(5, 1.0, 0), tmp_path / "good.parquet")
    missing = write(training_cell(5, 2.0, 0).drop(columns=["train_accuracy"]), tmp_path / "missing.parquet")
    mistyped = training_cell(5, 3.0, 0)
    mistyped["depth"] = mistyped["depth"].astype(str)
    mistyped = write(mistyped, tmp_path / "mistyped.parquet")
    with pytest.raises(InputError) as err:
        aggregate([good, missing, mistyped], tmp_path / "out.parquet")
    text = str(err.value)
    assert "missing.parquet" in text and "'train_accuracy'" in text
    assert "mistyped.parquet" in text and "'depth'" in text and "integer" in text
    assert "good.parquet" not in text
    assert not (tmp_path / "out.parquet").exists()


def test_two_files_with_the_same_cell_are_an_error_naming_both(tmp_path):
    first = write(training_cell(5, 1.0, 0), tmp_path / "run1" / "cell.parquet")
    other = write(training_cell(5, 2.0, 0), tmp_path / "run1" / "other.parquet")
    stale = write(training_cell(5, 1.0, 0, accuracy=0.5), tmp_path / "run2" / "cell_copy.parquet")
    with pytest.raises(InputError) as err:
        aggregate([first, other, stale], tmp_path / "out.parquet")
    text = str(err.value)
    assert str(first) in text and str(stale) in text and str(other) not in text
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".out*"))


def test_gradients_kind_detected_and_list_file_input(tmp_path):
    paths = [write(gradient_cell(4, s2, seed), tmp_path / "g" / f"{s2}_{seed}.parquet")
             for s2 in (1.0, 2.0) for seed in (0, 1, 2)]
    listing = tmp_path / "cells.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    out = tmp_path / "gradients.parquet"
    assert main(["aggregate", f"@{listing}", "-o", str(out)]) == 0
    got = pd.read_parquet(out)
    assert len(got) == 6 * 4 * 2 and got["cell_id"].nunique() == 6
    assert set(got["mode"]) == {"real", "independent"}


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = write(training_cell(5, 1.0, 0).drop(columns=["step"]), tmp_path / "bad.parquet")
    assert main(["aggregate", "--kind", "training", str(bad), "-o", str(tmp_path / "o.parquet")]) == 2
    assert "bad.parquet" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.parquet")]) == 2


def theory_rows(sigma_w2s, xi=1.0):
    return pd.DataFrame([dict(activation="tanh", noise="dropout", sigma_w2=s, sigma_b2=0.05,
                              keep_rate=1.0, q_star=0.5, c_star=1.0, chi_1=0.9, chi_c=0.9,
                              xi_q=2.0, xi_c=xi * s, xi_grad=9.5) for s in sigma_w2s])


def test_theory_tables_deduplicate_points_and_refuse_conflicts(tmp_path):
    a = write(theory_rows([1.0, 1.5]), tmp_path / "a.parquet")
    b = write(theory_rows([1.5, 2.0]), tmp_path / "b.parquet")  # 1.5 repeated, same values
    out = tmp_path / "theory.parquet"
    summary = aggregate([a, b], out, kind="theory")
    assert summary["rows"] == 3
    assert list(pd.read_parquet(out)["sigma_w2"]) == [1.0, 1.5, 2.0]
    c = write(theory_rows([2.0], xi=3.0), tmp_path / "c.parquet")  # same point, other ξ_c
    with pytest.raises(InputError) as err:
        aggregate([a, b, c], tmp_path / "theory2.parquet", kind="theory")
    assert "b.parquet" in str(err.value) and "c.parquet" in str(err.value)


def test_kind_is_detected_from_most_files_so_the_broken_one_is_named(tmp_path):
    good = [write(training_cell(5, s2, 0), tmp_path / f"good{s2}.parquet") for s2 in (1.0, 2.0)]
    broken = write(training_cell(5, 3.0, 0).drop(columns=["train_accuracy"]), tmp_path / "broken.parquet")
    with pytest.raises(InputError) as err:
        aggregate([broken] + good, tmp_path / "out.parquet")
    assert err.value.field == "training cell files" and "broken.parquet" in str(err.value)


# --- issue 9: a file's rows must match its path; unwritable outputs ----------------------------

def test_cell_file_whose_rows_disagree_with_its_path_is_named(tmp_path):
    # before issue 9: a depth=3 path holding depth=7 rows was merged silently
    cells = tmp_path / "results" / "cells" / "train"
    good = write(training_cell(3, 1.5, 0), cells / "depth=3" / "sigma_w2=1.5" / "seed=0.parquet")
    also_good = write(training_cell(7, 2, 1), cells / "depth=7" / "sigma_w2=2" / "seed=1.parquet")
    moved = write(training_cell(7, 1.5, 2), cells / "depth=3" / "sigma_w2=1.5" / "seed=2.parquet")
    out = tmp_path / "training.parquet"
    with pytest.raises(InputError) as err:
        aggregate([good, also_good, moved], out)
    text = str(err.value)
    assert str(moved) in text and "depth=7 in its rows, depth=3 in its path" in text
    assert str(good) not in text and str(also_good) not in text
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["results"]
    aggregate([good, also_good], out)  # matching paths (2 == 2.0, canonical numbers) pass


def test_identity_check_covers_strings_and_seed_and_ignores_plain_paths(tmp_path):
    frame = training_cell(3, 1.5, 0)
    frame["activation"] = "relu"
    bad = write(frame, tmp_path / "activation=tanh" / "seed=1.parquet")
    with pytest.raises(InputError) as err:
        aggregate([bad], tmp_path / "out.parquet")
    assert "activation=relu in its rows" in str(err.value) and "seed=0 in its rows" in str(err.value)
    plain = write(training_cell(3, 1.5, 0), tmp_path / "d3" / "anything.parquet")
    assert aggregate([plain], tmp_path / "out.parquet")["rows"] == 2


def test_aggregate_to_unwritable_output_exit_2_before_reading(tmp_path, capsys):
    f = write(training_cell(3, 1.5, 0), tmp_path / "c.parquet")
    (tmp_path / "file").write_text("")
    assert main(["aggregate", str(f), "-o", str(tmp_path / "file" / "out.parquet")]) == 2
    err = capsys.readouterr().err
    assert "output" in err and "is a file" in err
