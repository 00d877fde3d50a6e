"""`mfpipe pool COMMAND ARGS…`: run one mfpipe cell command in a warm worker process.

A training or gradient cell of the default grid takes seconds, and starting Python and
importing torch takes 2–5 s: run one process per cell and most of the wall time is start-up.
The workflow keeps one Snakemake job per cell (per-cell staleness, logs, retries) but each job
runs ``mfpipe pool train-cell …``, a thin client (no torch import) that hands the command to a
warm server on this machine:

* The server is started on demand by the first client (under a lock, so concurrent clients
  start one), imports the command's module (torch, the network and data code) once, and then
  ``fork``s one child per request.  The child takes over the client's stdin/stdout/stderr
  (passed as file descriptors over the Unix socket), working directory and environment (so
  ``OMP_NUM_THREADS`` of the Snakemake job applies), runs the command exactly as ``mfpipe``
  would, and reports its exit code, which the client exits with.
* If the client dies (Snakemake killed, job cancelled), the child notices the closed socket and
  aborts: the cell's output is written atomically, so nothing is left and the next run computes
  the cell again — every cell ends up computed exactly once.
* A server records the mfpipe source files it imported; a request that arrives after one of them
  changed makes it exit, and the client starts a fresh server with the new code.  Idle servers
  exit after ``--idle-timeout`` seconds (default 120; ``$MFPIPE_POOL_IDLE``).  Servers live in
  ``$MFPIPE_POOL_DIR`` (default ``/tmp/mfpipe-pool-<uid>``), with their log.
* Inside a SLURM job (``SLURM_JOB_ID`` set) the command runs in the client process unless
  ``MFPIPE_POOL=1`` asks for a server: a server outlives the job step that started it, so on a
  shared node another job's cell could land in it (with that job's GPU, cgroup and memory
  limit), and with cgroup process tracking it is killed after every step anyway.  Cluster cells
  run for minutes, so the 2–5 s start-up saved is negligible there.
* ``MFPIPE_POOL=0`` runs the command in the client process instead (same results, no server);
  so does any failure to reach or start a server (with a warning on stderr).

Only ``train-cell`` and ``grad-cell`` (the commands that import torch) go through a server;
any other command runs in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

POOLED_COMMANDS = ("train-cell", "grad-cell")
DEFAULT_IDLE_TIMEOUT = 120.0
START_TIMEOUT = 180.0
_MAX_SOCKET_PATH = 100
_HEADER = struct.Struct("!I")
_CODE = struct.Struct("!i")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help=f"seconds a server stays up with nothing to do "
                             f"(default: $MFPIPE_POOL_IDLE or {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("command_args", nargs=argparse.REMAINDER, metavar="COMMAND ARGS",
                        help=f"the mfpipe command to run ({', '.join(POOLED_COMMANDS)} use a warm "
                             f"server)")


def run(args) -> int:
    argv = list(args.command_args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        from mfpipe.errors import InputError

        raise InputError("COMMAND", None, "an mfpipe command and its arguments, e.g. "
                                          "`mfpipe pool train-cell --depth 10 -o cell.parquet`")
    idle = args.idle_timeout if args.idle_timeout is not None else float(
        os.environ.get("MFPIPE_POOL_IDLE", DEFAULT_IDLE_TIMEOUT))
    if not use_pool(argv[0]):
        return _run_inline(argv)
    try:
        return run_pooled(argv, idle_timeout=idle)
    except PoolUnavailable as err:
        print(f"mfpipe pool: {err}; running in this process", file=sys.stderr, flush=True)
        return _run_inline(argv)


def use_pool(command: str, environ=os.environ) -> bool:
    """Whether ``command`` goes through a warm server (see the module docstring)."""
    if command not in POOLED_COMMANDS:
        return False
    setting = environ.get("MFPIPE_POOL", "")
    if setting == "0":
        return False
    return setting == "1" or not environ.get("SLURM_JOB_ID")


class PoolUnavailable(RuntimeError):
    pass


def _run_inline(argv: list[str]) -> int:
    from mfpipe.cli import main

    return main(argv)


# ----------------------------------------------------------------------------- naming

def server_pids(directory: str | os.PathLike | None = None) -> list[int]:
    """PIDs of the pool servers of a pool directory (from their .pid files)."""
    pids = []
    for path in Path(directory or pool_dir()).glob("*.sock.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(path.read_text().strip()))
    return pids


def pool_dir() -> Path:
    path = Path(os.environ.get("MFPIPE_POOL_DIR") or f"/tmp/mfpipe-pool-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def socket_path(module: str) -> Path:
    """One server per (Python, mfpipe checkout, module, host, pool directory)."""
    directory = pool_dir()
    key = (f"{sys.executable}:{Path(__file__).resolve().parent}:{module}:{socket.gethostname()}:"
           f"{directory}")
    name = f"{module.rsplit('.', 1)[-1]}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.sock"
    path = directory / name
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:  # AF_UNIX paths are limited to ~107 bytes
        path = Path(f"/tmp/mfpipe-{os.getuid()}-{name}")
    return path


def loaded_sources() -> dict[str, int]:
    """mtime of every mfpipe source file this process has imported."""
    out = {}
    package = str(Path(__file__).resolve().parent) + os.sep
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if path and os.path.abspath(path).startswith(package):  # incl. this module as __main__
            with contextlib.suppress(OSError):
                out[path] = os.stat(path).st_mtime_ns
    return out


def sources_changed(recorded: dict[str, int]) -> bool:
    for path, mtime in recorded.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _module_of(command: str) -> str:
    from mfpipe.cli import COMMANDS

    return COMMANDS[command][0]


# ----------------------------------------------------------------------------- client

def run_pooled(argv: list[str], *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> int:
    """Run ``mfpipe <argv>`` in a warm server (started if needed); return its exit code."""
    module = _module_of(argv[0])
    path = socket_path(module)
    for _attempt in range(3):
        conn = _connect(path)
        if conn is None:
            conn = _start_server(path, module, idle_timeout)
        code = _request(conn, argv)
        if code is not None:
            return code
        time.sleep(0.2)  # the server was shutting down as we connected: start another
    raise PoolUnavailable(f"no answer from a pool server at {path}")


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def _start_server(path: Path, module: str, idle_timeout: float) -> socket.socket:
    import fcntl

    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the server; the others wait here
        conn = _connect(path)
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead server's socket
        log = open(f"{path}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mfpipe.pool", "--serve", str(path), "--module", module,
             "--idle-timeout", str(idle_timeout)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PoolUnavailable(f"the pool server exited with code {proc.returncode} "
                                      f"(log: {path}.log)")
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
        proc.kill()
        raise PoolUnavailable(f"the pool server did not start within {START_TIMEOUT:g} s")


def _request(conn: socket.socket, argv: list[str]) -> int | None:
    """Send the request with our stdio; None if the server went away before starting it."""
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with conn:
        try:
            socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
            conn.sendall(payload)
            ack = conn.recv(1)
        except OSError:
            return None
        if ack != b"A":
            return None
        data = b""
        while len(data) < _CODE.size:
            chunk = conn.recv(_CODE.size - len(data))
            if not chunk:
                print("mfpipe pool: the worker died without an exit code", file=sys.stderr)
                return 1
            data += chunk
        return _CODE.unpack(data)[0]


# ----------------------------------------------------------------------------- server

#: A tiny cell per module, run once in the server before it forks: the first cell in a process
#: pays for torch's lazy imports and first-use initialisation (seconds; 0.1 s afterwards).
#: On the CPU with one thread, so no CUDA context or thread pool exists when children fork.
WARMUPS = {
    "mfpipe.train": ("run_train_cell", {"dataset": "digits", "depth": 3, "width": 8, "steps": 3,
                                        "checkpoints": [1], "eval_size": 16, "batch_size": 8}),
    "mfpipe.gradients": ("run_grad_cell", {"depth": 3, "width": 8, "inits": 1}),
}


def warm_up(module_name: str) -> float:
    """Run the module's warm-up cell (no output file); return its seconds, or -1 on failure."""
    import importlib
    import tempfile
    import traceback

    if module_name not in WARMUPS:
        return 0.0
    func_name, params = WARMUPS[module_name]
    start = time.perf_counter()
    try:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        func = getattr(importlib.import_module(module_name), func_name)
        with tempfile.TemporaryDirectory(prefix="mfpipe-pool-warmup-") as data_dir:
            func(dict(params), None, device="cpu", data_dir=data_dir, progress=False)
        torch.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - a failed warm-up only costs time in the children
        traceback.print_exc()
        return -1.0
    return time.perf_counter() - start


