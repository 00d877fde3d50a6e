"""The Snakemake workflow: dry-runs, validation, staleness (shown through `snakemake -n` job
counts), kill-and-resume, the warm worker pool, and the default pipeline end to end.

Every workflow runs in a copy of the workflow files (Snakefile, workflow/, config/, src/) in a
temporary directory, with its own pool directory, so tests never touch the checkout's results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
MFPIPE = str(BIN / "mfpipe")


def copy_workflow(dest: Path, config: dict | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("workflow", "config", "src"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    if config is not None:
        (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def env_for(workdir: Path) -> dict:
    env = dict(os.environ)
    env["MFPIPE_POOL_DIR"] = str(workdir / "pool")
    env["MFPIPE_POOL_IDLE"] = "30"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def ctrl_c_enabled() -> None:
    """For a child process: SIGINT back to its default, as in a terminal, also when the tests
    run where it is ignored (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_pool(workdir: Path) -> None:
    from mfpipe.pool import server_pids

    if (workdir / "pool").is_dir():
        for pid in server_pids(workdir / "pool"):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles" / "local"), "-s",
           str(workdir / "Snakefile"), "-d", str(workdir), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env_for(workdir),
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def planned(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` would run ({} when nothing is to be done)."""
    done = snakemake(workdir, "-n", *args)
    text = done.stdout + done.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


def training_plan(workdir: Path, *args: str) -> tuple[int, int]:
    """(training jobs, cells those jobs will really train) that `snakemake -n` shows: a bundle
    job's resources say cells_to_train=TODO/MEMBERS, a train_cell job trains its one cell."""
    done = snakemake(workdir, "-n", *args)
    text = done.stdout + done.stderr
    if "Nothing to be done" in text:
        return 0, 0
    bundles = [int(m.group(1)) for m in re.finditer(r"cells_to_train=(\d+)/\d+", text)]
    singles = len(re.findall(r"^(?:local)?rule train_cell:", text, re.M))
    return len(bundles) + singles, sum(bundles) + singles


def tiny_config(**train_settings) -> dict:
    settings = {"steps": 5, "batch_size": 16, "eval_size": 50, "lr": 0.01, **train_settings}
    return {
        "data_dir": "data",
        "device": "cpu",
        "studies": {
            "t": {"kind": "train",
                  "grid": {"dataset": "digits", "width": 8, "depth": [2, 3], "sigma_w2": [1.5, 2.0],
                           "keep_rate": 1, "seed": [0]},
                  "settings": settings},
            "g": {"kind": "grad",
                  "grid": {"dataset": "gaussian", "width": 8, "depth": 3, "sigma_w2": [1.5]},
                  "settings": {"inits": 1}},
        },
        "theory": {"map": {"enabled": False}, "iterates": {"enabled": False}},
        "fit": {"enabled": False},
        "figures": {"enabled": False},
    }


def set_config(workdir: Path, config: dict) -> None:
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# ----------------------------------------------------------------------------- fast

def test_dry_run_of_the_default_config_needs_no_data(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    counts = planned(work)
    # the training study is a search: its first round is a checkpoint, its cells come after it
    assert counts["search_round"] == 1 and counts["search_cells"] == 1
    assert not any(k.startswith("train_") for k in counts) and counts["grad_cell"] == 6
    assert counts["prepare_data"] == 1  # the data are made by the run, not needed for -n
    assert counts["aggregate_cells"] == 2 and counts["fit"] == 1 and counts["all"] == 1
    assert not (work / "data").exists() and not (work / "results").exists()


def test_bundles_are_cut_by_size_and_by_memory_per_depth(tmp_path):
    from mfpipe.grid import build_studies

    config = tiny_config()
    config["studies"]["t"]["grid"].update(sigma_w2=[1.5, 2.0, 2.5, 3.0, 3.5], seed=[0, 1])
    config["resources"] = {"bundle_size": 4}  # 10 members per depth: chunks of 4, 3, 3
    work = copy_workflow(tmp_path / "wf", config)
    counts = planned(work)
    assert {k: v for k, v in counts.items() if "train" in k} == {"train_bundle": 6}
    assert training_plan(work) == (6, 20)
    # a deep, wide depth next to a shallow one: memory allows 10 shallow members but 3 deep
    # ones; each depth is cut by its own members' memory
    config["studies"]["t"]["grid"].update(depth=[2, 120], width=256)
    deep = max(c.mem_mb for c in build_studies(config)["t"].cells) - 4000
    config["resources"] = {"bundle_mem_mb": 4000 + 3 * deep + 1}
    set_config(work, config)
    assert training_plan(work) == (5, 20)  # depth 2: one bundle of 10; depth 120: 4 of 2–3


def job_priorities(workdir: Path) -> list[tuple[str, str, float]]:
    """(rule, wildcards, priority) of every job `snakemake -n` lists."""
    done = snakemake(workdir, "-n")
    jobs = []
    for block in re.split(r"\n\s*\n|\n\[[^\]\n]*\]\n", done.stdout + done.stderr):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        priority = re.search(r"^\s+priority: ([\d.e+]+)", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if rule and rule.group(1) != "all":
            jobs.append((rule.group(1), wildcards.group(1) if wildcards else "",
                         float(priority.group(1)) if priority else 0.0))
    return jobs


def test_the_universality_figure_is_planned_only_when_a_gradient_study_has_two_inits(tmp_path):
    config = tiny_config()
    config["figures"] = {"enabled": True}
    work = copy_workflow(tmp_path / "wf", config)  # its gradient study has inits: 1
    counts = planned(work)
    assert "figure_universality" not in counts and counts["figure_gradient_norms"] == 1
    config["studies"]["g"]["settings"]["inits"] = 2
    set_config(work, config)
    assert planned(work)["figure_universality"] == 1


def test_jobs_run_data_first_then_theory_and_gradients_then_cells_longest_first(tmp_path):
    config = tiny_config()
    config["studies"]["t"]["grid"]["depth"] = [2, 8, 32]
    config["resources"] = {"bundle_size": 1}  # one job per cell, as before bundles
    work = copy_workflow(tmp_path / "wf", config)
    jobs = job_priorities(work)
    by_rule = {}
    for rule, _wildcards, priority in jobs:
        by_rule.setdefault(rule, []).append(priority)
    cells = {int(re.search(r"depth=(\d+)", wc).group(1)): p
             for rule, wc, p in jobs if rule == "train_cell" and "sigma_w2=1.5" in wc}
    assert cells[32] > cells[8] > cells[2] > 0  # longest (deepest) first
    assert min(by_rule["prepare_data"]) > max(by_rule["theory_table"])
    assert min(by_rule["theory_table"]) > max(by_rule["grad_cell"]) > max(by_rule["train_cell"])
    assert min(by_rule["aggregate_cells"]) > max(by_rule["train_cell"])


def test_bad_config_fails_at_startup_naming_every_field(tmp_path):
    config = tiny_config()
    config["studies"]["t"]["grid"]["activation"] = "sigmoid"
    config["studies"]["t"]["settings"]["optimizer"] = "lbfgs"
    config["device"] = "tpu"
    work = copy_workflow(tmp_path / "wf", config)
    done = snakemake(work, "-n", check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    for needle in ("studies.t.grid.activation", "tanh, relu, erf, linear, hard_tanh",
                   "studies.t.settings.optimizer", "sgd, rmsprop, adam", "device", "'tpu'"):
        assert needle in text, needle


INJECTION = "x; touch pwned $(touch pwned2) `touch pwned3`"


def test_a_command_in_a_fit_or_figure_option_is_refused_before_anything_runs(tmp_path):
    config = tiny_config()
    config["fit"] = {"forms": INJECTION, "step": INJECTION}
    config["figures"] = {"reference": INJECTION}
    work = copy_workflow(tmp_path / "wf", config)
    done = snakemake(work, check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    for field in ("fit.forms", "fit.step", "figures.reference"):
        assert field in text, field
    assert not list(work.rglob("pwned*")) and not (work / "results").exists()


# ----------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_free_text_config_values_reach_commands_quoted(tmp_path):
    """Every config value that reaches a shell command either must match a pattern (schema)
    or is quoted: the free-text ones (descriptions, the data directory) carry a payload here."""
    config = tiny_config()
    config["description"] = INJECTION
    config["studies"]["t"]["description"] = INJECTION
    config["studies"]["g"]["description"] = INJECTION
    config["data_dir"] = f"data {INJECTION}"
    work = copy_workflow(tmp_path / "wf", config)
    try:
        snakemake(work)
    finally:
        stop_pool(work)
    assert not list(work.rglob("pwned*")), "a config value ran as a command"
    assert (work / "results" / "training.parquet").exists()
    assert any((work / f"data {INJECTION}").iterdir())  # the data directory, named as given


@pytest.mark.slow
def test_staleness_reruns_only_affected_cells(tmp_path):
    work = copy_workflow(tmp_path / "wf", tiny_config())
    try:
        snakemake(work)
        cell_files = sorted((work / "results" / "cells" / "t").rglob("*.parquet"))
        assert len(cell_files) == 4
        assert planned(work) == {}  # a second run does nothing

        # a deleted cell file: that cell is trained again, alone, and its aggregate remade
        cell_files[0].unlink()
        assert planned(work) == {"train_cell": 1, "aggregate_cells": 1, "all": 1}
        assert training_plan(work) == (1, 1)
        snakemake(work)
        assert cell_files[0].exists() and planned(work) == {}

        # a changed grid value: only its cells (2 depths × σ_w² = 2.5)
        config = tiny_config()
        config["studies"]["t"]["grid"]["sigma_w2"] = [1.5, 2.5]
        set_config(work, config)
        counts = planned(work)
        assert training_plan(work) == (2, 2) and "grad_cell" not in counts

        # a new seed: only the new cells
        config = tiny_config()
        config["studies"]["t"]["grid"]["seed"] = [0, 1]
        set_config(work, config)
        counts = planned(work)
        # the new cells join the existing bundles, which keep their finished members
        assert training_plan(work) == (2, 4) and "grad_cell" not in counts

        # a changed study setting: every cell of that study, none of the other
        set_config(work, tiny_config(steps=6))
        counts = planned(work)
        assert training_plan(work) == (2, 4) and "grad_cell" not in counts
        # ... caught by the params trigger (mtime alone would not see it)
        assert training_plan(work, "--rerun-triggers", "mtime") == (0, 0)
        status = subprocess.run([MFPIPE, "status", "--json", "-d", str(work), "--configfile",
                                 str(work / "config" / "config.yaml")],
                                capture_output=True, text=True, check=True, cwd=work)
        by_study = {row["study"]: row for row in json.loads(status.stdout)["studies"]}
        assert (by_study["t"]["stale"], by_study["t"]["done"]) == (4, 0)
        assert (by_study["g"]["stale"], by_study["g"]["done"]) == (0, 1)
        set_config(work, tiny_config())

        # editing mfpipe code (plotting, fitting, even the cell code) reruns nothing ...
        for name in ("figures.py", "fit.py", "train.py", "grid.py"):
            with open(work / "src" / "mfpipe" / name, "a") as fh:
                fh.write("\n# an edit\n")
        assert planned(work) == {}
        # ... until the engine version of a kind is bumped: then every cell of that kind
        cells_py = work / "src" / "mfpipe" / "cells.py"
        text = cells_py.read_text()
        bumped = re.sub(r'ENGINE_VERSIONS = \{"train": (\d+)',
                        lambda m: f'ENGINE_VERSIONS = {{"train": {int(m.group(1)) + 1}', text)
        assert bumped != text
        cells_py.write_text(bumped)
        counts = planned(work)
        assert training_plan(work) == (2, 4) and "grad_cell" not in counts
    finally:
        stop_pool(work)


@pytest.mark.slow
def test_killed_run_resumes_and_computes_every_cell_once(tmp_path):
    config = tiny_config(steps=1500)
    config["studies"]["t"]["grid"].update(depth=[4, 6, 8, 10, 12, 14], sigma_w2=[1.2, 1.76, 2.4],
                                          width=32, seed=[0])  # 6 bundles of 3 cells
    work = copy_workflow(tmp_path / "wf", config)
    cells_dir = work / "results" / "cells" / "t"
    cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles" / "local"), "-s", str(work / "Snakefile"),
           "-d", str(work)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env_for(work), start_new_session=True,
                                preexec_fn=ctrl_c_enabled)
        from base64 import urlsafe_b64encode

        def recorded_incomplete(path: Path) -> bool:  # a job Snakemake had not seen finish
            key = urlsafe_b64encode(str(path.relative_to(work)).encode()).decode()
            return (work / ".snakemake" / "incomplete" / key).exists()

        def finished_bundles() -> int:
            return sum(not recorded_incomplete(p) for p in (work / "results" / "bundles").rglob("*.json"))

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and finished_bundles() < 1:
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: running bundles are aborted
        proc.wait(timeout=120)
        # a cell file is written whole or not at all (a bundle writes each member as it ends)
        before = {p: p.stat().st_mtime_ns for p in cells_dir.rglob("*.parquet")}
        assert 3 <= len(before) < 18 and finished_bundles() < 6, (len(before), finished_bundles())
        time.sleep(1.0)
        assert not list(work.rglob("*.tmp")), "an aborted cell left a partial file"

        snakemake(work)
        after = {p: p.stat().st_mtime_ns for p in cells_dir.rglob("*.parquet")}
        assert len(after) == 18
        redone = [str(p) for p, mtime in before.items() if after[p] != mtime]
        assert not redone, f"finished cells were computed again: {redone}"
        rows = pq.read_table(work / "results" / "training.parquet").to_pandas()
        assert rows["cell_id"].nunique() == 18
        assert len(rows) == 18 and not rows.duplicated(["cell_id", "step"]).any()
        assert planned(work) == {}
    finally:
        stop_pool(work)


@pytest.mark.slow
def test_pool_gives_the_same_results_and_aborts_when_the_client_dies(tmp_path):
    env = env_for(tmp_path)
    args = ["train-cell", "--dataset", "digits", "--depth", "4", "--width", "16", "--steps", "30",
            "--eval-size", "50", "--data-dir", str(tmp_path / "data"), "--device", "cpu",
            "--threads", "1"]
    try:
        inline = subprocess.run([MFPIPE, *args, "-o", str(tmp_path / "inline.parquet")],
                                env=env, capture_output=True, text=True)
        assert inline.returncode == 0, inline.stderr
        for name in ("pooled1", "pooled2"):
            done = subprocess.run([MFPIPE, "pool", *args, "-o", str(tmp_path / f"{name}.parquet")],
                                  env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        assert len(list((tmp_path / "pool").glob("*.sock"))) == 1  # one warm server, reused
        cols = ["step", "train_loss", "train_accuracy", "batch_accuracy", "test_accuracy", "cell_id"]
        want = pq.read_table(tmp_path / "inline.parquet").to_pandas()[cols]
        for name in ("pooled1", "pooled2"):
            got = pq.read_table(tmp_path / f"{name}.parquet").to_pandas()[cols]
            assert got.equals(want)

        bad = subprocess.run([MFPIPE, "pool", "train-cell", "--depth", "0", "-o",
                              str(tmp_path / "bad.parquet")], env=env, capture_output=True, text=True)
        assert bad.returncode == 2 and "depth" in bad.stderr  # exit code and stderr pass through

        # a client killed mid-cell: the worker aborts, no output appears
        slow = [a if a != "30" else "200000" for a in args]
        client = subprocess.Popen([MFPIPE, "pool", *slow, "-o", str(tmp_path / "killed.parquet")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        client.kill()
        client.wait()
        time.sleep(3)
        assert not (tmp_path / "killed.parquet").exists()
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".killed*"))
        from mfpipe.pool import server_pids

        for pid in server_pids(tmp_path / "pool"):  # the server has no worker child left
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert children == [], "the worker of a dead client is still running"
    finally:
        stop_pool(tmp_path)


@pytest.mark.slow
def test_concurrent_clients_start_one_server_and_light_commands_do_not_wait(tmp_path):
    env = env_for(tmp_path)
    try:
        # a light command with no server ready runs at once in its own process (and starts one)
        start = time.perf_counter()
        light = subprocess.run([MFPIPE, "pool", "critical", "--activation", "tanh",
                                "--sigma-b2", "0.05"], env=env, capture_output=True, text=True)
        assert light.returncode == 0, light.stderr
        assert "1.76" in light.stdout
        assert time.perf_counter() - start < 30
        # three heavy clients at once, while that server may still be starting: one server
        outputs = [tmp_path / f"cell{i}.parquet" for i in range(3)]
        clients = [subprocess.Popen([MFPIPE, "pool", "grad-cell", "--depth", "3", "--width", "8",
                                     "--inits", "1", "--device", "cpu", "-o", str(out)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for out in outputs]
        for client in clients:
            _out, err = client.communicate(timeout=300)
            assert client.returncode == 0, err.decode()
            assert b"running in this process" not in err  # served, not a fallback
        assert all(out.exists() for out in outputs)
        logs = list((tmp_path / "pool").glob("*.log"))
        assert len(logs) == 1
        assert logs[0].read_text().count("starting a server") == 1
        assert len(list((tmp_path / "pool").glob("*.sock"))) == 1
    finally:
        stop_pool(tmp_path)


@pytest.mark.slow
def test_the_server_loads_a_training_dataset_before_forking_so_cells_inherit_it(tmp_path):
    env = env_for(tmp_path)
    data_dir = tmp_path / "data"
    args = ["pool", "train-cell", "--dataset", "digits", "--depth", "2", "--width", "8",
            "--steps", "2", "--eval-size", "20", "--device", "cpu", "--data-dir", str(data_dir)]
    prepared = subprocess.run([MFPIPE, "prepare-data", "--dataset", "digits", "--data-dir",
                               str(data_dir)], env=env, capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    try:
        times = []
        for i in range(3):
            if i == 2:  # a rewritten cache file is loaded again (test_data checks the keys)
                cache = next((data_dir / "mfpipe-cache").glob("digits-*.npz"))
                os.utime(cache, ns=(time.time_ns(), time.time_ns()))
            out = tmp_path / f"c{i}.parquet"
            done = subprocess.run([MFPIPE, *args, "-o", str(out)], env=env, capture_output=True,
                                  text=True)
            assert done.returncode == 0, done.stderr
            times.append(pq.read_table(out).to_pandas()["data_time_s"].iloc[0])
        # loaded in the server before each child forked (reading it takes ~0.05 s)
        assert max(times) < 0.01, times
        log = next((tmp_path / "pool").glob("*.log")).read_text()
        assert "Traceback" not in log
        # bad flags reach the cell's own error (exit 2, naming the field); the server lives on
        for bad, field in ((["--eval-size", "abc"], "eval_size"), (["--threads", "x"], "threads")):
            done = subprocess.run([MFPIPE, *args, *bad, "-o", str(tmp_path / "bad.parquet")],
                                  env=env, capture_output=True, text=True)
            assert done.returncode == 2 and field in done.stderr, done.stderr
            assert "running in this process" not in done.stderr
        log = next((tmp_path / "pool").glob("*.log")).read_text()
        assert log.count("starting a server") == 1
    finally:
        stop_pool(tmp_path)


@pytest.mark.slow
def test_default_pipeline_end_to_end(tmp_path):
    """The README's main command on the embedded default config: cells → aggregate → fit →
    figures, and a second run does nothing."""
    work = copy_workflow(tmp_path / "wf")
    try:
        snakemake(work, timeout=1500)
        for name in ("training", "gradients", "theory", "fit"):
            assert (work / "results" / f"{name}.parquet").stat().st_size > 0
        training = pq.read_table(work / "results" / "training.parquet").to_pandas()
        searched = (work / "results" / "search" / "training" / "cells.txt").read_text().split()
        assert training["cell_id"].nunique() == len(searched) < 756 / 3  # of the grid's 756
        # what the default shows: at ρ = 1 the largest trainable depth peaks at criticality, at
        # least 3× what it is at σ_w² = 1 and 4; dropout (ρ = 0.98) caps it
        bounds = pq.read_table(work / "results" / "fit.boundaries.parquet").to_pandas()
        rho1 = bounds[bounds["keep_rate"] == 1].set_index("sigma_w2")
        critical = rho1.loc[1.76, "depth_max_trainable"]  # a lower bound when censored above
        assert critical >= 3 * rho1.loc[1.0, "boundary"] and critical >= 3 * rho1.loc[4.0, "boundary"]
        assert bounds[bounds["keep_rate"] == 0.98]["boundary"].max() < critical
        figures = sorted(p.name for p in (work / "results" / "figures").glob("*.png"))
        assert {"trainability.png", "fit_summary.png", "gradient_norms.png"} <= set(figures)
        assert planned(work) == {}
    finally:
        stop_pool(work)


def search_config(**train_settings) -> dict:
    config = tiny_config(**train_settings)
    config["studies"]["t"]["search"] = True
    config["studies"]["t"]["grid"].update(depth=[2, 3, 4, 6, 8], sigma_w2=[1.0, 2.0, 4.0])
    return config


def cells_trained_since(work: Path, mark: float) -> list[str]:
    """Cells the search's jobs trained after ``mark`` (their stamps' ``trained`` lists)."""
    out = []
    for stamp in (work / "results" / "search" / "t" / "trained").glob("*.json"):
        if stamp.stat().st_mtime > mark:
            out += json.loads(stamp.read_text())["trained"]
    return out


@pytest.mark.slow
def test_a_searched_study_runs_in_rounds_and_its_staleness_follows_the_grids_rules(tmp_path):
    work = copy_workflow(tmp_path / "wf", search_config())
    try:
        dry = snakemake(work, "-n")
        text = dry.stdout + dry.stderr
        assert "search_round" in text and "checkpoint" in text  # the DAG grows as rounds finish
        assert "mfpipe search 't': round 0 is planned when the run starts" in text
        mark = time.time()
        snakemake(work)
        first = cells_trained_since(work, mark)
        assert len(first) == len(set(first)) > 0
        listed = (work / "results" / "search" / "t" / "cells.txt").read_text().split()
        assert sorted(listed) == sorted(first) and len(listed) < 15  # not the whole grid
        assert all((work / p).exists() for p in listed)
        rows = pq.read_table(work / "results" / "training.parquet").to_pandas()
        assert rows["cell_id"].nunique() == len(listed)
        assert planned(work) == {}  # a finished search: nothing to do
        status = subprocess.run([MFPIPE, "status", "-d", str(work), "--configfile",
                                 str(work / "config" / "config.yaml")],
                                capture_output=True, text=True, check=True, cwd=work)
        assert re.search(r"search t: \d+ rounds planned; 3 columns: .*; complete", status.stdout)

        # a deleted cell: retrained alone, then aggregated again
        (work / listed[0]).unlink()
        assert planned(work) == {"train_cell": 1, "aggregate_cells": 1, "all": 1}
        snakemake(work)
        assert (work / listed[0]).exists()
        assert planned(work) == {}  # it stays an input of the aggregate: nothing changed

        # a new seed: only cells of that seed are trained
        config = search_config()
        config["studies"]["t"]["grid"]["seed"] = [0, 1]
        set_config(work, config)
        mark = time.time()
        snakemake(work)
        new = cells_trained_since(work, mark)
        assert new and all("/seed=1.parquet" in p for p in new)
        # the cell retrained alone above is no longer newer than
        # its round's stamp, which this run rewrote: it leaves the aggregate's inputs, and that
        # change reruns the aggregate once (no training; see the README)
        assert planned(work) == {"aggregate_cells": 1, "all": 1}
        assert training_plan(work) == (0, 0)
        snakemake(work)
        assert planned(work) == {}

        # a changed setting: the study's search starts over and retrains what it needs
        config["studies"]["t"]["settings"]["steps"] = 6
        set_config(work, config)
        assert "search_round" in planned(work)
        mark = time.time()
        snakemake(work)
        again = cells_trained_since(work, mark)
        assert set(p for p in listed if "/seed=0" in p) <= set(again)
        # the earlier chain's extra rounds and stamps are gone: only the current record
        stamps = {p.name for p in (work / "results" / "search" / "t" / "trained").glob("*.json")}
        rounds = sorted((work / "results" / "search" / "t").glob("round*"))
        plans = [json.loads((r / "plan.json").read_text()) for r in rounds]
        assert stamps == {f"round{p['summary']['round']}-part{j['part']}.json"
                          for p in plans for j in p["jobs"]}
        assert plans[-1]["summary"]["complete"]
    finally:
        stop_pool(work)
