# Figures from parquet only (`mfpipe figures --only NAME`), one job per figure so one that
# cannot be drawn does not hold back the others.  Captions for `snakemake --report` are in
# workflow/report/<name>.rst.


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report("results/figures/{name}.png", caption="../report/{name}.rst",
                   category="mfpipe", labels={"figure": "{name}"}),
        pdf="results/figures/{name}.pdf",
    log:
        "logs/figures/{name}.log",
    params:
        inputs=figure_flags,
        options=FIGURE_OPTIONS,
    localrule: True
    wildcard_constraints:
        name=_alternatives(list(FIGURE_INPUTS)),
    shell:
        "{MFPIPE} figures --only {wildcards.name} {params.inputs} {params.options} "
        "--output {wildcards.name}={output.png:q} > {log:q} 2>&1"
