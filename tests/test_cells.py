"""mfpipe.cells: what a cell is — parameters, validation (no silent clamps), runtime settings."""

from __future__ import annotations

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
