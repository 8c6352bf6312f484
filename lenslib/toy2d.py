"""A 2-D world where flow matching can be seen whole: a labelled Gaussian mixture and its exact velocity.

For data drawn from a mixture of isotropic Gaussians, the flow-matching target has a closed form. With
``x_t = (1 - t) x0 + t eps`` and component k (mean m_k, std s), ``x_t | k ~ N((1 - t) m_k, v_k I)`` with
``v_k = (1 - t)^2 s^2 + t^2``, and the best velocity E[eps - x0 | x_t] is the posterior-weighted sum of

    v_k(x) = ((t - (1 - t) s^2) / v_k) (x - (1 - t) m_k) - m_k.

Restricting the components to one label gives the *conditional* field, all components the
*unconditional* one: exactly the two predictions classifier-free guidance combines. A tiny MLP trained
with :func:`lenslib.flow.flow_matching_loss` learns the same field from samples, which shows that the
loss has this field as its minimiser.

Used in chapter 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lenslib import flow

__all__ = ["GaussianMixture2D", "two_class_mixture", "ToyVelocityMLP", "train_toy_velocity"]


@dataclass
class GaussianMixture2D:
    """Equal-weight isotropic Gaussians in 2-D, each with a class label."""

    means: torch.Tensor  # [K, 2]
    labels: torch.Tensor  # [K] int
    std: float = 0.1

    def sample(self, n: int, label: int | None = None, generator: torch.Generator | None = None):
        """``n`` points (and their labels); only components of ``label`` when given."""
        idx = self._components(label)
        pick = idx[torch.randint(len(idx), (n,), generator=generator)]
        x = self.means[pick] + self.std * torch.randn(n, 2, generator=generator)
        return x, self.labels[pick]

    def _components(self, label: int | None) -> torch.Tensor:
        if label is None:
            return torch.arange(len(self.means))
        idx = torch.nonzero(self.labels == label).flatten()
        if len(idx) == 0:
            raise ValueError(
                f"no component has label {label}; labels are {sorted(set(self.labels.tolist()))}"
            )
        return idx

    def nearest_label(self, x: torch.Tensor) -> torch.Tensor:
        """Label of the mode nearest to each point (how a "judge" scores a 2-D sample)."""
        return self.labels[torch.cdist(x.float(), self.means).argmin(dim=1)]

    def velocity(self, x: torch.Tensor, t: torch.Tensor, label: int | None = None) -> torch.Tensor:
        """The exact flow-matching velocity E[eps - x0 | x_t = x] ([N, 2]; t is [N] or a scalar)."""
        x = x.double()
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])[:, None, None]  # [N,1,1]
        m = self.means[self._components(label)].double()[None]  # [1,K,2]
        a, s2 = 1 - t, self.std**2
        var = a * a * s2 + t * t  # [N,1,1]
        d = x[:, None, :] - a * m  # [N,K,2]
        logw = -(d * d).sum(-1, keepdim=True) / (2 * var) - math.log(2 * math.pi) - torch.log(var)
        w = torch.softmax(logw, dim=1)
        v_k = (t - a * s2) / var * d - m
        return (w * v_k).sum(1).float()


def two_class_mixture(std: float = 0.1) -> GaussianMixture2D:
    """Eight Gaussians on a circle of radius 2, labels alternating 0, 1, 0, 1, ... around the circle."""
    angles = torch.tensor([22.5 + 45 * k for k in range(8)]) * math.pi / 180
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.arange(8) % 2
    return GaussianMixture2D(means, labels, std)


class ToyVelocityMLP(nn.Module):
    """v(x, t, label): an MLP on (x, t-embedding, label-embedding); label ``num_classes`` = no label (CFG)."""

    def __init__(self, num_classes: int = 2, width: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, 16)
        self.net = nn.Sequential(
            nn.Linear(2 + 16 + 16, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), 8)), persistent=False)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        ang = timestep[:, None] * self.freqs[None] * math.pi
        temb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
        return self.net(torch.cat([x, temb, self.label(label)], dim=1))


def train_toy_velocity(
    mixture: GaussianMixture2D,
    steps: int = 1500,
    batch: int = 256,
    lr: float = 3e-3,
    mu: float = 0.0,
    scale: float = 1.0,
    label_dropout: float = 0.1,
    seed: int = 0,
):
    """Train :class:`ToyVelocityMLP` with the Lens objective (logit-normal t, MSE on eps - x0, label dropout).

    Returns ``(model, losses)``.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    num_classes = int(mixture.labels.max()) + 1
    model = ToyVelocityMLP(num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        x0, y = mixture.sample(batch, generator=g)
        y = torch.where(torch.rand(batch, generator=g) < label_dropout, torch.full_like(y, num_classes), y)
        t = flow.sample_timesteps(batch, mu, scale, generator=g)
        noise = torch.randn(batch, 2, generator=g)
        loss, _ = flow.flow_matching_loss(model, x0, t, noise, label=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses
