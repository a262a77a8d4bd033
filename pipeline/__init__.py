"""flash-restore's restoration library: operators, schedules, models, severity encoder,
solvers, the Flash wrapper, metrics and sample I/O. Pure PyTorch; knows nothing of Ray."""
