"""The knowledge graph's facts, walks and prompts: pure, jittable functions (the public API the
editing code builds on).

The graph. N entities sit on C cyclic orders; cycle c is a uniform random permutation of the
entities drawn from the run's key (`order_CxN[c, p]` = the entity at position p of cycle c,
`position_CxN[c, e]` its inverse). Relations: for each cycle c and hop k = 1..h the k-th
successor and the k-th predecessor, R = C * 2h relations, indexed
    r = c * 2h + j,  step_R[r] = j + 1 for j < h (successor), -(j - h + 1) for j >= h,
so the fact (e, r) has the object `order[c, (position[c, e] + step_R[r]) mod N]` and the inverse
relation `inverse_R[r]` (same cycle, opposite step) maps the object back to e.

Tokens. Entity e is token e (0..N-1), relation r is token N + r (vocabulary N + R; no
separators). A training sequence is a walk of L facts, e_0 r_0 e_1 r_1 ... r_{L-1} e_L (2L + 1
tokens), each e_{i+1} = object(e_i, r_i); the loss is on e_1..e_L (predicted at the relation
tokens). r_i is uniform over e_i's *trained* relations other than the inverse of r_{i-1} (walks
never step straight back, so the answer to a query is never the entity just before it by
construction of the walk).

Fact kinds (`kind_NxR`, the held-out design). Facts come in inverse pairs
{(e, c, +k), (object, c, -k)}, one pair per (cycle, position, hop):
    0 TRAINED        a step of training walks ("direct" split: asked in a fresh walk context);
    1 LOGICAL        held out, its inverse fact is trained: each pair with probability
                     `logical_frac` holds out one of its two facts (a fair coin says which);
    2 COMPOSITIONAL  held out with its inverse: a hop-2 pair (e, c, +2), (o, c, -2) with
                     probability `compositional_frac`, whose two hop-1 pairs (e, c, +1) and
                     (e+1, c, +1) (positions on cycle c) are kept fully trained, so
                     (e, c, +2) = (e, +1) then (e+1, +1) and (o, c, -2) = (o, -1) then (o-1, -1)
                     are 2-hop chains of trained facts (needs h >= 2).
Every entity's +1 and -1 facts on cycle 0 are always trained (every entity can be walked from
and into). A held-out fact is never a step of a training walk nor of a prompt's context.

Public functions (B batch, T prompt length):
    make_graph(key, N, C, h, logical_frac, compositional_frac) -> Graph
    graph(consts) -> Graph                   the run's graph from the testbed's constants
    tokens_of_relation(graph, r) -> token    N + r
    walk(key, graph, start_B, num_facts) -> (entities_BxL1, relations_BxL) forward walks
    fact_prompts(key, consts, spec, hparams, subject_B, relation_B, num_context)
        -> (tokens_BxT, answer_index_B): T = 2 * num_context + 2; a walk of `num_context`
        trained facts that ends at the subject (drawn backwards from it with `key`: different
        keys give different contexts, the paraphrases), then `subject relation`. The model's
        prediction at answer_index_B (= T - 1, the relation token) is the object; the subject
        token is at subject_index_B = answer_index_B - 1.
    edit_target(graph, subject, relation, distance) -> the entity `distance` steps further along
        the relation's cycle than the true object (in the relation's direction; 0 = the object)
    facts_of_order(order_CxN, cycle_R, step_R) -> (position_CxN, object_NxR)
    moved(graph, cycle, entity, new_position) -> Graph with `entity` moved to `new_position` of
        `cycle` (the others between keep their order and shift by one): every fact recomputed,
        the "trickling" ground truth of relocating an entity; kinds unchanged
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

TRAINED, LOGICAL, COMPOSITIONAL = 0, 1, 2
KINDS = ("direct", "logical", "compositional")   # split names, indexed by kind
GRAPH_STREAM = 0                                 # sub-stream of the run key for the graph


class Graph(NamedTuple):
    order_CxN: jax.Array      # int32 entity at each position of each cycle
    position_CxN: jax.Array   # int32 position of each entity in each cycle
    object_NxR: jax.Array     # int32 object of every fact (subject, relation)
    kind_NxR: jax.Array       # int32 TRAINED / LOGICAL / COMPOSITIONAL
    cycle_R: jax.Array        # int32 cycle of each relation
    step_R: jax.Array         # int32 signed hop of each relation (+k successor, -k predecessor)
    inverse_R: jax.Array      # int32 the inverse relation (same cycle, opposite step)


def relations(num_cycles: int, max_hop: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(cycle_R, step_R, inverse_R) of the R = C * 2h relations, r = c * 2h + j."""
    j = jnp.arange(2 * max_hop)
    step = jnp.where(j < max_hop, j + 1, -(j - max_hop + 1))
    inv = jnp.where(j < max_hop, j + max_hop, j - max_hop)
    c = jnp.arange(num_cycles)[:, None]
    cycle_R = jnp.broadcast_to(c, (num_cycles, 2 * max_hop)).reshape(-1)
    step_R = jnp.broadcast_to(step, (num_cycles, 2 * max_hop)).reshape(-1)
    inverse_R = (c * 2 * max_hop + inv[None]).reshape(-1)
    return cycle_R.astype(jnp.int32), step_R.astype(jnp.int32), inverse_R.astype(jnp.int32)


