"""Shared test helpers."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest


@pytest.fixture
def one_torch_thread(monkeypatch):
    """One torch thread: deterministic, and robust on a shared 2-core machine (CLI calls read
    $OMP_NUM_THREADS too)."""
    from mfpipe import cells

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cells.configure_threads(1)


def run_capped(python_args: list[str], gigabytes: int, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python <python_args>`` in a subprocess with a hard timeout and a capped address
    space: a request that old code would have tried to allocate fails there, fast, instead of
    filling this machine."""
    limit = gigabytes << 30
    return subprocess.run([sys.executable, *python_args], capture_output=True, text=True,
                          timeout=timeout,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
