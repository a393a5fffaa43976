"""`jaxsim analyze DIR` for knowledge_graph: exact accuracy of every fact at every saved
checkpoint, and the entity representations per layer.

Every fact (all N x R of them) is asked `contexts` times (each a different trained walk of
walk_length - 1 facts into the subject, `facts.fact_prompts`; contexts = clip(--sequences / 16,
1, 8), 4 by default), in one compiled call per chunk of runs; a fact's accuracy is the share of
its contexts whose top-1 prediction at the relation token is the object. An entity's
representation at a site (the residual stream after the embedding, "embed", or after block i,
"block<i>") is the activation at the subject token averaged over every prompt whose subject it
is (R relations x contexts). Its **query** representation on cycle c ("query<i>": after block i,
at the relation token, where the answer is read) is the activation there averaged over the
prompts whose subject it is and whose relation is on cycle c (2h relations x contexts): the
subject as the model holds it when asked about that cycle (the mean over the steps -h..+h is
centred on the subject's own position). There is no query site after the embedding (it holds
the relation token only, the same for every subject).

analysis.json:
    {"task", "kinds": ["direct", "logical", "compositional"], "contexts", "sites": [..],
     "runs": [{"run_id", "seed", "axes", "steps": [S], "status",
               "accuracy": {kind: [S]} (mean over the facts of that kind; null: no such fact),
               "num_facts": {kind: count},
               "ring_r2": [S][sites][C] (`geometry.ring_r2`: the cross-validated share of the
               representations' variance that (cos, sin) of the position on cycle c explains
               linearly; about 0 for representations unrelated to the cycle),
               "ring_neighbours": [S][sites][C] (`geometry.ring_neighbours`: the share of each
               entity's 4 nearest neighbours within 2 positions on cycle c; chance 4 / (N - 1)),
               "ring_r2_query", "ring_neighbours_query": [S][query sites][C] (the same on each
               cycle's query representations),
               "ring_neighbours_chance": 4 / (N - 1)}, ...], "query_sites": [..]}
analysis_representations.npz (runs padded to the longest: steps -1, values NaN):
    run_id [R], steps [R, S], sites [sites], representations [R, S, sites, N, D],
    query_sites [query sites], query_representations [R, S, query sites, C, N, D],
    fact_accuracy [R, S, N, Rel], kind [R, N, Rel], object [R, N, Rel], order [R, C, N],
    position [R, C, N]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import results
from jaxsim.analysis.checkpoints import chunks, run_entry, tolist
from jaxsim.analysis.driver import map_runs
from jaxsim.testbeds.knowledge_graph import REPRESENTATIONS, facts, geometry
from jaxsim.testbeds.knowledge_graph.task import SPLITS
from jaxsim.training import loop

ANALYSIS_STREAM = 10       # sub-stream of the run key for the analysis contexts


def sites(spec) -> list[str]:
    return ["embed"] + [f"block{i}" for i in range(spec.model.num_layers)]


def query_sites(spec) -> list[str]:
    return [f"query{i}" for i in range(spec.model.num_layers)]


def num_contexts(num_sequences: int) -> int:
    return int(np.clip(num_sequences // 16, 1, 8))


def all_fact_prompts(key: jax.Array, g: facts.Graph, spec, hparams, contexts: int
                     ) -> jax.Array:
    """[Q * F, T] every fact (subject-major: f = subject * R + relation) in `contexts` walks."""
    n, num_rel = g.object_NxR.shape
    subject = jnp.repeat(jnp.arange(n, dtype=jnp.int32), num_rel)
    relation = jnp.tile(jnp.arange(num_rel, dtype=jnp.int32), n)

    def one(q):
        k = jax.random.fold_in(jax.random.fold_in(key, ANALYSIS_STREAM), q)
        return facts.fact_prompts(k, g, spec, hparams, subject, relation,
                                  spec.task.walk_length - 1)[0]

    tokens = jax.vmap(one)(jnp.arange(contexts))
    return tokens.reshape(-1, tokens.shape[-1])


def analyze_run(params_S, key: jax.Array, spec, hparams: dict, contexts: int) -> dict:
    """One run at each of its S checkpoints: fact accuracy [S, N, R] and entity
    representations [S, sites, N, D], with the run's graph."""
    g = facts.constants(key, spec, hparams)
    n, num_rel = g.object_NxR.shape
    tokens = all_fact_prompts(key, g, spec, hparams, contexts)
    model = loop.model_of(spec)
    names = sites(spec)
    num_cycles = g.order_CxN.shape[0]
    on_cycle_RxC = jax.nn.one_hot(g.cycle_R, num_cycles)
    on_cycle_RxC = on_cycle_RxC / on_cycle_RxC.sum(0, keepdims=True)

    def at(params):
        logits, acts = model.apply({"params": params}, tokens, return_activations=True)
        right = logits[:, -1].argmax(-1).reshape(contexts, n, num_rel) == g.object_NxR[None]
        reps = [acts[s][:, -2].reshape(contexts, n, num_rel, -1).mean((0, 2)) for s in names]
        query = [jnp.einsum("qnrd,rc->cnd", acts[s][:, -1].reshape(contexts, n, num_rel, -1),
                            on_cycle_RxC) / contexts for s in names[1:]]
        return right.mean(0), jnp.stack(reps), jnp.stack(query)

    accuracy, reps, query = jax.lax.map(at, params_S)
    return {"fact_accuracy": accuracy, "representations": reps,
            "query_representations": query, "kind": g.kind_NxR,
            "object": g.object_NxR, "order": g.order_CxN, "position": g.position_CxN}


