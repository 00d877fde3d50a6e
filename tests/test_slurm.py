"""The SLURM profile (profiles/slurm) and a real SLURM run.

Fast tests: the profile parses, takes the site settings from MFPIPE_SLURM_* variables, picks
squeue for status when sacct has no accounting database, and `snakemake --profile
profiles/slurm -n` works on a machine without any SLURM command.

Slow + slurm test: scripts/slurm-local.sh installs and starts munge, slurmctld and slurmd on
this machine (4 fake GPUs), `snakemake --profile profiles/slurm` runs a tiny grid of training
and gradient cells through it, and the test checks that every cell ran inside a SLURM job that
asked for one GPU, that cells were packed several per job, that aggregation ran on the submit
host, and that the results are right; then it stops what it started.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
VENV_BIN = Path(sys.executable).parent
SITE_VARIABLES = ("PARTITION", "ACCOUNT", "QOS", "GPU_MODEL", "CONSTRAINT", "CELLS_PER_JOB",
                  "GPUS_PER_JOB", "JOBS")


def parse_profile(monkeypatch, **site) -> dict:
    """The profile as Snakemake reads it (yte evaluated), with MFPIPE_SLURM_<KEY>=value set."""
    from snakemake.profiles import ProfileConfigFileParser

    for key in SITE_VARIABLES:
        monkeypatch.delenv(f"MFPIPE_SLURM_{key}", raising=False)
    for key, value in site.items():
        monkeypatch.setenv(f"MFPIPE_SLURM_{key.upper()}", str(value))
    with open(PROFILE / "config.yaml") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def as_mapping(entries: list[str]) -> dict:
    """['a=1', 'rule:b=2'] -> {'a': '1', 'rule:b': '2'} (the CLI form of a profile mapping)."""
    return dict(entry.split("=", 1) for entry in entries)


def test_profile_defaults(monkeypatch):
    profile = parse_profile(monkeypatch)
    assert profile["executor"] == "slurm"
    assert profile["scheduler"] == "greedy"
    assert int(profile["jobs"]) == 100
    assert int(profile["retries"]) >= 1
    assert profile["slurm-requeue"] == "True"
    # cells of both kinds are packed into one group, 20 per SLURM job, sharing one GPU
    assert as_mapping(profile["groups"]) == {"train_cell": "cells", "grad_cell": "cells"}
    assert as_mapping(profile["group-components"]) == {"cells": "20"}
    assert as_mapping(profile["set-resource-scopes"]) == {"gpu": "local"}
    assert as_mapping(profile["resources"]) == {"gpu": "1"}
    defaults = as_mapping(profile["default-resources"])
    assert int(defaults["mem_mb"]) > 0
    assert eval(defaults["runtime"], {"attempt": 2}) == 2 * eval(defaults["runtime"], {"attempt": 1})
    # nothing site-specific unless the environment says so
    assert not {"slurm_partition", "slurm_account", "constraint"} & set(defaults)
    assert "set-resources" not in profile and "slurm-qos" not in profile
    assert profile["slurm-status-command"] in ("sacct", "squeue")


def test_profile_takes_site_settings_from_environment(monkeypatch):
    profile = parse_profile(monkeypatch, partition="gpu-a100", account="proj_42", qos="long",
                            gpu_model="a100", constraint="ib", cells_per_job=200,
                            gpus_per_job=2, jobs=7)
    defaults = as_mapping(profile["default-resources"])
    # resource values are Python expressions; these are quoted strings
    assert eval(defaults["slurm_partition"]) == "gpu-a100"
    assert eval(defaults["slurm_account"]) == "proj_42"
    assert eval(defaults["constraint"]) == "ib"
    assert as_mapping(profile["set-resources"]) == {
        f"{rule}:gpu_model": "'a100'"
        for rule in ("train_cell", "grad_cell", "train_bundle", "search_part")}
    assert profile["slurm-qos"] == "long"
    assert as_mapping(profile["group-components"]) == {"cells": "200"}
    assert as_mapping(profile["resources"]) == {"gpu": "2"}
    assert int(profile["jobs"]) == 7


@pytest.mark.parametrize("variable, value", [("cells_per_job", "0"), ("jobs", "many"),
                                             ("gpus_per_job", "-1")])
def test_profile_rejects_bad_counts_naming_the_variable(monkeypatch, variable, value):
    with pytest.raises(Exception, match=rf"MFPIPE_SLURM_{variable.upper()}='{value}'.*whole numbers"):
        parse_profile(monkeypatch, **{variable: value})


def fake_sacct(directory: Path, exit_code: int) -> None:
    sacct = directory / "sacct"
    sacct.write_text(f"#!/bin/sh\necho 'sacct: error: accounting storage is disabled' >&2\n"
                     f"exit {exit_code}\n")
    sacct.chmod(0o755)


@pytest.mark.parametrize("exit_code, expected", [(1, "squeue"), (0, "sacct")])
def test_status_command_is_squeue_without_accounting_database(monkeypatch, tmp_path,
                                                              exit_code, expected):
    fake_sacct(tmp_path, exit_code)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert parse_profile(monkeypatch)["slurm-status-command"] == expected


def path_without_slurm(directory: Path) -> str:
    """A PATH with the venv and a few basic tools, and no SLURM command at all."""
    tools = directory / "bin"
    tools.mkdir()
    for name in ("bash", "sh", "env", "which", "uname", "cat", "ls", "git", "mkdir", "rm"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    path = f"{VENV_BIN}{os.pathsep}{tools}"
    for command in ("sinfo", "sbatch", "squeue", "sacct", "scontrol"):
        assert shutil.which(command, path=path) is None, command
    return path


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs of `snakemake -n --verbose` output: rule, output and resources of each."""
    jobs = []
    for line in output.splitlines():
        rule = re.fullmatch(r"\s*(?:local)?rule (\w+):", line)
        if rule:
            jobs.append({"rule": rule.group(1), "output": "", "resources": {}})
            continue
        field = re.fullmatch(r"\s+(output|resources): (.*)", line)
        if field and jobs:
            if field.group(1) == "output":
                jobs[-1]["output"] = field.group(2)
            else:
                jobs[-1]["resources"] = dict(item.split("=", 1) for item in field.group(2).split(", ")
                                             if "=" in item)
    return jobs


