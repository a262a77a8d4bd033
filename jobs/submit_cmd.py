"""`flash-restore submit -- restore …` and `flash-restore job status|logs|stop ID`: the Ray Jobs API.

Why through the Jobs API and not `ray.init` from a laptop: the job's driver then runs on
the cluster, survives the submitter's disconnect, and its logs and status stay queryable.
The working directory (the project, its shipped models and configs; not .git, the venv or
outputs) travels as the job's runtime env, so the cluster runs the code that was submitted.
The same thing by hand: `ray job submit --address URL --working-dir . -- flash-restore restore …`.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console()
REPO = Path(__file__).resolve().parent.parent
EXCLUDES = [".git", ".venv", "out", "runs", "tmp", "models/*/checkpoint", "data/corpus", "**/__pycache__",
            "*.egg-info", ".pytest_cache"]  # data/corpus is training data: train jobs read theirs by URL
SUBMITTABLE = ("restore", "estimate", "demo", "train-autoencoder", "train-ldm", "train-severity")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

job_app = typer.Typer(help="Follow, query or stop a submitted job (Ray Jobs API).", no_args_is_help=True)
_ADDRESS = typer.Option(None, "--address", help="Ray dashboard URL (default $RAY_ADDRESS or http://127.0.0.1:8265)")


def use_token_if_present() -> None:
    """Ray ≥ 2.59 starts local clusters with token auth, but its client sends the token only
    under RAY_AUTH_MODE=token: opt in when a token is at hand (a server without auth ignores it)."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def client(address: Optional[str]):
    use_token_if_present()  # before Ray is imported: it reads the mode once
    from ray.job_submission import JobSubmissionClient

    url = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    if "://" not in url:
        url = f"http://{url}"
    try:
        return JobSubmissionClient(url)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(f"no Ray Jobs API at {url}: {exc}") from exc


def follow(c, job_id: str, poll_s: float = 1.0) -> str:
    """Print the job's log as it grows until it ends; return its final status."""
    printed = 0
    while True:
        status = str(getattr(c.get_job_status(job_id), "value", ""))
        logs = c.get_job_logs(job_id)
        if len(logs) > printed:
            console.out(logs[printed:], end="", highlight=False)
            printed = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def submit(ctx: typer.Context, address: Optional[str] = _ADDRESS,
           working_dir: Path = typer.Option(REPO, "--working-dir", help="Uploaded as the job's working directory"),
           env: Optional[List[str]] = typer.Option(None, "--env", help="KEY=VALUE for the job (repeatable)"),
           job_id: Optional[str] = typer.Option(None, "--job-id", help="Submission id (default: generated)"),
           wait: bool = typer.Option(True, "--follow/--no-follow", help="Stream logs until the job ends")):
    """Submit `flash-restore <command> …` (after `--`) to a Ray cluster; exit status follows the job's."""
    args = list(ctx.args)
    try:
        if not args or args[0] not in SUBMITTABLE:
            raise ValueError(f"give the command after --, one of {', '.join(SUBMITTABLE)} "
                             f"(e.g. flash-restore submit -- restore --input … --output …); got {args[:1]}")
        env_vars = {}
        for item in env or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--env {item!r} must look like KEY=VALUE")
            env_vars[key] = value
        if not working_dir.is_dir():
            raise ValueError(f"--working-dir {working_dir} is not a folder")
        c = client(address)
        runtime_env = {"working_dir": str(working_dir), "excludes": EXCLUDES, "env_vars": env_vars}
        sid = c.submit_job(entrypoint="flash-restore " + shlex.join(args), runtime_env=runtime_env,
                           submission_id=job_id)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    console.print(f"submitted job [bold]{sid}[/bold]: flash-restore {shlex.join(args)}")
    if not wait:
        console.print(f"follow with: flash-restore job logs {sid} --follow")
        return
    status = follow(c, sid)
    console.print(f"job {sid}: {status}")
    raise typer.Exit(code=0 if status == "SUCCEEDED" else 1)


@job_app.command("status")
def status(job_id: str, address: Optional[str] = _ADDRESS):
    """Print a job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    console.print(str(getattr(client(address).get_job_status(job_id), "value", "")))


@job_app.command("logs")
def logs(job_id: str, address: Optional[str] = _ADDRESS,
         tail: bool = typer.Option(False, "--follow", help="Keep streaming until the job ends")):
    """Print a job's driver log."""
    c = client(address)
    if tail:
        follow(c, job_id)
    else:
        console.out(c.get_job_logs(job_id), end="", highlight=False)


@job_app.command("stop")
def stop(job_id: str, address: Optional[str] = _ADDRESS):
    """Stop a running job (committed parts stay; resubmitting resumes)."""
    console.print("stopped" if client(address).stop_job(job_id) else "was not running")
