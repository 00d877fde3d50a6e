from mfpipe.pool import split_argv, use_pool


def test_every_command_but_pool_itself_goes_through_the_pool_on_a_workstation():
    for command in ("train-cell", "grad-cell", "theory", "figures", "fit", "aggregate"):
        assert use_pool(command, {})
    assert not use_pool("pool", {})
    assert not use_pool("no-such-command", {})  # runs inline, where argparse names the error
    assert not use_pool("train-cell", {"MFPIPE_POOL": "0"})


def test_inside_a_slurm_job_commands_run_in_their_own_process_unless_asked():
    # a server would outlive the job step: another job's cell could land in it
    for command in ("train-cell", "grad-cell", "figures"):
        assert not use_pool(command, {"SLURM_JOB_ID": "42"})
        assert use_pool(command, {"SLURM_JOB_ID": "42", "MFPIPE_POOL": "1"})
        assert not use_pool(command, {"SLURM_JOB_ID": "42", "MFPIPE_POOL": "0"})


def test_the_client_reads_its_own_options_without_argparse():
    assert split_argv(["train-cell", "--depth", "3"]) == (None, ["train-cell", "--depth", "3"])
    assert split_argv(["--idle-timeout", "5", "theory", "-o", "x"]) == (5.0, ["theory", "-o", "x"])
    assert split_argv(["--idle-timeout=2.5", "--", "fit"]) == (2.5, ["fit"])
    assert split_argv(["--help"]) is None  # the full parser answers
    assert split_argv(["--idle-timeout", "soon", "fit"]) is None


# ----------------------------------------------------------------------------- servers

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

MFPIPE = str(Path(sys.executable).parent / "mfpipe")


def _pool_env(tmp_path: Path) -> dict:
    return dict(os.environ, MFPIPE_POOL_DIR=str(tmp_path / "pool"), MFPIPE_POOL_IDLE="20")


def _stop_servers(tmp_path: Path) -> None:
    from mfpipe.pool import server_pids

    for pid in server_pids(tmp_path / "pool") if (tmp_path / "pool").is_dir() else []:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_concurrent_clients_start_one_server_and_light_commands_do_not_wait(tmp_path):
    env = _pool_env(tmp_path)
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
        _stop_servers(tmp_path)


@pytest.mark.slow
def test_the_server_loads_a_training_dataset_before_forking_so_cells_inherit_it(tmp_path):
    import pyarrow.parquet as pq

    env = _pool_env(tmp_path)
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
        _stop_servers(tmp_path)