def test_slurm_profile_dry_run_without_slurm_installed(tmp_path):
    """`snakemake --profile profiles/slurm -n` works with no SLURM command on the machine, and
    every cell job carries the resources the profile relies on: gpu, and mem_mb / runtime
    estimated from the cell (what the SLURM request is made of)."""
    env = {**os.environ, "PATH": path_without_slurm(tmp_path)}
    for key in SITE_VARIABLES:
        env.pop(f"MFPIPE_SLURM_{key}", None)
    # the default config as a full grid (its training study is a search, whose jobs a dry-run
    # cannot list before its first checkpoint has run)
    import yaml

    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    default["studies"]["training"].pop("search", None)
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(default, sort_keys=False))
    done = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(config), "--profile", str(PROFILE), "-n", "--verbose"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE))
    assert int(stats.get("train_bundle", 0)) > 0 and int(stats.get("grad_cell", 0)) > 0, output[-3000:]

    estimates = cell_estimates(config)
    bundles = bundle_estimates(config)
    jobs = dry_run_jobs(output)
    cell_jobs = [job for job in jobs if job["rule"] == "grad_cell"]
    bundle_jobs = [job for job in jobs if job["rule"] == "train_bundle"]
    assert len(cell_jobs) == int(stats["grad_cell"]) and len(bundle_jobs) == len(bundles)
    for job in cell_jobs + bundle_jobs:
        output = job["output"].strip()
        runtime, mem_mb = estimates[output] if output in estimates else bundles[output][1:]
        resources = job["resources"]
        assert resources.get("gpu") == "1", job
        assert resources.get("mem_mb") == str(mem_mb), job
        assert resources.get("runtime") == str(runtime), job

    # a GPU type reaches the bundle jobs too (the profile's set-resources name fixed rules only)
    typed = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(config), "--profile", str(PROFILE), "-n", "--verbose"],
        cwd=tmp_path, env={**env, "MFPIPE_SLURM_GPU_MODEL": "a100"}, capture_output=True,
        text=True, timeout=180)
    bundle_jobs = [job for job in dry_run_jobs(typed.stdout + typed.stderr)
                   if job["rule"] == "train_bundle"]
    assert bundle_jobs and all(job["resources"].get("gpu_model") == "a100" for job in bundle_jobs)


