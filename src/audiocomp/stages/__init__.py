"""One module per stage (`run(...)` does the stage's work inside a run directory), the stage registry, the
naming rule and the stage context they share, and what orchestrates them: pipelines, sweeps, the demo."""
