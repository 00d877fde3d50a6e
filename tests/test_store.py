import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mfpipe import __version__
from mfpipe.grid import canonical_params, cell_id
from mfpipe.store import atomic_path, provenance, write_table_atomic


def test_write_table_atomic_parquet_and_csv(tmp_path):
    df = pd.DataFrame({"depth": [10, 20], "sigma_w2": [1.5, 2.0]})
    out = write_table_atomic(df, tmp_path / "sub" / "t.parquet")
    assert pq.read_table(out).to_pandas().equals(df)
    out_csv = write_table_atomic(df, tmp_path / "t.csv")
    assert pd.read_csv(out_csv).equals(df)
    assert sorted(os.listdir(tmp_path)) == ["sub", "t.csv"]  # no temporary files left


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["x.parquet"]


def test_provenance_has_version_and_commit():
    p = provenance(device="cpu")
    assert p["mfpipe_version"] == __version__ and p["device"] == "cpu"
    assert isinstance(p["git_commit"], str)


def test_cell_id_is_canonical_in_numbers():
    a = {"depth": 10, "sigma_w2": 1.0, "keep_rate": 0.98, "dataset": "mnist5k"}
    b = {"dataset": "mnist5k", "keep_rate": 0.98000000000000001, "sigma_w2": 1, "depth": 10.0}
    assert cell_id(a) == cell_id(b)
    assert cell_id(a) != cell_id({**a, "sigma_w2": 1.1})
    assert len(cell_id(a)) == 16
    assert canonical_params({"x": 0.1 + 0.2})["x"] == 0.3
