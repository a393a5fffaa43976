"""The compiled half of the concept_images analysis: for one run, at every saved checkpoint,
generate samples under each prompt and read them back into concept values (`analyze_run`,
mapped over a chunk's runs by `analysis.driver.map_runs`).

Prompts (rows of `prompts`, N samples each, one batch through the sampler):
    0..3        naive: the class-mean concept vector of red-big, red-small, blue-big, blue-small
    4           intervention: blue-small by embedding arithmetic, emb(blue-big) + emb(red-small)
                - emb(red-big) at every level's condition embedding of the U-Net (its
                `cond{i}` sites; the arithmetic on the concept vectors themselves would equal
                the naive prompt exactly, the vectors being linear in the concepts)
    5..         over-prompting: blue-small's concept coordinates pushed beyond the training
                range, colour and size both at 0.5 + alpha / 2 on the line through the class
                means (alpha = 1 is the naive prompt) for each alpha in OVERPROMPT

Every checkpoint starts the sampler from the same noise (common random numbers), so the change
of a trajectory between checkpoints is the model's, not the sampler's. The reference read-outs
(`references`) are the same read-outs of freshly rendered training data of every class at the
run's own concept signals: the analysis places generations relative to them.

Shapes in names: S checkpoints, P prompts, N samples per prompt, G images kept per prompt.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbeds.concept_images import diffusion, readout, render, task

OVERPROMPT = (1.5, 2.0, 3.0)
NAIVE, INTERVENTION, FIRST_OVERPROMPT = 0, 4, 5
NUM_PROMPTS = FIRST_OVERPROMPT + len(OVERPROMPT)
KEPT = 4                      # sample images kept per prompt and checkpoint (the grids)
REFERENCE_PER_CLASS = 128
SAMPLER, CLASSIFIER, REFERENCE, PROBE = range(4)
PROBE_PER_CLASS = 64          # training images per class of the denoiser probe (`concept_use`)


def prompt_names() -> list[str]:
    return ([f"naive:{c}" for c in render.CLASS_NAMES] + ["intervention:blue-small"]
            + [f"overprompt:{a:g}" for a in OVERPROMPT])


def prompts(spec, hparams: dict) -> jax.Array:
    """[P, K] the concept vectors of the prompts (row 4, the intervention's, is blue-small's:
    its embeddings are replaced in the model)."""
    sep_col, sep_size = hparams["task"]["sep_col"], hparams["task"]["sep_size"]
    colour = jnp.array([0, 0, 1, 1, 1] + [0.5 + a / 2 for a in OVERPROMPT], jnp.float32)
    size = jnp.array([0, 1, 0, 1, 1] + [0.5 + a / 2 for a in OVERPROMPT], jnp.float32)
    return task.condition(render.class_rgb(colour, sep_col), render.class_radius(size, sep_size),
                          spec.task.cond_layout)


def embeddings(params, spec, cond_3xK: jax.Array) -> dict:
    """{site: [3, D]} the U-Net's condition embeddings of three concept vectors (one forward
    pass of three blank images; the `edit` hook records each site's embedding)."""
    seen = {}

    def record(site, x):
        seen[site] = x
        return x

    side = spec.task.resolution
    diffusion.apply(params, spec, jnp.zeros((3, side, side, 3)), jnp.zeros((3,), jnp.int32),
                    cond_3xK, record)
    return seen


def generate(params, spec, cond_PxK: jax.Array, key: jax.Array, num: int,
             method: str, steps: int | None) -> jax.Array:
    """[P, N, H, W, 3] samples in [0, 1] of every prompt, the intervention row edited."""
    p = cond_PxK.shape[0]
    recipe = embeddings(params, spec, cond_PxK[jnp.array([2, 1, 0])])   # bb, rs, rb
    arithmetic = {site: e[0] + e[1] - e[2] for site, e in recipe.items()}
    edited_B = jnp.repeat(jnp.arange(p) == INTERVENTION, num)

    def edit(site, x_BxD):
        return jnp.where(edited_B[:, None], arithmetic[site][None, :], x_BxD)

    def apply_fn(prm, x_t, t_B, cond_BxK):
        return diffusion.apply(prm, spec, x_t, t_B, cond_BxK, edit)

    cond_BxK = jnp.repeat(cond_PxK, num, axis=0)
    x0 = diffusion.sample(apply_fn, params, spec, cond_BxK, key, method=method, steps=steps,
                          resolution=spec.task.resolution)
    images = jnp.clip((x0 + 1) / 2, 0.0, 1.0)
    return images.reshape((p, num) + images.shape[1:])


