"""In-context graph tracing (Park, Lee, Lubana et al. 2025, "ICLR: In-Context Learning of
Representations"): uniform random walks on a small graph whose nodes wear random tokens.

The graph (a square grid, a ring, a hexagonal or a triangular lattice) is fixed by static keys and built on the
host. Every sequence draws its own injective node -> token map (the first n of a random
permutation of the `task.vocab` tokens), so the graph's structure can only be read from the
context; a fraction `task.pretrain_frac` of training sequences instead uses the run's one fixed
map (the "pretraining" semantics of those tokens). A walk starts at a uniform node and moves to
a uniform neighbour at every step. Splits: `id` (the training distribution) and `conflict` (the
fixed map's tokens placed on the graph by a fresh random arrangement: the context contradicts
the pretraining semantics whenever `pretrain_frac > 0`).

All functions are pure and jittable; shapes in names: B batch, L context, N nodes, K vocab,
M maximum degree.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.config import Spec
from jaxsim.testbeds import streams as streams

FIXED_MAP, TRAIN_STREAM, EVAL_ID, EVAL_CONFLICT = range(4)
SPLITS = ("id", "conflict")
GRAPHS = ("grid", "ring", "hex", "triangular")


class Batch(NamedTuple):
    tokens_BxL: jax.Array          # int32 tokens of the walk
    nodes_BxL: jax.Array           # int32 node ids of the walk
    next_probs_BxLxK: jax.Array    # true next-token distribution: uniform over the tokens of
                                   # the current node's neighbours
    token_of_node_BxN: jax.Array   # the sequence's injective node -> token map
    prior_probs_BxLxK: jax.Array   # next-token distribution under the run's fixed map (the
                                   # "pretraining" graph) given the current token; 0 off its tokens


# ---- the graph (host, numpy: a pure function of the static keys) ----

def adjacency(graph: str, size: int) -> np.ndarray:
    """[N, N] symmetric 0/1 adjacency. grid: size x size, 4-neighbour moves, no wraparound;
    ring: `size` nodes in a cycle (bipartite iff `size` is even); hex: the honeycomb lattice drawn
    as a size x size brick wall (every horizontal edge; the vertical edge below (i, j) when
    i + j is even), degree <= 3; triangular: the grid plus the diagonal (i, j) - (i + 1, j + 1)
    of every cell, degree <= 6, full of triangles (not bipartite). Node (i, j) is i * size + j."""
    if graph == "ring":
        idx = np.arange(size)
        a = np.zeros((size, size), np.int32)
        a[idx, (idx + 1) % size] = a[(idx + 1) % size, idx] = 1
        return a
    if graph not in ("grid", "hex", "triangular"):
        raise ValueError(f"unknown graph {graph!r}; allowed: {GRAPHS}")
    n = size * size
    a = np.zeros((n, n), np.int32)
    for i in range(size):
        for j in range(size):
            v = i * size + j
            if j + 1 < size:
                a[v, v + 1] = a[v + 1, v] = 1
            if i + 1 < size and (graph != "hex" or (i + j) % 2 == 0):
                a[v, v + size] = a[v + size, v] = 1
            if graph == "triangular" and i + 1 < size and j + 1 < size:
                a[v, v + size + 1] = a[v + size + 1, v] = 1
    return a


def layout(graph: str, size: int) -> np.ndarray:
    """[N, 2] drawing coordinates of the nodes (grid/hex: (column, -row); ring: a circle;
    triangular: the grid sheared to unit equilateral triangles, (column - row / 2,
    -row sqrt(3) / 2), an affine image of the grid's drawing)."""
    if graph == "ring":
        angle = 2 * np.pi * np.arange(size) / size
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)
    rows, cols = np.divmod(np.arange(size * size), size)
    if graph == "triangular":
        return np.stack([cols - rows / 2, -rows * np.sqrt(3) / 2], axis=1)
    return np.stack([cols, -rows], axis=1).astype(np.float64)


def num_nodes(spec: Spec) -> int:
    size = spec.task.graph_size
    return size if spec.task.graph == "ring" else size * size


