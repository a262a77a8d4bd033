"""The `flash-restore` command line. Each command lives in its own module; this file only registers them."""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dataset-scale image restoration with severity-adaptive latent diffusion.")

# --- command registry: one line per command -------------------------------------------
# (modules are imported lazily inside their functions so `--help` stays fast)

if __name__ == "__main__":
    app()
