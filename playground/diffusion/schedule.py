"""Noise schedules and the closed-form forward process (seed §6.2).

Notation (DDPM = Ho et al. 2020, arXiv:2006.11239; iDDPM = Nichol & Dhariwal 2021, arXiv:2102.09672):

- β_t: variance of the noise added at step t,      q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I)  (DDPM eq. 2)
- α_t = 1 - β_t,   ᾱ_t = ∏_{s≤t} α_s                                                             (DDPM §2)
- q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I), i.e. x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε                    (DDPM eq. 4)
- q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I), β̃_t = (1-ᾱ_{t-1}) / (1-ᾱ_t) · β_t                     (DDPM eq. 7)
- SNR(t) = ᾱ_t / (1-ᾱ_t)                                         (Kingma et al. 2021, "Variational DMs")

Timesteps are 0-based as in diffusers: t = 0 … T-1, and ᾱ_{-1} := 1. Every tensor is float32 and is
computed exactly as diffusers computes ``betas`` / ``alphas_cumprod``, so our samplers can be tested
bit-for-bit against ``DDPMScheduler`` / ``DDIMScheduler``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

KINDS = ("linear", "cosine")
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def linear_betas(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (§4: β_1 = 1e-4 … β_T = 0.02, T = 1000), the seed's ``NoiseSchedule``."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """iDDPM eq. 17 without the normalisation: f(t) = cos²(((t + s) / (1 + s)) · π/2), t ∈ [0, 1]."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(timesteps: int = 1000, max_beta: float = 0.999) -> torch.Tensor:
    """iDDPM's cosine schedule: ᾱ_t = f(t)/f(0) (eq. 17), β_t = 1 - ᾱ_t/ᾱ_{t-1}, clipped at 0.999
    (iDDPM §3.2, "to prevent singularities at the end of the diffusion process near t = T").

    Computed in float64 and rounded once, exactly like diffusers' ``betas_for_alpha_bar``
    (``beta_schedule="squaredcos_cap_v2"``)."""
    betas = [min(1 - cosine_alpha_bar((i + 1) / timesteps) / cosine_alpha_bar(i / timesteps), max_beta)
             for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def _gather(v: torch.Tensor, t: torch.Tensor | int, ndim: int) -> torch.Tensor:
    """v[t] shaped (B, 1, 1, …) to broadcast against a batch with ``ndim`` dimensions."""
    t = torch.as_tensor(t, dtype=torch.long, device=v.device)
    out = v[t]
    return out.reshape(*out.shape, *([1] * (ndim - out.dim())))


class NoiseSchedule:
    """All per-timestep constants of one schedule (1-D float32 tensors of length T).

    Build it with :func:`make_schedule`. Indexing is 0-based like diffusers (t = 0 … T-1)."""

    def __init__(self, kind: str, betas: torch.Tensor, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
        assert betas.dim() == 1 and betas.dtype == torch.float32
        self.kind, self.beta_start, self.beta_end = kind, beta_start, beta_end
        self.betas = betas                                                   # β_t
        self.alphas = 1.0 - betas                                            # α_t
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)                  # ᾱ_t (diffusers: alphas_cumprod)
        self.alpha_bars_prev = torch.cat([torch.ones(1), self.alpha_bars[:-1]])  # ᾱ_{t-1}, ᾱ_{-1} = 1
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()                        # √ᾱ_t    (eq. 4 mean)
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()      # √(1-ᾱ_t) (eq. 4 std)
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)  # β̃_t (eq. 7)
        self.snr = self.alpha_bars / (1.0 - self.alpha_bars)                 # SNR(t)

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, T={self.timesteps})"

    @property
    def timesteps(self) -> int:
        """T, the number of training timesteps."""
        return int(self.betas.shape[0])

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) in one jump (DDPM eq. 4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε.

        ``t`` is an int or a (B,) tensor of timesteps; ``noise`` is ε ~ N(0, I), shaped like ``x0``
        (explicit, so that callers control the randomness)."""
        a = _gather(self.sqrt_alpha_bars.to(x0.device), t, x0.dim())
        s = _gather(self.sqrt_one_minus_alpha_bars.to(x0.device), t, x0.dim())
        return a * x0 + s * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t: eq. 4 solved for x_0 (DDPM eq. 15; DDIM eq. 12)."""
        ab = _gather(self.alpha_bars.to(x_t.device), t, x_t.dim())
        return (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments that make a diffusers scheduler use this very schedule."""
        return {"num_train_timesteps": self.timesteps, "beta_schedule": DIFFUSERS_BETA_SCHEDULE[self.kind],
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": "epsilon"}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "timesteps": self.timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end}


def make_schedule(kind: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """``kind`` in {linear (DDPM, the seed's), cosine (iDDPM eq. 17)}; T = ``timesteps``."""
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
    assert timesteps >= 2
    betas = linear_betas(timesteps, beta_start, beta_end) if kind == "linear" else cosine_betas(timesteps)
    return NoiseSchedule(kind, betas, beta_start, beta_end)
