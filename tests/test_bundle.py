"""Bundles: a cell's rows are bitwise the same alone and inside any bundle (every optimizer and
noise kind, a diverging neighbour, depth 1–2); bad bundles are refused; --cells-file groups
cells into bundles capped by --bundle-size; --skip-existing checks the stored identity; the
operations dispatched per step do not grow with the bundle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mfpipe import cells
from mfpipe.cli import main
from mfpipe.errors import InputError
from mfpipe.train import train_bundle

METRICS = ["step", "train_loss", "train_accuracy", "batch_loss", "batch_accuracy", "test_loss",
           "test_accuracy", "diverged", "diverged_step"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**over):
    return {"dataset": "digits", "depth": 3, "width": 16, "sigma_w2": 1.5, "steps": 60,
            "checkpoints": [0, 7, 50], "batch_size": 16, "eval_size": 100, "lr": 0.05,
            "activation": "relu", **over}


def frames(params_list, tmp_path, device="cpu"):
    return [t.to_pandas() for t in train_bundle(params_list, device=device, data_dir=tmp_path, progress=False)]


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame):
    for col in METRICS:
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col, strict=True)
    assert a["cell_id"].tolist() == b["cell_id"].tolist()


CASES = {
    "sgd-dropout": dict(optimizer="sgd", keep_rate=0.9),
    "rmsprop-dropout": dict(optimizer="rmsprop", lr=1e-3, keep_rate=0.8),
    "adam-gaussian": dict(optimizer="adam", lr=3e-3, noise="gaussian", noise_var=0.1),
    "sgd-additive-input": dict(optimizer="sgd", noise="additive", noise_var=0.05, dropout_input=True),
    "adam-depth1": dict(optimizer="adam", lr=3e-3, depth=1, keep_rate=0.9, dropout_input=True),
    "sgd-depth2": dict(optimizer="sgd", depth=2, keep_rate=0.7),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_cell_is_the_same_alone_and_in_any_bundle(case, tmp_path):
    shared = CASES[case]
    noise_off = {"keep_rate": 1.0} if shared.get("noise", "dropout") == "dropout" else {"noise_var": 0.0}
    member = lambda **over: tiny(**{**shared, **over})  # noqa: E731
    cell = member(seed=5, sigma_w2=1.8)
    diverging = member(lr=1e38, sigma_w2=20.0, seed=1)
    neighbours_a = [member(sigma_w2=1.2, seed=0), diverging]
    neighbours_b = [member(seed=2, sigma_b2=0.2, init="orthogonal"),
                    member(seed=5, sigma_w2=2.5, **noise_off),
                    member(seed=9, lr=shared.get("lr", 0.05) * 2),
                    member(seed=3)]
    alone = frames([cell], tmp_path)[0]
    in_a = frames([neighbours_a[0], cell, neighbours_a[1]], tmp_path)
    in_b = frames([*neighbours_b[:2], cell, *neighbours_b[2:]], tmp_path)
    assert_same_rows(alone, in_a[1])
    assert_same_rows(alone, in_b[2])
    assert (alone["bundle_size"] == 1).all() and (in_a[1]["bundle_size"] == 3).all()
    assert (in_b[2]["bundle_size"] == 5).all()
    assert not alone["diverged"].any() and alone["train_loss"].notna().all()
    assert in_a[2]["diverged"].iloc[-1]  # the neighbour did diverge, and was dropped from the bundle
    assert_same_rows(in_a[2], frames([diverging], tmp_path)[0])
    # the neighbours are real, different networks
    assert in_b[0]["train_loss"].iloc[-1] != alone["train_loss"].iloc[-1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run it on a GPU machine)")
@pytest.mark.parametrize("case", ["rmsprop-dropout", "sgd-additive-input"])
def test_on_a_gpu_a_cell_is_the_same_alone_and_in_a_bundle(case, tmp_path):
    """Whether the CPU's guarantee holds on a GPU too (batched kernels may pick another
    algorithm for another batch count): a cell alone and inside a bundle of 16."""
    member = lambda **over: tiny(**{**CASES[case], **over})  # noqa: E731
    cell = member(seed=5, sigma_w2=1.8)
    alone = frames([cell], tmp_path, device="cuda")[0]
    bundle = frames([member(seed=s, sigma_w2=1.0 + 0.1 * s) for s in range(15)] + [cell], tmp_path, device="cuda")
    assert_same_rows(alone, bundle[-1])


def test_noise_is_on_and_members_differ(tmp_path):
    """Dropout changes the training (a member with ρ = 1 in a noisy bundle trains as without
    noise), and the seed changes the noise stream."""
    clean, noisy, reseeded = frames([tiny(), tiny(keep_rate=0.7), tiny(keep_rate=0.7, seed=1)], tmp_path)
    assert_same_rows(clean, frames([tiny()], tmp_path)[0])
    assert clean["batch_loss"].iloc[-1] != noisy["batch_loss"].iloc[-1]
    assert noisy["train_loss"].iloc[-1] != reseeded["train_loss"].iloc[-1]
    # eval at step 0 has noise off: same init (same seed) → same step-0 loss with and without dropout
    assert clean["train_loss"].iloc[0] == noisy["train_loss"].iloc[0]


def test_a_bundle_must_share_everything_but_member_parameters(tmp_path):
    for other in (tiny(width=32), tiny(optimizer="adam"), tiny(steps=70), tiny(activation="tanh")):
        with pytest.raises(InputError) as err:
            train_bundle([tiny(), other], device="cpu", data_dir=tmp_path, progress=False)
        assert err.value.field == "bundle"
    # the lr rule is resolved before comparing: one rule, two depths → two resolved lrs, still members
    assert cells.bundle_key("train", tiny(lr="0.1,4:0.01")) == cells.bundle_key("train", tiny(lr=0.5))
    assert cells.bundle_key("train", tiny()) != cells.bundle_key("train", tiny(depth=4))


def write_cells(path, entries):
    path.write_text("\n".join(json.dumps(e) for e in entries))


def test_cells_file_groups_bundles_capped_by_bundle_size(tmp_path):
    group_a = [tiny(sigma_w2=s, seed=k) for k, s in enumerate((1.0, 1.5, 2.0))]
    group_b = [tiny(depth=4, seed=k) for k in range(2)]
    entries = []
    for i, p in enumerate([group_a[0], group_b[0], group_a[1], group_b[1], group_a[2]]):
        entries.append({**p, "output": str(tmp_path / f"c{i}.parquet")})
    cells_file = tmp_path / "cells.jsonl"
    write_cells(cells_file, entries)
    args = ["train-cell", "--cells-file", str(cells_file), "--data-dir", str(tmp_path), "--device", "cpu"]
    assert main(args + ["--bundle-size", "2"]) == 0
    sizes = [pd.read_parquet(tmp_path / f"c{i}.parquet")["bundle_size"].iloc[0] for i in range(5)]
    assert sizes == [2, 2, 2, 2, 1]  # group a: (c0, c2), (c4); group b: (c1, c3)
    for i, entry in enumerate(entries):
        p = {k: v for k, v in entry.items() if k != "output"}
        assert_same_rows(pd.read_parquet(tmp_path / f"c{i}.parquet"), frames([p], tmp_path)[0])
    assert main(args) == 0  # default: whole groups
    assert [pd.read_parquet(tmp_path / f"c{i}.parquet")["bundle_size"].iloc[0] for i in range(5)] == [3, 2, 3, 2, 3]
    assert main(args + ["--bundle-size", "1"]) == 0
    assert {pd.read_parquet(tmp_path / f"c{i}.parquet")["bundle_size"].iloc[0] for i in range(5)} == {1}
    assert main(args + ["--bundle-size", "0"]) == 2


def test_skip_existing_retrains_only_stale_identities(tmp_path):
    entries = [{**tiny(seed=k), "output": str(tmp_path / f"c{k}.parquet")} for k in range(4)]
    cells_file = tmp_path / "cells.jsonl"
    write_cells(cells_file, entries)
    args = ["train-cell", "--cells-file", str(cells_file), "--data-dir", str(tmp_path), "--device", "cpu"]
    assert main(args) == 0
    first = [pd.read_parquet(e["output"]) for e in entries]
    assert (first[0]["engine_version"] == cells.ENGINE_VERSIONS["train"]).all()
    # c1: another cell's rows; c2: an older engine's rows (written before the column existed);
    # c3: deleted; c0: up to date
    first[2].to_parquet(entries[1]["output"])
    first[2].drop(columns=["engine_version"]).to_parquet(entries[2]["output"])
    (tmp_path / "c3.parquet").unlink()
    mtimes = [(tmp_path / f"c{k}.parquet").stat().st_mtime_ns for k in range(3)]
    assert main(args + ["--skip-existing"]) == 0
    after = [pd.read_parquet(e["output"]) for e in entries]
    assert (tmp_path / "c0.parquet").stat().st_mtime_ns == mtimes[0]
    for k in (1, 2, 3):
        assert_same_rows(after[k], first[k])
        assert (after[k]["engine_version"] == cells.ENGINE_VERSIONS["train"]).all()
    assert (after[1]["bundle_size"] == 3).all()  # the three stale cells trained as one bundle


def count_ops(K: int, steps: int = 6, **over) -> int:
    """Operations dispatched (a GPU launch proxy) to train K members for ``steps`` steps."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mfpipe.train import _train

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    data = {"x_train": x, "y_train": y, "x_eval": x[:8], "y_eval": y[:8], "x_test": x[:8], "y_test": y[:8],
            "n_classes": 3, "n_features": 8}
    plist = [cells.complete_params("train", {**tiny(**over), "steps": steps, "checkpoints": [],
                                             "batch_size": 8, "seed": k}) for k in range(K)]
    with Count():
        _train(plist, ["x"] * K, data, torch.device("cpu"), progress=False)
    return Count.n


