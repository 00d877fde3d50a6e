"""Training cell: parameters and ids, rows per checkpoint, divergence, determinism, learning vs
chance on mnist5k, multi-cell runs, and a killed cell leaving no output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mfpipe import cells
from mfpipe.cli import main
from mfpipe.errors import InputError
from mfpipe.grid import cell_id
from mfpipe.train import run_train_cell

METRICS = ["train_loss", "train_accuracy", "batch_loss", "batch_accuracy", "test_loss", "test_accuracy"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**over):
    return {"dataset": "digits", "depth": 3, "width": 32, "sigma_w2": 1.5, "steps": 40,
            "checkpoints": [0, 10], "batch_size": 32, "eval_size": 200, "lr": 0.05, **over}


# ----------------------------------------------------------------------------- parameters

def test_lr_depth_rule():
    assert cells.resolve_lr("1e-3,200:1e-4", 199) == 1e-3
    assert cells.resolve_lr("1e-3,200:1e-4", 200) == 1e-4
    assert cells.resolve_lr("0.1,10:0.01,100:0.001", 50) == 0.01
    assert cells.resolve_lr(3e-3, 500) == 3e-3
    for bad in ("1e-3,100:1e-4,50:1e-5", "fast", "200:1e-4", "1e-3,200", "-1", "1e-3,200:0"):
        with pytest.raises(InputError, match="lr"):
            cells.parse_lr_rule(bad)


def test_complete_params_defaults_identity_and_resolution():
    full, identity = cells.cell_identity("train", {"depth": 250, "lr": "1e-3,200:1e-4", "steps": 100,
                                                   "checkpoints": "45,10,45"})
    assert full["lr"] == 1e-4 and full["checkpoints"] == [10, 45, 100]
    assert set(full) == set(cells.TRAIN_PARAMS)
    explicit = {**{k: spec["default"] for k, spec in cells.TRAIN_PARAMS.items()},
                "depth": 250, "lr": 1e-4, "steps": 100, "checkpoints": [10, 45, 100]}
    assert cells.cell_identity("train", explicit)[1] == identity == cell_id(full)
    assert cells.cell_identity("train", {**explicit, "sigma_w2": 1.0})[1] != identity


@pytest.mark.parametrize("params,field", [
    ({"activation": "sigmoid"}, "activation"),
    ({"keep_rate": 0}, "keep_rate"),
    ({"keep_rate": 1.2}, "keep_rate"),
    ({"width": 0}, "width"),
    ({"depth": 2.5}, "depth"),
    ({"steps": 10, "checkpoints": [5, 20]}, "checkpoints"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"noise_var": 0.1}, "noise_var"),
    ({"noise": "gaussian", "keep_rate": 0.9}, "keep_rate"),
    ({"noise": "additive", "keep_rate": 0.9}, "keep_rate"),
    ({"noise": "salt"}, "noise"),
    ({"colour": "red"}, "parameter"),
    ({"dataset": "gaussian"}, "dataset"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(InputError) as err:
        cells.complete_params("train", params)
    assert err.value.field == field


def test_param_specs_are_machine_readable(capsys):
    for kind, specs in cells.PARAMS.items():
        for name, spec in specs.items():
            assert spec["type"] in ("str", "int", "float", "bool", "int_list")
            assert "help" in spec and "default" in spec
            if spec["type"] == "str":
                assert spec["default"] in spec["allowed"]
        assert cells.complete_params(kind, {})  # the defaults form a valid cell
    assert main(["train-cell", "--print-params"]) == 0
    assert json.loads(capsys.readouterr().out)["optimizer"]["allowed"] == ["sgd", "rmsprop", "adam"]


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_optimizers_follow_torch_optim(name):
    """The stacked optimizer (3 members, each its own lr) follows torch.optim member by member."""
    import torch

    from mfpipe.train import StackedOptimizer

    torch.manual_seed(0)
    lrs = [0.01, 0.003, 0.05]
    ours = [torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 4, dtype=torch.float64, requires_grad=True)]
    theirs = [[p[k].detach().clone().requires_grad_(True) for p in ours] for k in range(3)]
    opt_ours = StackedOptimizer(name, ours, torch.tensor(lrs, dtype=torch.float64))
    make = {"sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
            "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.9, eps=1e-10),
            "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr)}[name]
    opt_theirs = [make(theirs[k], lrs[k]) for k in range(3)]
    x = torch.randn(8, 4, dtype=torch.float64)
    loss = lambda w, b: (torch.tanh(x @ w.T + w.sum()) * b.sum()).pow(2).sum()  # noqa: E731
    for _ in range(6):
        opt_ours.zero_grad()
        sum(loss(ours[0][k], ours[1][k]) for k in range(3)).backward()
        opt_ours.step()
        for k in range(3):
            opt_theirs[k].zero_grad()
            loss(*theirs[k]).backward()
            opt_theirs[k].step()
    for k in range(3):
        for a, b in zip(ours, theirs[k]):
            torch.testing.assert_close(a[k], b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(ours[0][0], ours[0][1])


def test_estimated_cost_scales_with_the_work():
    small = cells.estimated_cost("train", {"depth": 10, "width": 100, "steps": 100})
    deeper = cells.estimated_cost("train", {"depth": 20, "width": 100, "steps": 100})
    longer = cells.estimated_cost("train", {"depth": 10, "width": 100, "steps": 200})
    assert 1.7 < deeper["flops"] / small["flops"] < 2.1 and 1.8 < longer["flops"] / small["flops"] <= 2.0
    grad = cells.estimated_cost("grad", {"depth": 60, "width": 512, "inits": 8})
    assert grad["flops"] > 0 and grad["param_bytes"] == 8 * 60 * 512 * 512


# ----------------------------------------------------------------------------- running

def test_rows_per_checkpoint_with_parameters_and_provenance(tmp_path):
    out = tmp_path / "cell.parquet"
    table = run_train_cell(tiny(keep_rate=0.9), out, device="cpu", data_dir=tmp_path, progress=False).to_pandas()
    assert out.exists()
    assert table["step"].tolist() == [0, 10, 40]
    full, identity = cells.cell_identity("train", tiny(keep_rate=0.9))
    assert (table["cell_id"] == identity).all()
    for name, value in full.items():
        expected = ",".join(map(str, value)) if isinstance(value, list) else value
        assert (table[name] == expected).all(), name
    for col in ("mfpipe_version", "git_commit", "torch_version", "device", "wall_time_s", "steps_per_s",
                "diverged", "data_time_s", "train_time_s", *METRICS):
        assert col in table.columns
    assert np.isnan(table["batch_accuracy"].iloc[0]) and not table["diverged"].any()
    assert table["device"].iloc[0] == "cpu"
    assert ((table["train_accuracy"] >= 0) & (table["train_accuracy"] <= 1)).all()
    assert table["steps_per_s"].iloc[1:].gt(0).all()


def test_same_seed_identical_different_seed_not(tmp_path):
    params = tiny(keep_rate=0.8, optimizer="adam", lr=0.01)
    a = run_train_cell(params, data_dir=tmp_path, progress=False).to_pandas()
    b = run_train_cell(params, data_dir=tmp_path, progress=False).to_pandas()
    c = run_train_cell({**params, "seed": 1}, data_dir=tmp_path, progress=False).to_pandas()
    for col in METRICS:
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    assert not np.array_equal(a["train_loss"].to_numpy(), c["train_loss"].to_numpy())


def test_divergence_is_recorded_not_raised(tmp_path):
    out = tmp_path / "diverged.parquet"
    params = tiny(activation="relu", sigma_w2=20, lr=1e8, steps=120, checkpoints=[5, 60])
    assert main(["train-cell", *sum(([cells.flag(k), str(v) if not isinstance(v, list) else
                                      ",".join(map(str, v))] for k, v in params.items()), []),
                 "--device", "cpu", "--data-dir", str(tmp_path), "-o", str(out)]) == 0
    import pandas as pd

    table = pd.read_parquet(out)
    assert table["step"].tolist() == [5, 60, 120]
    assert table["diverged"].all()  # NaN by the first checkpoint, training stopped
    assert table["train_loss"].isna().all()
    assert (table["train_accuracy"] == 0.1).all()  # scored at chance
    assert (table["diverged_step"] <= 5).all()


def test_cells_file_runs_many_cells_in_one_process(tmp_path, capsys):
    cells_file = tmp_path / "cells.jsonl"
    outs = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    cells_file.write_text("\n".join(json.dumps({"depth": d, "output": str(o)}) for d, o in zip((2, 3), outs)))
    args = ["train-cell", "--cells-file", str(cells_file), "--dataset", "digits", "--width", "16",
            "--steps", "5", "--eval-size", "100", "--data-dir", str(tmp_path), "--device", "cpu"]
    assert main(args) == 0
    import pandas as pd

    ids = [pd.read_parquet(o)["cell_id"].iloc[0] for o in outs]
    assert ids[0] != ids[1] and pd.read_parquet(outs[1])["depth"].iloc[0] == 3
    mtime = outs[0].stat().st_mtime_ns
    assert main(args + ["--skip-existing"]) == 0
    assert outs[0].stat().st_mtime_ns == mtime
    cells_file.write_text(json.dumps({"depth": 2, "output": str(tmp_path / "c.parquet"), "width": -1}))
    assert main(args) == 2  # validated before anything runs
    assert not (tmp_path / "c.parquet").exists()


def test_cli_bad_input_exit_2(tmp_path, capsys):
    assert main(["train-cell", "--keep-rate", "0", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "keep_rate" in capsys.readouterr().err
    assert main(["train-cell", "--lr", "1e-3,200", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["train-cell", "--dataset", "digits"]) == 2  # no output path
    assert main(["train-cell", "--device", "tpu", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "device" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["train-cell", "--device", "cuda", "-o", str(tmp_path / "x.parquet")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


# ----------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_mnist5k_learns_when_trainable_and_stays_at_chance_when_too_deep(tmp_path):
    base = {"dataset": "mnist5k", "activation": "tanh", "sigma_b2": 0.05, "optimizer": "sgd",
            "lr": 0.01, "batch_size": 128, "steps": 300, "seed": 0}
    trainable = run_train_cell({**base, "depth": 10, "width": 128, "sigma_w2": 1.76},
                               data_dir=tmp_path, progress=False).to_pandas()
    too_deep = run_train_cell({**base, "depth": 100, "width": 64, "sigma_w2": 4.0},
                              data_dir=tmp_path, progress=False).to_pandas()
    print("trainable:", trainable[["step", "train_accuracy", "batch_accuracy", "test_accuracy"]].to_dict("records"))
    print("too deep:", too_deep[["step", "train_accuracy", "batch_accuracy", "test_accuracy"]].to_dict("records"))
    assert trainable["train_accuracy"].iloc[-1] > 0.7 and trainable["test_accuracy"].iloc[-1] > 0.7
    assert too_deep["train_accuracy"].iloc[-1] < 0.2 and too_deep["test_accuracy"].iloc[-1] < 0.2
    assert not too_deep["diverged"].any()


@pytest.mark.slow
def test_killed_cell_leaves_no_output(tmp_path):
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "mfpipe", "train-cell", "--dataset", "digits", "--depth", "4",
           "--width", "64", "--steps", "10000000", "--checkpoints", "1", "--device", "cpu",
           "--data-dir", str(tmp_path), "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        seen = ""
        while "step 1/" not in seen and time.time() < deadline:  # wait until it is training
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "step 1/" in seen, seen
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir() if "killed" in p.name] == []


def test_parameter_module_does_not_import_torch():
    code = "import sys, mfpipe.cells; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # grid/workflow code reads the specs without paying for torch


@pytest.mark.slow
def test_cli_process_writes_output_and_exits_0(tmp_path):
    """The real `python -m mfpipe train-cell` process (ends with os._exit after writing)."""
    out = tmp_path / "cell.parquet"
    proc = subprocess.run([sys.executable, "-m", "mfpipe", "train-cell", "--dataset", "digits", "--depth", "3",
                           "--width", "16", "--steps", "20", "--checkpoints", "10", "--device", "cpu",
                           "--data-dir", str(tmp_path), "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "step 20/20" in proc.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("step").to_pylist() == [10, 20]
