"""`audiocomp run PIPELINE.yaml`: chain stages, each reading its parent's run, reusing finished work.

A pipeline file names config files and overrides, then the stages in order:

    base: [../base.yaml, ../data/synth.yaml]   # config files, relative to this file
    set: [train.epochs=5]                      # overrides
    stages:
      - {id: data, stage: prepare}
      - {id: fp32, stage: train, from: data, config: [../models/cnn.yaml]}
      - {id: pruned, stage: prune, from: fp32, set: [prune.sparsity=0.5]}
      - {id: eval, stage: eval, from: pruned}
      - {id: table, stage: report}              # from: all earlier stages unless listed

A stage without a parent starts from `base` + `set`; a stage with one starts from its parent's resolved
config (as `audiocomp eval --from RUN` does) and adds its own `config` files and `set`. The stages and what
they read come from stages/registry.py.

Each run is named by the one naming rule (stages/naming.py): its stage, the config sections that stage
reads and its parent run's name (itself such a name), so a second `run` reuses every finished stage (and
runs that `audiocomp train`, `eval`, ... made with the same settings), and an edit recomputes only the
stages it reaches and their descendants. A claim lock per run name makes concurrent pipelines on one runs
dir (two sweeps, `--jobs N`) wait for each other instead of writing the same run twice.

    schema.py   the file's schema and graph checks      plan.py     configs and run names, no work
    claims.py   the claim locks                         execute.py  running it, pipeline.json
"""
from .claims import claim
from .execute import default_out, print_fn, run
from .plan import Step, ancestors, describe, plan, split_overrides
from .schema import PipelineSpec, StageSpec, check_graph, load_pipeline, schema_error

__all__ = ["PipelineSpec", "StageSpec", "Step", "ancestors", "check_graph", "claim", "default_out", "describe",
           "load_pipeline", "plan", "print_fn", "run", "schema_error", "split_overrides"]