# ---------------------------------------------------------------------------------------------
# A real SLURM on localhost.
# ---------------------------------------------------------------------------------------------

TINY_GRID = """\
description: tiny grid for the local SLURM test
data_dir: data
device: cpu
studies:
  training:
    kind: train
    grid:
      dataset: mnist5k
      activation: tanh
      width: 16
      depth: [2, 4]
      sigma_w2: 1.76
      sigma_b2: 0.05
      keep_rate: [1, 0.9]
      seed: 0
    settings:
      optimizer: sgd
      lr: 0.01
      batch_size: 32
      steps: 20
      checkpoints: [10, 20]
      eval_size: 200
  gradients:
    kind: grad
    grid:
      dataset: gaussian
      activation: tanh
      width: 16
      depth: 6
      sigma_w2: [1.5, 2.5]
      sigma_b2: 0.05
      keep_rate: 1
    settings:
      inits: 2
      seed: 0
fit:
  enabled: false
figures:
  enabled: false
"""
TRAIN_CELLS, CHECKPOINTS = 4, (10, 20)
GRAD_CELLS, GRAD_DEPTH, GRAD_INITS = 2, 6, 2
CELLS_PER_JOB = 3


def slurm_local(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SLURM_LOCAL), *args], capture_output=True, text=True,
                          timeout=timeout)


def scontrol_job(job_id: str, env: dict) -> dict:
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                          env=env, check=True).stdout
    return dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", text))


def diagnostics(log: str, workdir: Path) -> str:
    """The end of the Snakemake log, of every SLURM job log and of the SLURM daemons' logs."""
    parts = [f"--- snakemake (last 4000 chars)\n{log[-4000:]}"]
    for path in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        parts.append(f"--- {path.relative_to(workdir)}\n{path.read_text()[-3000:]}")
    state = Path(os.environ.get("MFPIPE_SLURM_STATE", "/var/lib/mfpipe-slurm-local")) / "log"
    for name in ("slurmctld.log", "slurmd.log"):
        if (state / name).exists():
            parts.append(f"--- {state / name}\n{(state / name).read_text()[-2000:]}")
    return "\n".join(parts)


# Pending reasons that never clear by waiting: the request does not fit the cluster.
UNSCHEDULABLE = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit",
                 "InvalidQOS", "InvalidAccount", "ReqNodeNotAvail")


def run_watching_queue(command: list[str], workdir: Path, env: dict, timeout: float):
    """Run Snakemake; stop it early (and fail) when SLURM says one of its jobs can never run."""
    log_path = workdir / "snakemake.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        problem = None
        while process.poll() is None and problem is None:
            if time.monotonic() > deadline:
                problem = f"snakemake --profile profiles/slurm did not finish in {timeout:.0f} s"
                break
            time.sleep(2)
            run_name = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
            if run_name is None:
                continue
            queue = subprocess.run(["squeue", "-h", "-t", "pending", "-n", run_name.group(1),
                                    "-o", "%i|%r"], capture_output=True, text=True, env=env).stdout
            for line in queue.splitlines():
                job_id, reason = line.split("|", 1)
                if reason in UNSCHEDULABLE:
                    request = subprocess.run(["scontrol", "show", "job", job_id],
                                             capture_output=True, text=True, env=env).stdout
                    problem = (f"SLURM job {job_id} can never start ({reason}):\n{request}")
        if problem is not None:
            process.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs on the way out
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            run_name = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
            if run_name:  # and in case it could not
                subprocess.run(["scancel", "-n", run_name.group(1)], env=env)
    log = log_path.read_text()
    if problem is not None:
        pytest.fail(f"{problem}\n{diagnostics(log, workdir)}")
    return process.returncode, log


