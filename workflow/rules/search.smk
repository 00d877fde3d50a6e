# Boundary search (mfpipe.search): a study with a `search` section trains its cells in rounds.
#
#   checkpoint search_round   results/search/<study>/round<r>/   plan.json + part<i>.json
#       plans round r from the cells that exist (the fit's trainability rule); round r > 0
#       waits for every job of round r − 1.  A changed study spec, fit section or engine
#       version (params) replans from round 0; each plan reuses every cell that exists.
#   rule search_part          results/search/<study>/trained/round<r>-part<i>.json
#       trains one job of the round: `mfpipe train-cell --cells-file` (stacked bundles,
#       --skip-existing keeps cells that already hold their identity), the stamp lists them.
#   rule search_cells         results/search/<study>/cells.txt
#       after the last round (no cell left to train, or max_rounds): the cells that exist,
#       which the aggregate reads.
#
# Snakemake learns a round's jobs only when its plan is written, so `snakemake -n` shows the
# round(s) it can see and says that the DAG is updated after each checkpoint; `mfpipe status`
# and the message below give the search's state.


def search_spec(wildcards):
    """What a search's plans depend on, as JSON (`mfpipe search --config-json`)."""
    return json.dumps({"studies": {wildcards.study: config["studies"][wildcards.study]},
                       "fit": config.get("fit") or {}, "resources": config.get("resources") or {}},
                      sort_keys=True, separators=(",", ":"))


def search_plan(study, round_index):
    """Round ``round_index``'s plan.json (its checkpoint must have run)."""
    directory = checkpoints.search_round.get(study=study, round=str(round_index)).output[0]
    with open(os.path.join(directory, "plan.json")) as fh:
        return json.load(fh)


def search_part_stamps(study, round_index):
    return [f"results/search/{study}/trained/round{round_index}-part{job['part']}.json"
            for job in search_plan(study, round_index)["jobs"]]


def search_round_input(wildcards):
    """Round 0: the study's data files (prepared first, as for a grid; -n shows it), later
    rounds: every job of the round before."""
    r = int(wildcards.round)
    if r == 0:
        return sorted({DATA_FILE.format(dataset=c.params["dataset"])
                       for c in SEARCHED[wildcards.study].cells})
    return search_part_stamps(wildcards.study, r - 1)


def search_rounds(wildcards):
    """Every round's plan and jobs, up to the plan with nothing left to train."""
    files = []
    for r in range(SEARCHED[wildcards.study].search["max_rounds"] + 1):
        files.append(f"results/search/{wildcards.study}/round{r}")
        stamps = search_part_stamps(wildcards.study, r)
        if not stamps:
            break
        files += stamps
    return files


def search_job(wildcards):
    return search_plan(wildcards.study, wildcards.round)["jobs"][int(wildcards.part)]


checkpoint search_round:
    input:
        search_round_input,
    output:
        directory("results/search/{study}/round{round}"),
    log:
        "logs/search/{study}/round{round}.log",
    params:
        spec=search_spec,
        engine=ENGINE["train"],
    localrule: True
    priority: EARLY_PRIORITY
    wildcard_constraints:
        study=_alternatives(list(SEARCHED)),
        round=r"\d+",
    shell:
        "{MFPIPE} pool search --config-json {params.spec:q} --study {wildcards.study} "
        "--round {wildcards.round} -o {output:q} > {log:q} 2>&1"


rule search_part:
    input:
        plan="results/search/{study}/round{round}",
        data=lambda wildcards: DATA_FILE.format(dataset=search_job(wildcards)["dataset"]),
    output:
        "results/search/{study}/trained/round{round}-part{part}.json",
    log:
        "logs/search/{study}/round{round}-part{part}.log",
    params:
        cells=lambda wildcards, input: os.path.join(input.plan, f"part{wildcards.part}.json"),
        engine=ENGINE["train"],
    threads: 1
    priority: lambda wildcards: 1.0 + round(float(search_job(wildcards)["seconds"]), 3)
    resources:
        mem_mb=lambda wildcards, attempt: search_job(wildcards)["mem_mb"],
        runtime=lambda wildcards, attempt: runtime_minutes(search_job(wildcards)["seconds"],
                                                           RESOURCES, attempt),
        gpu=RESOURCES["gpus_per_cell"],
        cells_to_train=lambda wildcards: str(search_job(wildcards)["cells"]),
    wildcard_constraints:
        study=_alternatives(list(SEARCHED)),
        round=r"\d+",
        part=r"\d+",
    shell:
        "{MFPIPE} pool train-cell --cells-file {params.cells:q} --data-dir {DATA_DIR:q} "
        "--device {DEVICE} --skip-existing --stamp {output:q} > {log:q} 2>&1"


rule search_cells:
    input:
        search_rounds,
    output:
        "results/search/{study}/cells.txt",
    log:
        "logs/search/{study}/cells.log",
    params:
        spec=search_spec,
        last=lambda wildcards, input: sum(f.rsplit("/", 1)[-1].startswith("round")
                                          and not f.endswith(".json") for f in input) - 1,
    localrule: True
    priority: EARLY_PRIORITY
    wildcard_constraints:
        study=_alternatives(list(SEARCHED)),
    shell:
        "{MFPIPE} pool search --config-json {params.spec:q} --study {wildcards.study} "
        "--list-cells --last-round {params.last} -o {output:q} > {log:q} 2>&1"


def search_message(name, study):
    """Where a search stands, from its latest plan on disk (no results are read here)."""
    rounds = sorted((int(p.name[5:]) for p in Path("results/search", name).glob("round*")
                     if p.name[5:].isdigit() and (p / "plan.json").exists()), reverse=True)
    limit = study.search["max_rounds"]
    if not rounds:
        return (f"mfpipe search '{name}': round 0 is planned when the run starts (from the cells "
                f"that exist and n0·ξ_c); further rounds follow until every column is bracketed "
                f"(at most {limit}); `mfpipe status` shows its state")
    with open(Path("results/search", name, f"round{rounds[0]}", "plan.json")) as fh:
        s = json.load(fh)["summary"]
    return (f"mfpipe search '{name}': round {s['round']} planned {s['cells_to_train']} cells; "
            f"{s['bracketed']} of {s['columns']} columns bracketed, {s['censored_above']} + "
            f"{s['censored_below']} censored, {s['open']} open"
            + ("; search complete" if s["complete"] else
               f"; more rounds may follow (at most {limit})")
            + " (a changed config replans from round 0, reusing every cell that exists)")


for _name, _study in SEARCHED.items():
    print(search_message(_name, _study), file=sys.stderr)
