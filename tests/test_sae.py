"""SAE building blocks against independent ground truth: hand-computed gradients, numpy
references, known data statistics, and a short TopK training that must find the true atoms."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxsim.training import sae_metrics as sm
from jaxsim.models import sae
from jaxsim.testbeds.concept_geometry import task as cg


def sparsemax_bisection(s: np.ndarray) -> np.ndarray:
    """Reference: find tau with sum(max(s - tau, 0)) = 1 by bisection (float64, no sort)."""
    lo, hi = s.max(-1, keepdims=True) - 1.0, s.max(-1, keepdims=True)
    for _ in range(200):
        mid = (lo + hi) / 2
        too_low = np.maximum(s - mid, 0).sum(-1, keepdims=True) > 1
        lo, hi = np.where(too_low, mid, lo), np.where(too_low, hi, mid)
    return np.maximum(s - (lo + hi) / 2, 0)


def test_sparsemax_matches_bisection_and_lies_on_simplex():
    s = np.random.default_rng(0).normal(size=(6, 9)) * np.array([0.05, 0.3, 1, 3, 10, 30])[:, None]
    z = np.asarray(sparsemax_jit(jnp.asarray(s, jnp.float32)))
    np.testing.assert_allclose(z, sparsemax_bisection(s), atol=1e-5)
    np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)
    assert (z >= 0).all()
    assert (z > 0).sum(-1)[0] == 9 and (z > 0).sum(-1)[-1] == 1  # small scale dense, large sparse


sparsemax_jit = jax.jit(sae.sparsemax)


def test_sparsemax_ties_and_limits():
    np.testing.assert_allclose(sparsemax_jit(jnp.full((1, 4), 0.7)), np.full((1, 4), 0.25))
    tied = sparsemax_jit(jnp.array([[2.0, 2.0, -5.0, -9.0]]))
    np.testing.assert_allclose(tied, [[0.5, 0.5, 0.0, 0.0]])  # the zero-temperature softmax
    s = jnp.array([[0.01, -0.02, 0.03]])  # all in the support: z = 1/F + s - mean(s)
    np.testing.assert_allclose(sparsemax_jit(s), 1 / 3 + s - s.mean(), atol=1e-6)


def test_sparsemax_gradients_match_closed_form_jacobian():
    s = jnp.array([[1.0, 0.4, 0.0, 0.9, -1.0]])
    z = np.asarray(sae.sparsemax(s))[0]
    on = (z > 0).astype(np.float64)
    expected = np.diag(on) - np.outer(on, on) / on.sum()
    np.testing.assert_allclose(jax.jacobian(sae.sparsemax)(s)[0, :, 0], expected, atol=1e-6)
    check_grads(sae.sparsemax, (s,), order=1, modes=("fwd", "rev"), eps=1e-3)


def test_jumprelu_and_step_pseudo_gradients_by_hand():
    theta, eps = 0.1, 0.01  # kernel is 1 where |pre - theta| < eps / 2 = 0.005
    pre = jnp.array([0.098, 0.103, 0.2, 0.0, 0.1049])
    th = jnp.full(pre.shape, theta)
    g = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out, vjp = jax.vjp(sae.jumprelu, pre, th, jnp.asarray(eps))
    np.testing.assert_allclose(out, [0.0, 0.103, 0.2, 0.0, 0.1049])
    d_pre, d_theta, d_eps = vjp(g)
    np.testing.assert_allclose(d_pre, [0, 2, 3, 0, 5])                 # H(pre - theta) * g
    np.testing.assert_allclose(d_theta, [-10, -20, 0, 0, -50], rtol=1e-5)  # -(theta/eps) K g
    assert float(d_eps) == 0.0
    out, vjp = jax.vjp(sae.heaviside, pre, th, jnp.asarray(eps))
    np.testing.assert_allclose(out, [0, 1, 1, 0, 1])
    d_pre, d_theta, _ = vjp(g)
    np.testing.assert_allclose(d_pre, np.zeros(5))
    np.testing.assert_allclose(d_theta, [-100, -200, 0, 0, -500], rtol=1e-5)  # -(1/eps) K g
    far = jnp.array([0.5, -0.3, 0.9])  # away from theta the pre-gradient is the true one
    check_grads(lambda p: sae.jumprelu(p, jnp.full(3, theta), eps), (far,), 1, modes=("rev",))


def hp_of(kind, d_in=4, **kw):
    return sae.default_hp(kind, d_in, **kw)


def positive_params(kind, d_in, d_sae, key=0):
    """Params whose pre-activations are all positive (b_enc large), so masks decide sparsity."""
    p = sae.init(jax.random.key(key), d_in, d_sae, kind)
    return {**p, "b_enc": jnp.full((d_sae,), 10.0)}


def test_topk_traced_k_is_exact_and_vmaps():
    x = jax.random.normal(jax.random.key(1), (5, 6))
    params = positive_params("topk", 6, 12)
    ks = jnp.array([1, 3, 7], jnp.int32)
    enc = jax.jit(jax.vmap(lambda k: sae.encode(params, x, "topk", hp_of("topk", 6, k=k))))
    z = np.asarray(enc(ks))
    acts = np.asarray(x @ params["W_enc"] + params["b_enc"][None, :])
    for zi, k in zip(z, [1, 3, 7]):
        assert ((zi != 0).sum(-1) == k).all()
        top = np.argsort(-acts, axis=-1)[:, :k]
        assert all(set(np.flatnonzero(r)) == set(t) for r, t in zip(zi, top))
    hp = hp_of("topk", 6, k=3, multi_topk_coef=0.125)  # 4k = F: the 4k term keeps every act
    total, (m, _) = sae.loss(params, x, "topk", hp, sae.init_aux(12))
    full_mse = ((np.asarray(x) - acts @ np.asarray(params["W_dec"])) ** 2).sum(-1).mean()
    np.testing.assert_allclose([m["multi_topk"], total], [full_mse, m["mse"] + full_mse / 8],
                               rtol=1e-5)
    # weight 0: skipping the term (a group whose largest weight is 0) changes no bit
    hp0 = hp_of("topk", 6, k=3, multi_topk_coef=0.0)
    grad = lambda multi: jax.value_and_grad(lambda p: sae.loss(p, x, "topk", hp0, sae.init_aux(12),
                                                               multi_topk=multi)[0])(params)
    (with_term, g1), (without, g2) = grad(True), grad(False)
    assert float(with_term) == float(without)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(a, b)


def test_batchtopk_keeps_batch_budget_and_uses_threshold_at_inference():
    x = jax.random.normal(jax.random.key(2), (8, 6))
    params = positive_params("batchtopk", 6, 12)
    hp = hp_of("batchtopk", 6, k=3)
    z = np.asarray(jax.jit(lambda p: sae.encode(p, x, "batchtopk", hp))(params))
    acts = np.asarray(x @ params["W_enc"] + params["b_enc"][None, :])
    assert (z != 0).sum() == 8 * 3
    assert len(set((z != 0).sum(-1))) > 1  # per-sample L0 varies
    np.testing.assert_allclose(np.sort(z[z != 0]), np.sort(acts.ravel())[-24:])
    thr = np.median(acts)
    z_inf = sae.encode(params, x, "batchtopk", hp, threshold=jnp.asarray(thr))
    np.testing.assert_allclose(z_inf, np.where(acts > thr, acts, 0), rtol=1e-6)


def test_update_aux_counts_dead_steps_and_ema_threshold():
    hp = hp_of("batchtopk", threshold_decay=0.9, dead_steps=2)
    aux = sae.init_aux(3)
    aux = sae.update_aux(aux, jnp.array([[0.0, 2.0, 0.0], [0.0, 0.5, 0.0]]), hp)
    assert float(aux["threshold"]) == 0.5  # first update: the smallest positive code
    aux = sae.update_aux(aux, jnp.array([[0.0, 0.0, 1.5]]), hp)
    np.testing.assert_allclose(aux["threshold"], 0.9 * 0.5 + 0.1 * 1.5)
    np.testing.assert_array_equal(aux["steps_since_fired_F"], [2, 1, 0])
    np.testing.assert_array_equal(sae.dead_latents(aux, hp), [True, False, False])


def test_auxk_is_off_without_dead_latents_and_trains_them_otherwise():
    x = jax.random.normal(jax.random.key(3), (4, 8))
    params = sae.init(jax.random.key(4), 8, 16, "topk")
    aux = sae.init_aux(16)
    grad = jax.grad(lambda p, hp: sae.loss(p, x, "topk", hp, aux)[0])
    alive, all_dead = hp_of("topk", 8, k=1), hp_of("topk", 8, k=1, dead_steps=0)
    assert float(sae.loss(params, x, "topk", alive, aux)[1][0]["auxk"]) == 0.0
    assert float(sae.loss(params, x, "topk", all_dead, aux)[1][0]["auxk"]) > 0.0
    unused = np.asarray((sae.encode(params, x, "topk", alive) == 0).all(0))
    g_alive, g_dead = grad(params, alive), grad(params, all_dead)
    assert np.abs(np.asarray(g_alive["W_enc"])[:, unused]).max() == 0.0
    assert np.abs(np.asarray(g_dead["W_enc"])[:, unused]).max() > 0.0


def test_decoder_projection_keeps_unit_norm():
    params = sae.init(jax.random.key(5), 6, 10, "topk")
    w = np.asarray(params["W_dec"])
    np.testing.assert_allclose(np.linalg.norm(w, axis=-1), 1.0, atol=1e-6)
    grads = {k: jax.random.normal(jax.random.key(6), v.shape) for k, v in params.items()}
    proj = np.asarray(sae.project_decoder_grads(grads, params)["W_dec"])
    np.testing.assert_allclose((proj * w).sum(-1), 0.0, atol=1e-5)
    lr = 1e-2  # a projected step moves the norm at second order only; renormalising fixes it
    assert np.abs(np.linalg.norm(w - lr * proj, axis=-1) - 1).max() < lr ** 2 * 10
    opt = optax.adam(0.1)
    upd, _ = opt.update(sae.project_decoder_grads(grads, params), opt.init(params))
    stepped = sae.renormalize_decoder(optax.apply_updates(params, upd))
    np.testing.assert_allclose(np.linalg.norm(stepped["W_dec"], axis=-1), 1.0, atol=1e-6)


def test_init_conventions_and_b_dec_median():
    for kind in sae.KINDS:
        p = sae.init(jax.random.key(7), 5, 9, kind)
        np.testing.assert_array_equal(p["W_enc"], p["W_dec"].T)
    np.testing.assert_allclose(
        np.linalg.norm(sae.init(jax.random.key(7), 5, 9, "relu_decnorm")["W_dec"], axis=-1), 0.1)
    np.testing.assert_allclose(jax.nn.softplus(sae.init(jax.random.key(7), 5, 9, "spade")[
        "lambda_pre"]), 1 / 10, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(sae.init(jax.random.key(7), 5, 9, "jumprelu")[
        "log_threshold"]), 1e-3, rtol=1e-5)
    x = jnp.array([0.0, 1, 2, 3, 100])[:, None] * jnp.array([[0.6, 0.8]])  # median at 2
    p = sae.init(jax.random.key(7), 2, 3, "topk")
    np.testing.assert_allclose(sae.init_b_dec(p, x)["b_dec"], [1.2, 1.6], atol=1e-3)
    np.testing.assert_allclose(sae.init_b_dec(p, x, "mean")["b_dec"], [12.72, 16.96], atol=1e-4)


def test_relu_penalties_by_hand():
    p = {"W_enc": jnp.eye(2), "b_enc": jnp.zeros(2), "W_dec": jnp.diag(jnp.array([2.0, 3.0])),
         "b_dec": jnp.zeros(2)}
    x, aux = jnp.array([[1.0, -1.0]]), sae.init_aux(2)
    for kind, penalty in [("relu", 1.0), ("relu_decnorm", 2.0)]:  # z = [1, 0]; ||d_0|| = 2
        total, (m, _) = sae.loss(p, x, kind, hp_of(kind, 2, sparsity_coef=0.5), aux)
        np.testing.assert_allclose([m["mse"], m["penalty"], total], [2.0, penalty, 2 + penalty / 2])


def test_spade_codes_are_local_simplex_weights():
    protos = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p = {"W_enc": protos.T, "W_dec": protos, "lambda_pre": jnp.asarray(50.0)}
    x = jnp.array([[0.9, 0.1], [-0.8, 0.05], [0.5, 0.5]])
    z = np.asarray(sae.encode(p, x, "spade", hp_of("spade", 2)))
    np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(z[:2], [[1, 0, 0], [0, 0, 1]], atol=1e-6)  # nearest prototype
    np.testing.assert_allclose(z[2], [0.5, 0.5, 0.0], atol=1e-6)        # equidistant: split
    grads = jax.grad(lambda q: sae.loss(q, x, "spade", hp_of("spade", 2), sae.init_aux(3))[0])(
        {**p, "lambda_pre": jnp.asarray(-3.0)})  # small lambda: several active
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(grads["lambda_pre"]) != 0.0


@pytest.mark.parametrize("kind", sae.KINDS)
def test_loss_vmaps_over_hparams(kind):
    x = jax.random.normal(jax.random.key(8), (6, 4))
    params, aux = sae.init(jax.random.key(9), 4, 8, kind), sae.init_aux(8)
    hps = [hp_of(kind, sparsity_coef=c, k=k) for c, k in [(0.0, 1), (0.3, 3)]]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *hps)
    batched = jax.jit(jax.vmap(lambda hp: sae.loss(params, x, kind, hp, aux)[0]))(stacked)
    single = [sae.loss(params, x, kind, hp, aux)[0] for hp in hps]
    np.testing.assert_allclose(batched, single, rtol=1e-5)


def test_coef_schedule():
    np.testing.assert_allclose([sae.coef_schedule(s, 10) for s in (0, 5, 10, 50)], [0, .5, 1, 1])
    assert float(sae.coef_schedule(3, 0)) == 1.0


def test_subspace_concepts_have_their_intrinsic_dims():
    consts = cg.subspace_constants(jax.random.key(10), 8, 32, dim_choices=(1, 4),
                                   dim_weights=(3, 1), noise_std=0.0)
    assert sorted(np.asarray(consts.dims_C).tolist()) == [1] * 6 + [4] * 2
    batch = cg.draw(jax.random.key(11), consts, 2000)
    x, labels = np.asarray(batch.x_BxD), np.asarray(batch.concept_B)
    for c in range(8):
        xs = x[labels == c]
        assert abs(len(xs) / 2000 - 1 / 8) < 0.03
        assert np.linalg.matrix_rank(xs - xs.mean(0), tol=1e-4) == int(consts.dims_C[c])
        assert np.linalg.norm(xs.mean(0) - np.asarray(consts.means_CxD[c])) < 0.5
    small = cg.subspace_constants(jax.random.key(10), 4, 32, dim_choices=(1, 4),
                                  dim_weights=(3, 1))  # concept c is fixed by fold_in(key, c)
    np.testing.assert_array_equal(small.bases_CxMxD[0], consts.bases_CxMxD[0])


def linear_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Training accuracy of a least-squares one-vs-rest linear classifier with bias."""
    xb = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(xb, np.eye(labels.max() + 1)[labels], rcond=None)[0]
    return float(((xb @ w).argmax(1) == labels).mean())


@pytest.mark.parametrize("make, linear_max", [(cg.circles_constants, 0.65),
                                              (cg.moons_constants, 0.93)])
def test_manifold_concepts_are_exact_but_not_linearly_separable(make, linear_max):
    consts = make(jax.random.key(12), d_ambient=16, noise_std=0.0)
    batch = cg.draw(jax.random.key(13), consts, 2000)
    x, labels = np.asarray(batch.x_BxD), np.asarray(batch.concept_B)
    dist = np.asarray(cg.arc_distances(consts, batch.x_BxD))
    assert dist.min(-1).max() < 1e-5 and (dist.argmin(-1) == labels).all()
    embed = np.asarray(consts.embed_2xD)
    np.testing.assert_allclose(x - x @ embed.T @ embed, 0.0, atol=1e-5)  # a 2-D plane
    assert linear_accuracy(x, labels) < linear_max


def test_metrics_by_hand():
    x = jnp.array([[1.0, 0.0], [3.0, 2.0]])
    mean_hat = jnp.broadcast_to(x.mean(0, keepdims=True), x.shape)
    assert float(sm.fvu(x, x)) == 0.0 and float(sm.fvu(x, mean_hat)) == 1.0
    assert float(sm.mse(x, jnp.zeros_like(x))) == 7.0
    # latent 0 fires on all 11 inputs (dense), 1 and 3 on one each (9% < 10%), 2 never (dead)
    z = jnp.zeros((11, 4)).at[:, 0].set(1.0).at[1, 1].set(2.0).at[10, 3].set(0.5)
    assert float(sm.l0(z)) == pytest.approx(13 / 11)
    assert float(sm.dead_fraction(z)) == 0.25 and float(sm.dense_fraction(z)) == 0.25
    concept = jnp.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 0])
    z_dims = jnp.stack([jnp.arange(6) < d for d in np.array([1, 2, 4, 3])[concept]]) * 1.0
    res = sm.l0_vs_intrinsic_dim(z_dims, concept, jnp.array([1, 2, 4, 3]))
    np.testing.assert_allclose([res["corr"], res["slope"]], [1.0, 1.0], atol=1e-6)


