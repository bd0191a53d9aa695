"""Anti-collapse regularisers for the demo JEPA: SIGReg (LeJEPA) and VICReg.

Both act on a batch of embeddings z (N, D). Neither needs a second network.
"""

from __future__ import annotations

import torch


def epps_pulley(projections: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Epps-Pulley statistic of each column of (N, M) against N(0, 1) -> (M,).

    N * integral over t of |phi_empirical(t) - exp(-t^2/2)|^2 * exp(-t^2/2) dt,
    by the trapezoid rule on [0, t_max] (the integrand is even, hence x2).
    """
    n = projections.shape[0]
    t = torch.linspace(0.0, t_max, knots, device=projections.device, dtype=projections.dtype)
    xt = projections.unsqueeze(-1) * t  # (N, M, K)
    real = torch.cos(xt).mean(0)  # (M, K)
    imag = torch.sin(xt).mean(0)
    gauss = torch.exp(-0.5 * t * t)
    integrand = ((real - gauss) ** 2 + imag**2) * gauss  # (M, K)
    return 2.0 * n * torch.trapezoid(integrand, t, dim=-1)


def sigreg(z: torch.Tensor, directions: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """SIGReg: mean Epps-Pulley statistic of z projected on random unit directions (fresh each call)."""
    a = torch.randn(z.shape[1], directions, generator=generator, device=z.device, dtype=z.dtype)
    a = a / a.norm(dim=0, keepdim=True)
    return epps_pulley(z @ a).mean()


def vicreg(z: torch.Tensor, variance_weight: float = 1.0, covariance_weight: float = 0.04) -> torch.Tensor:
    """VICReg's variance hinge (std >= 1 per dimension) and off-diagonal covariance penalty.

    The weights keep VICReg's 25 : 25 : 1 ratio to a prediction loss of weight 1.
    """
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + 1e-4)
    variance = torch.relu(1.0 - std).mean()
    cov = (z.T @ z) / (z.shape[0] - 1)  # (D, D)
    off = cov - torch.diag(torch.diag(cov))
    return variance_weight * variance + covariance_weight * (off**2).sum() / z.shape[1]
