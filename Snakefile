"""mfpipe workflow: grid cells → aggregate → fit → figures.

    snakemake --profile profiles/local            # run the default grid (config/config.yaml)
    snakemake --profile profiles/local -n         # what would run
    snakemake --profile profiles/local --configfile config/huang2019.yaml
    snakemake --profile profiles/slurm            # on a SLURM GPU cluster

The config is validated at startup (workflow/schemas/config.schema.yaml, generated from
mfpipe.grid) and turned into cells by mfpipe.grid, the one place that does so; every problem is
reported at once, each naming its field and the allowed values.  Staleness rules: see
workflow/rules/common.smk.
"""

import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The checkout's own mfpipe, even when another one is installed.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


# The embedded default, unless config files are given (`--configfile config/huang2019.yaml`
# replaces it instead of being merged into it; `--config key=value` still overrides).
if not workflow.overwrite_configfiles:
    workflow.configfile(str(Path(workflow.basedir) / "config" / "config.yaml"))


include: "workflow/rules/common.smk"


validate(config, "workflow/schemas/config.schema.yaml")


onstart:
    start_pool_server()


rule all:
    input:
        ALL_TARGETS,
    default_target: True


include: "workflow/rules/theory.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/gradients.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