def references(key: jax.Array, spec, hparams: dict, clf_params: dict) -> dict:
    """Read-outs of freshly rendered training-distribution images of each class: {"rgb": [4, 3],
    "radius": [4], "probs": [4, 2]} (means over REFERENCE_PER_CLASS images)."""
    t, hp = spec.task, hparams["task"]
    class_B = jnp.repeat(jnp.arange(render.NUM_CLASSES), REFERENCE_PER_CLASS)
    images, _ = render.draw(key, class_B, hp["sep_col"], hp["sep_size"], t.resolution,
                            t.blur_sigma, t.noise_level)
    rgb, radius = readout.pixels(images, t.blur_sigma)
    probs = readout.classify(clf_params, images)
    per_class = lambda a: a.reshape((render.NUM_CLASSES, REFERENCE_PER_CLASS) + a.shape[1:]).mean(1)
    return {"rgb": per_class(rgb), "radius": per_class(radius), "probs": per_class(probs)}


def probe_batch(key: jax.Array, spec, hparams: dict) -> tuple:
    """The denoiser probe's fixed batch: PROBE_PER_CLASS rendered images of each training class,
    noised at levels uniform in [T/20, T/2) (the middle levels, where the circle's colour and
    extent are decided: near t = 0 the condition hardly matters, near T - 1 ε ~ x_t), and three
    conditions: the true concepts, the other size class's mean radius, the other colour class's
    mean colour. Returns (x_t, t_B, ε, [3, B, K] conditions)."""
    t, hp = spec.task, hparams["task"]
    k_draw, k_t, k_eps = jax.random.split(key, 3)
    class_B = jnp.repeat(jnp.asarray(render.TRAIN_CLASSES, jnp.int32), PROBE_PER_CLASS)
    images, c = render.draw(k_draw, class_B, hp["sep_col"], hp["sep_size"], t.resolution,
                            t.blur_sigma, t.noise_level)
    x0 = images * 2 - 1
    levels = spec.model.timesteps
    t_B = jax.random.randint(k_t, class_B.shape, levels // 20, max(levels // 2, levels // 20 + 1))
    eps = jax.random.normal(k_eps, x0.shape)
    ab = diffusion.schedule(spec).alpha_bar_T[t_B][:, None, None, None]
    x_t = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * eps
    colour_B, size_B = render.colour_size(class_B)
    layout = t.cond_layout
    conds = jnp.stack([
        task.condition(c.rgb_Bx3, c.radius_B, layout),
        task.condition(c.rgb_Bx3, render.class_radius(1 - size_B, hp["sep_size"]), layout),
        task.condition(render.class_rgb(1 - colour_B, hp["sep_col"]), c.radius_B, layout)])
    return x_t, t_B, eps, conds


def concept_use(params, spec, probe: tuple) -> jax.Array:
    """[2] the denoiser's use of (colour, size), read off the model with no sampling: ε MSE on
    the probe batch with the wrong colour (resp. size) in the condition over the ε MSE with the
    true one (1 = the concept is ignored)."""
    x_t, t_B, eps, conds = probe
    mse = jnp.stack([diffusion.eps_loss(diffusion.apply(params, spec, x_t, t_B, c), eps)
                     for c in conds])
    return jnp.stack([mse[2], mse[1]]) / mse[0]


def analyze_run(params_S, key, spec, hparams: dict, num: int, method: str, steps: int | None
                ) -> dict:
    """One run at every checkpoint: per prompt and sample the pixel read-out (rgb, radius) and
    the classifier's probabilities, KEPT images per prompt, the denoiser's `concept_use`, and
    the run's references."""
    t, hp = spec.task, hparams["task"]
    clf = readout.train_classifier(jax.random.fold_in(key, CLASSIFIER), hp["sep_col"],
                                   hp["sep_size"], t.resolution, t.blur_sigma, t.noise_level)
    refs = references(jax.random.fold_in(key, REFERENCE), spec, hparams, clf)
    cond_PxK = prompts(spec, hparams)
    sampler_key = jax.random.fold_in(key, SAMPLER)
    probe = probe_batch(jax.random.fold_in(key, PROBE), spec, hparams)

    def one(params):
        images = generate(params, spec, cond_PxK, sampler_key, num, method, steps)
        flat = images.reshape((-1,) + images.shape[2:])
        rgb, radius = readout.pixels(flat, t.blur_sigma)
        probs = readout.classify(clf, flat)
        shape = images.shape[:2]
        return {"rgb": rgb.reshape(shape + (3,)), "radius": radius.reshape(shape),
                "probs": probs.reshape(shape + (2,)), "images": images[:, :KEPT],
                "concept_use": concept_use(params, spec, probe)}

    out = jax.lax.map(one, params_S)
    return {**out, "references": refs}
