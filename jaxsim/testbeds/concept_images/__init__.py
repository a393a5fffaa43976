"""Concept space and hidden capabilities (Park, Okawa, Lee, Lubana, Tanaka, NeurIPS 2024):
conditional diffusion models (`model.name: unet`, DDPM ε-prediction) learn to draw one blurred
circle of a given colour and size; 2 x 2 classes (red/blue x big/small), blue-small held out of
training. The concept signals `task.sep_col` and `task.sep_size` are dynamic keys, so a
signal sweep is one vmapped axis. `jaxsim analyze` generates samples at every saved checkpoint,
reads them back into concept space (pixels, and a small classifier) and finds when each concept
is learned and when blue-small can be elicited (naive prompt, embedding arithmetic,
over-prompting).

Splits: train_classes, heldout (blue-small at its class means). Metric: loss (ε MSE).
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Objective, Testbed
from jaxsim.testbeds.concept_images import task

LABELS = {"task.sep_col": "colour signal (sep_col)", "task.sep_size": "size signal (sep_size)",
          "task.resolution": "resolution"}
CONCEPTS = "analysis_concepts.npz"   # written by `jaxsim analyze`: per-sample read-outs
SAMPLES = "analysis_samples.npz"     # written by `jaxsim analyze`: sample images for the grids


@dataclass(frozen=True)
class ConceptImagesConfig:
    name: str = "concept_images"
    resolution: int = field(32, min=4, doc="image side H = W in pixels (the paper: 32); the "
                            "grid is linspace(-1, 1, H); must be divisible by "
                            "2**(len(model.channels) - 1)")
    sep_col: float = field(0.8, dynamic=True, min=0.0, min_exclusive=True, max=0.8,
                           doc="colour concept signal c: red mean (0.5 + c/2, 0.5 - c/2, "
                               "0.5 - c/2), blue (0.5 - c/2, 0.5 - c/2, 0.5 + c/2), jitter "
                               "+-c/8 per channel")
    sep_size: float = field(0.4, dynamic=True, min=0.0, min_exclusive=True, max=0.4,
                            doc="size concept signal s: radius means 0.45 +- s/2 (grid units), "
                                "jitter +-3s/8 (s = 0.4: big in [0.5, 0.8], small in [0.1, 0.4])")
    blur_sigma: float = field(1.0, min=0.0, doc="Gaussian blur of the circle mask, in pixels")
    noise_level: float = field(1e-3, min=0.0, doc="std of the additive pixel noise (before the "
                               "clip to [0, 1])")
    cond_layout: str = field("concepts", choices=task.COND_LAYOUTS,
                             doc="the condition vector: concepts = (r, g, b, radius), K = 4; "
                                 "official = the official code's 11 dims [shape(2), x, y, r, g, "
                                 "b, size, bg(3)] with all but rgb and size zero")


def check_resolution(cfg, where: str = "") -> None:
    """The U-Net halves the image between levels: the side must divide evenly."""
    levels = len(getattr(cfg.model, "channels", ()) or (0,))
    if cfg.task.resolution % 2 ** (levels - 1):
        raise ConfigError(f"{where}task.resolution ({cfg.task.resolution}) must be divisible by "
                          f"2**{levels - 1} = {2 ** (levels - 1)} (model.channels has {levels} "
                          f"levels)")


ALPHA_BAR_END_MAX = 1e-3    # the samplers start from N(0, I): ᾱ at the last level must be ~0


def check_schedule(cfg, where: str = "") -> None:
    """The samplers (`diffusion.sample`) start from x_T ~ N(0, I), the marginal of the last
    noise level only if ᾱ_{T-1} ~ 0. DDPM's linear betas 1e-4..0.02 reach ᾱ = 4e-5 over 1000
    levels but 0.36 over 100, where x_T still carries 0.6 x0: pure noise is then off the
    training distribution and the samples are noisy blobs whatever the model learned."""
    from jaxsim.testbeds.concept_images import diffusion
    m = cfg.model
    if m.name != "unet":
        return
    end = float(diffusion._alpha_bar64(m)[-1])
    if end > ALPHA_BAR_END_MAX:
        raise ConfigError(
            f"{where}model.beta_end ({m.beta_end}) with model.beta_start ({m.beta_start}) "
            f"and model.timesteps ({m.timesteps}) leaves ᾱ = {end:.3g} at the last level; "
            f"sampling starts from N(0, I), which needs ᾱ <= {ALPHA_BAR_END_MAX:g}: raise "
            f"model.beta_end (the 1000-level schedule rescaled: beta_start "
            f"{0.1 / m.timesteps:.3g}, beta_end {min(20 / m.timesteps, 0.999):.3g}), add "
            f"model.timesteps, or use model.schedule: cosine")


def _analyze(request):
    from jaxsim.testbeds.concept_images import analysis
    return analysis.analyze(request.out, request.cfg, request.rows, request.num_sequences)


def _figures(request):
    from jaxsim.testbeds.concept_images import figures
    return figures.draw(request.out, request.axes, request.rows, request.metrics)


def _summary_of_analysis(doc) -> dict:
    """Per run: the steps colour and size were learned and blue-small first elicited by each
    method (None = never, within the saved checkpoints)."""
    out = {}
    for r in doc["runs"]:
        learned, first = r.get("learned_step", {}), r.get("elicited_step", {})
        used = r.get("used_step", {})
        out[r["run_id"]] = {"colour_used": used.get("colour"), "size_used": used.get("size"),
                            "colour_learned": learned.get("colour"),
                            "size_learned": learned.get("size"),
                            "naive_elicited": first.get("naive"),
                            "intervention_elicited": first.get("intervention"),
                            "overprompt_elicited": first.get("overprompt")}
    return out


OBJECTIVE = Objective(task.inputs, task.loss, task.evaluate, ("loss",))

TESTBED = Testbed(
    name="concept_images", config=ConceptImagesConfig, models=("unet",), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, objective=OBJECTIVE,
    rules=(check_resolution, check_schedule), analysis=Analysis(_analyze), figures=_figures, labels=LABELS,
    unit="images", summary_metrics=("loss_train_classes", "loss_heldout"),
    summary_analysis=_summary_of_analysis,
    doc="concept space: conditional diffusion on rendered circles, hidden capabilities")
