"""`mfpipe pool COMMAND ARGS…`: run one mfpipe command in a warm worker process.

A training cell of the default grid takes seconds, and starting Python and importing torch takes
2–5 s (matplotlib for a figure ~2 s): run one process per job and much of the wall time is
start-up.  The workflow keeps one Snakemake job per cell (per-cell staleness, logs, retries),
but every job runs ``mfpipe pool <command> …``, a thin client (no torch, no argparse) that hands
the command to a warm server on this machine:

* One server per (Python, mfpipe checkout, host, pool directory) imports the modules of every
  mfpipe command once (torch, the network and data code, pandas, pyarrow, matplotlib), runs
  each module's ``warm_up()`` (a training step, a gradient cell, a small figure) to pay for
  first-use initialisation, and then ``fork``s one child per request.  The child takes over the client's stdin/stdout/stderr
  (passed as file descriptors over the Unix socket), working directory and environment (so
  ``OMP_NUM_THREADS`` of the Snakemake job applies), runs the command exactly as ``mfpipe``
  would, and reports its exit code, which the client exits with.
* Before forking a training cell on the CPU the server loads the cell's dataset itself (once per
  dataset file and version), so every later child inherits it instead of reading it again.
* Starting: the first client takes a lock file and starts the server, which holds that lock
  until it accepts connections (or dies); concurrent clients wait on the lock, so one server is
  started.  ``start_server(wait=False)`` starts one in the background (the workflow's
  ``onstart`` does, so torch is imported while Snakemake still prepares the first jobs).  A
  light command (no torch, no matplotlib: theory, aggregate, fit, …) that finds no server
  ready runs in the client at once instead of waiting, on the core the starting server leaves
  free.
* If the client dies (Snakemake killed, job cancelled), the child notices the closed socket and
  aborts: outputs are written atomically, so nothing is left and the next run computes the cell
  again — every cell ends up computed exactly once.
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
  so does any failure to reach or start a server (with a warning on stderr).  The workflow sets
  it for the submit host's jobs of a cluster run (no server on a login node).
"""

from __future__ import annotations

import marshal
import os
import socket
import struct
import sys
import time
import zlib
from contextlib import suppress

DEFAULT_IDLE_TIMEOUT = 120.0
START_TIMEOUT = 180.0
REQUEST_TIMEOUT = 10.0
NOT_POOLED = ("pool",)
#: Commands that import neither torch nor matplotlib: while no server is ready they run in the
#: client at once (and start a server for the others) instead of waiting seconds for one.
LIGHT_COMMANDS = ("theory", "critical", "iterates", "prepare-data", "aggregate", "fit", "cells",
                  "status", "search")
_MAX_SOCKET_PATH = 100
_HEADER = struct.Struct("!I")
_CODE = struct.Struct("!i")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def add_arguments(parser) -> None:
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help=f"seconds a server stays up with nothing to do "
                             f"(default: $MFPIPE_POOL_IDLE or {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--start", action="store_true",
                        help="only start a server in the background (unless one runs) and return")
    parser.add_argument("command_args", nargs="...", metavar="COMMAND ARGS",
                        help="the mfpipe command to run in a warm server, with its arguments")


def run(args) -> int:
    if args.start:
        return start_in_background(args.idle_timeout)
    return run_command(list(args.command_args), args.idle_timeout)


def start_in_background(idle_timeout: float | None = None) -> int:
    """`mfpipe pool --start`: what the workflow runs when it starts, so that the server imports
    torch and matplotlib while Snakemake still prepares the first jobs."""
    if use_pool("train-cell"):
        try:
            start_server(idle_timeout, wait=False)
        except OSError as err:  # the first job starts one, or runs without
            print(f"mfpipe pool: could not start a server: {err}", file=sys.stderr)
    return 0


def split_argv(argv: list[str]) -> tuple[float | None, list[str]] | None:
    """``[--idle-timeout S] [--] COMMAND ARGS…`` → (idle timeout, command argv); None when the
    arguments need the full parser (help, --start, a malformed option)."""
    idle, i = None, 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        value = None
        if arg == "--idle-timeout" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--idle-timeout="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            return None
        try:
            idle = float(value)
        except ValueError:
            return None
    return idle, argv[i:]


