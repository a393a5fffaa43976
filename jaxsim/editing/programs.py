"""The compiled edit study of one source shape group, vmapped over its runs.

Per run: the graph (the run's own constants), `num_edits` trained facts drawn uniformly, each
asked in `contexts` walks (row 0 the edited prompt) and `paraphrases` fresh ones; the new
object at each cycle distance d (`facts.edit_target`); the key statistics from the run's own
training walks; the model before any edit (accuracy of `eval_facts` facts, the entity
representations). Then per method, every (distance, edit) pair (rome, finetune) or every
(distance, batch) (memit, alphaedit) is edited and evaluated under one `lax.map` (`chunk` at a
time vmapped), so a group compiles once whatever the numbers of edits and distances.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim import testbeds
from jaxsim.config import Spec
from jaxsim.editing import edits, methods, sites, values
from jaxsim.program_caches import program_cache
from jaxsim.testbeds.knowledge_graph import facts
from jaxsim.training.loop import model_of

EDITS, CONTEXTS, PARAPHRASE, EVAL, REPR, COV = range(6)
# subject distance bins on the edited relation's cycle: (name, lo, hi) inclusive
BINS = (("d0", 0, 0), ("d1_2", 1, 2), ("d3_8", 3, 8), ("d9plus", 9, 1 << 30))


class Layout(NamedTuple):
    """What a group's program computes (static, hashable): the edit config's values."""
    kind: str                    # counterfactual or corrective
    methods: tuple
    fact_token: str              # subject_last or last
    layer: int
    memit_layers: tuple
    distances: tuple
    num_edits: int
    batch_size: int
    contexts: int
    paraphrases: int
    value_steps: int
    value: tuple                 # (lr, kl_factor, weight_decay) of the value optimisation
    rome_clamp: float
    memit_clamp: float
    memit_cov_weight: float
    alphaedit_threshold: float
    alphaedit_l2: float
    finetune_steps: int
    finetune_lr: float
    finetune_scope: str
    cov_sequences: int
    eval_facts: int
    repr_layer: int
    repr_site: str               # subject or query
    repr_contexts: int
    chunk: int
    seed: int


def _prompts(key, g, spec, hparams, subject_B, relation_B, num):
    """[B, num, T] prompts of each fact in `num` walks."""
    context = spec.task.walk_length - 1
    rows = jax.vmap(lambda q: facts.fact_prompts(jax.random.fold_in(key, q), g, spec, hparams,
                                                 subject_B, relation_B, context)[0])(
        jnp.arange(num))
    return jnp.swapaxes(rows, 0, 1)


def _setup(spec: Spec, layout: Layout, params, hparams, seed):
    testbed = testbeds.of(spec)
    g = facts.graph(testbed.constants(jax.random.key(seed), spec, hparams))
    n, num_rel = g.object_NxR.shape
    key = jax.random.fold_in(jax.random.key(layout.seed), seed)
    stream = lambda s: jax.random.fold_in(key, s)  # noqa: E731
    if layout.kind == "corrective":
        # every fact in its edited prompt (row 0 of its rewriting prompts); the edits are
        # held-out facts whose top-1 there is wrong, distinct, drawn uniformly (Gumbel top-k);
        # where the run has fewer, the rest are right held-out facts (wrong_before = 0)
        all_s = jnp.repeat(jnp.arange(n), num_rel)
        all_r = jnp.tile(jnp.arange(num_rel), n)
        rewrite_all = _prompts(stream(CONTEXTS), g, spec, hparams, all_s, all_r, layout.contexts)
        logits = model_of(spec).apply({"params": params}, rewrite_all[:, 0])
        wrong_F = (logits[:, -1].argmax(-1) != g.object_NxR.reshape(-1)) & (
            g.kind_NxR.reshape(-1) != facts.TRAINED)
        held_F = g.kind_NxR.reshape(-1) != facts.TRAINED
        score = jnp.where(wrong_F, 1e6, jnp.where(held_F, 0.0, -1e9)) + jax.random.gumbel(
            stream(EDITS), (n * num_rel,))
        flat = jax.lax.top_k(score, layout.num_edits)[1]
        rewrite = rewrite_all[flat]
        wrong_E = wrong_F[flat]
    else:
        trained = (g.kind_NxR == facts.TRAINED).reshape(-1)
        flat = jax.random.choice(stream(EDITS), n * num_rel, (layout.num_edits,),
                                 p=trained / trained.sum())
    subject_E, relation_E = flat // num_rel, flat % num_rel
    if layout.kind != "corrective":
        rewrite = _prompts(stream(CONTEXTS), g, spec, hparams, subject_E, relation_E,
                           layout.contexts)
        wrong_E = jnp.zeros((layout.num_edits,), bool)
    targets_DxE = jnp.stack([facts.edit_target(g, subject_E, relation_E, d)
                             for d in layout.distances])
    eval_flat = jax.random.choice(stream(EVAL), n * num_rel, (layout.eval_facts,),
                                  replace=layout.eval_facts > n * num_rel)
    eval_s, eval_r = eval_flat // num_rel, eval_flat % num_rel
    if layout.repr_site == "query":     # every fact of every entity, repr_contexts times
        repr_s = jnp.repeat(jnp.arange(n), layout.repr_contexts * num_rel)
        repr_r = jnp.tile(jnp.arange(num_rel), n * layout.repr_contexts)
    else:
        repr_s = jnp.repeat(jnp.arange(n), layout.repr_contexts)
        repr_r = jax.random.randint(stream(REPR), repr_s.shape, 0, num_rel)
    setup = dict(
        graph=g, subject_E=subject_E, relation_E=relation_E, targets_DxE=targets_DxE,
        wrong_before_E=wrong_E, rewrite_ExCxT=rewrite,
        para_ExPxT=_prompts(stream(PARAPHRASE), g, spec, hparams, subject_E, relation_E,
                            layout.paraphrases),
        eval_subject_F=eval_s, eval_relation_F=eval_r,
        eval_truth_F=g.object_NxR[eval_s, eval_r], eval_kind_F=g.kind_NxR[eval_s, eval_r],
        eval_FxT=_prompts(stream(EVAL), g, spec, hparams, eval_s, eval_r, 1)[:, 0],
        repr_MxT=_prompts(stream(REPR), g, spec, hparams, repr_s, repr_r, 1)[:, 0])
    walks = testbed.sample(stream(COV), g, spec, hparams, layout.cov_sequences, "train")
    layers = tuple(sorted({layout.layer, *_memit_layers(spec, layout)}))
    stats = edits.key_stats(model_of(spec), params, walks.tokens_BxL, layers,
                            layout.alphaedit_threshold)
    return setup, layers, stats


def _request(layout: Layout, g, it: dict) -> sites.Request:
    """An edit's Request: its prompts (answer at the last token, the subject just before), the
    fact token, and the KL prompt: the edited prompt asking the subject's next relation."""
    length = it["rewrite"].shape[-1]
    answer = jnp.full((layout.contexts,), length - 1)
    lookup = answer if layout.fact_token == "last" else answer - 1
    other = (it["relation"] + 1) % g.object_NxR.shape[1]
    kl = it["rewrite"][0].at[-1].set(facts.tokens_of_relation(g, other).astype(jnp.int32))
    return sites.Request(it["rewrite"], lookup, answer, it["new"], kl, lookup[0])


