# Figures from parquet only (mfpipe figures); captions for `snakemake --report` live in
# workflow/report/ (written with the figures).
