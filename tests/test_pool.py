from mfpipe.pool import POOLED_COMMANDS, use_pool


def test_pool_is_used_for_cell_commands_on_a_workstation():
    assert use_pool("train-cell", {}) and use_pool("grad-cell", {})
    assert not use_pool("theory", {})
    assert not use_pool("train-cell", {"MFPIPE_POOL": "0"})


def test_inside_a_slurm_job_cells_run_in_their_own_process_unless_asked():
    # a server would outlive the job step: another job's cell could land in it
    for command in POOLED_COMMANDS:
        assert not use_pool(command, {"SLURM_JOB_ID": "42"})
        assert use_pool(command, {"SLURM_JOB_ID": "42", "MFPIPE_POOL": "1"})
        assert not use_pool(command, {"SLURM_JOB_ID": "42", "MFPIPE_POOL": "0"})
