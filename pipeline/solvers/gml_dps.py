"""GML-DPS (method §5.2): LDPS plus a latent "gluing" term.

Objective ζ·‖r‖ + γ·‖ẑ0 − E0(D0(ẑ0))‖₂: both norms unsquared and γ not multiplied by ζ,
as in the reference. E0/D0 act on scaled latents (model.autoencoder.encode/decode).
"""
from __future__ import annotations

from pipeline.solvers.base import number
from pipeline.solvers.ldps import LatentDPS


class GMLDPS(LatentDPS):
    """LDPS whose estimate is also pulled towards a fixed point of E0∘D0."""

    name = "gml_dps"
    label = "GML-DPS"
    defaults = {"step_size": 1.0, "gluing_weight": 0.05, "scaling": "error"}

    def check_config(self, config: dict) -> dict:
        config["gluing_weight"] = number("gluing_weight", config["gluing_weight"])
        return super().check_config(config)

    def glue_target(self, z0_hat, x0, y, operator):
        """The image re-encoded for the gluing term: D0(ẑ0) itself."""
        return x0

    def extra_term(self, z0_hat, x0, y, operator, count):
        z_glued = self.model.autoencoder.encode(self.glue_target(z0_hat, x0, y, operator))
        count["encoder_forward"] += 1
        return self.config["gluing_weight"] * self.norm(z0_hat - z_glued)
