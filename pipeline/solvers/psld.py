"""PSLD as FlashDiffusion runs it (method §5.3): GML-DPS gluing to the projected image.

x_corr = Âᵀ(y) + D0(ẑ0) − Âᵀ(Â(D0(ẑ0))) with Âᵀ = operator.adjoint_pm, objective
ζ‖r‖ + γ‖ẑ0 − E0(x_corr)‖. Needs the exact transpose, so linear operators only.
"""
from __future__ import annotations

from pipeline.solvers.gml_dps import GMLDPS


class PSLD(GMLDPS):
    """GML-DPS with the measurement-projected image fed back into the encoder."""

    name = "psld"
    label = "PSLD"
    defaults = {"step_size": 1.0, "gluing_weight": 0.1, "scaling": "error"}
    needs_linear = True

    def glue_target(self, z0_hat, x0, y, operator):
        return operator.adjoint_pm(y) + x0 - operator.adjoint_pm(operator.forward_pm(x0))
