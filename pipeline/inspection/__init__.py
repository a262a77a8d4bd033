"""Product: what `flash-restore inspect` shows of an output (summaries, examples, preview sheet, plots)."""
