"""Training cells: train a *bundle* of K ≥ 1 cells (grid points of one shape) as one stacked
ensemble and write one parquet row per checkpoint per cell.

``mfpipe train-cell --dataset mnist5k --depth 20 --width 128 --sigma-w2 1.76 --steps 500
--checkpoints 45,304 -o cell.parquet`` trains one cell (a bundle of one); ``--cells-file`` runs
many cells in one process, grouped into bundles (``--bundle-size`` caps them); ``--print-params``
lists every parameter with its default and allowed values.

**Bundles.** Cells that share everything but the member parameters (``cells.MEMBER_PARAMS``:
σ_w², σ_b², init, ρ, noise variance, resolved lr, seed — ``cells.bundle_key``) train together:
their weights are stacked (W (K, in, out), one ``torch.baddbmm`` per layer for all members), so
one step dispatches the same operations for K cells as for one.  Each member keeps its own
initialisation (``nets.draw_parameters`` from ``derive_seed(seed, 1)``), its own minibatch order
(a CPU generator from ``derive_seed(seed, 3)``: epochs of ``randperm``), its own noise stream (a
generator on the device from ``derive_seed(seed, 2)``, drawn in blocks whose size depends only on
the shared shape), its own learning rate and optimizer state, its own divergence and its own
checkpoint evaluation.  Members never mix: the loss is summed per member (each gradient is that
member's mean-loss gradient), every kernel treats members independently, and recorded losses are
exact float64 sums (``math.fsum``) per member.  So a cell's rows are bitwise the same whether it
trains alone or in any bundle (on the CPU, for a given thread count; ``tests/test_bundle.py``).

Per checkpoint ``step`` (number of updates done; 0 = at initialisation) a row records:

* ``train_loss``, ``train_accuracy``: cross-entropy and accuracy on the fixed evaluation subset
  of the training set, noise off;
* ``batch_loss``, ``batch_accuracy``: of the last training minibatch, from the forward pass of
  that training step, noise on (Huang et al.'s metric); NaN at step 0;
* ``test_accuracy``, ``test_loss``: on the fixed test subset, noise off;
* ``steps_per_s``: the cell's training steps since the previous checkpoint per second of the
  bundle's training time in that interval (evaluation excluded) — the bundle's step rate;
* ``diverged``: a loss became NaN/inf (checked per member every ``DIVERGENCE_CHECK_EVERY`` steps
  and at checkpoints).  The member then stops training and leaves the bundle (it costs nothing
  afterwards and cannot affect the others); the remaining checkpoints are recorded with
  ``diverged = true``, ``diverged_step`` (the first step seen non-finite), NaN losses and
  accuracies at chance (1/n_classes) — a diverged network is a result, not a crash.

Every row also carries all cell parameters (``checkpoints`` as comma text), ``cell_id``
(``mfpipe.grid.cell_id`` of the completed parameters, see ``mfpipe.cells``), ``engine_version``
(``cells.ENGINE_VERSIONS["train"]``), ``bundle_size`` (the K the cell trained in), provenance
(mfpipe version, git commit, torch version, device, threads, host, start time) and the times
``wall_time_s``, ``data_time_s``, ``train_time_s``, ``eval_time_s`` — these are the *bundle's*
(shared by its members), as is ``elapsed_s`` (since the bundle started).

Noise (see ``mfpipe.nets``): dropout ε = 1/ρ where u < ρ else 0 (u uniform; exactly 1 for
ρ = 1); gaussian ε = 1 + √var·n; additive y + √var·n (n standard normal).  Optimizers (written
here on the stacked tensors, per-member lr; ``tests/test_train.py`` checks them against
``torch.optim``): ``sgd`` (plain, no momentum), ``rmsprop`` (alpha = 0.9 as TensorFlow's decay,
eps = 1e-10), ``adam`` (torch's defaults).  Loss: mean cross-entropy per member.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F

from mfpipe import cells
from mfpipe.data import load_dataset
from mfpipe.errors import InputError
from mfpipe.nets import activation_function, draw_parameters, is_noisy

DIVERGENCE_CHECK_EVERY = 50
#: evaluation rows per forward pass (fixed: results must not depend on the bundle)
EVAL_CHUNK = 1024
#: noise is drawn for several steps at once, up to this many numbers per member per draw
NOISE_BLOCK = 1 << 20
NOISE_BLOCK_STEPS = 16


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


# ----------------------------------------------------------------------------- optimizer

class StackedOptimizer:
    """SGD / RMSProp / Adam on stacked parameters (leading dimension K = members), each member
    with its own learning rate ``lr`` (a (K,) tensor).

    torch's update rules (``tests/test_train.py`` checks them against ``torch.optim``): sgd
    ``p -= lr·g``; rmsprop (alpha = 0.9, eps = 1e-10) ``v = αv + (1−α)g², p -= lr·g/(√v + eps)``;
    adam (β = 0.9, 0.999, eps = 1e-8) with bias correction.  Written as separate elementwise
    operations (no fused multiply-adds, whose rounding can depend on an element's position in a
    vector register), so each member's update is bitwise independent of the others; a fixed
    number of operations per parameter tensor, whatever K.  Not ``torch.optim``: constructing one
    imports ``torch._dynamo`` (1–2.5 s per process).
    """

    def __init__(self, name: str, params, lr: torch.Tensor, *, alpha: float = 0.9, rms_eps: float = 1e-10,
                 betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8):
        if name not in cells.OPTIMIZERS:
            raise KeyError(name)
        self.name, self.params = name, list(params)
        self.alpha, self.rms_eps, self.betas, self.adam_eps = alpha, rms_eps, betas, adam_eps
        self.t = 0
        self.square_avg = [torch.zeros_like(p) for p in self.params] if name in ("rmsprop", "adam") else None
        self.exp_avg = [torch.zeros_like(p) for p in self.params] if name == "adam" else None
        self._new_scratch()
        self._set_lr(lr)

    def _set_lr(self, lr: torch.Tensor) -> None:
        self.lr = lr
        self.lrs = [lr.view(-1, *([1] * (p.dim() - 1))) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def compact(self, keep: torch.Tensor, params) -> None:
        """Keep the members ``keep`` (indices): new parameter tensors and their state."""
        self.params = list(params)
        pick = lambda ts: None if ts is None else [t.index_select(0, keep) for t in ts]  # noqa: E731
        self.square_avg, self.exp_avg = pick(self.square_avg), pick(self.exp_avg)
        self._new_scratch()
        self._set_lr(self.lr.index_select(0, keep))

    @torch.no_grad()
    def step(self) -> None:
        """One update, in place: the gradients become the updates and the squares' scratch is
        one buffer per parameter, so a step allocates nothing of a parameter's size (fresh pages
        of a large stacked tensor cost more than its arithmetic on a CPU)."""
        self.t += 1
        if self.name == "adam":
            beta1, beta2 = self.betas
            bias1, bias2_sqrt = 1 - beta1 ** self.t, math.sqrt(1 - beta2 ** self.t)
        for i, (p, lr) in enumerate(zip(self.params, self.lrs)):
            g = p.grad
            if g is None:
                continue
            if self.name == "sgd":
                g.mul_(lr)
            elif self.name == "rmsprop":
                v, tmp = self.square_avg[i], self.scratch[i]
                torch.mul(g, g, out=tmp)
                tmp.mul_(1 - self.alpha)
                v.mul_(self.alpha)
                v.add_(tmp)
                torch.sqrt(v, out=tmp)
                tmp.add_(self.rms_eps)
                g.div_(tmp)
                g.mul_(lr)
            else:
                m, v, tmp = self.exp_avg[i], self.square_avg[i], self.scratch[i]
                torch.sub(g, m, out=tmp)
                tmp.mul_(1 - beta1)
                m.add_(tmp)
                torch.mul(g, g, out=tmp)
                tmp.mul_(1 - beta2)
                v.mul_(beta2)
                v.add_(tmp)
                torch.sqrt(v, out=tmp)
                tmp.div_(bias2_sqrt)
                tmp.add_(self.adam_eps)
                torch.div(m, tmp, out=g)
                g.mul_(lr / bias1)
            p.sub_(g)

    def _new_scratch(self) -> None:
        """One buffer per parameter for rmsprop's and adam's intermediate squares (its values
        never outlive a step, so compaction allocates it anew)."""
        self.scratch = ([torch.empty_like(p) for p in self.params]
                        if self.name in ("rmsprop", "adam") else None)


# ----------------------------------------------------------------------------- stacked network

class StackedMLP:
    """K networks of one shape (``nets.DropoutMLP``'s architecture) as a few stacked leaf
    tensors, weights stored transposed (z = b + h·W):

    ``w_in`` (K, in, d₁) — d₁ = width, or n_classes at depth 1; ``w_hid`` (K, L−2, N, N);
    ``w_out`` (K, N, C); ``b_hid`` (K, L−1, 1, N); ``b_out`` (K, 1, C) (absent where the depth has
    no such layer).  A forward pass is one ``baddbmm`` per layer for all members.
    """

    def __init__(self, param_list: list[dict], n_in: int, n_out: int, device):
        p0 = param_list[0]
        self.depth, self.width, self.activation = p0["depth"], p0["width"], p0["activation"]
        self.n_in, self.n_out = n_in, n_out
        self.phi = activation_function(self.activation)
        K, L, N = len(param_list), self.depth, self.width
        dims = [n_in] + [N] * (L - 1) + [n_out]
        layer_dims = [(dims[l + 1], dims[l]) for l in range(L)]
        make = lambda *shape: torch.empty(K, *shape, dtype=torch.float32, device=device)  # noqa: E731
        w_in = make(n_in, dims[1])
        w_hid = make(L - 2, N, N) if L >= 3 else None
        w_out = make(N, n_out) if L >= 2 else None
        b_hid = make(L - 1, 1, N) if L >= 2 else None
        b_out = make(1, n_out)
        with torch.no_grad():
            for k, p in enumerate(param_list):
                layers = draw_parameters(layer_dims, cells.derive_seed(p["seed"], 1), p["sigma_w2"],
                                         p["sigma_b2"], p["init"])
                for l, (w, b) in enumerate(layers):
                    w_t, b_t = w.t().to(torch.float32), b.to(torch.float32)
                    if l == L - 1:
                        (w_in if L == 1 else w_out)[k].copy_(w_t)
                        b_out[k, 0].copy_(b_t)
                    else:
                        (w_in[k] if l == 0 else w_hid[k, l - 1]).copy_(w_t)
                        b_hid[k, l, 0].copy_(b_t)
        self.names = [n for n, t in (("w_in", w_in), ("w_hid", w_hid), ("w_out", w_out),
                                     ("b_hid", b_hid), ("b_out", b_out)) if t is not None]
        self.params = [t.requires_grad_() for t in (w_in, w_hid, w_out, b_hid, b_out) if t is not None]

    def tensor(self, name: str) -> torch.Tensor | None:
        return self.params[self.names.index(name)] if name in self.names else None

    def compact(self, keep: torch.Tensor) -> None:
        self.params = [p.detach().index_select(0, keep).requires_grad_() for p in self.params]

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """Logits (K, B, C) of inputs ``x`` (K, B, in) (a member's rows may be shared: expand).

        ``noise``: None, or (input, hidden, additive) from ``_Noise.step``: the input's noise
        (or None) and a list of the hidden layers' noise (K, B, N), multiplicative factors or,
        when ``additive``, added values.
        """
        t = dict(zip(self.names, self.params))
        weights = [t["w_in"]] + (list(t["w_hid"].unbind(1)) if self.depth >= 3 else [])
        weights += [t["w_out"]] if self.depth >= 2 else []
        biases = (list(t["b_hid"].unbind(1)) if self.depth >= 2 else []) + [t["b_out"]]
        noise_in, noise_hid, additive = noise if noise is not None else (None, None, False)
        h = x
        if noise_in is not None:
            h = h + noise_in if additive else h * noise_in
        last = self.depth - 1
        for l, (w, b) in enumerate(zip(weights, biases)):
            z = torch.baddbmm(b, h, w)
            if l == last:
                return z
            h = self.phi(z)
            if noise_hid is not None:
                h = h + noise_hid[l] if additive else h * noise_hid[l]
        raise AssertionError("depth must be ≥ 1")


class _Noise:
    """Per-member noise streams for a bundle, drawn in blocks of ``T`` steps.

    Member k draws, from its own generator, a block of T steps of hidden noise (T, L−1, B, N)
    then (with ``dropout_input``) of input noise (T, B, in) — sizes fixed by the shared shape, so
    its stream never depends on the bundle — into its slot of one stacked block, which a few
    shared elementwise operations then turn, in place, into factors (or added values).  The
    block and the dropout mask are allocated once: no tensor of the stacked block's size is
    created per block (fresh pages of tens of MB cost more than the arithmetic on a CPU).
    Members without noise draw nothing and their slots stay neutral through every transform
    (dropout: a threshold of +∞ and a factor of 1 keep 1 at 1; √var = 0 keeps 1 and −0.0), a
    factor of exactly 1 or an added −0.0, which leaves every number unchanged.
    """

    def __init__(self, param_list: list[dict], depth: int, batch: int, width: int, n_in: int, device):
        p0 = param_list[0]
        self.kind, self.device = p0["noise"], device
        self.additive = self.kind == "additive"
        self.noisy = [is_noisy(p["noise"], p["keep_rate"], p["noise_var"]) for p in param_list]
        self.generators = [torch.Generator(device=device).manual_seed(cells.derive_seed(p["seed"], 2))
                           if noisy else None for p, noisy in zip(param_list, self.noisy)]
        self.T = noise_block_steps(depth, batch, width, n_in, p0["dropout_input"])
        K = len(param_list)
        hid_shape = (self.T, depth - 1, batch, width) if depth >= 2 else None
        in_shape = (self.T, batch, n_in) if p0["dropout_input"] else None
        neutral = -0.0 if self.additive else 1.0
        self.hid = None if hid_shape is None else torch.full((K, *hid_shape), neutral, device=device)
        self.inp = None if in_shape is None else torch.full((K, *in_shape), neutral, device=device)
        if self.kind == "dropout":  # u < ρ: 1/ρ, else 0
            rho = torch.tensor([p["keep_rate"] for p in param_list], dtype=torch.float64)
            self.a = torch.where(torch.tensor(self.noisy), rho.to(torch.float32), math.inf)
            self.b = (1.0 / rho).to(torch.float32)
            self.masks = [None if t is None else torch.empty(t.shape, dtype=torch.bool, device=device)
                          for t in (self.hid, self.inp)]
        else:  # n·√var (+ 1 for gaussian)
            sd = torch.tensor([math.sqrt(p["noise_var"]) for p in param_list], dtype=torch.float64)
            self.a, self.b, self.masks = sd.to(torch.float32), None, [None, None]
        self.a = self.a.to(device)
        self.b = None if self.b is None else self.b.to(device)
        self.pos = self.T

    def _transform(self, block: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Draws to factors / added values, in place, for every member at once."""
        view = (-1, *([1] * (block.dim() - 1)))
        if self.kind == "dropout":
            torch.lt(block, self.a.view(view), out=mask)
            block.copy_(mask)
            block.mul_(self.b.view(view))
        else:
            block.mul_(self.a.view(view))
            if self.kind == "gaussian":
                block.add_(1.0)

    def step(self):
        """The noise of the next training step (see ``StackedMLP.forward``)."""
        if self.pos == self.T:
            draw = torch.Tensor.uniform_ if self.kind == "dropout" else torch.Tensor.normal_
            for block, mask in zip((self.hid, self.inp), self.masks):
                if block is not None:
                    for k, gen in enumerate(self.generators):
                        if gen is not None:
                            draw(block[k], generator=gen)
                    self._transform(block, mask)
            self.pos = 0
        t = self.pos
        self.pos += 1
        hid = None if self.hid is None else self.hid[:, t].unbind(1)
        inp = None if self.inp is None else self.inp[:, t]
        return inp, hid, self.additive

    def compact(self, keep: torch.Tensor, keep_list: list[int]) -> None:
        pick = lambda t: None if t is None else t.index_select(0, keep)  # noqa: E731
        self.hid, self.inp = pick(self.hid), pick(self.inp)
        self.masks = [pick(m) for m in self.masks]
        self.a, self.b = pick(self.a), pick(self.b)
        self.noisy = [self.noisy[k] for k in keep_list]
        self.generators = [self.generators[k] for k in keep_list]

    @property
    def any(self) -> bool:
        return any(self.noisy)


def noise_block_steps(depth: int, batch: int, width: int, n_in: int, dropout_input: bool) -> int:
    """Steps of noise a member draws at once (one draw per member per block): a function of the
    shared shape only, so that a member's noise stream does not depend on its bundle."""
    per_step = (depth - 1) * batch * width + (batch * n_in if dropout_input else 0)
    return max(1, min(NOISE_BLOCK_STEPS, NOISE_BLOCK // max(per_step, 1)))


# ----------------------------------------------------------------------------- engine

def _member_sums(values: torch.Tensor) -> list[float]:
    """Exact (``math.fsum``) per-member sums of a (K, n) tensor; NaN when any value is not finite."""
    rows = values.detach().to("cpu", torch.float64).numpy()
    import numpy as np

    out = []
    for row in rows:
        out.append(math.fsum(row.tolist()) if np.isfinite(row).all() else math.nan)
    return out


@torch.no_grad()
def _evaluate(net: StackedMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per member (mean cross-entropy, accuracy) with noise off, in chunks of ``EVAL_CHUNK`` rows."""
    K = net.params[0].shape[0]
    losses, correct = [], torch.zeros(K, dtype=torch.int64, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        xc, yc = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
        logits = net.forward(xc.unsqueeze(0).expand(K, -1, -1))
        n = len(xc)
        rows = F.cross_entropy(logits.reshape(K * n, -1), yc.repeat(K), reduction="none")
        losses.append(rows.view(K, n).to("cpu", torch.float64))
        correct += (logits.argmax(dim=2) == yc).sum(dim=1)
    loss = _member_sums(torch.cat(losses, dim=1))
    count = correct.tolist()
    return [v / len(x) for v in loss], [c / len(x) for c in count]


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Bundle:
    """The training state of a bundle: stacked network, optimizer, noise and minibatch streams
    of the members still training (``live``: member index of each stacked slot)."""

    def __init__(self, param_list: list[dict], data: dict, dev):
        p0 = param_list[0]
        self.dev, self.data = dev, data
        self.n_train, self.n_in, self.n_classes = len(data["x_train"]), data["n_features"], data["n_classes"]
        self.batch = min(p0["batch_size"], self.n_train)
        self.net = StackedMLP(param_list, self.n_in, self.n_classes, dev)
        lr = torch.tensor([p["lr"] for p in param_list], dtype=torch.float64).to(torch.float32).to(dev)
        self.optimizer = StackedOptimizer(p0["optimizer"], self.net.params, lr)
        noise = _Noise(param_list, p0["depth"], self.batch, p0["width"], self.n_in, dev)
        self.noise = noise if noise.any else None
        self.batch_gens = [torch.Generator().manual_seed(cells.derive_seed(p["seed"], 3)) for p in param_list]
        self.perms, self.pos = None, self.n_train
        self.live = list(range(len(param_list)))
        self.grad_rows = None

    def step(self):
        """One training step of every live member; returns (loss rows (K·B,), logits (K, B, C),
        labels (K·B,))."""
        K, batch, n_train = len(self.live), self.batch, self.n_train
        if self.pos + batch > n_train:
            self.perms = torch.stack([torch.randperm(n_train, generator=g) for g in self.batch_gens]).to(self.dev)
            self.pos = 0
        idx = self.perms[:, self.pos:self.pos + batch]  # (K, batch): a gather each, whatever K
        self.pos += batch
        xb = self.data["x_train"][idx]
        yb = self.data["y_train"][idx].view(-1)
        logits = self.net.forward(xb, self.noise.step() if self.noise is not None else None)
        rows = F.cross_entropy(logits.view(K * batch, self.n_classes), yb, reduction="none")
        if self.grad_rows is None:
            self.grad_rows = torch.full((K * batch,), 1.0 / batch, device=self.dev)
        rows.backward(self.grad_rows)  # d(Σ_k mean_b loss_kb): each member's own mean-loss gradient
        self.optimizer.step()
        self.optimizer.zero_grad()
        return rows, logits, yb

    def drop(self, members: set[int]) -> None:
        """Remove members from the bundle (every stacked tensor, state and stream)."""
        keep_slots = [s for s, m in enumerate(self.live) if m not in members]
        keep = torch.tensor(keep_slots, dtype=torch.long, device=self.dev)
        self.live = [self.live[s] for s in keep_slots]
        self.net.compact(keep)
        self.optimizer.compact(keep, self.net.params)
        if self.perms is not None:
            self.perms = self.perms.index_select(0, keep)
        self.batch_gens = [self.batch_gens[s] for s in keep_slots]
        self.grad_rows = None
        if self.noise is not None:
            self.noise.compact(keep, keep_slots)
            if not self.noise.any:
                self.noise = None


def _train(param_list: list[dict], identities: list[str], data: dict, dev, progress: bool) -> dict:
    """Train the bundle ``param_list`` (completed params sharing a bundle key) on ``data``;
    return the rows of each member and the bundle's time split."""
    t_start = time.perf_counter()
    p0 = param_list[0]
    K0 = len(param_list)
    chance = 1.0 / data["n_classes"]
    bundle = _Bundle(param_list, data, dev)
    batch = bundle.batch

    records = [[] for _ in range(K0)]
    diverged_step: list[int | None] = [None] * K0
    steps_since = [0] * K0
    last = None  # (rows (K, B), logits (K, B, C), y (K, B), live) of the checkpoint step
    train_time = eval_time = interval_time = 0.0
    step = 0

    if progress:
        what = identities[0] if K0 == 1 else f"bundle of {K0} ({identities[0]}, …)"
        print(f"train-cell {what}: training {p0['steps']} steps on {dev}", file=sys.stderr, flush=True)

    for checkpoint in p0["checkpoints"]:
        t0 = time.perf_counter()
        while step < checkpoint and bundle.live:
            live = bundle.live
            K = len(live)
            rows, logits, yb = bundle.step()
            step += 1
            for m in live:
                steps_since[m] += 1
            if step == checkpoint:
                last = (rows.detach().view(K, batch), logits.detach(), yb.view(K, batch), list(live))
            if step % DIVERGENCE_CHECK_EVERY == 0:
                finite = torch.isfinite(rows.detach().view(K, batch)).all(dim=1).tolist()
                bad = {m for m, ok in zip(live, finite) if not ok}
                for m in bad:
                    diverged_step[m] = step
                if bad:
                    bundle.drop(bad)
        _sync(dev)
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        interval_time += elapsed

        t0 = time.perf_counter()
        batch_metrics = {}
        if bundle.live and last is not None and step == checkpoint:
            rows, logits, yb, slots = last
            sums = _member_sums(rows)
            hits = (logits.argmax(dim=2) == yb).sum(dim=1).tolist()
            for s, m in enumerate(slots):
                if diverged_step[m] is None:
                    batch_metrics[m] = (sums[s] / batch, hits[s] / batch)
                    if not math.isfinite(sums[s]):
                        diverged_step[m] = step
        last = None
        bad = {m for m in bundle.live if diverged_step[m] is not None}
        if bad:
            bundle.drop(bad)
        evals = {}
        if bundle.live:
            train_loss, train_acc = _evaluate(bundle.net, data["x_eval"], data["y_eval"])
            test_loss, test_acc = _evaluate(bundle.net, data["x_test"], data["y_test"])
            for s, m in enumerate(bundle.live):
                evals[m] = (train_loss[s], train_acc[s], test_loss[s], test_acc[s])
                if not (math.isfinite(train_loss[s]) and math.isfinite(test_loss[s])):
                    diverged_step[m] = step
            bad = {m for m in bundle.live if diverged_step[m] is not None}
            if bad:
                bundle.drop(bad)
        for m in range(K0):
            if diverged_step[m] is None:
                train_loss_m, train_acc_m, test_loss_m, test_acc_m = evals[m]
                batch_loss, batch_acc = batch_metrics.get(m, (math.nan, math.nan))
            else:
                train_loss_m = test_loss_m = batch_loss = math.nan
                train_acc_m = test_acc_m = batch_acc = chance
            records[m].append(dict(
                step=checkpoint, train_loss=train_loss_m, train_accuracy=train_acc_m,
                batch_loss=batch_loss, batch_accuracy=batch_acc,
                test_loss=test_loss_m, test_accuracy=test_acc_m,
                diverged=diverged_step[m] is not None,
                diverged_step=diverged_step[m] if diverged_step[m] is not None else -1,
                steps_per_s=(steps_since[m] / interval_time) if steps_since[m] and interval_time > 0 else math.nan,
                elapsed_s=time.perf_counter() - t_start))
            steps_since[m] = 0
        interval_time = 0.0
        eval_time += time.perf_counter() - t0
        if progress:
            for m in range(K0):
                row = records[m][-1]
                print(f"train-cell {identities[m]}: step {checkpoint}/{p0['steps']} "
                      f"train_acc {row['train_accuracy']:.4f} batch_acc {row['batch_accuracy']:.4f} "
                      f"test_acc {row['test_accuracy']:.4f} loss {row['train_loss']:.4g}"
                      f"{' DIVERGED' if row['diverged'] else ''}", file=sys.stderr, flush=True)
    return {"records": records, "train_time_s": train_time, "eval_time_s": eval_time}


def train_bundle(params_list: list[dict], outputs=None, *, device: str = "auto", data_dir=None,
                 progress: bool = True) -> list:
    """Train the cells ``params_list`` as one bundle; return one pyarrow Table per cell (in
    order) and write each to its entry of ``outputs`` (atomically; None = not written).

    All cells must share ``cells.bundle_key`` (else ``InputError``).  A cell's rows do not depend
    on the other members (see the module docstring).
    """
    import pyarrow as pa

    t_start = time.perf_counter()
    started_at = cells.utc_now()
    if not params_list:
        return []
    outputs = [None] * len(params_list) if outputs is None else list(outputs)
    if len(outputs) != len(params_list):
        raise InputError("outputs", len(outputs), f"one per cell ({len(params_list)})")
    completed = [cells.cell_identity("train", p) for p in params_list]
    keys = [cells.bundle_key("train", p) for p, _ in completed]
    for key, (_, identity) in zip(keys, completed):
        if key != keys[0]:
            raise InputError("bundle", identity,
                             f"cells that differ only in {', '.join(cells.MEMBER_PARAMS)}")
    param_list = [p for p, _ in completed]
    identities = [i for _, i in completed]
    p0 = param_list[0]
    dev = cells.resolve_device(device)

    t0 = time.perf_counter()
    data = _device_data(p0["dataset"], None if data_dir is None else str(data_dir), p0["preprocess"],
                        p0["eval_size"], str(dev))
    data_time = time.perf_counter() - t0

    result = _train(param_list, identities, data, dev, progress)
    wall_time = time.perf_counter() - t_start
    tables = []
    for p, identity, records, output in zip(param_list, identities, result["records"], outputs):
        base = cells.row_base(p, identity, device=dev, wall_time_s=wall_time, started_at=started_at,
                              kind="train")
        base.update(engine_version=cells.ENGINE_VERSIONS["train"], bundle_size=len(param_list),
                    data_time_s=data_time, train_time_s=result["train_time_s"],
                    eval_time_s=result["eval_time_s"])
        table = pa.Table.from_pylist([{**base, **row} for row in records])
        if output is not None:
            from mfpipe.store import write_table_atomic

            write_table_atomic(table, output)
        tables.append(table)
    return tables


def run_train_cell(params: dict, output=None, *, device: str = "auto", data_dir=None,
                   progress: bool = True):
    """Train one cell (a bundle of one); write its rows to ``output`` (atomically) when given;
    return a pyarrow Table."""
    return train_bundle([params], [output], device=device, data_dir=data_dir, progress=progress)[0]


def warm_up() -> None:
    """For a pool server: a tiny bundle (two members, dropout, every optimizer code path that
    sgd uses), evaluation and parquet write on random data on the CPU, so that its children do
    not each pay torch's lazy imports and first-use initialisation (about a second).  No
    dataset: loading one would import scikit-learn."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mfpipe.store import git_commit

    with cells.one_torch_thread():
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 2, (16,), generator=gen)
        data = {"x_train": x, "y_train": y, "x_eval": x, "y_eval": y, "x_test": x, "y_test": y,
                "n_classes": 2, "n_features": 8}
        base = {"dataset": "digits", "width": 8, "depth": 3, "steps": 2, "batch_size": 4, "keep_rate": 0.9}
        plist = [cells.complete_params("train", {**base, "seed": s}) for s in (0, 1)]
        result = _train(plist, ["warm-up", "warm-up"], data, torch.device("cpu"), progress=False)
    pq.write_table(pa.Table.from_pylist(result["records"][0]), io.BytesIO())
    git_commit()  # cached: children inherit the answer


def add_arguments(parser) -> None:
    cells.add_common_arguments(parser, "train")
    parser.add_argument("--bundle-size", type=int, default=None,
                        help="with --cells-file: train at most this many cells together (cells that share "
                             "all but their member parameters); default: all of them, 1 = one at a time")


def run(args) -> int:
    return cells.run_cells_cli(args, "train", run_train_cell, run_bundle=train_bundle)
