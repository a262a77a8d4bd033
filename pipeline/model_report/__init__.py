"""Product: `flash-restore report-models` (measurements of the shipped models, figures for docs and cards)."""