def _by_kind(accuracy_SxNxR: np.ndarray, kind_NxR: np.ndarray) -> tuple[dict, dict]:
    acc, count = {}, {}
    for k, name in enumerate(SPLITS):
        mask = kind_NxR == k
        count[name] = int(mask.sum())
        acc[name] = tolist(accuracy_SxNxR[:, mask].mean(1)) if mask.any() else None
    return acc, count


def _pad(arrays: list[np.ndarray], fill) -> np.ndarray:
    """Stack arrays of different shapes, padding each axis to the longest with `fill`."""
    shape = np.max([a.shape for a in arrays], axis=0)
    out = np.full((len(arrays), *shape), fill, dtype=np.result_type(arrays[0], type(fill)))
    for i, a in enumerate(arrays):
        out[(i, *[slice(0, d) for d in a.shape])] = a
    return out


def analyze(request) -> dict:
    contexts = num_contexts(request.num_sequences)
    report, saved, names, queries = [], [], [], []
    for chunk in chunks(request.out, request.rows):
        names = max(names, sites(chunk.spec), key=len)
        queries = max(queries, query_sites(chunk.spec), key=len)
        out = jax.device_get(map_runs(analyze_run, chunk, contexts))
        for i, run in enumerate(chunk.runs):
            one = {k: np.asarray(v[i]) for k, v in out.items()}
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry["accuracy"], entry["num_facts"] = _by_kind(one["fact_accuracy"], one["kind"])
            pos = one["position"]
            entry["ring_neighbours_chance"] = geometry.ring_neighbours_chance(pos.shape[1])
            entry["ring_r2"] = tolist([[geometry.ring_r2(x, pos) for x in per_site]
                                       for per_site in one["representations"]])
            entry["ring_neighbours"] = tolist([[geometry.ring_neighbours(x, pos)
                                                for x in per_site]
                                               for per_site in one["representations"]])
            for name, score in (("ring_r2_query", geometry.ring_r2),
                                ("ring_neighbours_query", geometry.ring_neighbours)):
                entry[name] = tolist([[[score(x_c, pos[c:c + 1])[0]
                                        for c, x_c in enumerate(x_CxNxD)]
                                       for x_CxNxD in per_site]
                                      for per_site in one["query_representations"]])
            report.append(entry)
            saved.append((run.run_id, np.array(chunk.steps), one))
    report.sort(key=lambda e: e["run_id"])
    saved.sort(key=lambda t: t[0])

    def write(path):
        floats = ("fact_accuracy", "representations", "query_representations")
        fields = {k: _pad([s[2][k] for s in saved], np.nan if k in floats else -1)
                  for k in saved[0][2]}
        with open(path, "wb") as f:
            np.savez(f, run_id=np.array([s[0] for s in saved]),
                     steps=_pad([s[1] for s in saved], -1), sites=np.array(names),
                     query_sites=np.array(queries), **fields)

    results.atomic_write(request.out / REPRESENTATIONS, write)
    return {"task": request.cfg.task.name, "kinds": list(SPLITS), "contexts": contexts,
            "sites": names, "query_sites": queries, "runs": report}
