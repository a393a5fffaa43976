"""concept_images: the renderer against scipy's rendering of the same concept values, the pixel
read-out and the classifier recovering known concepts, the training data's classes and signals
as specified, the analysis rules on hand-made trajectories, config errors, and one tiny sweep
through jaxsim.sweep -> analyze -> plot."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

import jaxsim
from jaxsim import config as cfglib
from jaxsim import training
from jaxsim.testbeds.concept_images import analysis, diffusion, generate, readout, render, task

TINY = {"task": {"name": "concept_images", "resolution": 8},
        "model": {"name": "unet", "channels": [8, 16], "time_dim": 16, "timesteps": 20,
                  "schedule": "cosine", "sample_steps": 2},
        "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 8},
        "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False}}


def setup(**sections):
    raw = {k: dict(v) for k, v in TINY.items()}
    for section, body in sections.items():
        raw[section] = {**raw[section], **body}
    cfg = cfglib.from_dict(raw)
    return cfg, cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))


def numpy_render(rgb, radius, xy, bg, size, sigma):
    """The official images_1 rendering (numpy, scipy.ndimage.gaussian_filter), noise-free."""
    g = np.linspace(-1, 1, size)
    x, y = np.meshgrid(g, g, indexing="ij")
    mask = ((x - xy[0]) ** 2 + (y - xy[1]) ** 2 < radius ** 2).astype(np.float64)
    if sigma > 0:
        mask = ndi.gaussian_filter(mask, sigma)
    return np.clip(mask[..., None] * rgb + (1 - mask[..., None]) * bg, 0, 1)


@pytest.mark.parametrize("size, sigma", [(16, 1.0), (32, 1.0), (12, 0.0), (8, 2.5)])
def test_renderer_matches_scipy_rendering(size, sigma):
    c = render.sample_concepts(jax.random.key(size), jnp.arange(40) % 4, jnp.float32(0.8),
                               jnp.float32(0.4))
    images = np.asarray(render.render(c, size, sigma))
    for b in range(40):
        ref = numpy_render(*(np.asarray(a[b], np.float64) for a in c), size, sigma)
        np.testing.assert_allclose(images[b], ref, atol=1e-5)


def test_noise_has_the_stated_level_and_images_stay_in_range():
    images, c = render.draw(jax.random.key(0), jnp.arange(64) % 4, jnp.float32(0.5),
                            jnp.float32(0.3), 16, 1.0, 0.01)
    clean = np.asarray(render.render(c, 16, 1.0))
    resid = np.asarray(images) - clean
    inside = (clean > 0.05) & (clean < 0.95)
    assert abs(resid[inside].std() - 0.01) < 0.001
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("sep_col, sep_size", [(0.8, 0.4), (0.2, 0.1)])
def test_pixel_readout_recovers_known_concepts(sep_col, sep_size):
    """32 x 32 images. Circles wholly inside with radius >= 0.2 (>= 3.1 pixels): colour within
    0.03 per channel, radius within 0.03 grid units (measured max 0.022, 0.019); radius 0.1-0.2
    (a blurred peak below the colour): colour within 0.2 (measured 0.157), radius 0.03; every
    circle, also cut by the border: radius within 0.08 (measured 0.061)."""
    class_B = jnp.arange(512) % 4
    images, c = render.draw(jax.random.key(1), class_B, jnp.float32(sep_col),
                            jnp.float32(sep_size), 32, 1.0, 1e-3)
    rgb, radius = (np.asarray(a) for a in readout.pixels(images, 1.0))
    true_rgb, true_radius = np.asarray(c.rgb_Bx3), np.asarray(c.radius_B)
    inside = np.abs(np.asarray(c.xy_Bx2)).max(1) + true_radius < 0.95
    rgb_err, radius_err = np.abs(rgb - true_rgb).max(1), np.abs(radius - true_radius)
    big = inside & (true_radius >= 0.2)
    assert big.sum() > 200
    assert rgb_err[big].max() < 0.03 and radius_err[big].max() < 0.03
    small = inside & (true_radius < 0.2)
    assert rgb_err[small].max(initial=0) < 0.2 and radius_err[small].max(initial=0) < 0.03
    assert radius_err.max() < 0.08


def test_classifier_learns_the_labels_of_fresh_renders():
    params = jax.jit(readout.train_classifier, static_argnums=(3, 4, 5, 6))(
        jax.random.key(0), jnp.float32(0.4), jnp.float32(0.2), 16, 1.0, 1e-3, 300)
    images, labels = readout.labelled(jax.random.key(9), 0.4, 0.2, 16, 1.0, 1e-3, 512)
    probs = np.asarray(readout.classify(params, images))
    assert ((probs > 0.5) == np.asarray(labels, bool)).mean(0).min() > 0.95


def test_heldout_class_never_in_training_batches():
    _, spec, hp = setup(train={"batch_size": 64})
    batches = jax.jit(jax.vmap(lambda s: task.train_batch((), jax.random.key(3), s, spec, hp)))(
        jnp.arange(100))
    rgb, radius = task.concepts_of(batches.cond_BxK.reshape(-1, 4))
    blue = np.asarray(rgb[:, 2] > rgb[:, 0])
    small = np.asarray(radius < render.SIZE_CENTRE)
    assert not (blue & small).any()
    assert blue.any() and small.any() and (~blue & ~small).any()
    assert set(np.unique(np.asarray(batches.class_B)).tolist()) == {0, 1, 2}
    held = task.eval_batch((), jax.random.key(3), spec, hp, "heldout")
    rgb, radius = task.concepts_of(held.cond_BxK)
    np.testing.assert_allclose(np.asarray(rgb), np.tile([0.1, 0.1, 0.9], (8, 1)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(radius), 0.25, atol=1e-6)


def test_dynamic_signals_set_class_means_and_jitter_in_one_program():
    _, spec, hp = setup(train={"batch_size": 3000})
    seps = jnp.array([[0.2, 0.1], [0.8, 0.4]], jnp.float32)

    def batch(sep):
        h = {**hp, "task": {"sep_col": sep[0], "sep_size": sep[1]}}
        return task.train_batch((), jax.random.key(0), 0, spec, h)

    out = jax.jit(jax.vmap(batch))(seps)
    for (c, s), cond, cls in zip(np.asarray(seps), np.asarray(out.cond_BxK),
                                 np.asarray(out.class_B)):
        means = {0: ([0.5 + c / 2, 0.5 - c / 2, 0.5 - c / 2], 0.45 + s / 2),
                 1: ([0.5 + c / 2, 0.5 - c / 2, 0.5 - c / 2], 0.45 - s / 2),
                 2: ([0.5 - c / 2, 0.5 - c / 2, 0.5 + c / 2], 0.45 + s / 2)}
        for k, (rgb, rad) in means.items():
            rows = cond[cls == k]
            np.testing.assert_allclose(rows[:, :3].mean(0), rgb, atol=0.01 * c)
            assert abs(rows[:, 3].mean() - rad) < 0.02 * s
            dev = np.abs(rows - np.array(rgb + [rad]))
            assert dev[:, :3].max() <= c / 8 + 1e-6 and dev[:, :3].max() > 0.9 * c / 8
            assert dev[:, 3].max() <= 3 * s / 8 + 1e-6 and dev[:, 3].max() > 0.9 * 3 * s / 8


def test_official_layout_places_rgb_and_size():
    cond = task.condition(jnp.array([[0.1, 0.2, 0.3]]), jnp.array([0.4]), "official")
    assert cond.shape == (1, 11)
    np.testing.assert_allclose(np.asarray(cond[0]), [0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0, 0, 0],
                               atol=1e-7)
    rgb, radius = task.concepts_of(cond)
    np.testing.assert_allclose(np.asarray(rgb[0]), [0.1, 0.2, 0.3], atol=1e-7)


@pytest.mark.parametrize("section, body, key", [
    ("task", {"sep_col": 0.9}, "task.sep_col"),
    ("task", {"sep_size": 0.0}, "task.sep_size"),
    ("task", {"cond_layout": "eleven"}, "task.cond_layout"),
    ("task", {"resolution": 9}, "task.resolution"),      # 2 levels: must be even
    ("model", {"name": "gpt"}, "model.name"),
    # DDPM's betas 1e-4..0.02 over 20 levels leave ᾱ_{T-1} = 0.82: pure noise is off-distribution
    ("model", {"schedule": "linear"}, "model.beta_end"),
])
def test_bad_config_is_one_error_naming_the_key(section, body, key):
    with pytest.raises(cfglib.ConfigError) as e:
        setup(**{section: body})
    assert key in str(e.value) and "\n" not in str(e.value)


def test_analysis_rules_on_hand_made_trajectories():
    steps = [10, 20, 30, 40, 50]
    mean = np.full((8, 5, 2), 0.5)
    mean[0, :, 0] = [0.6, 0.4, 0.4, 0.45, 0.1]      # red-big colour: right side from step 20
    mean[1, :, 0] = [0.4, 0.4, 0.6, 0.2, 0.1]       # red-small: back on its side from 40
    mean[2, :, 0] = [0.9, 0.9, 0.9, 0.9, 0.9]
    mean[[0, 2], :, 1] = 0.2
    mean[1, :, 1] = [0.4, 0.6, 0.7, 0.8, 0.9]       # size: from step 20
    assert analysis.learned_steps(steps, mean) == {"colour": 40, "size": 20}
    mean[2, -1, 0] = 0.3                             # blue-big loses its colour at the end
    assert analysis.learned_steps(steps, mean)["colour"] is None
    path = np.array([[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1]], float)
    t = analysis.turn(steps, path)
    assert t["step"] == 30 and abs(t["angle_deg"] - 90) < 1e-6
    coords = np.zeros((1, 8, 4, 2))
    coords[0, 3] = [[0.9, 0.9], [0.9, 0.1], [0.6, 0.7], [0.2, 0.8]]
    acc = analysis.accuracy(coords)
    assert acc.shape == (8, 1) and acc[3, 0] == 0.5 and acc[0, 0] == 1.0
    first, best = analysis.elicited([10, 20], np.array([[0, 0]] * 3 + [[0.2, 0.6], [0.5, 0.9],
                                                        [0, 0], [0.1, 0.7], [0, 0]]))
    assert first == {"naive": 20, "intervention": 10, "overprompt": 20} and best == 2.0


def test_trajectories_are_medians_robust_to_one_blank_sample():
    """Each checkpoint's trajectory point is the median of its samples: one sample read at
    colour -18 (a near-blank generation) cannot pull a prompt across 0.5."""
    ref_rgb = np.array([[0.9, 0.1, 0.1], [0.9, 0.1, 0.1], [0.1, 0.1, 0.9], [0.1, 0.1, 0.9]])
    ref_rad = np.array([0.6, 0.2, 0.6, 0.2])
    steps, prompts, n = [10, 20, 30], 8, 5
    colour = np.tile(analysis.TARGETS[:, 0][None, :, None], (3, 1, n)) * 0.8 + 0.1
    size = np.tile(analysis.TARGETS[:, 1][None, :, None], (3, 1, n)) * 0.8 + 0.1
    colour[1, 2, 0] = -18.0                  # one blue-big sample at step 20 reads far red
    d = colour * 1.6 - 0.8                   # b - r: red -0.8 at 0, blue 0.8 at 1
    rgb = np.stack([-d / 2 + 0.5, np.full_like(d, 0.1), d / 2 + 0.5], -1)
    m = {"rgb": rgb, "radius": 0.6 - 0.4 * size, "probs": np.zeros((3, prompts, n, 2)),
         "references": {"rgb": ref_rgb, "radius": ref_rad},
         "concept_use": np.array([[1.0, 1.05], [1.2, 1.0], [1.3, 1.5]])}
    entry, pix = analysis.run_report(steps, m)
    np.testing.assert_allclose(pix[1, 2, 0], [-18.0, 0.1], atol=1e-9)
    np.testing.assert_allclose(entry["trajectory"]["pixels"][2][1], [0.9, 0.1], atol=1e-9)
    assert entry["learned_step"] == {"colour": 10, "size": 10}
    assert pix[1, 2, :, 0].mean() < 0.5      # the mean would have lost colour at step 20
    assert entry["used_step"] == {"colour": 20, "size": 30}


def test_concept_use_is_one_for_a_denoiser_that_ignores_the_condition():
    """concept_use = ε MSE with a wrong colour (size) / with the true condition: exactly 1 when
    the U-Net's condition embeddings are zeroed; not 1 once they are not."""
    cfg, spec, hp = setup()
    shapes = jax.eval_shape(lambda: diffusion.init(jax.random.key(0), spec, 8, 4))
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys)])
    probe = generate.probe_batch(jax.random.key(2), spec, hp)
    x_t, t_B, eps, conds = probe
    assert conds.shape == (3, 3 * generate.PROBE_PER_CLASS, 4)
    levels = spec.model.timesteps
    assert levels // 20 <= int(t_B.min()) and int(t_B.max()) < levels // 2
    blind = {**params, **{k: jax.tree.map(jnp.zeros_like, v) for k, v in params.items()
                          if k.startswith("cond") and k.endswith("_fc2")}}
    np.testing.assert_allclose(generate.concept_use(blind, spec, probe), [1.0, 1.0], rtol=1e-6)
    assert np.all(np.abs(np.asarray(generate.concept_use(params, spec, probe)) - 1) > 1e-4)


