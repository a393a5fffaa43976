"""The diffusion machinery and the U-Net (jaxsim.testbeds.concept_images.diffusion,
jaxsim.models.unet) against independent truth: numpy closed forms of the schedule and the
posterior (the latter as a product of Gaussians), oracle ε-models that samplers must invert
exactly, the Gaussian-data optimum whose samples must be N(0, 1), and the U-Net's shapes,
conditioning, run-vmapping and one training step."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsim.config import ConfigError, ModelConfig, keys, rules
from jaxsim.config.schema import Config
from jaxsim.models import unet
from jaxsim.testbeds.concept_images import diffusion

LINEAR = ModelConfig(name="unet", timesteps=50, beta_start=1e-3, beta_end=0.2, sample_steps=10)
COSINE = dataclasses.replace(LINEAR, schedule="cosine")
TINY = dataclasses.replace(LINEAR, channels=(8,), time_dim=16)    # one level: quick to compile


def numpy_alpha_bar(m: ModelConfig) -> np.ndarray:
    """ᾱ_t by an explicit running product (float64)."""
    if m.schedule == "cosine":
        f = [np.cos((t / m.timesteps + 0.008) / 1.008 * np.pi / 2) ** 2
             for t in range(m.timesteps + 1)]
        betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(m.timesteps)]
    else:
        betas = [m.beta_start + (m.beta_end - m.beta_start) * t / (m.timesteps - 1)
                 for t in range(m.timesteps)]
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return np.array(out)


@pytest.mark.parametrize("m", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_schedule_closed_forms(m):
    s = diffusion.schedule(m)
    ab = numpy_alpha_bar(m)
    np.testing.assert_allclose(s.alpha_bar_T, ab, rtol=1e-5)
    np.testing.assert_allclose(s.alpha_T, 1 - np.asarray(s.beta_T), rtol=1e-6, atol=1e-7)
    if m.schedule == "cosine":   # uncapped: ᾱ_t = f(t + 1) / f(0)
        f = lambda t: np.cos((t / m.timesteps + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        np.testing.assert_allclose(ab[:-1], f(np.arange(1, m.timesteps)) / f(0), rtol=1e-9)
    else:
        np.testing.assert_allclose([s.beta_T[0], s.beta_T[-1]], [m.beta_start, m.beta_end],
                                   rtol=1e-5)


@pytest.mark.parametrize("m", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_posterior_is_the_product_of_gaussians(m):
    """q(x_{t-1}|x_t,x0) ∝ N(x_t; sqrt(α_t) x_{t-1}, β_t) N(x_{t-1}; sqrt(ᾱ_{t-1}) x0, 1-ᾱ_{t-1})."""
    ab = numpy_alpha_bar(m)
    rng = np.random.default_rng(0)
    x_t, x0 = rng.normal(size=(2, 6, 4, 4, 3))
    t = np.array([1, 2, 7, 20, 48, 49])
    ab_t, ab_prev = ab[t], ab[t - 1]
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    precision = alpha / beta + 1 / (1 - ab_prev)
    var = 1 / precision
    c = (slice(None), None, None, None)
    mean = var[c] * (np.sqrt(alpha)[c] * x_t / beta[c] + np.sqrt(ab_prev)[c] * x0 / (1 - ab_prev)[c])
    got_mean, got_var = diffusion.posterior(m, jnp.asarray(x_t, jnp.float32),
                                            jnp.asarray(x0, jnp.float32), jnp.asarray(t))
    np.testing.assert_allclose(got_var[:, 0, 0, 0], var, rtol=1e-4)
    np.testing.assert_allclose(got_var[:, 0, 0, 0], beta * (1 - ab_prev) / (1 - ab_t), rtol=1e-4)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    mean0, var0 = diffusion.posterior(m, jnp.asarray(x_t[:1], jnp.float32),
                                      jnp.asarray(x0[:1], jnp.float32), 0)
    np.testing.assert_allclose(mean0, x0[:1], atol=1e-6)
    assert float(var0.max()) == 0.0


def test_corrupt_matches_closed_form():
    x0 = jax.random.uniform(jax.random.key(0), (512, 4, 4, 3), minval=-1, maxval=1)
    x_t, t, eps = diffusion.corrupt(jax.random.key(1), x0, LINEAR)
    ab = numpy_alpha_bar(LINEAR)[np.asarray(t)][:, None, None, None]
    np.testing.assert_allclose(x_t, np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, atol=1e-5)
    assert t.dtype == jnp.int32 and 0 <= t.min() and t.max() == LINEAR.timesteps - 1
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1) < 0.05


def oracle(m: ModelConfig):
    """An ε-model (params = x0) that predicts the true noise of x_t around the fixed x0."""
    ab = jnp.asarray(numpy_alpha_bar(m), jnp.float32)

    def apply_fn(x0, x_t, t_B, cond):
        a = ab[t_B][:, None, None, None]
        return (x_t - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return apply_fn


@pytest.mark.parametrize("method,steps", [("ddim", None), ("ddim", 50), ("ddpm", None),
                                          ("ddpm", 7)])
def test_oracle_model_reconstructs_x0(method, steps):
    x0 = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3), minval=-0.95, maxval=0.95)
    cond = jnp.zeros((3, 2))
    run = jax.jit(lambda key: diffusion.sample(oracle(LINEAR), x0, LINEAR, cond, key, method,
                                               steps, resolution=8))
    a, b = run(jax.random.key(1)), run(jax.random.key(2))
    np.testing.assert_allclose(a, x0, atol=1e-4)
    np.testing.assert_allclose(b, x0, atol=1e-4)


def test_gaussian_data_optimum_samples_unit_variance():
    """For x0 ~ N(0, 1) the optimal ε(x_t) = sqrt(1 - ᾱ_t) x_t; both samplers must then turn
    N(0, 1) noise into N(0, 1) samples (DDPM's ancestral noise included)."""
    m = dataclasses.replace(COSINE, timesteps=200, sample_steps=100)
    ab = jnp.asarray(numpy_alpha_bar(m), jnp.float32)
    eps_fn = lambda p, x, t, c: jnp.sqrt(1 - ab[t])[:, None, None, None] * x  # noqa: E731
    cond = jnp.zeros((4096, 1))
    for method in ("ddpm", "ddim"):
        x = diffusion.sample(eps_fn, None, m, cond, jax.random.key(3), method, resolution=1,
                             clip_x0=False)
        assert abs(float(x.std()) - 1) < 0.05, (method, float(x.std()))
        assert abs(float(x.mean())) < 0.05
    zero = lambda p, x, t, c: jnp.zeros_like(x)  # noqa: E731
    a, b = (diffusion.sample(zero, None, m, cond[:4], jax.random.key(k), "ddpm", resolution=2)
            for k in (4, 5))
    assert not np.allclose(a, b)          # ancestral sampling is stochastic


def test_sampling_from_pure_noise_needs_alpha_bar_near_zero_at_the_last_level():
    """For x0 ~ N(mu, s^2) the optimal ε(x_t) = sqrt(1 - ᾱ)(x_t - sqrt(ᾱ) mu)/(ᾱ s^2 + 1 - ᾱ).
    The samplers start from N(0, I): with ᾱ_{T-1} ~ 0 (the linear betas rescaled to 100 levels,
    or the cosine schedule) both return mean mu; with DDPM's 1e-4..0.02 over only 100 levels
    (ᾱ_{T-1} = 0.36, numpy) the start is off-distribution and DDIM lands where the exact flow
    map x0 = mu + s (x_T - sqrt(ᾱ) mu)/sqrt(ᾱ s^2 + 1 - ᾱ) sends N(0, 1): mean 0.32, not 0.5."""
    mu, s = 0.5, 0.5
    cond = jnp.zeros((4096, 1))
    short = ModelConfig(name="unet", timesteps=100, sample_steps=10)
    end = numpy_alpha_bar(short)[-1]
    assert abs(end - 0.3636) < 1e-3
    for m in (dataclasses.replace(short, beta_start=1e-3, beta_end=0.2),
              dataclasses.replace(short, schedule="cosine"), short):
        ab = jnp.asarray(numpy_alpha_bar(m), jnp.float32)

        def eps_fn(p, x, t, c):
            a = ab[t][:, None, None, None]
            return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * s ** 2 + 1 - a)

        means = {method: float(diffusion.sample(eps_fn, None, m, cond, jax.random.key(3), method,
                                                resolution=1, clip_x0=False).mean())
                 for method in ("ddpm", "ddim")}
        if m is short:
            flow = mu - s * np.sqrt(end) * mu / np.sqrt(end * s ** 2 + 1 - end)
            assert abs(means["ddim"] - flow) < 0.03 and means["ddim"] < mu - 0.1, means
        else:
            assert numpy_alpha_bar(m)[-1] < 1e-3
            assert all(abs(v - mu) < 0.03 for v in means.values()), (m.schedule, means)


