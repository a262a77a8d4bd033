"""flash-restore's restoration library, pure PyTorch, no Ray. One folder per concept, in
floors (docs/architecture.md): `io/`, `sampling/`, `quality/` at the bottom; `operators/`,
`models/`, `solvers/`, `restoration/` (the method), `execution/` (one job's plan and run);
`corpus/`, `training/`; and the products on top: `inspection/`, `tuning/`, `model_report/`,
`reproduction/`."""

from pipeline.io.storage import use_retry_policy

use_retry_policy()  # object storage retries transient faults in every process that uses the library