def test_operations_per_step_do_not_grow_with_the_bundle():
    """Steps 6–12 (one new epoch: a randperm per member) dispatch as many operations for 16
    members as for one, but for the per-member minibatch permutations: between epochs (and
    noise blocks) a step of 16 members is exactly a step of one."""
    for over in ({"optimizer": "adam"}, {"keep_rate": 0.9, "depth": 5}, {"depth": 1, "optimizer": "rmsprop"}):
        one = count_ops(1, steps=12, **over) - count_ops(1, steps=6, **over)
        many = count_ops(16, steps=12, **over) - count_ops(16, steps=6, **over)
        assert one > 30 and many == one + 15, (over, one, many)


def test_a_diverged_member_leaves_the_bundle_at_the_next_check(tmp_path, monkeypatch):
    """Checked every DIVERGENCE_CHECK_EVERY steps between checkpoints: from then on the bundle
    trains without it (and its neighbour's rows are still those it has alone)."""
    from mfpipe import train

    sizes = []
    step = train.StackedOptimizer.step
    monkeypatch.setattr(train.StackedOptimizer, "step",
                        lambda self: (sizes.append(self.params[0].shape[0]), step(self)))
    cell, diverging = tiny(steps=120, checkpoints=[]), tiny(steps=120, checkpoints=[], lr=1e38, seed=1)
    rows = frames([diverging, cell], tmp_path)
    assert sizes == [2] * train.DIVERGENCE_CHECK_EVERY + [1] * (120 - train.DIVERGENCE_CHECK_EVERY)
    assert rows[0]["diverged_step"].tolist() == [train.DIVERGENCE_CHECK_EVERY]
    assert rows[0]["train_loss"].isna().all() and (rows[0]["train_accuracy"] == 0.1).all()
    sizes.clear()
    assert_same_rows(rows[1], frames([cell], tmp_path)[0])
