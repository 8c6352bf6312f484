"""Flow matching as Lens trains it: straight paths, velocity targets, logit-normal timesteps.

The whole training objective of Lens (paper §2.1) fits on one screen:

* a clean sample ``x0`` and Gaussian noise ``eps`` are joined by a straight line,
  ``x_t = (1 - t) * x0 + t * eps`` (t = 0 is data, t = 1 is noise; the official sampler's convention);
* the network predicts the constant velocity of that line, ``v = eps - x0``, and is trained with MSE;
* t is drawn from a logit-normal, ``t = sigmoid(mu + s * n)``, ``n ~ N(0, 1)``. The paper fixes the
  location: mu = 1.06 in stage 1 (512², 1024 tokens) and, in stage 2, mu linear in the image-token
  count, 1.0 at 256 tokens to 1.3 at 4096 tokens. It does **not** give the scale s; we use s = 1.0,
  the value of SD3's logit-normal sampling (Esser et al., 2024, "lognorm(0.00, 1.00)") and of minRF,
  and make it a config value (``flow.logit_normal_scale``).
* classifier-free guidance needs an unconditional model: with probability ``caption_dropout`` a
  training caption is replaced by the *official empty negative*: zero features with an all-False mask
  (official code: negative prompts), which the transformer treats exactly like "no text at all". The paper
  does not state a dropout rate; we use 0.1, the common choice for text-to-image flow models (SD3, PixArt use
  10 %).
* what the network outputs is a choice of parameterisation, not of objective. Lens outputs the velocity
  (``prediction="velocity"``, the official weights). A network may instead output the clean sample
  (``prediction="x"``, JiT: Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"),
  turned into a velocity by ``v = (x_t - x̂0) / t`` (t floored at ``X_PREDICTION_T_MIN``) and trained
  with the same velocity MSE. Clean images lie on a low-dimensional manifold while noise fills every
  channel, so a network narrow for its token width can still output x̂0 but not v: the CPU recipe of
  chapter 4 scored 0.000 on GenEval with velocity outputs and draws clean backgrounds only with x-prediction
  (``benchmarks/results/learning_ablation.json``).

Sampling (Euler steps on the learned velocity, CFG with Lens's per-token norm rescale) is here in its
plain form for training-time previews and the 2-D chapter; the exact official schedule (empirical mu,
float32 shifting) lives in ``lenslib.model.schedule``.

Used in chapter 3 (the idea on 2-D data) and chapter 4 (training), and by ``lenslib.train.trainer``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from lenslib.model.cfg import norm_rescaled_cfg

__all__ = [
    "STAGE1_MU",
    "LOGIT_NORMAL_SCALE",
    "CAPTION_DROPOUT",
    "interpolate",
    "velocity_target",
    "stage2_mu",
    "training_mu",
    "sample_timesteps",
    "logit_normal_pdf",
    "drop_captions",
    "PREDICTIONS",
    "X_PREDICTION_T_MIN",
    "velocity_from_x",
    "predict_velocity",
    "flow_matching_loss",
    "time_shift",
    "euler_sigmas",
    "cfg_rescale",
    "euler_sample",
]

# Paper §2.1: stage-1 location of the logit-normal (512², 1024 image tokens).
STAGE1_MU = 1.06
# Paper §2.1: stage-2 mu is linear in the token count through these two points.
STAGE2_MU_POINTS = ((256, 1.0), (4096, 1.3))
# Not in the paper: SD3's and minRF's logit-normal scale.
LOGIT_NORMAL_SCALE = 1.0
# Not in the paper: 10 % caption dropout, the usual rate for CFG training.
CAPTION_DROPOUT = 0.1
# What the network outputs: the velocity (Lens) or the clean sample (JiT), see predict_velocity.
PREDICTIONS = ("velocity", "x")
# JiT's floor on t in v = (x_t - x0_hat) / t: keeps the last steps' division bounded (JiT uses 0.05).
X_PREDICTION_T_MIN = 0.05


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time ``t`` on the straight path from data ``x0`` (t=0) to ``noise`` (t=1).

    ``t`` has one value per sample ([B]); it is broadcast over the remaining axes.
    """
    t = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / dt along the path: ``noise - x0`` (the same at every t)."""
    return noise - x0


def stage2_mu(num_tokens: float | torch.Tensor) -> float | torch.Tensor:
    """Stage-2 logit-normal location: linear in the token count, 1.0 at 256 and 1.3 at 4096 tokens.

    The paper states the line only between those points; stage-2 buckets slightly above 4096 tokens
    (e.g. 1472×736 → 4232 tokens) continue the same line (1.31) rather than clamping.
    """
    (n0, m0), (n1, m1) = STAGE2_MU_POINTS
    return m0 + (m1 - m0) * (num_tokens - n0) / (n1 - n0)


def training_mu(schedule: str, num_tokens: int, mu: float | None = None) -> float:
    """The logit-normal location for a batch of ``num_tokens`` image tokens.

    ``schedule`` is ``"constant"`` (use ``mu``, stage 1: 1.06) or ``"tokens"`` (stage 2, :func:`stage2_mu`).
    """
    if schedule == "constant":
        return STAGE1_MU if mu is None else float(mu)
    if schedule == "tokens":
        return float(stage2_mu(num_tokens))
    raise ValueError(f"unknown mu schedule {schedule!r}: use 'constant' (stage 1) or 'tokens' (stage 2).")


def sample_timesteps(
    n: int,
    mu: float = STAGE1_MU,
    scale: float = LOGIT_NORMAL_SCALE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` training times from the logit-normal: ``sigmoid(mu + scale * N(0, 1))`` (float32).

    mu > 0 pushes t towards 1 (noisier inputs): large images keep their structure under more noise,
    so they need more training signal there — hence mu grows with the token count in stage 2.
    """
    z = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
    return torch.sigmoid(mu + scale * z)


