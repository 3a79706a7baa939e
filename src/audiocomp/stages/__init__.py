"""One module per command: `run(...)` does the stage's work inside a run directory."""
