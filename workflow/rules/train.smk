# One job per training cell: `mfpipe train-cell` through the warm worker pool (`mfpipe pool`:
# torch is imported once per machine, not once per cell).  Resources for a cluster: one GPU
# (config resources.gpus_per_cell), memory and runtime estimated from depth × width × steps
# (mfpipe.grid.estimate_cost); runtime doubles with each retry.  The SLURM profile groups
# train_cell and grad_cell jobs ("cells") into one submission per many cells.


rule prepare_data:
    output:
        _data_cache("{dataset}"),
    log:
        "logs/prepare-data/{dataset}.log",
    localrule: True
    shell:
        "{MFPIPE} prepare-data --dataset {wildcards.dataset} --data-dir {DATA_DIR:q} > {log:q} 2>&1"


rule train_cell:
    output:
        "results/cells/{study}/{cell}.parquet",
    input:
        cell_data,
    log:
        "logs/cells/{study}/{cell}.log",
    params:
        args=cell_args,
        engine=ENGINE["train"],
    threads: 1
    resources:
        mem_mb=cell_mem_mb,
        runtime=cell_runtime,
        gpu=RESOURCES["gpus_per_cell"],
    wildcard_constraints:
        study=_alternatives(STUDY_NAMES["train"]),
        cell=CELL_RE,
    shell:
        "{MFPIPE} pool train-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
        "-o {output:q} > {log:q} 2>&1"
