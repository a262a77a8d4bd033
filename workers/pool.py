"""The actors of one stage, with bounded calls in flight and resubmission when one dies.

Why: a dead actor must never hang the job or lose its work (ray#62746). Each call is
remembered with its arguments; when it fails with `RayActorError` the pool waits for Ray to
restart the actor (its `ping` returns a new incarnation id, counted as a restart), then
resubmits them to a live actor. After `max_attempts` the arguments are given back as
lost, and the caller turns it into error rows rather than looping forever.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from pipeline.execution.scheduler import CallPool


@dataclass
class Call:
    actor: int
    args: tuple
    attempts: int
    extra: list = field(default_factory=list)  # further return refs (num_returns > 1)


class StagePool(CallPool):
    def __init__(self, stage: str, factory: Callable[[int], Any], size: int, method: str, depth: int = 2,
                 num_returns: int = 1, max_attempts: int = 3, restart_timeout_s: float = 300.0):
        self.stage, self.method, self.depth, self.num_returns = stage, method, depth, num_returns
        self.factory, self.size = factory, size
        self.handles: dict[int, Any] = {}             # live actors
        self.created: list = []                       # every actor made, to kill at the end
        self.first_ping: dict[int, Any] = {}
        self.load: Counter = Counter()
        self.calls: dict[Any, Call] = {}
        self.incarnations: dict[int, str] = {}
        self.restarts = self.resubmitted = 0
        self.max_attempts, self.restart_timeout_s = max_attempts, restart_timeout_s
        self.last_error: Exception | None = None

    def start(self) -> None:
        """Create the actors and wait until each is up: a model that does not load fails the
        job before anything is written (the actor's creation error is raised)."""
        self.ensure()
        self.incarnations = dict(zip(self.first_ping, ray.get(list(self.first_ping.values()))))

    def ensure(self) -> None:
        """Create the actors if not yet done."""
        if not self.created:
            for i in range(self.size):
                h = self.factory(i)
                self.handles[i] = h
                self.created.append(h)
                self.first_ping[i] = h.ping.remote()

    # --- submitting -----------------------------------------------------------------
    def free(self) -> bool:
        self.ensure()
        return any(self.load[i] < self.depth for i in self.handles)

    def submit(self, args: tuple, prefer: int | None = None, attempts: int = 0, force: bool = False) -> int:
        """Call the stage method with `args` (object refs among them are resolved by Ray in the
        actor) on the preferred actor if alive, else the least loaded; returns its index."""
        self.ensure()
        if not self.handles:
            raise RuntimeError(f"every {self.stage} actor is dead; the job cannot go on (rerun to resume); "
                               f"last error: {self.last_error}")
        idx = prefer if prefer in self.handles else min(self.handles, key=lambda i: self.load[i])
        if not force and self.load[idx] >= self.depth:
            raise RuntimeError(f"{self.stage} actor {idx} is full")
        method = getattr(self.handles[idx], self.method)
        if self.num_returns > 1:
            refs = method.options(num_returns=self.num_returns).remote(*args)
            ref, extra = refs[0], list(refs[1:])
        else:
            ref, extra = method.remote(*args), []
        self.calls[ref] = Call(idx, args, attempts, extra)
        self.load[idx] += 1
        return idx

    # --- completing -----------------------------------------------------------------
    def finish(self, ref) -> tuple[str, Any, Any, list]:
        """('ok', args, value, extra refs) | ('retried', …) | ('lost', args, None, [])."""
        call = self.calls.pop(ref)
        self.load[call.actor] -= 1
        try:
            return "ok", call.args, ray.get(ref), call.extra
        except RayActorError as exc:
            self.last_error = exc
            self._actor_failed(call.actor)
            if call.attempts + 1 >= self.max_attempts:
                return "lost", call.args, None, []
            self.resubmitted += 1
            self.submit(call.args, prefer=call.actor, attempts=call.attempts + 1, force=True)
            return "retried", call.args, None, []

    def _actor_failed(self, idx: int) -> None:
        """Wait for Ray to restart actor `idx`; count a restart once per new incarnation."""
        if idx not in self.handles:
            return
        if idx not in self.incarnations:  # the first incarnation answered its ping, or died before
            try:
                self.incarnations[idx] = ray.get(self.first_ping[idx], timeout=1.0)
            except (RayActorError, GetTimeoutError):
                self.incarnations[idx] = None
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            try:
                new = ray.get(self.handles[idx].ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except RayActorError as exc:
                self.last_error = exc
                if "unavailable" in type(exc).__name__.lower() and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                del self.handles[idx]  # out of restarts: its work goes to the others
                return
            except GetTimeoutError:
                del self.handles[idx]
                return
        if new != self.incarnations.get(idx):
            self.incarnations[idx] = new
            self.restarts += 1