def _memit_layers(spec: Spec, layout: Layout) -> tuple:
    return layout.memit_layers or tuple(range(spec.model.num_layers - 1))


def _forward(spec, layout, params, setup, edited_T, para_PxT):
    """(top-1 [1 + P + F], p of every token at the answer [1 + P + F, V], reps [N, D])."""
    model = model_of(spec)
    tokens = jnp.concatenate([edited_T[None], para_PxT, setup["eval_FxT"], setup["repr_MxT"]])
    logits, acts = model.apply({"params": params}, tokens, return_activations=True)
    site = f"block{layout.repr_layer % spec.model.num_layers}"
    asked = 1 + para_PxT.shape[0] + setup["eval_FxT"].shape[0]
    probs = jax.nn.softmax(logits[:asked, -1])
    g = setup["graph"]
    n, num_rel = g.object_NxR.shape
    if layout.repr_site == "query":
        # [N, C * D]: per cycle, the relation token's residual averaged over the cycle's
        # relations and the contexts (the knowledge-graph analysis's query sites)
        on_cycle_RxC = jax.nn.one_hot(g.cycle_R, g.order_CxN.shape[0])
        on_cycle_RxC = on_cycle_RxC / on_cycle_RxC.sum(0, keepdims=True)
        reps = acts[site][asked:, -1].reshape(n, layout.repr_contexts, num_rel, -1)
        per_cycle = jnp.einsum("nqrd,rc->ncd", reps, on_cycle_RxC) / layout.repr_contexts
        return probs, per_cycle.reshape(n, -1)
    reps = acts[site][asked:, -2]
    return probs, reps.reshape(n, layout.repr_contexts, -1).mean(1)


