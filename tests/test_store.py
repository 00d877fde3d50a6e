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


# --- issue 9: readable outputs, unwritable outputs refused --------------------------------------

@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mask, mode):
    # fails before issue 9: atomic_path renamed a mkstemp file, always 0600
    umask(mask)
    df = pd.DataFrame({"a": [1, 2]})
    for name in ("t.parquet", "t.csv"):
        out = write_table_atomic(df, tmp_path / name)
        assert os.stat(out).st_mode & 0o777 == mode, name
    with atomic_path(tmp_path / "fit.md") as tmp:  # what fit.md, figures and the data cache use
        tmp.write_text("x")
    assert os.stat(tmp_path / "fit.md").st_mode & 0o777 == mode


def test_theory_output_is_readable_by_the_group(tmp_path, umask, capsys):
    from mfpipe.cli import main

    umask(0o002)
    assert main(["theory", "--sigma-w2", "1.5", "-o", str(tmp_path / "t.parquet")]) == 0
    assert os.stat(tmp_path / "t.parquet").st_mode & 0o777 == 0o664


def test_unwritable_output_is_an_input_error_and_leaves_nothing(tmp_path):
    from mfpipe.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # fails before issue 9: NotADirectoryError / PermissionError tracebacks
    with pytest.raises(InputError, match=r"output.*file/x\.parquet"):
        write_table_atomic(pd.DataFrame({"a": [1]}), blocker / "x.parquet")
    with pytest.raises(InputError, match="aggregate-out"):
        with atomic_path(blocker / "sub" / "x.parquet", "aggregate-out"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_read_only_directory_is_an_input_error(tmp_path, monkeypatch):
    """A read-only directory (simulated: the tests may run as root, who writes anywhere)."""
    import tempfile

    from mfpipe.errors import InputError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="Permission denied"):
        write_table_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    from mfpipe.store import check_output

    with pytest.raises(InputError, match="Permission denied"):
        check_output(tmp_path / "x.parquet")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_for_real(tmp_path):
    from mfpipe.errors import InputError
    from mfpipe.store import check_output

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError):
            check_output(ro / "x.parquet")
        with pytest.raises(InputError):
            write_table_atomic(pd.DataFrame({"a": [1]}), ro / "x.parquet")
    finally:
        ro.chmod(0o755)


def test_check_output_before_work(tmp_path):
    from mfpipe.errors import InputError
    from mfpipe.store import check_output

    assert check_output(tmp_path / "new" / "deeper" / "x.parquet") == tmp_path / "new" / "deeper" / "x.parquet"
    assert not (tmp_path / "new").exists()  # creates nothing
    assert check_output(str(tmp_path / "x.CSV"), "--output") == tmp_path / "x.CSV"
    with pytest.raises(InputError, match=r"--out: .*\.parquet or \.csv"):
        check_output(tmp_path / "x.txt", "--out")
    with pytest.raises(InputError, match=r"\.png"):
        check_output(tmp_path / "x.parquet", "figure", (".png", ".pdf"))
    assert check_output(tmp_path / "x.anything", suffixes=None)
    with pytest.raises(InputError, match="directory"):
        check_output(tmp_path, suffixes=None)
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="is a file"):
        check_output(tmp_path / "f" / "sub" / "x.parquet")
    assert sorted(os.listdir(tmp_path)) == ["f"]  # the write probe is gone
