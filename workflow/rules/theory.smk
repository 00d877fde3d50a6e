# Mean-field theory table of each study's grid points (cheap, vectorised, on the submit host).


rule theory_table:
    output:
        "results/theory/{study}/{point}.parquet",
    log:
        "logs/theory/{study}/{point}.log",
    params:
        args=lambda wildcards: THEORY_ARGS[f"{wildcards.study}/{wildcards.point}"],
    localrule: True
    priority: LIGHT_PRIORITY
    wildcard_constraints:
        study=_alternatives(list(STUDIES)),
        point=r"[a-z_]+-[a-z]+",
    shell:
        "{MFPIPE} pool theory {params.args} -o {output:q} > {log:q} 2>&1"


rule theory_map:
    # Dense table over (σ_w², σ_b², ρ): phase diagram and ξ_c(σ_w², ρ) figures.
    output:
        "results/theory_map.parquet",
    log:
        "logs/theory/map.log",
    params:
        args=THEORY_MAP_ARGS,
    localrule: True
    priority: LIGHT_PRIORITY
    shell:
        "{MFPIPE} pool theory {params.args} -o {output:q} > {log:q} 2>&1"


rule theory_iterates:
    output:
        "results/iterates.parquet",
    log:
        "logs/theory/iterates.log",
    params:
        args=THEORY_ITERATES_ARGS,
    localrule: True
    priority: LIGHT_PRIORITY
    shell:
        "{MFPIPE} pool iterates {params.args} -o {output:q} > {log:q} 2>&1"