def _means(ok_F, mask_F):
    count = mask_F.sum()
    return jnp.where(count > 0, jnp.sum(ok_F * mask_F) / jnp.maximum(count, 1), jnp.nan)


def _evaluate(spec, layout, setup, before, params, subject, relation, new, edited_T, para_PxT):
    probs, reps = _forward(spec, layout, params, setup, edited_T, para_PxT)
    p = para_PxT.shape[0]
    top = probs.argmax(-1)
    g = setup["graph"]
    out = {"efficacy": (top[0] == new).astype(jnp.float32), "efficacy_prob": probs[0, new],
           "paraphrase": (top[1:1 + p] == new).mean(), "paraphrase_prob": probs[1:1 + p, new].mean(),
           "shattering": methods.shattering(before["reps"], reps)}
    right_F = top[1 + p:] == setup["eval_truth_F"]
    untouched_F = ~((setup["eval_subject_F"] == subject) & (setup["eval_relation_F"] == relation))
    pos_N = g.position_CxN[g.cycle_R[relation]]
    n = pos_N.shape[0]
    gap = jnp.abs(pos_N[setup["eval_subject_F"]] - pos_N[subject])
    dist_F = jnp.minimum(gap, n - gap)
    masks = {kind: untouched_F & (setup["eval_kind_F"] == k) for k, kind in enumerate(facts.KINDS)}
    masks.update({name: untouched_F & (dist_F >= lo) & (dist_F <= hi) for name, lo, hi in BINS})
    masks["all"] = untouched_F
    for name, mask in masks.items():
        out[f"acc_before_{name}"] = _means(before["right_F"], mask)
        out[f"acc_after_{name}"] = _means(right_F, mask)
    return out


