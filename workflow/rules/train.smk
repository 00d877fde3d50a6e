# Training: one job per bundle (train_bundle: its members as one stacked ensemble) or per cell
# left alone (train_cell: extra cells, a bundle size of 1, a vanished bundle member), each
# `mfpipe train-cell` through the warm worker pool (`mfpipe pool`: torch is imported once per
# machine, not once per cell).  On a cluster each job asks for `gpu` (config
# resources.gpus_per_cell), `mem_mb` and `runtime` (minutes) estimated from depth × width ×
# steps (mfpipe.grid.estimate_cost; a bundle: its members' sum with one latency floor), the
# runtime doubling with each retry; the SLURM profile packs train_cell and grad_cell jobs into
# groups ("cells").


rule prepare_data:
    output:
        DATA_FILE,
    log:
        "logs/prepare-data/{dataset}.log",
    localrule: True
    priority: PREPARE_DATA_PRIORITY
    wildcard_constraints:
        dataset=DATASET_RE,
    shell:
        "{MFPIPE} pool prepare-data --dataset {wildcards.dataset} --data-dir {DATA_DIR:q} > {log:q} 2>&1"


rule train_cell:
    output:
        "results/cells/{study}/dataset={dataset}/{cell}.parquet",
    input:
        DATA_FILE,
    log:
        "logs/cells/{study}/dataset={dataset}/{cell}.log",
    params:
        args=cell_args,
        engine=ENGINE["train"],
    threads: 1
    priority: cell_priority
    resources:
        **CELL_RESOURCES,
    wildcard_constraints:
        study=_alternatives(STUDY_NAMES["train"]),
        dataset=DATASET_RE,
        cell=CELL_RE,
    shell:
        "{MFPIPE} pool train-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
        "-o {output:q} > {log:q} 2>&1"


rule train_bundle:
    output:
        "results/bundles/{study}/{group}/bundle{index}.json",
    input:
        bundle_data,
    log:
        "logs/bundles/{study}/{group}/bundle{index}.log",
    params:
        args=bundle_args,
        engine=ENGINE["train"],
    threads: 1
    priority: bundle_priority
    resources:
        mem_mb=lambda wildcards, attempt: bundle_of(wildcards).mem_mb,
        runtime=lambda wildcards, attempt: runtime_minutes(bundle_of(wildcards).seconds,
                                                           RESOURCES, attempt),
        gpu=RESOURCES["gpus_per_cell"],
        cells_to_train=bundle_cells_to_train,
    wildcard_constraints:
        study=_alternatives(sorted({study for study, _, _ in BUNDLES})),
        group=r"dataset=(" + DATASET_RE + r")(?:/[a-z][a-z0-9_]*=[^/]+)*",
        index=r"\d+",
    shell:
        "{MFPIPE} pool train-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
        "--skip-existing --stamp {output:q} > {log:q} 2>&1"
