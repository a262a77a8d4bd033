"""flash-restore's restoration library, pure PyTorch, no Ray. One folder per concept:
`restoration/` (the method), `operators/`, `solvers/`, `models/`, `execution/` (one job's
plan and run), `io/` (archives in, results out), `evaluation/`, `training/`, `corpus/`."""

from pipeline.io.storage import use_retry_policy

use_retry_policy()  # object storage retries transient faults in every process that uses the library
