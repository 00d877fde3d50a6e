# One job per training cell: `mfpipe train-cell` through the warm worker pool (`mfpipe pool`:
# torch is imported once per machine, not once per cell).  On a cluster each job asks for
# `gpu` (config resources.gpus_per_cell), `mem_mb` and `runtime` (minutes) estimated from
# depth × width × steps (mfpipe.grid.estimate_cost), the runtime doubling with each retry; the
# SLURM profile packs train_cell and grad_cell jobs into groups ("cells").


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


for _layout in BUNDLE_LAYOUTS:
    _name, _study_name, _index, _suffixes = _layout

    rule:
        name:
            _name
        output:
            stamp=f"results/bundles/{_study_name}/{{prefix}}/layout{_index}.json",
            cells=[update(f"results/cells/{_study_name}/{{prefix}}/{suffix}.parquet")
                   for suffix in _suffixes],
        input:
            bundle_data(_layout),
        log:
            f"logs/bundles/{_study_name}/{{prefix}}/layout{_index}.log",
        params:
            args=bundle_args(_layout),
            engine=ENGINE["train"],
        threads: 1
        priority: bundle_priority(_layout)
        resources:
            **bundle_resources(_layout),
        wildcard_constraints:
            prefix=r"dataset=(" + DATASET_RE + r")(?:/[a-z][a-z0-9_]*=[^/]+)*",
        shell:
            "{MFPIPE} pool train-cell {params.args} --data-dir {DATA_DIR:q} --device {DEVICE} "
            "--skip-existing --outputs {output.cells:q} --stamp {output.stamp:q} > {log:q} 2>&1"

    workflow.ruleorder(_name, "train_cell")
