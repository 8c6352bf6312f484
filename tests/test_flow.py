"""Flow matching (lenslib.flow): paths, targets, logit-normal timesteps, caption dropout, Euler + CFG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lenslib import flow


def test_path_endpoints_and_velocity_is_the_time_derivative():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(3)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.ones(3)), eps)
    t, h = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 1e-6
    x0d, epsd = x0.double(), eps.double()
    fd = (flow.interpolate(x0d, epsd, t + h) - flow.interpolate(x0d, epsd, t - h)) / (2 * h)
    torch.testing.assert_close(fd, flow.velocity_target(x0d, epsd), atol=1e-8, rtol=0)


def test_stage_mu_values_from_the_paper():
    # Paper §2.1: 1.0 at 256 tokens, 1.3 at 4096 tokens, linear in between; stage 1 uses 1.06 at 1024.
    assert flow.stage2_mu(256) == pytest.approx(1.0)
    assert flow.stage2_mu(4096) == pytest.approx(1.3)
    assert flow.stage2_mu(1024) == pytest.approx(1.06)  # consistent with stage 1
    assert flow.training_mu("constant", 1024) == pytest.approx(1.06)
    assert flow.training_mu("tokens", 2176) == pytest.approx(1.15)  # midpoint of the line
    with pytest.raises(ValueError, match="constant"):
        flow.training_mu("cosine", 10)


@pytest.mark.parametrize("mu,scale", [(1.06, 1.0), (0.0, 0.5), (1.3, 1.5)])
def test_logit_normal_samples_have_the_stated_location_and_scale(mu, scale):
    g = torch.Generator().manual_seed(1)
    t = flow.sample_timesteps(200_000, mu, scale, generator=g)
    assert t.dtype == torch.float32 and float(t.min()) > 0 and float(t.max()) < 1
    z = torch.logit(t.double())
    assert float(z.mean()) == pytest.approx(mu, abs=0.01)
    assert float(z.std()) == pytest.approx(scale, rel=0.01)
    # the density integrates to 1 and matches a histogram of the samples
    grid = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    pdf = flow.logit_normal_pdf(grid, mu, scale)
    assert float(torch.trapezoid(pdf, grid)) == pytest.approx(1.0, abs=1e-4)
    hist, edges = np.histogram(t.numpy(), bins=20, range=(0, 1), density=True)
    mids = torch.tensor((edges[:-1] + edges[1:]) / 2)
    np.testing.assert_allclose(hist, flow.logit_normal_pdf(mids, mu, scale).numpy(), rtol=0.15, atol=0.05)


def test_larger_mu_means_noisier_training_inputs():
    g = torch.Generator().manual_seed(2)
    lo = flow.sample_timesteps(50_000, 1.0, generator=g).mean()
    hi = flow.sample_timesteps(50_000, 1.3, generator=g).mean()
    assert float(hi) > float(lo) > 0.5


def test_caption_dropout_gives_the_official_empty_negative():
    g = torch.Generator().manual_seed(3)
    text = [torch.randn(1000, 6, 8, generator=g) for _ in range(3)]
    mask = torch.ones(1000, 6, dtype=torch.bool)
    mask[:, 4:] = False
    out, m, dropped = flow.drop_captions(text, mask, 0.1, torch.Generator().manual_seed(4))
    assert 60 < int(dropped.sum()) < 140  # ~10 % of 1000
    for a, b in zip(text, out):
        assert torch.equal(b[~dropped], a[~dropped])
        assert float(b[dropped].abs().max()) == 0.0
    assert not m[dropped].any() and torch.equal(m[~dropped], mask[~dropped])
    same, m0, d0 = flow.drop_captions(text, mask, 0.0)
    assert not d0.any() and torch.equal(m0, mask)


def test_dropped_caption_equals_no_text_in_the_transformer():
    from lenslib.model.presets import get_config
    from lenslib.model.transformer import LensTransformer2DModel

    torch.manual_seed(0)
    model = LensTransformer2DModel(**get_config("cpu-tiny", num_layers=1)).eval()
    x = torch.randn(2, 16, 48)
    text = [torch.randn(2, 5, 384) for _ in range(3)]
    mask = torch.ones(2, 5, dtype=torch.bool)
    dropped_text, dropped_mask, _ = flow.drop_captions(text, mask, 0.999999, torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = model(x, dropped_text, dropped_mask, t, [(1, 4, 4)])
        b = model(x, [torch.zeros(2, 0, 384)] * 3, torch.zeros(2, 0, dtype=torch.bool), t, [(1, 4, 4)])
        c = model(x, text, mask, t, [(1, 4, 4)])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert float((a - c).abs().max()) > 1e-3  # the caption does matter when present


def test_loss_is_zero_for_the_true_velocity_and_mse_otherwise():
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    t = torch.rand(4, generator=g)

    def oracle(x_t, timestep):  # recovers eps - x0 from x_t only through the known pair
        return eps - x0

    loss, per = flow.flow_matching_loss(oracle, x0, t, eps)
    assert float(loss) == 0.0 and per.shape == (4,)
    loss0, per0 = flow.flow_matching_loss(lambda x_t, timestep: torch.zeros_like(x_t), x0, t, eps)
    torch.testing.assert_close(per0, ((eps - x0) ** 2).mean(dim=(1, 2)))


def test_x_prediction_reads_a_clean_sample_as_the_velocity_of_its_path():
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(5, 4, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    t = torch.tensor([0.9, 0.5, 0.2, 0.06, 0.01])

    def x_oracle(x_t, timestep):  # outputs the clean sample
        return x0

    loss, per = flow.flow_matching_loss(x_oracle, x0, t, eps, prediction="x")
    # exact where t >= the floor; below it the velocity is scaled by t / t_min (JiT's clip)
    assert float(per[:4].max()) < 1e-10
    v = flow.velocity_from_x(flow.interpolate(x0, eps, t), x0, t)
    torch.testing.assert_close(v[4], (eps - x0)[4] * 0.01 / flow.X_PREDICTION_T_MIN, atol=1e-5, rtol=1e-5)
    # a velocity model read as an x-predictor (or the reverse) is wrong: the loss sees it
    assert float(flow.flow_matching_loss(x_oracle, x0, t, eps)[0]) > 0.1
    with pytest.raises(ValueError, match="prediction must be one of"):
        flow.flow_matching_loss(x_oracle, x0, t, eps, prediction="epsilon")


def test_euler_with_an_x_predictor_of_one_point_lands_on_it():
    c = torch.tensor([[0.5, -1.0, 2.0]])
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(9))
    velocity = lambda x, s, cond: flow.predict_velocity(lambda x_t, timestep: c.expand_as(x_t), x, s, "x")  # noqa: E731
    torch.testing.assert_close(
        flow.euler_sample(velocity, noise, num_steps=10), c.expand(16, 3), atol=1e-5, rtol=0
    )


def test_euler_with_the_exact_field_lands_on_the_data_point():
    # Data = a single point c: x_s = (1-s) c + s eps, so the exact velocity is (x - c) / s and every
    # Euler step scales (x - c) by s_next / s, reaching c at s = 0 for any schedule.
    c = torch.tensor([[0.5, -1.0, 2.0]])
    noise = torch.randn(64, 3, generator=torch.Generator().manual_seed(6))
    out = flow.euler_sample(lambda x, s, cond: (x - c) / s[:, None], noise, num_steps=7, mu=1.5)
    torch.testing.assert_close(out, c.expand(64, 3), atol=1e-5, rtol=0)


def test_time_shift_matches_the_official_scheduler_example():
    # Reference §4.2: L = 4096, N = 20, mu = 2.1980220725551165.
    expected = [
        1.0,
        0.99419069,
        0.98781443,
        0.98078424,
        0.97299391,
        0.96431321,
        0.95458001,
        0.94359082,
        0.93108565,
        0.91672754,
        0.90007174,
        0.88051867,
        0.85724050,
        0.82906044,
        0.79424804,
        0.75014949,
        0.69247752,
        0.61382538,
        0.50019938,
        0.32160255,
        0.0,
    ]
    got = flow.euler_sigmas(20, 2.1980220725551165)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert torch.equal(flow.euler_sigmas(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_cfg_keeps_the_conditional_norm_per_token():
    g = torch.Generator().manual_seed(7)
    vc, vu = torch.randn(2, 10, 6, generator=g), torch.randn(2, 10, 6, generator=g)
    out = flow.cfg_rescale(vc, vu, 5.0)
    torch.testing.assert_close(out.norm(dim=-1), vc.norm(dim=-1))
    plain = vu + 5.0 * (vc - vu)
    cos = torch.nn.functional.cosine_similarity(out, plain, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    torch.testing.assert_close(flow.cfg_rescale(vc, vu, 1.0), vc)
    torch.testing.assert_close(flow.cfg_rescale(vc, vu, 5.0, rescale=False), plain)


def test_guided_sampling_moves_towards_the_conditional_target():
    # Two point masses: the conditional field points at a, the unconditional at the midpoint.
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[-2.0, 0.0]])
    mid = (a + b) / 2

    def velocity(x, s, cond):
        target = a if cond else mid
        return (x - target) / s[:, None]

    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(8))
    plain = flow.euler_sample(velocity, noise, 10, guidance=1.0)
    guided = flow.euler_sample(velocity, noise, 10, guidance=3.0, rescale=False)
    torch.testing.assert_close(plain, a.expand(256, 2), atol=1e-5, rtol=0)
    # without rescale, guidance extrapolates past a (away from the unconditional mean)
    assert float(guided[:, 0].mean()) > 2.5
    assert math.isfinite(float(flow.euler_sample(velocity, noise, 10, guidance=3.0).abs().max()))


def test_toy_mixture_velocity_is_the_posterior_mean_of_eps_minus_x0():
    from lenslib import toy2d

    mix = toy2d.two_class_mixture(std=0.3)
    g = torch.Generator().manual_seed(9)
    # Bayes by Monte Carlo over the data only: given x_t = q, eps = (q - (1-t) x0) / t, and x0 has
    # posterior weight N(q; (1-t) x0, t^2 I). No closed form used.
    x0, _ = mix.sample(1_000_000, generator=g)
    x0 = x0.double()
    for t, q in ((0.6, [0.4, 0.5]), (0.2, [-1.2, -1.0]), (0.9, [0.0, 0.1])):
        q = torch.tensor(q, dtype=torch.float64)
        logw = -((q - (1 - t) * x0) ** 2).sum(1) / (2 * t * t)
        w = torch.softmax(logw, 0)[:, None]
        mc = (w * ((q - (1 - t) * x0) / t - x0)).sum(0).float()
        exact = mix.velocity(q[None].float(), torch.tensor([t]))[0]
        torch.testing.assert_close(exact, mc, atol=0.02, rtol=0)
    # the conditional field only sees its own class: integrating it lands on class-0 modes
    # (with std 0.3 a few true class-0 samples lie nearer a class-1 mode: compare with the data itself)
    noise = torch.randn(4000, 2, generator=g)
    out = flow.euler_sample(lambda x, s, c: mix.velocity(x, s, label=0), noise, 40)
    true0, _ = mix.sample(4000, label=0, generator=g)
    frac_out = float((mix.nearest_label(out) == 0).float().mean())
    frac_true = float((mix.nearest_label(true0) == 0).float().mean())
    assert frac_true > 0.9 and abs(frac_out - frac_true) < 0.02
    assert float(torch.cdist(out, mix.means).min(1).values.mean()) < 0.5
