# One job per gradient cell (per-layer gradient statistics at initialisation): like train_cell.


rule grad_cell:
    output:
        "results/cells/{study}/{cell}.parquet",
    input:
        cell_data,
    log:
        "logs/cells/{study}/{cell}.log",
    params:
        args=cell_args,
        engine=ENGINE["grad"],
    threads: 1
    resources:
        mem_mb=cell_mem_mb,
        runtime=cell_runtime,
        gpu=RESOURCES["gpus_per_cell"],
    wildcard_constraints:
        study=_alternatives(STUDY_NAMES["grad"]),
        cell=CELL_RE,
    shell:
        "{MFPIPE} pool grad-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
        "-o {output:q} > {log:q} 2>&1"