def random_params(key, m: ModelConfig, side: int, cond_dim: int, scale: float = 0.2) -> dict:
    """U-Net parameters of the right tree and shapes, every leaf N(0, scale^2) (no init
    compile; a fresh init's zero output layers would hide what the inputs do)."""
    shapes = jax.eval_shape(lambda: diffusion.init(jax.random.key(0), m, side, cond_dim))
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys)])


@pytest.mark.parametrize("side,channels,blocks,attention",
                         [(8, (8,), 2, False), (12, (8, 16), 1, True), (16, (8, 8, 16), 1, False)])
def test_unet_output_shape(side, channels, blocks, attention):
    m = dataclasses.replace(TINY, channels=channels, blocks_per_level=blocks, attention=attention)
    params = jax.eval_shape(lambda: diffusion.init(jax.random.key(0), m, side, 5))
    x = jnp.zeros((2, side, side, 3))
    out = jax.eval_shape(lambda p: diffusion.apply(p, m, x, jnp.array([0, 9]), jnp.ones((2, 5))),
                         params)
    assert out.shape == (2, side, side, 3) and out.dtype == jnp.float32
    assert ("mid_attn" in params) == attention
    assert {f"cond{i}_fc1" for i in range(len(channels))} <= set(params)
    assert f"down0_{blocks - 1}" in params and f"up0_{blocks}" in params


