# Per-cell parquet → one dataset per kind (results/training.parquet, results/gradients.parquet,
# results/theory.parquet), then the fit of the maximum trainable depth.  All on the submit host.

KIND_OF_DATASET = {name: kind for kind, name in KIND_DATASETS.items()}


rule cell_list:
    # The study's cells, one path per line: what `mfpipe aggregate` reads (a 100k-cell grid does
    # not fit on a command line).  Rewritten only when the study's spec changes.
    output:
        "results/cells/{study}.cells.txt",
    params:
        study=study_config_json,
    localrule: True
    priority: LIGHT_PRIORITY
    wildcard_constraints:
        study=_alternatives([name for name in STUDIES if name not in SEARCHED]),
    shell:
        "{MFPIPE} pool cells --config-json {params.study:q} --study {wildcards.study} -o {output:q}"


rule aggregate_cells:
    input:
        cells=lambda wildcards: [c.path for s in STUDIES.values() for c in s.unbundled
                                 if s.kind == KIND_OF_DATASET[wildcards.name]],
        bundles=lambda wildcards: BUNDLE_STAMPS[KIND_OF_DATASET[wildcards.name]],
        lists=lambda wildcards: [cell_list_of(study)
                                 for study in STUDY_NAMES[KIND_OF_DATASET[wildcards.name]]],
        # cells of finished bundles and search rounds retrained alone since (VANISHED)
        retrained=lambda wildcards: [path for study in STUDY_NAMES[KIND_OF_DATASET[wildcards.name]]
                                     for path in RETRAINED.get(study, ())],
    output:
        "results/{name}.parquet",
    log:
        "logs/aggregate/{name}.log",
    params:
        lists=lambda wildcards, input: " ".join(f"--inputs-from {path}" for path in input.lists),
    localrule: True
    priority: EARLY_PRIORITY
    wildcard_constraints:
        name="training|gradients",
    shell:
        "{MFPIPE} pool aggregate --kind {wildcards.name} {params.lists} -o {output:q} > {log:q} 2>&1"


rule aggregate_theory:
    input:
        THEORY_TABLES,
    output:
        "results/theory.parquet",
    log:
        "logs/aggregate/theory.log",
    localrule: True
    priority: LIGHT_PRIORITY
    shell:
        "{MFPIPE} pool aggregate --kind theory {input:q} -o {output:q} > {log:q} 2>&1"


rule fit:
    input:
        "results/training.parquet",
    output:
        fit="results/fit.parquet",
        boundaries="results/fit.boundaries.parquet",
        cells="results/fit.cells.parquet",
        curves="results/fit.curves.parquet",
        summary="results/fit.md",
    log:
        "logs/fit.log",
    params:
        args=section_flags(config, "fit", FIT_FLAGS),
    localrule: True
    priority: EARLY_PRIORITY
    shell:
        "{MFPIPE} pool fit {input:q} -o {output.fit:q} --boundaries {output.boundaries:q} "
        "--cells {output.cells:q} --curves {output.curves:q} --summary {output.summary:q} "
        "{params.args} > {log:q} 2>&1"