@pytest.fixture
def local_slurm():
    """SLURM running on this machine: started by scripts/slurm-local.sh (and stopped after the
    test) unless it was already running."""
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts/slurm-local.sh installs Debian packages and starts "
                    "munge, slurmctld and slurmd")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is unavailable to install it")
    already_running = slurm_local("status").returncode == 0
    started = slurm_local("start", timeout=420)
    assert started.returncode == 0, f"scripts/slurm-local.sh start failed:\n{started.stderr}"
    conf = slurm_local("env").stdout.strip().split("=", 1)[1]
    try:
        yield conf
    finally:
        if not already_running:
            stopped = slurm_local("stop")
            assert stopped.returncode == 0, stopped.stderr


def minutes(time_limit: str) -> int:
    """SLURM's [days-]hours:minutes:seconds as minutes."""
    days, _, clock = time_limit.rpartition("-")
    hours, mins, secs = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + mins + math.ceil(secs / 60)


def cell_estimates(config_path: Path) -> dict[str, tuple[int, int]]:
    """Cell output path -> (runtime minutes at attempt 1, mem_mb), as the rules compute them."""
    import yaml

    from mfpipe.grid import build_studies, resources_of, runtime_minutes

    config = yaml.safe_load(config_path.read_text())
    resources = resources_of(config)
    return {cell.path: (runtime_minutes(cell.seconds, resources, 1), cell.mem_mb)
            for study in build_studies(config).values() for cell in study.cells}


def bundle_estimates(config_path: Path) -> dict[str, tuple[tuple[str, ...], int, int]]:
    """Stamp of each bundle -> (its member paths, runtime minutes at attempt 1, mem_mb) of its
    job."""
    import yaml

    from mfpipe.grid import build_studies, resources_of, runtime_minutes

    config = yaml.safe_load(config_path.read_text())
    resources = resources_of(config)
    return {b.stamp: (tuple(sorted(c.path for c in b.cells)),
                      runtime_minutes(b.seconds, resources, 1), b.mem_mb)
            for study in build_studies(config).values() for b in study.bundles}