@pytest.mark.parametrize("side,k,stride", [(8, 3, 1), (8, 3, 2), (7, 3, 2), (6, 1, 1)])
def test_patch_conv_equals_flax_conv(side, k, stride):
    """unet.Conv (a matmul over patches) against nn.Conv (lax.conv), same parameters."""
    x = jax.random.normal(jax.random.key(0), (2, side, side, 5))
    ours = unet.Conv(4, k, stride)
    params = ours.init(jax.random.key(1), x)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
    theirs = nn.Conv(4, (k, k), strides=(stride, stride), padding="SAME")
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), atol=1e-5)


def test_unet_refuses_an_indivisible_side():
    m = dataclasses.replace(TINY, channels=(8, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(lambda: diffusion.init(jax.random.key(0), m, 6, 2))


def test_unet_uses_condition_and_time():
    params = random_params(jax.random.key(1), TINY, 8, 3)
    x = jnp.tile(jax.random.normal(jax.random.key(2), (1, 8, 8, 3)), (2, 1, 1, 1))
    fn = jax.jit(lambda c, t, shift: diffusion.apply(
        params, TINY, x, t, c, edit=lambda site, e: e + shift[:, None] if site == "cond0" else e))
    c = jnp.array([[1.0, 0.0, 0.5], [1.0, 0.0, 0.5]])
    t = jnp.array([10, 10])
    none, row1 = jnp.zeros(2), jnp.array([0.0, 1.0])    # an embedding edit of the second row
    base = fn(c, t, none)
    np.testing.assert_allclose(base[0], base[1], atol=1e-6)   # same inputs, same output
    for other in (fn(c.at[1, 1].set(1.0), t, none), fn(c, t.at[1].set(40), none), fn(c, t, row1)):
        np.testing.assert_allclose(other[0], base[0], atol=1e-6)
        assert float(jnp.abs(other[1] - base[1]).max()) > 1e-3


def test_vmapped_runs_equal_runs_alone():
    """Three runs' parameters stacked: the vmapped sampler (U-Net inside) equals each alone."""
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(lambda k: random_params(k, TINY, 8, 2, 0.1))(keys)
    c = jax.random.normal(jax.random.key(2), (4, 2))
    apply_fn = lambda p, x, t, c: diffusion.apply(p, TINY, x, t, c)  # noqa: E731
    sample = jax.jit(lambda p: diffusion.sample(apply_fn, p, TINY, c, jax.random.key(3), "ddpm",
                                                 3, resolution=8))
    samples_R = jax.jit(jax.vmap(sample))(stacked)
    assert float(jnp.abs(samples_R[0] - samples_R[1]).max()) > 1e-3    # the runs differ
    for r in range(3):
        alone = jax.tree.map(lambda a: a[r], stacked)
        np.testing.assert_allclose(samples_R[r], sample(alone), atol=1e-4)


def test_training_step_lowers_eps_loss():
    x0 = jnp.tile(jnp.linspace(-1, 1, 8)[None, :, None, None], (8, 1, 8, 3))
    cond = jnp.ones((8, 2))
    opt = optax.adam(3e-3)
    loss = lambda p: diffusion.denoising_loss(p, TINY, jax.random.key(5), x0, cond)  # noqa: E731

    def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    @jax.jit
    def train(key):      # init and 40 steps in one program (one compile)
        params = diffusion.init(key, TINY, 8, 2)
        return jax.lax.scan(step, (params, opt.init(params)), None, length=40)[1]

    losses = train(jax.random.key(0))
    assert float(losses[-1]) < 0.5 * float(losses[0]), losses


def test_unet_keys_validated():
    assert keys.coerce("model.channels", [16, 32]) == (16, 32)
    for bad in ([], [16, 0], "16", [16.5], [True]):
        with pytest.raises(ConfigError, match="model.channels"):
            keys.coerce("model.channels", bad)
    cfg = Config(model=TINY)
    rules._check_unet(cfg, "")
    for change, key in [({"time_dim": 15}, "model.time_dim"),
                        ({"sample_steps": 51}, "model.sample_steps"),
                        ({"beta_start": 0.3}, "model.beta_start")]:
        with pytest.raises(ConfigError, match=key):
            rules._check_unet(dataclasses.replace(cfg, model=dataclasses.replace(TINY, **change)), "")
