"""The safety fine-tuning mechanisms (jaxsim.testbeds.safety_pcfg.mechanisms) against truth built
into their inputs: known ranks and subspaces, numpy transcriptions of the official evals, known
spectral norms, and a tiny random GPT."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim.models.transformer import GPT
from jaxsim.testbeds.safety_pcfg import mechanisms as mech


def orthonormal(key, d, k):
    return np.linalg.qr(np.asarray(jax.random.normal(key, (d, k))))[0]


def low_rank(left, sigma, right):
    return jnp.asarray(left @ np.diag(sigma) @ right.T, jnp.float32)


def test_effective_rank_and_spectrum_of_a_rank_r_delta():
    keys = jax.random.split(jax.random.key(0), 4)
    out_dim, in_dim, r = 24, 16, 5
    w_pre = jax.random.normal(keys[0], (out_dim, in_dim))
    left, right = orthonormal(keys[1], out_dim, r), orthonormal(keys[2], in_dim, r)
    equal = mech.delta_spectrum(w_pre + low_rank(left, np.full(r, 1.5), right), w_pre, k=r)
    assert equal["entropy"] == pytest.approx(r, abs=1e-3)
    assert int(equal["energy90"]) == r and int(equal["energy99"]) == r
    sigma = np.array([2.0, 1.8, 1.5, 1.2, 1.0])
    delta = low_rank(left, sigma, right)
    spread = mech.delta_spectrum(w_pre + delta, w_pre, k=r)
    truth = np.linalg.svd(np.asarray(w_pre + delta, np.float64) - np.asarray(w_pre, np.float64),
                          compute_uv=False)
    np.testing.assert_allclose(spread["sigma"], truth, atol=2e-5)
    assert int(spread["energy99"]) == r and 1 < float(spread["entropy"]) < r
    # the top-k directions span the constructed subspaces
    np.testing.assert_allclose(spread["left"] @ spread["left"].T, left @ left.T, atol=1e-4)
    np.testing.assert_allclose(spread["right"] @ spread["right"].T, right @ right.T, atol=1e-4)


def official_index(sigma, fraction=0.9):
    """evals/column_space_analysis.py get_index_value: the first j with cumulative energy > 0.9."""
    total, running = sum(s ** 2 for s in sigma), 0.0
    for j, s in enumerate(sigma):
        running += s ** 2
        if running / total > fraction:
            return j
    return 0


def test_energy_rank_is_one_more_than_the_official_index():
    assert int(mech.energy_rank(jnp.array([3.0, 2.0, 1.0, 0.0]), 0.9)) == 2   # 9/14, 13/14
    rng = np.random.default_rng(0)
    for _ in range(20):
        sigma = np.sort(rng.exponential(size=12))[::-1].astype(np.float32)
        assert int(mech.energy_rank(jnp.asarray(sigma), 0.9)) == official_index(sigma) + 1


@pytest.fixture(scope="module")
def pretrained():
    """W_pre [32, 24] of rank 6 with equal singular values: all 6 directions are principal."""
    keys = jax.random.split(jax.random.key(1), 3)
    full_left, full_right = orthonormal(keys[0], 32, 32), orthonormal(keys[1], 24, 24)
    w_pre = low_rank(full_left[:, :6], np.full(6, 2.0), full_right[:, :6])
    return w_pre, full_left, full_right


@pytest.mark.parametrize("side", ["left", "right"])
def test_null_space_alignment_of_constructed_deltas(pretrained, side):
    w_pre, full_left, full_right = pretrained
    other = full_right if side == "left" else full_left
    own = full_left if side == "left" else full_right

    def delta(vectors):
        pair = (vectors, other[:, :3]) if side == "left" else (other[:, :3], vectors)
        return low_rank(pair[0], np.array([3.0, 2.0, 1.0]), pair[1])
    inside_null = mech.null_space_alignment(delta(own[:, 10:13]), w_pre, k=3, side=side)
    inside_rows = mech.null_space_alignment(delta(own[:, 1:4]), w_pre, k=3, side=side)
    assert float(inside_null["alignment"]) == pytest.approx(1.0, abs=1e-4)
    assert float(inside_rows["alignment"]) == pytest.approx(0.0, abs=1e-4)
    d = own.shape[0]
    assert int(inside_null["null_dim"]) == d - 6
    assert float(inside_null["baseline"]) == pytest.approx((d - 6) / d)


def test_random_delta_sits_at_the_random_baseline(pretrained):
    w_pre = pretrained[0]
    deltas = jax.random.normal(jax.random.key(2), (64,) + w_pre.shape)
    found = jax.jit(jax.vmap(lambda dw: mech.null_space_alignment(dw, w_pre, k=4)))(deltas)
    assert float(jnp.mean(found["alignment"])) == pytest.approx(26 / 32, abs=0.025)
    np.testing.assert_allclose(found["baseline"], 26 / 32)


def test_column_space_sines_match_a_numpy_transcription_of_the_official_loop(pretrained):
    w_pre, full_left, full_right = pretrained
    w_pre = w_pre + 0.3 * jax.random.normal(jax.random.key(3), w_pre.shape)
    w_new = w_pre + low_rank(full_left[:, 8:10], np.array([4.0, 3.0]), full_right[:, :2])
    found = mech.column_space_sines(w_new, w_pre)

    def get_svd(arr):
        arr = arr - np.mean(arr, axis=0)
        return np.linalg.svd(arr, full_matrices=True)
    u_new, s_new, _ = get_svd(np.asarray(w_new, np.float64))
    u_pre, s_pre, _ = get_svd(np.asarray(w_pre, np.float64))
    basis = u_pre[:, :official_index(s_pre) + 1]
    proj = basis @ basis.T
    expected = []
    for i in range(official_index(s_new)):
        q = u_new[:, i]
        cos = (proj @ q) @ q / (np.linalg.norm(proj @ q) * np.linalg.norm(q))
        expected.append(np.sin(np.arccos(np.clip(cos, -1, 1))))
    np.testing.assert_allclose(found["sines"][: len(expected)], expected, atol=2e-3)
    assert int(jnp.sum(found["used"])) == official_index(s_new) + 1


def test_what_a_delta_does_to_activations():
    keys = jax.random.split(jax.random.key(4), 3)
    w_pre = jax.random.normal(keys[0], (12, 8))
    subspace = orthonormal(keys[1], 8, 8)
    s_basis, rest = subspace[:, :2], subspace[:, 2:]
    delta = -w_pre @ jnp.asarray(s_basis @ s_basis.T, jnp.float32)    # cancels W_pre on S
    acts = jnp.asarray(np.concatenate([(s_basis @ np.ones((2, 3))).T, (rest @ np.eye(6)[:, :3]).T]),
                       jnp.float32)
    found = mech.delta_projection(delta, w_pre, acts, k=2)
    np.testing.assert_allclose(found["in_top"], [1, 1, 1, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(found["removed"], [1, 1, 1, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(found["relative_change"], [1, 1, 1, 0, 0, 0], atol=1e-5)
    # the official row-space score, σ_j cos(a, v_j) of the mean-centred weight, by a plain loop
    scores = mech.row_space_scores(w_pre, acts)
    centred = np.asarray(w_pre, np.float64) - np.asarray(w_pre, np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=True)
    for i, a in enumerate(np.asarray(acts, np.float64)):
        for j in range(len(s)):
            cos = a @ vt[j] / (np.linalg.norm(a) * np.linalg.norm(vt[j]))
            assert abs(float(scores[i, j]) - s[j] * cos) < 1e-4


def test_cluster_separation_pca_and_centroid_distances():
    keys = jax.random.split(jax.random.key(5), 4)
    safe = jax.random.normal(keys[0], (300, 8))
    unsafe = jax.random.normal(keys[1], (300, 8)) + 6.0 * jnp.eye(8)[0][None]
    same = jax.random.normal(keys[2], (300, 8))
    assert float(mech.class_separation(safe, unsafe)) > 1.5
    assert float(mech.class_separation(safe, same)) < 0.25
    coords, share = mech.pca_2d(jnp.concatenate([safe, unsafe]))
    assert coords.shape == (600, 2)
    # the first component is the axis the clusters differ along (variance 1 + 3², of 1 + 3² + 7)
    pooled = np.asarray(jnp.concatenate([safe, unsafe]), np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for j in range(2):   # numpy's PCA, up to each component's sign
        truth = centred @ vt[j]
        np.testing.assert_allclose(np.abs(coords[:, j] @ truth) / (truth @ truth), 1, atol=1e-4)
    np.testing.assert_allclose(share, s[:2] ** 2 / np.sum(s ** 2), atol=1e-5)
    assert abs(np.corrcoef(coords[:, 0], pooled[:, 0])[0, 1]) > 0.95
    assert float(share[0]) == pytest.approx(10 / 17, abs=0.05)
    jailbreak = jax.random.normal(keys[3], (50, 8)) + 1.0 * jnp.eye(8)[0][None]  # nearer safe
    found = mech.centroid_distances(jailbreak, safe, unsafe)
    q, ms, mu = (np.asarray(v, np.float64) for v in (jailbreak, safe.mean(0), unsafe.mean(0)))
    d_safe, d_unsafe = np.linalg.norm(q - ms, axis=1), np.linalg.norm(q - mu, axis=1)
    assert float(found["l2_gap"]) == pytest.approx(np.mean(d_unsafe - d_safe), rel=1e-5)
    cos_gap = (q @ mu / np.linalg.norm(q, axis=1) / np.linalg.norm(mu)
               - q @ ms / np.linalg.norm(q, axis=1) / np.linalg.norm(ms))
    assert float(found["cos_gap"]) == pytest.approx(np.mean(cos_gap), rel=1e-4)
    assert float(found["l2_gap"]) > 2.0 and float(found["closer_to_safe"]) > 0.95
    assert float(found["to_safe"]) < float(found["to_unsafe"])


def test_window_mean_averages_the_output_positions():
    acts = jax.random.normal(jax.random.key(6), (3, 20, 4))
    starts = jnp.array([0, 5, 10])
    found = mech.window_mean(acts, starts, width=10)
    for b, s in enumerate([0, 5, 10]):
        np.testing.assert_allclose(found[b], np.asarray(acts)[b, s:s + 10].mean(axis=0), atol=1e-6)


def test_lipschitz_ratios_of_a_linear_map():
    a = jax.random.normal(jax.random.key(7), (10, 8))
    sigma = np.linalg.svd(np.asarray(a), compute_uv=False)
    ratios = mech.lipschitz_ratios(lambda x: a @ x, jnp.ones(8), jax.random.key(8), 512)
    assert float(ratios.min()) >= sigma[-1] - 1e-3 and float(ratios.max()) <= sigma[0] + 1e-3
    # E‖A u‖² over unit u uniform on the sphere = ‖A‖_F² / 8
    assert float(jnp.mean(ratios ** 2)) == pytest.approx(np.sum(sigma ** 2) / 8, rel=0.08)
    x = jnp.linspace(-1.0, 1.0, 8)
    row = int(jnp.argmax(a @ x))
    assert float(mech.gradient_norm(lambda v: jnp.max(a @ v), x)) == pytest.approx(
        float(jnp.linalg.norm(a[row])), rel=1e-5)


@pytest.fixture(scope="module")
def tiny_gpt():
    model = GPT(vocab_size=12, max_length=14, num_layers=2, d_model=16, num_heads=2, d_mlp=32)
    tokens = jax.random.randint(jax.random.key(9), (3, 14), 0, 12)
    return model, model.init(jax.random.key(10), tokens)["params"], tokens


def test_embedding_path_equals_the_normal_call(tiny_gpt):
    model, params, tokens = tiny_gpt
    normal = model.apply({"params": params}, tokens[:1])[0]
    zero = jnp.zeros((14, 16))
    np.testing.assert_array_equal(mech.embedding_shift_apply(model, params, tokens[0])(zero),
                                  normal)
    # replacing every token embedding by itself, as free input vectors, gives the same logits
    own = params["embed"]["embedding"][tokens[0]]
    replaced = mech.embedding_shift_apply(model, params, tokens[0], jnp.ones(14, bool))(own)
    np.testing.assert_array_equal(replaced, normal)
    assert np.abs(np.asarray(mech.embedding_shift_apply(model, params, tokens[0])(own)
                             - normal)).max() > 1e-4      # adding them again does change logits


def test_mlp_activations_rebuild_the_blocks(tiny_gpt):
    model, params, tokens = tiny_gpt
    acts = mech.mlp_activations(model, params, tokens)
    _, residual = model.apply({"params": params}, tokens, return_activations=True)
    for i in range(2):
        proj = params[f"block{i}"]["proj"]
        # the block's output minus its MLP output is its attention-updated residual, whose
        # LayerNorm is the MLP input
        mlp_out = acts[f"proj_in{i}"] @ proj["kernel"] + proj["bias"][None, None]
        mid = residual[f"block{i}"] - mlp_out
        ln = params[f"block{i}"]["ln2"]
        mu, var = mid.mean(-1, keepdims=True), mid.var(-1, keepdims=True)
        rebuilt = (mid - mu) / jnp.sqrt(var + 1e-6) * ln["scale"][None, None] + ln["bias"][None, None]
        np.testing.assert_allclose(acts[f"fc_in{i}"], rebuilt, atol=1e-4)


def test_top_logit_gradient_norm_counts_only_the_prompt(tiny_gpt):
    model, params, tokens = tiny_gpt
    early = mech.top_logit_gradient_norm(model, params, tokens[0], jnp.array(6))
    whole = mech.gradient_norm(
        lambda d: jnp.max(mech.embedding_shift_apply(model, params, tokens[0])(d)[6]),
        jnp.zeros((14, 16)))
    assert 0 < float(early) < float(whole)   # position 6's own embedding is left out


def test_insert_slots():
    seq = jnp.arange(10)
    found = mech.insert_slots(seq, jnp.array(3), 2, -1)
    assert found.tolist() == ([0, 1, 2, -1, -1] + list(range(3, 10)))[:10]


def test_soft_token_attack_lowers_the_target_loss_vmapped(tiny_gpt):
    model, params, tokens = tiny_gpt
    starts = jnp.array([3, 4, 5])
    insert = jax.vmap(mech.insert_slots, in_axes=(0, 0, None, None))
    slots = insert(jnp.zeros_like(tokens, bool), starts, 2, True)
    adv_tokens = insert(tokens, starts, 2, 0)
    targets = jnp.roll(jax.random.randint(jax.random.key(11), tokens.shape, 0, 12), -1, axis=1)
    loss_mask = jnp.arange(14)[None] >= (starts + 2)[:, None]
    attack = jax.jit(mech.attack_gpt, static_argnums=(0, 7))
    found = attack(model, params, adv_tokens, targets, loss_mask, slots, jax.random.key(12), 20)
    assert found["losses"].shape == (3, 21) and found["delta"].shape == (3, 14, 16)
    assert bool(jnp.all(found["losses"][:, -1] < found["losses"][:, 0]))
    assert float(jnp.abs(jnp.where(slots[..., None], 0.0, found["delta"])).max()) == 0.0
    radius = jnp.mean(jnp.linalg.norm(params["embed"]["embedding"][adv_tokens], axis=-1), axis=1)
    assert bool(jnp.all(jnp.linalg.norm(found["delta"], axis=-1) <= radius[:, None] * 1.0001))
    # the final logits are the model's on the attacked embeddings, sequence by sequence
    alone = mech.embedding_shift_apply(model, params, adv_tokens[1], slots[1])(found["delta"][1])
    np.testing.assert_allclose(found["logits"][1], alone, atol=1e-5)


def test_a_sweep_vmaps_the_weight_analyses_over_runs(tiny_gpt):
    model, params, tokens = tiny_gpt
    runs_pre = jax.vmap(lambda k: model.init(k, tokens)["params"])(
        jax.random.split(jax.random.key(13), 2))
    runs_ft = jax.tree.map(lambda p: p * 1.1, runs_pre)

    def analyse(ft, pre):
        w_ft, w_pre = mech.mlp_weight(ft, 1, "fc"), mech.mlp_weight(pre, 1, "fc")
        return mech.null_space_alignment(w_ft - w_pre, w_pre, k=3)["alignment"]
    swept = jax.jit(jax.vmap(analyse))(runs_ft, runs_pre)
    for run in range(2):
        alone = analyse(*(jax.tree.map(lambda p, r=run: p[r], tree)
                          for tree in (runs_ft, runs_pre)))
        assert float(swept[run]) == pytest.approx(float(alone), abs=1e-5)
    # ΔW = 0.1 W_pre lies in W_pre's principal subspace: only its top-3 directions, all inside
    assert float(jnp.max(swept)) < 1e-3
    assert mech.mlp_weight(params, 0, "fc").shape == (32, 16)