def study(spec: Spec, layout: Layout, params: dict, hparams: dict, seed) -> dict:
    """{method: {metric: [D, E]}} and "pca": reps before and after edit 0 at the smallest and
    largest distance with the first method [3, N, D], "order" the run's cycles [C, N]."""
    model = model_of(spec)
    setup, layers, stats = _setup(spec, layout, params, hparams, seed)
    probs, reps = _forward(spec, layout, params, setup, setup["rewrite_ExCxT"][0, 0],
                           setup["para_ExPxT"][0])
    p = layout.paraphrases
    before = {"reps": reps,
              "right_F": probs[1 + p:].argmax(-1) == setup["eval_truth_F"]}
    num_d, num_e = len(layout.distances), layout.num_edits
    def flat(a):      # [E, ...] -> [D * E, ...], distance-major
        return jnp.broadcast_to(a, (num_d,) + a.shape).reshape((num_d * num_e,) + a.shape[1:])
    items = dict(subject=flat(setup["subject_E"]), relation=flat(setup["relation_E"]),
                 new=setup["targets_DxE"].reshape(-1), rewrite=flat(setup["rewrite_ExCxT"]),
                 para=flat(setup["para_ExPxT"]))
    ev = functools.partial(_evaluate, spec, layout, setup, before)
    vhp = lambda clamp: values.ValueHparams(*(jnp.float32(v) for v in (*layout.value, clamp)))  # noqa: E731
    request = functools.partial(_request, layout, setup["graph"])

    def single(method):
        def one(it):
            if method == "rome":
                edited, prob = edits.rome(model, params, request(it), stats.cov_SxKxK[
                    layers.index(layout.layer)], layout.layer, layout.value_steps,
                    vhp(layout.rome_clamp))
            else:
                edited, prob = edits.finetune(model, params, request(it), layout.layer,
                                              layout.finetune_steps,
                                              jnp.float32(layout.finetune_lr),
                                              layout.finetune_scope)
            out = ev(edited, it["subject"], it["relation"], it["new"], it["rewrite"][0],
                     it["para"])
            return {**out, "value_prob": prob}
        return jax.lax.map(one, items, batch_size=layout.chunk)

    def batched(method):
        mlayers = _memit_layers(spec, layout)
        pick = jnp.array([layers.index(m) for m in mlayers])
        sub = edits.Stats(stats.cov_SxKxK[pick], stats.projector_SxKxK[pick])
        b = layout.batch_size
        grouped = jax.tree.map(lambda a: a.reshape((-1, b) + a.shape[1:]), items)

        def one(batch):
            edited, prob_B = edits.memit(
                model, params, jax.vmap(request)(batch), sub, mlayers, layout.value_steps,
                vhp(layout.memit_clamp), jnp.float32(layout.memit_cov_weight),
                jnp.float32(layout.alphaedit_l2) if method == "alphaedit" else None)
            out = jax.vmap(lambda it: ev(edited, it["subject"], it["relation"], it["new"],
                                         it["rewrite"][0], it["para"]))(batch)
            return {**out, "value_prob": prob_B}
        per = jax.lax.map(one, grouped, batch_size=max(1, layout.chunk // b))
        return jax.tree.map(lambda a: a.reshape(-1), per)

    result = {}
    for method in layout.methods:
        per = single(method) if method in ("rome", "finetune") else batched(method)
        result[method] = jax.tree.map(lambda a: a.reshape(num_d, num_e), per)
    result["pca"] = _pca_examples(spec, layout, model, params, setup, stats, layers, reps, vhp)
    result["edited"] = {"subject": setup["subject_E"], "relation": setup["relation_E"],
                        "old": setup["graph"].object_NxR[setup["subject_E"], setup["relation_E"]],
                        "new": setup["targets_DxE"],
                        "kind": setup["graph"].kind_NxR[setup["subject_E"], setup["relation_E"]],
                        "wrong_before": setup["wrong_before_E"],
                        "cycle": setup["graph"].cycle_R[setup["relation_E"]]}
    result["order"] = setup["graph"].order_CxN
    return result


def _pca_examples(spec, layout, model, params, setup, stats, layers, reps_before, vhp):
    """[3, N, D]: the representations before, and after ROME's edit 0 at the smallest and at
    the largest distance."""
    out = [reps_before]
    for d in (0, len(layout.distances) - 1):
        req = _request(layout, setup["graph"], {
            "rewrite": setup["rewrite_ExCxT"][0], "new": setup["targets_DxE"][d, 0],
            "relation": setup["relation_E"][0]})
        edited, _ = edits.rome(model, params, req, stats.cov_SxKxK[layers.index(layout.layer)],
                               layout.layer, layout.value_steps, vhp(layout.rome_clamp))
        out.append(_forward(spec, layout, edited, setup, req.tokens_PxT[0],
                            setup["para_ExPxT"][0])[1])
    return jnp.stack(out)


@program_cache()
def program(spec: Spec, layout: Layout):
    """jit of `study`, vmapped over a leading run axis."""
    return jax.jit(jax.vmap(functools.partial(study, spec, layout)))
