"""The Lens inference sampler schedule: empirical μ and the FlowMatch Euler scheduler.

Lens samples with diffusers' ``FlowMatchEulerDiscreteScheduler`` using the checkpoint's
scheduler config (dynamic, exponential time shift) and a μ computed by the pipeline
from the image token count L and the number of steps N (official code: empirical μ and scheduler):

- L > 4300: μ = a2·L + b2 (independent of N);
- otherwise μ interpolates linearly in N between fits at 10 and 200 steps.

So μ **jumps** at 4300/4301 tokens: 1440² samples are shifted *less* than 1024².
The scheduler input is ``linspace(1, 1/N, N)``; it shifts in float32 with
``σ = e^μ / (e^μ + 1/σ_in - 1)``, appends a final 0 and sets ``t = 1000·σ``.

Used in chapter 3 (flow matching) and by the pipeline.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

__all__ = [
    "OFFICIAL_SCHEDULER_CONFIG",
    "compute_empirical_mu",
    "make_scheduler",
    "sigma_inputs",
    "official_sigmas",
    "transformer_timesteps",
]

# scheduler/scheduler_config.json of the official checkpoint [captured].
OFFICIAL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "use_dynamic_shifting": True,
    "time_shift_type": "exponential",
    "shift": 3.0,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "invert_sigmas": False,
    "shift_terminal": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "stochastic_sampling": False,
}

_A1, _B1 = 8.73809524e-05, 1.89833333
_A2, _B2 = 0.00016927, 0.45666666


def compute_empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """Official μ (Python float64); same constants as diffusers' FLUX.2 pipeline."""
    L = image_seq_len
    if L > 4300:
        return float(_A2 * L + _B2)
    m_200 = _A2 * L + _B2
    m_10 = _A1 * L + _B1
    slope = (m_200 - m_10) / 190.0
    intercept = m_200 - 200.0 * slope
    return float(slope * num_steps + intercept)


def make_scheduler(**overrides) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler with the official config (``overrides`` replace keys, for experiments)."""
    return FlowMatchEulerDiscreteScheduler.from_config({**OFFICIAL_SCHEDULER_CONFIG, **overrides})


def sigma_inputs(num_steps: int) -> np.ndarray:
    """The pipeline's unshifted sigma input ``linspace(1, 1/N, N)`` (float64)."""
    if int(num_steps) < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_steps}.")
    return np.linspace(1.0, 1.0 / num_steps, num_steps)


def official_sigmas(
    num_steps: int,
    image_seq_len: int,
    scheduler: FlowMatchEulerDiscreteScheduler | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Run ``set_timesteps`` as the pipeline does; returns ``(sigmas [N+1], timesteps [N], mu)``."""
    scheduler = scheduler if scheduler is not None else make_scheduler()
    mu = compute_empirical_mu(image_seq_len, num_steps)
    scheduler.set_timesteps(sigmas=sigma_inputs(num_steps), device=device, mu=mu)
    return scheduler.sigmas, scheduler.timesteps, mu


def transformer_timesteps(timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What the DiT receives: ``t`` cast to the latent dtype, *then* divided by 1000 (quirk 5).

    In bf16 ``t`` is rounded first (994.19 -> 996), so the DiT sees a quantised σ.
    """
    return timesteps.to(dtype) / 1000
