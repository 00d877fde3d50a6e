"""`mfpipe theory`, `mfpipe critical`, `mfpipe iterates` through the real CLI."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mfpipe.cli import main
from mfpipe.theory import critical_sigma_w2, depth_scales

CONTRACT = ["activation", "noise", "sigma_w2", "sigma_b2", "keep_rate", "q_star", "c_star", "chi_1",
            "chi_c", "xi_q", "xi_c", "xi_grad"]


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_theory_csv_stdout_one_row_per_grid_point(capsys):
    code, out, _ = run_cli(["theory", "--sigma-w2", "1:4:4", "--sigma-b2", "0.05,0.1", "--keep-rate", "1,0.9"],
                           capsys)
    assert code == 0
    df = pd.read_csv(io.StringIO(out))
    assert set(CONTRACT) <= set(df.columns)
    assert len(df) == 4 * 2 * 2
    assert sorted(df.sigma_w2.unique()) == [1.0, 2.0, 3.0, 4.0]
    row = df[(df.sigma_w2 == 3.0) & (df.sigma_b2 == 0.1) & (df.keep_rate == 0.9)].iloc[0]
    want = depth_scales("tanh", 3.0, 0.1, 0.9)
    for k in want:
        assert row[k] == pytest.approx(float(want[k]), rel=1e-12)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_theory_output_file(tmp_path, suffix, capsys):
    path = tmp_path / f"table{suffix}"
    code, out, _ = run_cli(["theory", "--activation", "relu", "--sigma-w2", "1,2.5", "-o", str(path)], capsys)
    assert code == 0 and out == ""
    df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(df.columns[:5]) == CONTRACT[:5]
    assert len(df) == 2 and df.activation.eq("relu").all()
    assert np.isinf(df.q_star.iloc[1])  # relu above criticality with bias: unbounded


def test_critical_lists(capsys):
    code, out, _ = run_cli(["critical", "--sigma-b2", "0.05,0.3", "--keep-rate", "1,0.94"], capsys)
    assert code == 0
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 4
    np.testing.assert_allclose(df.sigma_w2, critical_sigma_w2("tanh", df.sigma_b2, df.keep_rate), rtol=1e-14)
    code, out, _ = run_cli(["critical", "--activation", "relu", "--keep-rate", "0.9", "--plain"], capsys)
    assert out.strip() == "1.8"


def test_iterates_table(tmp_path, capsys):
    path = tmp_path / "it.parquet"
    code, _, _ = run_cli(["iterates", "--sigma-w2", "1.5,3", "--keep-rate", "0.95", "--depth", "80",
                          "--q0", "0.5,4", "--c0", "0.2", "-o", str(path)], capsys)
    assert code == 0
    df = pd.read_parquet(path)
    assert len(df) == 2 * (2 + 1) * 81
    assert set(df.quantity) == {"q", "c"}
    last = df[df.layer == 80]
    np.testing.assert_allclose(last.value, last.fixed_point, rtol=1e-5)
    np.testing.assert_allclose(last.residual, (last.value - last.fixed_point).abs())
    c = df[df.quantity == "c"].drop_duplicates("sigma_w2")
    np.testing.assert_allclose(c.xi_measured, c.xi_predicted, rtol=0.03)


@pytest.mark.parametrize("argv,flag", [
    (["theory", "--sigma-w2", "0,1"], "--sigma-w2"),
    (["theory", "--sigma-w2", "-1"], "--sigma-w2"),
    (["theory", "--keep-rate", "0"], "--keep-rate"),
    (["theory", "--keep-rate", "1.01"], "--keep-rate"),
    (["theory", "--activation", "softplus"], "--activation"),
    (["theory", "--sigma-w2", "1:4"], "--sigma-w2"),
    (["theory", "--sigma-b2", "a:b:3"], "--sigma-b2"),
    (["theory", "--noise", "pink"], "--noise"),
    (["theory", "-o", "x.txt"], "--output"),
    (["critical", "--sigma-b2", "-0.1"], "--sigma-b2"),
    (["iterates", "--depth", "0"], "--depth"),
    (["iterates", "--c0", "1.5"], "--c0"),
])
def test_bad_input_exit_2_names_flag_and_allowed(argv, flag, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert flag in err and "allowed" in err


def test_console_script_subprocess():
    out = subprocess.run([sys.executable, "-m", "mfpipe", "theory", "--keep-rate", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--keep-rate" in out.stderr and "(0, 1]" in out.stderr
