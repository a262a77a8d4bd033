"""Product: the solver-settings table (`flash-restore tune` grid search, `tune-merge`)."""
