# Figures from parquet only (`mfpipe figures --only NAME`), one rule and job per figure (so one
# that cannot be drawn does not hold back the others), each with its caption for
# `snakemake --report` from workflow/report/<name>.rst.

for _figure in FIGURE_INPUTS:

    rule:
        name:
            f"figure_{_figure}"
        input:
            **figure_inputs(_figure),
        output:
            png=report(f"results/figures/{_figure}.png", caption=f"../report/{_figure}.rst",
                       category="mfpipe", labels={"figure": _figure}),
            pdf=f"results/figures/{_figure}.pdf",
        log:
            f"logs/figures/{_figure}.log",
        params:
            name=_figure,
            inputs=figure_flags(_figure),
            options=FIGURE_OPTIONS,
        localrule: True
        priority: EARLY_PRIORITY
        shell:
            "{MFPIPE} pool figures --only {params.name} {params.inputs} {params.options} "
            "--output {params.name}={output.png:q} > {log:q} 2>&1"
