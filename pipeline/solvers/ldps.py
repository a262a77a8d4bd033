"""Latent DPS (method §5.1): a gradient step on the unsquared measurement error.

z_{t−1} = z'_{t−1} − ∇_{z_t}[ζ·‖r‖₂], r = y − Â(D0(ẑ0(z_t))), Â = operator.forward_pm,
applied at every reverse step including the last. The norm is not squared (the reference
hard-codes scaling 'error'); 'std' (‖r‖²/σ_y², σ_y = 2·noise_sigma in [−1,1]) and 'none'
(‖r‖²) are the generic class's alternatives, unused by any released config.
"""
from __future__ import annotations

import torch

from pipeline.solvers.base import Solver, number

SCALINGS = ("error", "std", "none")


class LatentDPS(Solver):
    """LDPS: ζ·‖y − Â(D0(ẑ0))‖ differentiated through decoder and denoiser w.r.t. z_t."""

    name = "ldps"
    label = "Latent-DPS"
    defaults = {"step_size": 1.0, "scaling": "error"}
    differentiable = True

    def check_config(self, config: dict) -> dict:
        config["step_size"] = number("step_size", config["step_size"])
        if config["scaling"] not in SCALINGS:
            raise ValueError(f"hyperparameter scaling must be one of {SCALINGS}, got {config['scaling']!r}")
        return config

    def measurement_term(self, x0: torch.Tensor, y: torch.Tensor, operator) -> torch.Tensor:
        """Per-sample ζ·(scaled) residual of the decoded estimate."""
        r = y - operator.forward_pm(x0)
        scaling = self.config["scaling"]
        if scaling == "error":
            term = self.norm(r)
        else:
            term = r.flatten(1).pow(2).sum(dim=1)
            if scaling == "std":
                sigma_y = 2.0 * operator.noise_sigmas.to(device=r.device, dtype=r.dtype)
                if (sigma_y <= 0).any():
                    keys = [operator.keys[i] for i in (sigma_y <= 0).nonzero().flatten().tolist()]
                    raise ValueError(f"{self.name}: scaling 'std' needs noise_sigma > 0; keys {keys}")
                term = term / sigma_y ** 2
        return self.config["step_size"] * term

    def extra_term(self, z0_hat, x0, y, operator, count) -> torch.Tensor | float:
        """Further per-sample loss terms (the gluing terms of GML-DPS and PSLD)."""
        return 0.0

    def correct(self, z_t, z_prev, z0_hat, y, operator, k, gens, count):
        x0 = self.model.autoencoder.decode(z0_hat)
        count["decoder_forward"] += 1
        loss = self.measurement_term(x0, y, operator) + self.extra_term(z0_hat, x0, y, operator, count)
        # Rows are independent, so the gradient of the sum is each row's own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), z_t)
        count["decoder_backward"] += 1
        return z_prev.detach() - grad
