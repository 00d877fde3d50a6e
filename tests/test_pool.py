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
