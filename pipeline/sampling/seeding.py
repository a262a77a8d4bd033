"""Per-sample random streams.

Every random draw for a sample comes from a generator seeded by (job seed, sample key,
purpose), so a sample's output never depends on its batch, partners, actor or retries.
"""
from __future__ import annotations

import hashlib

import torch

# Purposes get separate streams so that adding a draw in one place never shifts another.
DEGRADATION = "degradation"
NOISE_INJECTION = "noise_injection"
SAMPLER = "sampler"
BASELINE_INIT = "baseline_init"


def sample_seed(job_seed: int, key: str, purpose: str) -> int:
    """A 63-bit seed derived from (job seed, key, purpose) by BLAKE2b: stable across runs and machines."""
    digest = hashlib.blake2b(f"{int(job_seed)}\x00{key}\x00{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_generator(job_seed: int, key: str, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for one sample and one purpose."""
    gen = torch.Generator(device=device)
    gen.manual_seed(sample_seed(job_seed, key, purpose))
    return gen


def generators(job_seed: int, keys: list[str], purpose: str, device: torch.device | str = "cpu") -> list[torch.Generator]:
    return [sample_generator(job_seed, k, purpose, device) for k in keys]


def randn_per_sample(shape: tuple[int, ...], gens: list[torch.Generator], *, dtype=torch.float32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack one standard normal draw of `shape` per generator (drawn on the generator's device)."""
    draws = [torch.randn(shape, generator=g, dtype=dtype, device=g.device) for g in gens]
    return torch.stack(draws).to(device)