def test_coordinates_place_references_at_the_corners():
    ref_rgb = np.array([[0.9, 0.1, 0.1], [0.8, 0.2, 0.2], [0.1, 0.1, 0.9], [0.2, 0.2, 0.8]])
    ref_rad = np.array([0.65, 0.25, 0.65, 0.25])
    z = analysis.coordinates(ref_rgb, ref_rad, ref_rgb, ref_rad)
    # b - r = -0.8, -0.6, 0.8, 0.6: red -0.7, blue 0.7; radius big 0.65, small 0.25
    np.testing.assert_allclose(z, [[-1 / 14, 0], [1 / 14, 1], [15 / 14, 0], [13 / 14, 1]],
                               atol=1e-12)


def test_tiny_sweep_analyze_and_plot(tmp_path):
    raw = {**TINY, "sweep": {**TINY["sweep"], "axes": {"task.sep_col": [0.3, 0.8]}}}
    out = tmp_path / "ci"
    jaxsim.sweep(raw, out=out, progress=False)
    jaxsim.analyze(out, sequences=2)
    doc = json.loads((out / "analysis.json").read_text())
    assert [r["sep_col"] for r in doc["runs"]] == [0.3, 0.8]
    assert (doc["sampler"], doc["sample_steps"]) == ("ddpm", 2)
    run = doc["runs"][0]
    assert np.array(run["trajectory"]["pixels"]).shape == (8, 2, 2)
    assert np.array(run["accuracy"]["classifier"]).shape == (8, 2)
    assert set(run["elicited_step"]) == {"naive", "intervention", "overprompt"}
    with np.load(out / "analysis_concepts.npz") as f:
        assert f["rgb"].shape == (2, 2, 8, 2, 3) and f["probs"].shape == (2, 2, 8, 2, 2)
    with np.load(out / "analysis_samples.npz") as f:
        assert f["images"].shape == (2, 2, 8, 2, 8, 8, 3) and f["images"].dtype == np.uint8
    names = {p.name for p in jaxsim.plot(out)}
    assert {"concept_images_loss.png", "concept_images_trajectories.png",
            "concept_images_samples.png", "concept_images_elicitation.png",
            "concept_images_learning_time.png"} <= names