@pytest.mark.slow
@pytest.mark.slurm
def test_grid_runs_through_local_slurm(local_slurm, tmp_path):
    import pandas as pd

    (tmp_path / "grid.yaml").write_text(TINY_GRID)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SLURM_", "MFPIPE_SLURM_", "SNAKEMAKE_"))}
    node = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True,
                          env={**env, "SLURM_CONF": local_slurm}, check=True).stdout
    gpu_type = re.search(r"Gres=gpu:(\w+):\d+", node)
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}",
        "SLURM_CONF": local_slurm,
        "MFPIPE_SLURM_PARTITION": "gpu",
        "MFPIPE_SLURM_CELLS_PER_JOB": str(CELLS_PER_JOB),
        # exercise the typed request (--gpus=<type>:1) when the fake GPUs have a type
        **({"MFPIPE_SLURM_GPU_MODEL": gpu_type.group(1)} if gpu_type else {}),
        # warm cell servers of this test only, gone soon after it
        "MFPIPE_POOL_DIR": str(tmp_path / "pool"),
        "MFPIPE_POOL_IDLE": "5",
    })
    snakemake = [str(VENV_BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
                 "--configfile", "grid.yaml", "--profile", str(PROFILE)]
    # test-only: the first status check after 2 s instead of 40 s
    returncode, log = run_watching_queue(
        snakemake + ["--slurm-init-seconds-before-status-checks", "2"], tmp_path, env, 420)
    assert returncode == 0, diagnostics(log, tmp_path)

    # Training cells went through SLURM as bundles, one job each (2 depths: 2 bundles of the 2
    # keep rates), gradient cells packed CELLS_PER_JOB per job: 2 + ceil(2 / 3) = 3 submissions.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    bundles = {paths: (runtime, mem_mb)
               for paths, runtime, mem_mb in bundle_estimates(tmp_path / "grid.yaml").values()}
    assert len(bundles) == 2 and sum(len(m) for m in bundles) == TRAIN_CELLS
    assert len(job_ids) == len(bundles) + math.ceil(GRAD_CELLS / CELLS_PER_JOB), diagnostics(log, tmp_path)
    slurm_jobs, slurm_logs = {}, {}
    for job_id in job_ids:
        job = slurm_jobs[job_id] = scontrol_job(job_id, env)  # kept for MinJobAge after the end
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == "gpu"
        assert job["Requeue"] == "1", job  # slurm-requeue
        # one GPU for the whole group: its cells run one after another on it
        assert job["TresPerJob"] in ("gres:gpu:1", f"gres:gpu:{env.get('MFPIPE_SLURM_GPU_MODEL')}:1"), job
        assert job["NumCPUs"] == "1", job
        slurm_logs[job_id] = Path(job["StdOut"]).read_text()
    # Every cell ran inside exactly one SLURM job, whose time limit is the sum of its cells'
    # runtime estimates and whose memory is the largest of theirs; aggregation ran locally.
    estimates = cell_estimates(tmp_path / "grid.yaml")
    cell_files = sorted(str(path.relative_to(tmp_path))
                        for path in (tmp_path / "results" / "cells").rglob("*.parquet"))
    assert cell_files == sorted(estimates)
    cells_of_job = {job_id: [] for job_id in job_ids}
    for path in cell_files:
        ran_in = [job_id for job_id, text in slurm_logs.items() if path in text]
        assert len(ran_in) == 1, (path, ran_in)
        cells_of_job[ran_in[0]].append(path)
    for job_id, paths in cells_of_job.items():
        job = slurm_jobs[job_id]
        if tuple(sorted(paths)) in bundles:  # a bundle: its own estimate (one shared floor)
            runtime, mem_mb = bundles[tuple(sorted(paths))]
        else:  # a group of cell jobs: the sum of their times, the largest memory
            runtime = sum(estimates[path][0] for path in paths)
            mem_mb = max(estimates[path][1] for path in paths)
        assert minutes(job["TimeLimit"]) == runtime, (paths, job)
        assert job["MinMemoryNode"] == f"{mem_mb}M", job
    assert not any("aggregate" in text for text in slurm_logs.values())
    assert re.search(r"localrule aggregate_cells", log)
    # no warm worker server on the submit host (a login node) for its few local jobs
    assert not list((tmp_path / "pool").glob("*.log"))

    # The results are right.
    training = pd.read_parquet(tmp_path / "results" / "training.parquet")
    assert len(training) == TRAIN_CELLS * len(CHECKPOINTS)
    assert training["cell_id"].nunique() == TRAIN_CELLS
    assert sorted(set(zip(training["depth"], training["keep_rate"]))) == [
        (2, 0.9), (2, 1.0), (4, 0.9), (4, 1.0)]
    assert sorted(training["step"].unique()) == list(CHECKPOINTS)
    assert training["train_accuracy"].between(0, 1).all()
    assert not training["diverged"].any()
    gradients = pd.read_parquet(tmp_path / "results" / "gradients.parquet")
    assert len(gradients) == GRAD_CELLS * GRAD_INITS * GRAD_DEPTH * 2
    assert sorted(gradients["sigma_w2"].unique()) == [1.5, 2.5]
    assert set(gradients["mode"]) == {"real", "independent"}
    assert sorted(gradients["layer"].unique()) == list(range(GRAD_DEPTH))
    assert (gradients["grad_sq_norm"] > 0).all()

    # A second run has nothing to do (no output missing, older than its input or left
    # incomplete by a SLURM job; the code/params triggers are left out so that an edit of the
    # rules made while this test runs does not count), and nothing is left in the queue.
    again = subprocess.run(snakemake + ["-n", "--rerun-triggers", "mtime", "input"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, (
        again.stdout + again.stderr)[-3000:]
    queue = subprocess.run(["squeue", "-h", "-t", "pending,running", "-o", "%i %j"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert not any(line.split()[0] in job_ids for line in queue.splitlines()), queue