def logit_normal_pdf(
    t: torch.Tensor, mu: float = STAGE1_MU, scale: float = LOGIT_NORMAL_SCALE
) -> torch.Tensor:
    """Density of the logit-normal on (0, 1): ``N(logit t; mu, s²) / (t (1 - t))``. For plots and tests."""
    t = t.double()
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-0.5 * ((logit - mu) / scale) ** 2) / (scale * math.sqrt(2 * math.pi) * t * (1 - t))


def drop_captions(
    text: Sequence[torch.Tensor],
    mask: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Replace each caption with probability ``p`` by the official empty negative.

    The empty negative is zero features with an all-False mask (official code: negative prompts); masked text
    keys are invisible to the image tokens, so this is exactly the unconditional input CFG uses at sampling.
    Returns ``(text, mask, dropped)`` with ``dropped`` a [B] bool tensor. One draw per sample.
    """
    b = mask.shape[0]
    dropped = torch.rand(b, generator=generator, device=mask.device) < p
    if not bool(dropped.any()):
        return list(text), mask, dropped
    keep = (~dropped).reshape(b, 1, 1)
    text = [torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)) for x in text]
    mask = mask & (~dropped)[:, None]
    return text, mask, dropped


def velocity_from_x(
    x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, t_min: float = X_PREDICTION_T_MIN
) -> torch.Tensor:
    """The velocity ``(x_t - x̂0) / t`` implied by a clean-sample prediction (t floored at ``t_min``).

    On the path ``x_t = (1 - t) x0 + t eps`` the velocity ``eps - x0`` equals ``(x_t - x0) / t``.
    """
    t = t.reshape(-1, *([1] * (x_t.dim() - 1))).float().clamp_min(t_min)
    return ((x_t.float() - x0_hat.float()) / t).to(x0_hat.dtype)


def predict_velocity(
    model: Callable[..., torch.Tensor],
    x_t: torch.Tensor,
    t: torch.Tensor,
    prediction: str = "velocity",
    **model_kwargs,
) -> torch.Tensor:
    """The velocity at ``x_t`` of a network that outputs ``prediction`` ("velocity" or "x").

    Training (``flow_matching_loss``) and every sampler go through here, so a model is always read the
    way it was trained. ``model(x_t, timestep=t, **model_kwargs)``; t is σ ∈ [0, 1] as the official
    transformer expects.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    out = model(x_t, timestep=t.to(x_t.dtype), **model_kwargs)
    return out if prediction == "velocity" else velocity_from_x(x_t, out, t)


def flow_matching_loss(
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    prediction: str = "velocity",
    **model_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE between the model's velocity at ``x_t`` and the target ``noise - x0``.

    ``model(x_t, timestep=t, **model_kwargs)`` returns a tensor shaped like ``x0``: the velocity, or the
    clean sample with ``prediction="x"`` (then converted by :func:`velocity_from_x`, so the loss is
    JiT's "v-loss"). The timestep passed is σ = t ∈ [0, 1], as the official transformer expects.
    Returns ``(loss, per_sample)`` where ``per_sample`` [B] is the mean squared error of each sample
    (minRF's loss-vs-t diagnostic).
    """
    x_t = interpolate(x0, noise, t)
    v = predict_velocity(model, x_t, t, prediction, **model_kwargs)
    err = (v.float() - velocity_target(x0, noise).float()) ** 2
    per_sample = err.reshape(err.shape[0], -1).mean(dim=1)
    return per_sample.mean(), per_sample


def time_shift(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """The inference-side exponential shift ``e^mu / (e^mu + (1/σ - 1))`` (FLUX/Lens, official code:
    scheduler).

    Shifting moves Euler steps towards σ = 1, where large images decide their layout.
    """
    e = math.exp(mu)
    return e / (e + (1 / sigmas - 1))


def euler_sigmas(num_steps: int, mu: float | None = None) -> torch.Tensor:
    """``num_steps + 1`` noise levels from 1 to 0: linspace(1, 1/N, N), optionally shifted, then 0."""
    sig = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64).float()
    if mu is not None:
        sig = time_shift(sig, mu)
    return torch.cat([sig, sig.new_zeros(1)])


def cfg_rescale(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, rescale: bool = True
) -> torch.Tensor:
    """Classifier-free guidance, ``v_u + s (v_c - v_u)``, with Lens's per-token norm rescale.

    Lens keeps the guided *direction* but gives each token (last axis) the norm of the conditional
    prediction (official code: denoising loop); this stops large guidance from inflating the velocity.
    """
    if rescale:
        return norm_rescaled_cfg(v_cond, v_uncond, scale)
    return v_uncond + scale * (v_cond - v_uncond)


@torch.no_grad()
def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int = 20,
    guidance: float = 1.0,
    mu: float | None = None,
    rescale: bool = True,
    return_path: bool = False,
):
    """Integrate dx/dσ = v from σ = 1 (noise) to σ = 0 with Euler steps, using CFG.

    ``velocity(x, sigma[B], conditional)`` returns the model's velocity with (True) or without (False)
    the condition. With ``guidance == 1`` only the conditional branch runs. Returns the
    sample, or ``(sample, [x at every σ])`` with ``return_path``.
    """
    sigmas = euler_sigmas(num_steps, mu).to(noise.device)
    x = noise
    path = [x]
    for i in range(num_steps):
        s = sigmas[i].expand(x.shape[0]).to(x.dtype)
        v_c = velocity(x, s, True)
        # At guidance 1 the rescaled combination equals v_c up to rounding: skip the second pass.
        v = v_c if guidance == 1.0 else cfg_rescale(v_c, velocity(x, s, False), guidance, rescale)
        x = (x.float() + (sigmas[i + 1] - sigmas[i]) * v.float()).to(noise.dtype)
        path.append(x)
    return (x, path) if return_path else x