def serve(path: str, module: str, idle_timeout: float) -> None:
    import importlib

    importlib.import_module(module)  # the expensive part, done once: torch, nets, data
    importlib.import_module("mfpipe.cli")
    warm_seconds = warm_up(module)
    print(f"{time.strftime('%H:%M:%S')} warm-up cell: {warm_seconds:.2f} s", flush=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = str(Path(path).parent / f".{os.getpid()}.bind")  # short: AF_UNIX path limit
    listener.bind(tmp)
    listener.listen(128)
    os.replace(tmp, path)  # appear only when ready to accept
    ino = os.stat(path).st_ino
    pid_file = pool_dir() / f"{Path(path).name}.pid"  # in the pool directory, whatever the path
    pid_file.write_text(f"{os.getpid()}\n")
    print(f"{time.strftime('%H:%M:%S')} pool server {os.getpid()} ready: {module} at {path}",
          flush=True)
    sources = loaded_sources()  # a request after any of these changed restarts the server
    listener.settimeout(0.5)
    children: set[int] = set()
    stale = False
    last_busy = time.monotonic()
    while True:
        _reap(children)
        if children:
            last_busy = time.monotonic()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if not children and time.monotonic() - last_busy > idle_timeout:
                break
            continue
        if sources_changed(sources):
            conn.close()  # no ack: the client retries and starts a server with the new code
            stale = True
            break
        children.add(_fork_child(conn, listener))
        last_busy = time.monotonic()
    # stop taking new clients first, then serve (or, with stale code, turn away) the queued ones
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, OSError):
            break
        if stale:
            conn.close()
        else:
            children.add(_fork_child(conn, listener))
    listener.close()
    with contextlib.suppress(OSError):
        if pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
    why = "mfpipe sources changed" if stale else f"idle for {idle_timeout:g} s"
    print(f"{time.strftime('%H:%M:%S')} pool server {os.getpid()} exiting: {why}", flush=True)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        children.discard(pid)


