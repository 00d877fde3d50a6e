# Mean-field theory table of each study's grid points (cheap, vectorised, on the submit host).


rule theory_table:
    output:
        "results/theory/{study}/{point}.parquet",
    log:
        "logs/theory/{study}/{point}.log",
    params:
        args=lambda wildcards: THEORY_ARGS[f"{wildcards.study}/{wildcards.point}"],
    localrule: True
    wildcard_constraints:
        study=_alternatives(list(STUDIES)),
        point=r"[a-z_]+-[a-z]+",
    shell:
        "{MFPIPE} theory {params.args} -o {output:q} > {log:q} 2>&1"