def test_recovery_metrics_perfect_vs_random():
    consts = cg.subspace_constants(jax.random.key(14), 5, 16, dim_choices=(1,), centre_norm=0.)
    batch = cg.draw(jax.random.key(15), consts, 500)
    targets = np.abs(np.asarray(cg.coordinate_targets(batch, 5)))  # nonnegative true codes
    perm = np.array([3, 0, 4, 1, 2])
    z_perfect = np.c_[2.0 * targets[:, perm], np.zeros((500, 3))]   # permuted, scaled, 3 dead
    dirs, valid = cg.true_directions(consts)
    w_perfect = np.r_[-np.asarray(dirs)[perm], np.asarray(jax.random.normal(
        jax.random.key(16), (3, 16)))]
    assert sm.mcc(z_perfect, targets)[0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(sm.mcc(z_perfect, targets)[1], np.argsort(perm))
    f1, _ = sm.best_latent_f1(z_perfect, batch.concept_B, 5)
    np.testing.assert_allclose(f1, 1.0)
    assert float(sm.mean_max_cosine(w_perfect, dirs, valid)) == pytest.approx(1.0, abs=1e-5)
    z_rand = np.maximum(np.random.default_rng(0).normal(size=(500, 8)), 0)
    assert sm.mcc(z_rand, targets)[0] < 0.2
    assert float(sm.best_latent_f1(z_rand, batch.concept_B, 5)[0].max()) < 0.5
    w_rand = jax.random.normal(jax.random.key(17), (8, 16))
    assert float(sm.mean_max_cosine(w_rand, dirs, valid)) < 0.8


def test_topk_sae_recovers_one_dimensional_concepts():
    """Adam + decoder projection on 1-D concepts through the origin: each true axis gets an
    atom (|cos| > 0.9), which random atoms do not have."""
    d, c, f, steps = 16, 4, 16, 200
    consts = cg.subspace_constants(jax.random.key(1), c, d, dim_choices=(1,), center_norm=0.0)
    hp, opt = hp_of("topk", d, k=1, dead_steps=20), optax.adam(1e-2)

    def train(key):
        params = sae.init(key, d, f, "topk")

        def body(carry, i):
            params, opt_state, aux = carry
            x = cg.draw(jax.random.fold_in(key, i), consts, 128).x_BxD
            grads, (_, z) = jax.grad(sae.loss, has_aux=True)(params, x, "topk", hp, aux)
            upd, opt_state = opt.update(sae.project_decoder_grads(grads, params), opt_state)
            params = sae.renormalize_decoder(optax.apply_updates(params, upd))
            return (params, opt_state, sae.update_aux(aux, z, hp)), None

        carry = (params, opt.init(params), sae.init_aux(f))
        return jax.lax.scan(body, carry, jnp.arange(steps))[0][0]

    key = jax.random.key(0)
    dirs, valid = cg.true_directions(consts)
    before = sm.mean_max_cosine(sae.init(key, d, f, "topk")["W_dec"], dirs, valid)
    after = sm.mean_max_cosine(jax.jit(train)(key)["W_dec"], dirs, valid)
    assert float(before) < 0.9 < float(after)
