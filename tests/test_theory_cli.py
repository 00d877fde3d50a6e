"""`mfpipe theory`, `mfpipe critical`, `mfpipe iterates` through the real CLI."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_capped
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


# --- issue 9: bounded work ---------------------------------------------------------------------

def _mfpipe(args, timeout):
    """The CLI in a subprocess capped at 2 GB (a regression then fails fast)."""
    return run_capped(["-m", "mfpipe", *args], gigabytes=2, timeout=timeout)


@pytest.mark.parametrize("keep_rate", ["1e-6", "1e-10"])
def test_tiny_keep_rate_is_answered_fast(keep_rate):
    # before issue 9: 45 s at 1e-6 (nodes ∝ √q ∝ 1/√ρ), GBs and no end at 1e-10
    out = _mfpipe(["theory", "--keep-rate", keep_rate, "--sigma-w2", "1.5"], timeout=30)
    assert out.returncode == 0, out.stderr
    row = pd.read_csv(io.StringIO(out.stdout)).iloc[0]
    rho = float(keep_rate)
    assert row["q_star"] == pytest.approx(1.5 / rho, rel=1e-3)  # q* ≈ σ_w² μ2 for a saturated tanh
    assert np.isfinite(row[["c_star", "chi_1", "chi_c", "xi_q", "xi_c", "xi_grad"]].astype(float)).all()
    assert 0 < row["xi_q"] < 1 and 0 < row["xi_c"] < 1 and row["xi_grad"] < 0


def test_large_q_quadrature_matches_the_direct_rules():
    """The q ≥ 64 split (sign + localised part) agrees with the direct (slow) rules."""
    from mfpipe.theory import quadrature as Q
    from mfpipe.theory.activations import get_activation

    q = np.array([64.0, 300.0])
    for name in ("tanh", "erf"):
        act = get_activation(name)
        fast_m = Q._saturated_moments(act, q)
        fast_a = Q._saturated_coefficients(act, q, 801)  # the first 401 odd orders (of 2580)
        slow_m = np.empty((4, q.size))
        slow_a = np.empty_like(fast_a)
        for i, qi in enumerate(q):  # the direct rules, one point at a time (nodes ∝ √q)
            h = min(0.5, 0.25 / np.sqrt(qi))
            j = np.arange(0, int(np.ceil(Q.Z_MAX / h)) + 1)
            z = j * h
            w = np.where(j == 0, h, 2 * h) * Q._normal_pdf(z)
            u = z * np.sqrt(qi)
            f0, f1, f2, f3 = act.phi(u), act.dphi(u), act.d2phi(u), act.d3phi(u)
            slow_m[:, i] = [w @ (f0 * f0), w @ (f1 * f1), w @ (f0 * f2), w @ (f2 * f2 + f1 * f3)]
            slow_a[:, i] = Q._hermite_coefficients(act, np.array([qi]), 801, Q._step(qi))[0][0]
        np.testing.assert_allclose(fast_m[[0, 1, 3]], slow_m[[0, 1, 3]], rtol=0, atol=1e-15)
        np.testing.assert_allclose(fast_m[1] + fast_m[2], slow_m[1] + slow_m[2], rtol=1e-6)
        np.testing.assert_allclose(fast_a, slow_a, rtol=0, atol=1e-14)


@pytest.mark.parametrize("argv, said", [
    (["theory", "--sigma-w2", "1:4:100000", "--sigma-b2", "1:2:1000"], "100,000,000 (10^8) grid points"),
    (["theory", "--sigma-w2", "1:4:1000000000"], "1,000,000,000 (10^9)"),
    (["critical", "--sigma-b2", "0:1:2000", "--keep-rate", "0.1:1:1000"], "2,000,000 grid points"),
    (["iterates", "--depth", "100000000"], "rows"),
    (["theory", "--keep-rate", "1e-300", "--sigma-w2", "1.5"], "1.5e+300"),
])
def test_oversized_requests_are_refused_before_starting(argv, said):
    # before issue 9: MemoryError after 43 s, raw tracebacks (iterates, keep rate 1e-300)
    out = _mfpipe(argv, timeout=30)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert said in out.stderr and "allowed:" in out.stderr
    assert "10^6" in out.stderr or "1e+12" in out.stderr  # the limit is named


def test_iterate_api_refuses_arrays_that_will_not_fit():
    # before issue 9: an 8 GB array filled layer by layer; a subprocess capped at 2 GB here
    code = ("from mfpipe.errors import InputError\n"
            "from mfpipe.theory import iterate_c, iterate_q\n"
            "for f, x in ((iterate_q, 1.0), (iterate_c, 0.5)):\n"
            "    try:\n        f('tanh', 1.5, 0.05, x, 10 ** 9)\n"
            "    except InputError as err:\n        print(err)\n")
    out = run_capped(["-c", code], gigabytes=2)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.count("depth: got 1000000000") == 2 and "50,000,000" in out.stdout


def test_theory_unwritable_output_exit_2_before_computing(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, out, err = run_cli(["theory", "-o", str(tmp_path / "file" / "t.parquet")], capsys)
    assert code == 2 and "--output" in err and "is a file" in err
    assert out == ""
