"""Product: `flash-restore report-models` (measurements of the shipped models, figures for docs and cards)."""

# what `report-models --only` can redo; here, not in the measurements, so the CLI names them without loading torch
SECTIONS = ("autoencoder", "severity", "estimator", "ldm", "step", "e2e")