def run_command(argv: list[str], idle_timeout: float | None = None) -> int:
    """Run ``mfpipe <argv>`` in a warm server when appropriate, else in this process."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        from mfpipe.errors import InputError

        raise InputError("COMMAND", None, "an mfpipe command and its arguments, e.g. "
                                          "`mfpipe pool train-cell --depth 10 -o cell.parquet`")
    if not use_pool(argv[0]) or any(a in ("-h", "--help") for a in argv):
        return _run_inline(argv)
    try:
        return run_pooled(argv, idle_timeout=idle_timeout)
    except PoolUnavailable as err:
        print(f"mfpipe pool: {err}; running in this process", file=sys.stderr, flush=True)
        return _run_inline(argv)


def use_pool(command: str, environ=os.environ) -> bool:
    """Whether ``command`` goes through a warm server (see the module docstring)."""
    from mfpipe.cli import COMMANDS

    if command not in COMMANDS or command in NOT_POOLED:
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
    from pathlib import Path

    pids = []
    for path in Path(directory or pool_dir()).glob("*.sock.pid"):
        with suppress(OSError, ValueError):
            pids.append(int(path.read_text().strip()))
    return pids


def pool_dir() -> str:
    path = os.environ.get("MFPIPE_POOL_DIR") or f"/tmp/mfpipe-pool-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def server_key() -> str:
    """What a server must share with its clients: Python, mfpipe checkout, host, pool directory."""
    return f"{sys.executable}:{_PACKAGE_DIR}:{socket.gethostname()}:{pool_dir()}"


def socket_path() -> str:
    key = server_key().encode()
    name = f"mfpipe-{zlib.crc32(key):08x}{zlib.adler32(key):08x}.sock"
    path = os.path.join(pool_dir(), name)
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:  # AF_UNIX paths are limited to ~107 bytes
        path = f"/tmp/mfpipe-{os.getuid()}-{name}"
    return path


def loaded_sources() -> dict[str, int]:
    """mtime of every mfpipe source file this process has imported."""
    out = {}
    package = _PACKAGE_DIR + os.sep
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if path and os.path.abspath(path).startswith(package):  # incl. this module as __main__
            with suppress(OSError):
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


# ----------------------------------------------------------------------------- client

def run_pooled(argv: list[str], *, idle_timeout: float | None = None) -> int:
    """Run ``mfpipe <argv>`` in a warm server (started if needed); return its exit code.  A light
    command finding no server ready runs here instead (starting a server for later commands)."""
    try:
        path = socket_path()
    except OSError as err:  # the pool directory cannot be made
        raise PoolUnavailable(f"no pool directory ({err})") from err
    for _attempt in range(3):
        conn = _connect(path)
        light = conn is None and argv[0] in LIGHT_COMMANDS
        try:
            if conn is None:
                conn = start_server(idle_timeout, wait=not light, path=path)
        except OSError as err:  # no pool directory, no fork, …: run here
            raise PoolUnavailable(f"cannot start a pool server ({err})") from err
        if light:
            return _run_inline(argv)
        code = _request(conn, argv)
        if code is not None:
            return code
        time.sleep(0.2)  # the server was shutting down as we connected: start another
    raise PoolUnavailable(f"no answer from a pool server at {path}")


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return sock
    except OSError:
        sock.close()
        return None


def start_server(idle_timeout: float | None = None, *, wait: bool = True,
                 path: str | None = None) -> socket.socket | None:
    """Start this checkout's server unless one runs; with ``wait`` return a connection to it.

    The server inherits the lock taken here and releases it once it accepts connections (or
    when it dies), so other clients wait on the lock instead of starting servers of their own.
    """
    import fcntl
    import subprocess

    path = path or socket_path()
    idle = idle_timeout if idle_timeout is not None else float(
        os.environ.get("MFPIPE_POOL_IDLE", DEFAULT_IDLE_TIMEOUT))
    lock_path = f"{path}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:  # another process is starting a server right now
            return None
        conn = _connect(path)
        if conn is not None:  # a server is up
            if wait:
                return conn
            conn.close()
            return None
        with suppress(FileNotFoundError):
            os.unlink(path)  # a dead server's socket
        with open(f"{path}.log", "ab") as log:
            log.write(f"{time.strftime('%H:%M:%S')} starting a server for process {os.getpid()} "
                      f"({' '.join(sys.argv[1:3])})\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "mfpipe.pool", "--serve", path, "--lock-fd", str(fd),
                 "--idle-timeout", str(idle)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                pass_fds=(fd,))
    finally:
        os.close(fd)  # the server holds the lock now (the same open file description)
    if not wait:
        return None
    deadline = time.monotonic() + START_TIMEOUT
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise PoolUnavailable(f"the pool server did not start within "
                                          f"{START_TIMEOUT:g} s (log: {path}.log)") from None
                time.sleep(0.02)
        conn = _connect(path)
    finally:
        os.close(fd)
    if conn is None:
        code = proc.poll()
        raise PoolUnavailable(f"the pool server exited{'' if code is None else f' with code {code}'} "
                              f"before accepting connections (log: {path}.log)")
    return conn


def _request(conn: socket.socket, argv: list[str]) -> int | None:
    """Send the request with our stdio; None if the server went away before starting it."""
    payload = marshal.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                            "key": server_key()})
    with conn:
        try:
            socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
            conn.sendall(payload)
            ack = conn.recv(1)
        except OSError:
            return None
        if ack == b"K":
            raise PoolUnavailable("the server at this socket belongs to another mfpipe")
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

#: Per command, a function the server calls with (argv, cwd) before forking the request's
#: child, to load what every later child can inherit (e.g. a training cell's dataset).
PREFETCH = {"train-cell": ("mfpipe.train", "prefetch")}


def preload() -> None:
    """Import every command's module and run its ``warm_up()`` if it has one (a missing
    optional dependency only costs the children that need it)."""
    import importlib
    import traceback

    from mfpipe.cli import COMMANDS

    for command, (module, _help) in COMMANDS.items():
        if command in NOT_POOLED:
            continue
        start = time.perf_counter()
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        loaded = time.perf_counter() - start
        warm_up = getattr(sys.modules[module], "warm_up", None)
        if warm_up is not None:  # first-use costs every child would pay (torch, matplotlib)
            try:
                warm_up()
            except Exception:  # noqa: BLE001 - a failed warm-up only costs time in the children
                traceback.print_exc()
        print(f"{time.strftime('%H:%M:%S')} loaded {module}: import {loaded:.2f} s, warm-up "
              f"{time.perf_counter() - start - loaded:.2f} s", flush=True)


def serve(path: str, idle_timeout: float, lock_fd: int | None = None) -> None:
    try:
        preload()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = os.path.join(os.path.dirname(path), f".{os.getpid()}.bind")  # short: AF_UNIX limit
        listener.bind(tmp)
        listener.listen(128)
        os.replace(tmp, path)  # appear only when ready to accept
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # waiting clients go on: connect, or start another server
    ino = os.stat(path).st_ino
    pid_file = os.path.join(pool_dir(), f"{os.path.basename(path)}.pid")
    with open(pid_file, "w") as out:
        out.write(f"{os.getpid()}\n")
    print(f"{time.strftime('%H:%M:%S')} pool server {os.getpid()} ready at {path}", flush=True)
    sources = loaded_sources()  # a request after any of these changed restarts the server
    key = server_key()
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
        _serve_request(conn, listener, children, key)
        last_busy = time.monotonic()
    # stop taking new clients first, then serve (or, with stale code, turn away) the queued ones
    with suppress(FileNotFoundError):
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
            _serve_request(conn, listener, children, key)
    listener.close()
    with suppress(OSError):
        with open(pid_file) as old:
            mine = old.read().strip() == str(os.getpid())
        if mine:
            os.unlink(pid_file)
    why = "mfpipe sources changed" if stale else f"idle for {idle_timeout:g} s"
    print(f"{time.strftime('%H:%M:%S')} pool server {os.getpid()} exiting: {why}", flush=True)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        children.discard(pid)


def _read_request(conn: socket.socket) -> tuple[dict, list[int]] | None:
    """The request and the client's three stdio descriptors; None if it is malformed."""
    msg, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    if len(msg) < _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    (size,) = _HEADER.unpack(msg)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            break
        payload += chunk
    try:
        return marshal.loads(payload), fds
    except (ValueError, EOFError, TypeError):
        for fd in fds:
            os.close(fd)
        return None


