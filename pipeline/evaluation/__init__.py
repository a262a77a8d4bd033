"""Measuring results: image metrics, no-reference quality, inspection of an output, solver tuning and report figures."""
