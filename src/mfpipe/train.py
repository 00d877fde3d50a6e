"""Training cell: train one network (one grid point) and write one parquet row per checkpoint.

``mfpipe train-cell --dataset mnist5k --depth 20 --width 128 --sigma-w2 1.76 --steps 500
--checkpoints 45,304 -o cell.parquet`` (``--print-params`` lists every parameter with its
default and allowed values; ``--cells-file`` runs many cells in one process).

Per checkpoint ``step`` (number of updates done; 0 = at initialisation) a row records:

* ``train_loss``, ``train_accuracy``: cross-entropy and accuracy on the fixed evaluation subset
  of the training set, noise off (``net.eval()``);
* ``batch_loss``, ``batch_accuracy``: of the last training minibatch, from the forward pass of
  that training step, dropout on (Huang et al.'s metric); NaN at step 0;
* ``test_accuracy``, ``test_loss``: on the fixed test subset, noise off;
* ``steps_per_s``: training steps per second since the previous checkpoint (evaluation excluded);
* ``diverged``: the training loss became NaN/inf.  Training then stops; the remaining checkpoints
  are recorded with ``diverged = true``, ``diverged_step`` (the first step seen non-finite,
  checked every ``DIVERGENCE_CHECK_EVERY`` steps and at checkpoints), NaN losses and accuracies
  at chance (1/n_classes) — a diverged network is a result, not a crash; the exit code is 0.

Every row also carries all cell parameters (``checkpoints`` as comma text), ``cell_id``
(``mfpipe.grid.cell_id`` of the completed parameters, see ``mfpipe.cells``), provenance
(mfpipe version, git commit, torch version, device, threads, host, start time, total
``wall_time_s``) and the time split ``data_time_s``, ``train_time_s``, ``eval_time_s``.

Optimizers (``Optimizer``: torch's update rules on foreach kernels, without importing
torch.optim): ``sgd`` (plain, no momentum), ``rmsprop`` (alpha = 0.9 as TensorFlow's decay,
eps = 1e-10), ``adam`` (torch's defaults).  Loss: mean cross-entropy.  Minibatches: epochs of a
seeded random permutation of the training split.  Same seed, same device and thread count →
identical results on the CPU.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F

from mfpipe import cells
from mfpipe.data import load_dataset
from mfpipe.nets import DropoutMLP

DIVERGENCE_CHECK_EVERY = 50
EVAL_CHUNK = 4096


_DEVICE_DATA: dict = {}


def _device_data(dataset: str, data_dir: str | None, preprocess: str, eval_size: int, device: str) -> dict:
    """Dataset tensors on a device, cached in-process with the dataset's memory-cache entry
    (many cells in one process, or the children of a pool server, load it once)."""
    data = load_dataset(dataset, data_dir, preprocess=preprocess, eval_size=eval_size)
    key = (id(data), device)
    hit = _DEVICE_DATA.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    dev = torch.device(device)
    as_x = lambda a: torch.from_numpy(a.copy()).to(dev)  # noqa: E731
    as_y = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    tensors = {
        "x_train": as_x(data.x_train), "y_train": as_y(data.y_train),
        "x_eval": as_x(data.x_train[data.eval_index]), "y_eval": as_y(data.y_train[data.eval_index]),
        "x_test": as_x(data.x_test[data.test_index]), "y_test": as_y(data.y_test[data.test_index]),
        "n_classes": data.n_classes, "n_features": data.n_features,
    }
    while len(_DEVICE_DATA) >= 4:
        _DEVICE_DATA.pop(next(iter(_DEVICE_DATA)))
    _DEVICE_DATA[key] = (data, tensors)  # holding `data` keeps its id from being reused
    return tensors


def prefetch(argv: list[str], cwd: str) -> None:
    """Load the dataset of ``mfpipe train-cell <argv>`` into this process: what a pool server
    does before forking the cell, so that every later cell of that dataset inherits it.  The
    flags are read as `train-cell` reads them (its parser, ``cells.complete_params``).

    Only on the CPU (``--device cpu``, or ``auto`` on a machine without NVIDIA devices): asking
    torch about CUDA would initialise it in the server, and CUDA does not survive ``fork``.
    Only with ``--data-dir`` (the default directory depends on the client's environment).
    """
    import argparse
    import os

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args, _unknown = parser.parse_known_args(argv)
    on_cpu = args.device == "cpu" or (args.device == "auto" and not os.path.exists("/dev/nvidiactl"))
    if not on_cpu or args.data_dir is None or args.cells_file is not None:
        return
    p = cells.complete_params("train", cells.params_from_args(args, "train"))
    _device_data(p["dataset"], os.path.join(cwd, args.data_dir), p["preprocess"], p["eval_size"], "cpu")


class Optimizer:
    """SGD / RMSProp / Adam on a list of tensors with torch's foreach kernels.

    Written here rather than taken from ``torch.optim`` because constructing a ``torch.optim``
    optimizer imports ``torch._dynamo`` (1–2.5 s per process), a large share of a short cell.
    Update rules are torch's (``tests/test_train.py`` checks them against ``torch.optim``):
    sgd ``p -= lr·g``; rmsprop (alpha = 0.9, eps = 1e-10) ``v = αv + (1−α)g²,
    p -= lr·g/(√v + eps)``; adam (β = 0.9, 0.999, eps = 1e-8) with bias correction.
    """

    def __init__(self, name: str, params, lr: float, *, alpha: float = 0.9, rms_eps: float = 1e-10,
                 betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8):
        if name not in ("sgd", "rmsprop", "adam"):
            raise KeyError(name)
        self.name, self.params, self.lr = name, list(params), float(lr)
        self.alpha, self.rms_eps, self.betas, self.adam_eps = alpha, rms_eps, betas, adam_eps
        self.t = 0
        zeros = lambda: [torch.zeros_like(p) for p in self.params]  # noqa: E731
        self.square_avg = zeros() if name in ("rmsprop", "adam") else None
        self.exp_avg = zeros() if name == "adam" else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        self.t += 1
        if self.name == "sgd":
            torch._foreach_add_(params, grads, alpha=-self.lr)
        elif self.name == "rmsprop":
            torch._foreach_mul_(self.square_avg, self.alpha)
            torch._foreach_addcmul_(self.square_avg, grads, grads, value=1 - self.alpha)
            denom = torch._foreach_sqrt(self.square_avg)
            torch._foreach_add_(denom, self.rms_eps)
            torch._foreach_addcdiv_(params, grads, denom, value=-self.lr)
        else:
            beta1, beta2 = self.betas
            torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(self.square_avg, beta2)
            torch._foreach_addcmul_(self.square_avg, grads, grads, value=1 - beta2)
            bias1, bias2 = 1 - beta1 ** self.t, 1 - beta2 ** self.t
            denom = torch._foreach_sqrt(self.square_avg)
            torch._foreach_div_(denom, math.sqrt(bias2))
            torch._foreach_add_(denom, self.adam_eps)
            torch._foreach_addcdiv_(params, self.exp_avg, denom, value=-self.lr / bias1)


def make_optimizer(name: str, parameters, lr: float) -> Optimizer:
    return Optimizer(name, parameters, lr)


@torch.no_grad()
def evaluate(net: DropoutMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) with noise off."""
    was_training = net.training
    net.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), EVAL_CHUNK):
        logits = net(x[start:start + EVAL_CHUNK])
        yb = y[start:start + EVAL_CHUNK]
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    net.train(was_training)
    return loss_sum / len(x), correct / len(x)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_train_cell(params: dict, output=None, *, device: str = "auto", data_dir=None,
                   progress: bool = True):
    """Train one cell; write its rows to ``output`` (atomically) when given; return a pyarrow Table."""
    import pyarrow as pa

    t_start = time.perf_counter()
    started_at = cells.utc_now()
    p, identity = cells.cell_identity("train", params)
    dev = cells.resolve_device(device)

    t0 = time.perf_counter()
    data = _device_data(p["dataset"], None if data_dir is None else str(data_dir), p["preprocess"],
                        p["eval_size"], str(dev))
    data_time = time.perf_counter() - t0

    # three independent streams: weights, noise masks (torch's global generator, used by the
    # fused dropout kernel, on every device), minibatch order
    torch.manual_seed(cells.derive_seed(p["seed"], 2))
    batch_gen = torch.Generator().manual_seed(cells.derive_seed(p["seed"], 3))
    net = DropoutMLP(data["n_features"], p["width"], p["depth"], data["n_classes"],
                     activation=p["activation"], keep_rate=p["keep_rate"], noise=p["noise"],
                     noise_var=p["noise_var"], dropout_input=p["dropout_input"], device=dev)
    net.initialize(cells.derive_seed(p["seed"], 1), p["sigma_w2"], p["sigma_b2"], p["init"])
    net.train()
    optimizer = make_optimizer(p["optimizer"], net.parameters(), p["lr"])

    x_train, y_train = data["x_train"], data["y_train"]
    n_train, batch = len(x_train), min(p["batch_size"], len(x_train))
    perm, pos = None, n_train
    chance = 1.0 / data["n_classes"]

    records = []
    train_time = eval_time = 0.0
    last_logits = last_y = last_loss = None
    diverged_step = None
    step, steps_since = 0, 0
    interval_time = 0.0
    if progress:
        print(f"train-cell {identity}: training {p['steps']} steps on {dev}", file=sys.stderr, flush=True)

    for checkpoint in p["checkpoints"]:
        t0 = time.perf_counter()
        while step < checkpoint and diverged_step is None:
            if pos + batch > n_train:
                perm = torch.randperm(n_train, generator=batch_gen).to(dev)
                pos = 0
            idx = perm[pos:pos + batch]
            pos += batch
            xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            steps_since += 1
            if step == checkpoint:
                last_logits, last_y, last_loss = logits.detach(), yb, loss.detach()
            if step % DIVERGENCE_CHECK_EVERY == 0 and not math.isfinite(float(loss.detach())):
                diverged_step = step
        _sync(dev)
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        interval_time += elapsed

        t0 = time.perf_counter()
        row = {"step": checkpoint}
        if diverged_step is None and last_loss is not None and step == checkpoint:
            batch_loss = float(last_loss)
            batch_accuracy = float((last_logits.argmax(dim=1) == last_y).float().mean())
            if not math.isfinite(batch_loss):
                diverged_step = step
        else:
            batch_loss = batch_accuracy = math.nan
        if diverged_step is None:
            train_loss, train_accuracy = evaluate(net, data["x_eval"], data["y_eval"])
            test_loss, test_accuracy = evaluate(net, data["x_test"], data["y_test"])
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                diverged_step = step
        if diverged_step is not None:
            train_loss = test_loss = batch_loss = math.nan
            train_accuracy = test_accuracy = batch_accuracy = chance
        row.update(train_loss=train_loss, train_accuracy=train_accuracy,
                   batch_loss=batch_loss, batch_accuracy=batch_accuracy,
                   test_loss=test_loss, test_accuracy=test_accuracy,
                   diverged=diverged_step is not None,
                   diverged_step=diverged_step if diverged_step is not None else -1,
                   steps_per_s=(steps_since / interval_time) if steps_since and interval_time > 0 else math.nan,
                   elapsed_s=time.perf_counter() - t_start)
        records.append(row)
        eval_time += time.perf_counter() - t0
        if steps_since:
            steps_since, interval_time = 0, 0.0
        if progress:
            print(f"train-cell {identity}: step {checkpoint}/{p['steps']} train_acc {row['train_accuracy']:.4f} "
                  f"batch_acc {row['batch_accuracy']:.4f} test_acc {row['test_accuracy']:.4f} "
                  f"loss {row['train_loss']:.4g}{' DIVERGED' if row['diverged'] else ''}",
                  file=sys.stderr, flush=True)

    wall_time = time.perf_counter() - t_start
    base = cells.row_base(p, identity, device=dev, wall_time_s=wall_time, started_at=started_at, kind="train")
    base.update(data_time_s=data_time, train_time_s=train_time, eval_time_s=eval_time)
    table = pa.Table.from_pylist([{**base, **row} for row in records])
    if output is not None:
        from mfpipe.store import write_table_atomic

        write_table_atomic(table, output)
    return table


def warm_up() -> None:
    """For a pool server: one tiny training step, evaluation and parquet write on random data on
    the CPU, so that its children do not each pay torch's lazy imports and first-use
    initialisation (about a second).  No dataset: loading one would import scikit-learn."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mfpipe.store import git_commit

    with cells.one_torch_thread():
        net = DropoutMLP(8, 8, 3, 2, activation="tanh", keep_rate=0.9, device="cpu")
        net.initialize(0, 1.5, 0.05)
        net.train()
        optimizer = make_optimizer("sgd", net.parameters(), 0.01)
        x, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        evaluate(net, x, y)
    pq.write_table(pa.Table.from_pylist([{"loss": float(loss.detach())}]), io.BytesIO())
    git_commit()  # cached: children inherit the answer


def add_arguments(parser) -> None:
    cells.add_common_arguments(parser, "train")


def run(args) -> int:
    return cells.run_cells_cli(args, "train", run_train_cell)