def _prefetch(request: dict) -> None:
    import importlib
    import traceback

    argv = request.get("argv") or [""]
    if argv[0] not in PREFETCH:
        return
    module, func = PREFETCH[argv[0]]
    try:
        getattr(importlib.import_module(module), func)(argv[1:], request["cwd"])
    except (Exception, SystemExit):  # noqa: BLE001 - bad flags included (argparse exits): the
        traceback.print_exc()        # child reads them again and reports them to its client


def _serve_request(conn: socket.socket, listener: socket.socket, children: set[int],
                   key: str) -> None:
    """Read one request, prefetch what its children share, and fork its child."""
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        got = _read_request(conn)
    except OSError:
        got = None
    if got is None:
        conn.close()
        return
    request, fds = got
    if request.get("key") != key:
        with suppress(OSError):
            conn.sendall(b"K")
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    _prefetch(request)
    conn.settimeout(None)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.close()
        children.add(pid)
        return
    listener.close()
    code = 1
    try:
        code = _child(conn, request, fds)
    except BaseException:  # noqa: BLE001 - report anything, then leave without the server's cleanup
        import traceback

        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _child(conn: socket.socket, request: dict, fds: list[int]) -> int:
    import signal
    import threading

    os.setpgid(0, 0)
    # Ctrl-C raises KeyboardInterrupt, as in any mfpipe process, even when the server was started
    # with SIGINT ignored (from a background job or nohup): aborting for a dead client needs it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["MFPIPE_FAST_EXIT"] = "0"  # the command must return here to report its exit code
    argv = list(request["argv"])
    sys.argv = ["mfpipe-pool-worker", *argv]
    conn.sendall(b"A")
    finished = threading.Event()

    def watch_client():  # the client closes the socket only when it dies: abort the command
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
        print("mfpipe pool: client gone; command aborted", file=sys.stderr, flush=True)
        return 130
    except BaseException:  # noqa: BLE001 - the same as mfpipe's own crash: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finished.set()
    sys.stdout.flush()
    sys.stderr.flush()
    with suppress(OSError):
        conn.sendall(_CODE.pack(code))
    return code


def _serve_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mfpipe.pool")
    parser.add_argument("--serve", required=True)
    parser.add_argument("--lock-fd", type=int, default=None)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    args = parser.parse_args(argv)
    serve(args.serve, args.idle_timeout, args.lock_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve_main(sys.argv[1:]))
