"""Product: the paper-reproduction suite behind `flash-restore evaluate` (cells, their store, the report)."""