def _fork_child(conn: socket.socket, listener: socket.socket) -> int:
    conn.setblocking(True)
    pid = os.fork()
    if pid:
        conn.close()
        return pid
    listener.close()
    code = 1
    try:
        code = _child(conn)
    except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup of the server's state
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _child(conn: socket.socket) -> int:
    import threading

    os.setpgid(0, 0)
    msg, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    if len(msg) < _HEADER.size or len(fds) != 3:
        return 1
    (size,) = _HEADER.unpack(msg)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            return 1
        payload += chunk
    request = json.loads(payload)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["MFPIPE_FAST_EXIT"] = "0"  # the cell must return here to report its exit code
    argv = list(request["argv"])
    sys.argv = ["mfpipe-pool-worker", *argv]
    conn.sendall(b"A")
    finished = threading.Event()

    def watch_client():  # the client closes the socket only when it dies: abort the cell
        try:
            data = conn.recv(1)
        except OSError:
            data = b""
        if not data and not finished.is_set():
            import _thread

            _thread.interrupt_main()  # KeyboardInterrupt: atomic writes clean up their temp file
            time.sleep(20)
            os._exit(130)

    threading.Thread(target=watch_client, daemon=True).start()
    from mfpipe.cli import main

    try:
        code = int(main(argv) or 0)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("mfpipe pool: client gone; cell aborted", file=sys.stderr, flush=True)
        return 130
    except BaseException:  # noqa: BLE001 - the same as mfpipe's own crash: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finished.set()
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        conn.sendall(_CODE.pack(code))
    return code


def _serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfpipe.pool")
    parser.add_argument("--serve", required=True)
    parser.add_argument("--module", required=True)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    args = parser.parse_args(argv)
    serve(args.serve, args.module, args.idle_timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve_main(sys.argv[1:]))