def facts_of_order(order_CxN: jax.Array, cycle_R: jax.Array, step_R: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """(position_CxN, object_NxR) of the cycles `order_CxN`."""
    num_cycles, n = order_CxN.shape
    position = jnp.zeros_like(order_CxN).at[jnp.arange(num_cycles)[:, None], order_CxN].set(
        jnp.broadcast_to(jnp.arange(n, dtype=order_CxN.dtype), order_CxN.shape))
    pos_NxR = position[cycle_R[None, :], jnp.arange(n)[:, None]]
    obj = order_CxN[cycle_R[None, :], (pos_NxR + step_R[None, :]) % n]
    return position, obj.astype(jnp.int32)


def make_graph(key: jax.Array, num_entities: int, num_cycles: int, max_hop: int,
               logical_frac: jax.Array, compositional_frac: jax.Array) -> Graph:
    """The cycles and the held-out design (module docstring) drawn from `key`; the fractions
    may be traced per-run scalars."""
    n, h = num_entities, max_hop
    k_order, k_log, k_dir, k_comp = jax.random.split(key, 4)
    order = jax.vmap(lambda k: jax.random.permutation(k, n))(
        jax.random.split(k_order, num_cycles)).astype(jnp.int32)
    cycle_R, step_R, inverse_R = relations(num_cycles, h)
    position, obj = facts_of_order(order, cycle_R, step_R)
    # pairs indexed [c, p, k-1]: facts (order[c, p], +k) and (order[c, p + k], -k)
    hop = jnp.arange(1, h + 1)[None, None, :]
    comp_CxN = (jax.random.uniform(k_comp, (num_cycles, n)) < compositional_frac) & (h >= 2)
    support_CxN = comp_CxN | jnp.roll(comp_CxN, 1, axis=1)     # hop-1 pairs at p and p + 1
    comp = comp_CxN[:, :, None] & (hop == 2)
    locked = ((hop == 1) & support_CxN[:, :, None]) | comp
    locked = locked | ((hop == 1) & (jnp.arange(num_cycles) == 0)[:, None, None])
    logical = (jax.random.uniform(k_log, (num_cycles, n, h)) < logical_frac) & ~locked
    succ_out = jax.random.bernoulli(k_dir, 0.5, (num_cycles, n, h))
    succ_kind = jnp.where(comp, COMPOSITIONAL, jnp.where(logical & succ_out, LOGICAL, TRAINED))
    pair_pred = jnp.where(comp, COMPOSITIONAL, jnp.where(logical & ~succ_out, LOGICAL, TRAINED))
    # the predecessor fact at position q belongs to the pair at q - k
    q_minus_k = (jnp.arange(n)[None, :, None] - hop) % n
    pred_kind = jnp.take_along_axis(pair_pred, jnp.broadcast_to(q_minus_k, pair_pred.shape), 1)
    kind_CxNx2h = jnp.concatenate([succ_kind, pred_kind], axis=2)
    j_R = jnp.arange(cycle_R.shape[0]) % (2 * h)
    kind = kind_CxNx2h[cycle_R[None, :], position[cycle_R[None, :], jnp.arange(n)[:, None]],
                       j_R[None, :]]
    return Graph(order, position, obj, kind.astype(jnp.int32), cycle_R, step_R, inverse_R)


def constants(run_key: jax.Array, spec, hparams: dict) -> Graph:
    """The testbed's per-run constants: the run's Graph."""
    t = spec.task
    return make_graph(jax.random.fold_in(run_key, GRAPH_STREAM), t.num_entities, t.num_cycles,
                      t.max_hop, hparams["task"]["logical_frac"],
                      hparams["task"]["compositional_frac"])


def graph(consts: Graph) -> Graph:
    """The run's Graph from the testbed's constants (they are the Graph), as JAX arrays (numpy
    ones, e.g. a Graph fetched to the host, are converted)."""
    return _jnp(consts)


def _jnp(g: Graph) -> Graph:
    return Graph(*(jnp.asarray(a) for a in g))


def tokens_of_relation(graph: Graph, relation: jax.Array) -> jax.Array:
    return graph.object_NxR.shape[0] + relation


def _choose(key: jax.Array, allowed_BxR: jax.Array) -> jax.Array:
    """[B] a uniform allowed relation per row (every row has one by the cycle-0 rule)."""
    return jax.random.categorical(key, jnp.where(allowed_BxR, 0.0, -jnp.inf)).astype(jnp.int32)


def walk(key: jax.Array, graph: Graph, start_B: jax.Array, num_facts: int
         ) -> tuple[jax.Array, jax.Array]:
    """Forward walks of trained, non-backtracking facts: ([B, L + 1] entities, [B, L]
    relations), entities[:, 0] = start_B."""
    graph = _jnp(graph)
    num_rel = graph.step_R.shape[0]
    trained_NxR = graph.kind_NxR == TRAINED

    def advance(carry, k):
        e_B, prev_B = carry
        back_BxR = jnp.arange(num_rel)[None] == jnp.where(prev_B >= 0, graph.inverse_R[prev_B],
                                                        -1)[:, None]
        r_B = _choose(k, trained_NxR[e_B] & ~back_BxR)
        nxt = graph.object_NxR[e_B, r_B]
        return (nxt, r_B), (nxt, r_B)

    keys = jax.random.split(key, num_facts)
    start_B = start_B.astype(jnp.int32)
    _, (ents_LxB, rels_LxB) = jax.lax.scan(advance, (start_B, jnp.full_like(start_B, -1)), keys)
    return jnp.concatenate([start_B[:, None], ents_LxB.T], axis=1), rels_LxB.T


def walk_into(key: jax.Array, graph: Graph, end_B: jax.Array, next_relation_B: jax.Array,
              num_facts: int) -> tuple[jax.Array, jax.Array]:
    """Walks of `num_facts` trained, non-backtracking facts that end at `end_B` and may be
    followed by `next_relation_B` without stepping back, drawn backwards: ([B, L + 1] entities
    ending with end_B, [B, L] relations)."""
    graph = _jnp(graph)
    num_rel = graph.step_R.shape[0]
    pred_NxR = graph.object_NxR[:, graph.inverse_R]            # x with (x, r) -> e, per (e, r)
    into_NxR = graph.kind_NxR[pred_NxR, jnp.arange(num_rel)[None]] == TRAINED

    def retreat(carry, k):
        e_B, nxt_B = carry
        back_BxR = jnp.arange(num_rel)[None] == graph.inverse_R[nxt_B][:, None]
        r_B = _choose(k, into_NxR[e_B] & ~back_BxR)
        prev = pred_NxR[e_B, r_B]
        return (prev, r_B), (prev, r_B)

    keys = jax.random.split(key, num_facts)
    end_B = end_B.astype(jnp.int32)
    _, (ents_LxB, rels_LxB) = jax.lax.scan(retreat, (end_B, next_relation_B.astype(jnp.int32)),
                                           keys)
    ents = jnp.concatenate([ents_LxB[::-1].T, end_B[:, None]], axis=1)
    return ents, rels_LxB[::-1].T


def interleave(graph: Graph, entities_BxL1: jax.Array, relations_BxL: jax.Array) -> jax.Array:
    """[B, 2L + 1] tokens e_0 r_0 e_1 ... r_{L-1} e_L."""
    b, length = relations_BxL.shape
    pairs = jnp.stack([entities_BxL1[:, :-1], tokens_of_relation(graph, relations_BxL)], axis=2)
    return jnp.concatenate([pairs.reshape(b, 2 * length), entities_BxL1[:, -1:]],
                           axis=1).astype(jnp.int32)


def fact_prompts(key: jax.Array, consts: Graph, spec, hparams: dict, subject_B: jax.Array,
                 relation_B: jax.Array, num_context: int) -> tuple[jax.Array, jax.Array]:
    """([B, 2 num_context + 2] tokens, [B] answer index): a trained walk of `num_context` facts
    into the subject, then `subject relation` (module docstring). `spec` and `hparams` are taken
    for the testbed's calling convention; the graph holds everything needed."""
    g = graph(consts)
    ents, rels = walk_into(key, g, subject_B, relation_B, num_context)
    prefix = interleave(g, ents, rels)
    tokens = jnp.concatenate([prefix, tokens_of_relation(g, relation_B)[:, None]], axis=1)
    return tokens.astype(jnp.int32), jnp.full(subject_B.shape, 2 * num_context + 1, jnp.int32)


def edit_target(graph: Graph, subject: jax.Array, relation: jax.Array, distance: jax.Array
                ) -> jax.Array:
    """The entity `distance` steps beyond the true object of (subject, relation) along the
    relation's cycle, in the relation's direction (negative: back towards the subject)."""
    graph = _jnp(graph)
    n = graph.order_CxN.shape[1]
    c = graph.cycle_R[relation]
    sign = jnp.sign(graph.step_R[relation])
    target_pos = graph.position_CxN[c, subject] + graph.step_R[relation] + sign * distance
    return graph.order_CxN[c, target_pos % n]


def moved(graph: Graph, cycle: jax.Array, entity: jax.Array, new_position: jax.Array) -> Graph:
    """The graph with `entity` moved to `new_position` of `cycle` (entities strictly between its
    old and new positions shift one place towards the old one); every fact recomputed."""
    graph = _jnp(graph)
    n = graph.order_CxN.shape[1]
    old = graph.position_CxN[cycle, entity]
    pos_N = graph.position_CxN[cycle]
    up = (new_position > old) & (pos_N > old) & (pos_N <= new_position)
    down = (new_position < old) & (pos_N >= new_position) & (pos_N < old)
    new_pos_N = jnp.where(up, pos_N - 1, jnp.where(down, pos_N + 1, pos_N))
    new_pos_N = jnp.where(jnp.arange(n) == entity, new_position, new_pos_N)
    row = jnp.zeros(n, graph.order_CxN.dtype).at[new_pos_N].set(jnp.arange(n, dtype=jnp.int32))
    order = graph.order_CxN.at[cycle].set(row)
    position, obj = facts_of_order(order, graph.cycle_R, graph.step_R)
    return graph._replace(order_CxN=order, position_CxN=position, object_NxR=obj)
