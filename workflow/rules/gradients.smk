# One job per gradient cell (per-layer gradient statistics at initialisation): like train_cell.
# Cells on fixed Gaussian inputs (dataset=gaussian) need no data file.


rule grad_cell:
    output:
        "results/cells/{study}/dataset={dataset}/{cell}.parquet",
    input:
        grad_cell_data,
    log:
        "logs/cells/{study}/dataset={dataset}/{cell}.log",
    params:
        args=cell_args,
        engine=ENGINE["grad"],
    threads: 1
    priority: grad_cell_priority
    resources:
        **CELL_RESOURCES,
    wildcard_constraints:
        study=_alternatives(STUDY_NAMES["grad"]),
        dataset=GRAD_DATASET_RE,
        cell=CELL_RE,
    shell:
        "{MFPIPE} pool grad-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
        "-o {output:q} > {log:q} 2>&1"
