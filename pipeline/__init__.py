"""flash-restore's restoration library, pure PyTorch, no Ray. One folder per concept:
`restoration/` (the method), `operators/`, `solvers/`, `models/`, `execution/` (one job's
plan and run), `io/` (archives in, results out), `evaluation/`, `training/`, `corpus/`."""