def neighbour_table(adj_NxN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N, M] neighbour ids padded with the node itself, [N] degrees)."""
    deg = adj_NxN.sum(1)
    table = np.tile(np.arange(len(adj_NxN))[:, None], (1, deg.max()))
    for v, row in enumerate(adj_NxN):
        nbrs = np.flatnonzero(row)
        table[v, : len(nbrs)] = nbrs
    return table.astype(np.int32), deg.astype(np.int32)


def vocab_size(spec: Spec) -> int:
    return spec.task.vocab


def seq_len(spec: Spec) -> int:
    return spec.task.context_length


# ---- sampling ----

def random_maps(key: jax.Array, batch_size: int, num_nodes: int, vocab: int) -> jax.Array:
    """[B, N] injective node -> token maps: the first N entries of a uniform permutation."""
    order = jnp.argsort(jax.random.uniform(key, (batch_size, vocab)), axis=-1)
    return order[:, :num_nodes].astype(jnp.int32)


def walks(key: jax.Array, table_NxM: jax.Array, deg_N: jax.Array, batch_size: int,
          length: int) -> jax.Array:
    """[B, L] node ids: x_0 uniform over nodes, x_{t+1} uniform over the neighbours of x_t."""
    start_key, step_key = jax.random.split(key)
    x0 = jax.random.randint(start_key, (batch_size,), 0, table_NxM.shape[0], jnp.int32)
    u_LxB = jax.random.uniform(step_key, (length - 1, batch_size))

    def advance(x_B, u_B):
        pick = jnp.minimum((u_B * deg_N[x_B]).astype(jnp.int32), deg_N[x_B] - 1)
        nxt = table_NxM[x_B, pick]
        return nxt, nxt

    _, rest_LxB = jax.lax.scan(advance, x0, u_LxB)
    return jnp.concatenate([x0[:, None], rest_LxB.T], axis=1)


def token_distribution(adj_NxN: jax.Array, nodes_BxL: jax.Array, maps_BxN: jax.Array,
                       vocab: int) -> jax.Array:
    """[B, L, K] uniform distribution over the tokens of the neighbours of each walk node."""
    rows_BxLxN = adj_NxN[nodes_BxL].astype(jnp.float32)
    rows_BxLxN = rows_BxLxN / rows_BxLxN.sum(-1, keepdims=True)
    onehot_BxNxK = jax.nn.one_hot(maps_BxN, vocab, dtype=jnp.float32)
    return jnp.einsum("bln,bnk->blk", rows_BxLxN, onehot_BxNxK)


def fixed_map(run_key: jax.Array, spec: Spec) -> jax.Array:
    """[N] the run's one fixed node -> token map (its "pretraining" semantics)."""
    return random_maps(jax.random.fold_in(run_key, FIXED_MAP), 1, num_nodes(spec),
                       spec.task.vocab)[0]


class Constants(NamedTuple):
    adj_NxN: jax.Array
    table_NxM: jax.Array
    deg_N: jax.Array
    fixed_map_N: jax.Array


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> Constants:
    adj = adjacency(spec.task.graph, spec.task.graph_size)
    table, deg = neighbour_table(adj)
    return Constants(jnp.asarray(adj), jnp.asarray(table), jnp.asarray(deg),
                     fixed_map(run_key, spec))


def prior_distribution(consts: Constants, tokens_BxL: jax.Array, vocab: int) -> jax.Array:
    """[B, L, K] the fixed-map graph's next-token distribution for each token (0 if the token
    is not one of the fixed map's)."""
    node_of_token_K = jnp.full((vocab,), -1, jnp.int32).at[consts.fixed_map_N].set(
        jnp.arange(consts.fixed_map_N.shape[0], dtype=jnp.int32))
    node_BxL = node_of_token_K[tokens_BxL]
    probs = token_distribution(consts.adj_NxN, jnp.maximum(node_BxL, 0),
                               consts.fixed_map_N[None], vocab)
    return probs * (node_BxL >= 0)[..., None].astype(probs.dtype)


def sample(key: jax.Array, consts: Constants, spec: Spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    """`batch_size` walks of `context_length` tokens drawn with `key`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    n, vocab = consts.table_NxM.shape[0], spec.task.vocab
    map_key, use_key, walk_key = jax.random.split(key, 3)
    if split == "id":
        fresh_BxN = random_maps(map_key, batch_size, n, vocab)
        use_fixed_B = jax.random.uniform(use_key, (batch_size,)) < hparams["task"]["pretrain_frac"]
        maps_BxN = jnp.where(use_fixed_B[:, None], consts.fixed_map_N[None], fresh_BxN)
    else:  # the fixed tokens, rearranged on the graph per sequence
        perm_BxN = random_maps(map_key, batch_size, n, n)
        maps_BxN = consts.fixed_map_N[perm_BxN]
    nodes = walks(walk_key, consts.table_NxM, consts.deg_N, batch_size, spec.task.context_length)
    tokens = jnp.take_along_axis(maps_BxN, nodes, axis=1)
    return Batch(tokens, nodes, token_distribution(consts.adj_NxN, nodes, maps_BxN, vocab),
                 maps_BxN, prior_distribution(consts, tokens, vocab))


train_batch, eval_batch = streams.batches(sample, TRAIN_STREAM,
                                         {"id": EVAL_ID, "conflict": EVAL_CONFLICT})


