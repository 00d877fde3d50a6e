"""mfpipe.cells: what a cell is — parameters, validation (no silent clamps), runtime settings."""

from __future__ import annotations

import json

import pytest

from mfpipe import cells
from mfpipe.cli import main
from mfpipe.errors import InputError


@pytest.mark.parametrize("name", ["batch_size", "eval_size"])
def test_sizes_beyond_the_training_split_are_refused_not_clamped(name):
    n_train = cells.EVAL_SPLIT_SIZES["digits"][0]
    assert cells.complete_params("train", {"dataset": "digits", name: n_train})[name] == n_train
    with pytest.raises(InputError, match=rf"{name}: got {n_train + 1}; allowed: .*between .* and "
                                         rf"{n_train}, the size of digits's training split"):
        cells.complete_params("train", {"dataset": "digits", name: n_train + 1})


def test_split_sizes_are_the_datasets_real_ones(tmp_path):
    from mfpipe.data import load_dataset

    data = load_dataset("digits", str(tmp_path), eval_size=0)
    assert (len(data.x_train), len(data.x_test)) == cells.EVAL_SPLIT_SIZES["digits"]


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_zero_or_negative_threads_are_refused(threads, tmp_path, capsys):
    code = main(["train-cell", "--dataset", "digits", "--threads", threads,
                 "-o", str(tmp_path / "x.parquet")])
    assert code == 2
    assert "threads" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("output,needle", [("x.txt", "a path ending in .parquet or .csv"),
                                           ("afile/x.parquet", "is a file")])
def test_a_bad_output_is_refused_before_training(output, needle, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code = main(["train-cell", "--dataset", "digits", "--width", "4", "--depth", "2",
                 "--steps", "2", "--batch-size", "8", "--eval-size", "8",
                 "-o", str(tmp_path / output)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert "training" not in err  # refused before any step ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_network_too_big_for_memory_is_refused_with_its_size(capsys, tmp_path):
    code = main(["train-cell", "--dataset", "digits", "--width", "100000", "--depth", "50",
                 "-o", str(tmp_path / "big.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "width/depth" in err and "GB" in err
    assert not list(tmp_path.iterdir())


def test_bundles_are_cut_to_fit_the_memory_budget():
    group = [({"dataset": "digits", "width": 64, "depth": 4, "seed": s}, f"{s}.parquet")
             for s in range(5)]
    one = cells.estimated_cost("train", group[0][0])["peak_bytes"]
    sizes = [len(c) for c in cells.memory_chunks("train", group, None, budget=2 * one)]
    assert sizes == [2, 2, 1]
    assert [len(c) for c in cells.memory_chunks("train", group, 4, budget=10**12)] == [4, 1]


def test_on_a_cpu_bundles_stack_parameters_up_to_a_limit():
    """Wide cells train one by one on a CPU (stacked, they outgrow the caches: slower per cell);
    narrow ones still stack; a GPU has no such limit."""
    narrow = [({"dataset": "digits", "width": 64, "depth": 4, "seed": s}, f"{s}.parquet") for s in range(5)]
    wide = [({"dataset": "mnist", "width": 1000, "depth": 40, "seed": s}, f"{s}.parquet") for s in range(3)]
    assert cells.estimated_cost("train", wide[0][0])["param_bytes"] > cells.CPU_STACK_BYTES / 2
    assert cells.stack_limit("cpu") == cells.CPU_STACK_BYTES
    chunks = lambda group, limit: [len(c) for c in cells.memory_chunks(  # noqa: E731
        "train", group, None, budget=10**15, stack_bytes=limit)]
    assert chunks(wide, cells.stack_limit("cpu")) == [1, 1, 1]
    assert chunks(narrow, cells.stack_limit("cpu")) == [5]
    assert chunks(wide, None) == [3]


def test_a_cells_file_of_wide_cells_trains_them_one_by_one_on_a_cpu(tmp_path, monkeypatch):
    """Through `mfpipe train-cell --cells-file`: every cell is written, each from a bundle of
    one when the limit is below two cells' parameters, and its rows are those it has in a
    bundle (the limit changes only the speed)."""
    import pandas as pd

    base = {"dataset": "digits", "width": 16, "depth": 3, "steps": 20, "checkpoints": [0, 20],
            "batch_size": 16, "eval_size": 100, "keep_rate": 0.9}
    entries = [{**base, "seed": s, "output": str(tmp_path / f"{s}.parquet")} for s in range(3)]
    (tmp_path / "cells.json").write_text(json.dumps(entries))
    args = ["train-cell", "--cells-file", str(tmp_path / "cells.json"), "--device", "cpu",
            "--data-dir", str(tmp_path)]
    assert main(args) == 0
    stacked = [pd.read_parquet(e["output"]) for e in entries]
    assert all((f["bundle_size"] == 3).all() for f in stacked)
    one = cells.estimated_cost("train", base)["param_bytes"]
    monkeypatch.setattr(cells, "CPU_STACK_BYTES", one + one // 2)
    assert main(args) == 0
    alone = [pd.read_parquet(e["output"]) for e in entries]
    assert all((f["bundle_size"] == 1).all() for f in alone)
    for a, b in zip(stacked, alone):
        pd.testing.assert_frame_equal(a[["step", "train_loss", "train_accuracy", "test_accuracy"]],
                                      b[["step", "train_loss", "train_accuracy", "test_accuracy"]], check_exact=True)
