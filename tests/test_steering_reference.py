"""Steering methods against ports of their reference code on the same inputs.

ITI: likenneth/honest_llama @ 2c6b2179be7b5aa8f0a171688cf9e01b812ca327 (utils.py:
`get_com_directions`, `get_interventions_dict`, `train_probes`, `get_top_heads`;
validation/validate_2fold.py builds the head shift as dir * proj_val_std with `torch.std`).
CAA: nrimsky/CAA generate_vectors.py @ 311319dee2de9b3ff88ef8ef0a614ba39bb30ee9
(`generate_save_vectors_for_behavior`).

Definitional differences (the tests compare only where the definitions agree):
- jaxsim averages each prompt's K continuation tokens first; the references read one token
  per example (ITI the last token, CAA position -2, the answer letter): K=1 is the match.
- ITI's sigma: jaxsim takes the population std (ddof 0) over both labels of the fit prompts;
  utils.get_interventions_dict does too (np.std) but over a separate `tuning_activations`
  set (default tqa_gen_end_q), and validate_2fold.py uses torch.std (ddof 1).
- ITI's head choice: reference = global top-K over all layers x heads; jaxsim = top-k per
  layer. Probe: reference sklearn LogisticRegression (lbfgs, C=1, raw features) on a random
  80/20 train/val split; jaxsim 200 GD steps, standardised features, L2 1e-3, even/odd split.
- CAA: the reference has no validity mask (jaxsim drops invalid prompts from the mean);
  normalize_vectors.py later rescales each behaviour's vector to the behaviours' mean norm.
- Where the shift is added: jaxsim at every position; the references at the last position
  only (ITI_Intervener) or after the instruction's end (CAA add_vector_after_position).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim.steering import methods

N, S, H, D, C = 64, 2, 4, 8, 16


# ---- reference ports (numpy) -------------------------------------------------------------

def ref_get_com_directions(num_layers, num_heads, train_set_idxs, val_set_idxs,
                           separated_head_wise_activations, separated_labels):
    """Port of honest_llama utils.py `get_com_directions` (tqdm dropped)."""
    com_directions = []
    for layer in range(num_layers):
        for head in range(num_heads):
            usable_idxs = np.concatenate([train_set_idxs, val_set_idxs], axis=0)
            usable_head_wise_activations = np.concatenate(
                [separated_head_wise_activations[i][:, layer, head, :] for i in usable_idxs], axis=0)
            usable_labels = np.concatenate([separated_labels[i] for i in usable_idxs], axis=0)
            true_mass_mean = np.mean(usable_head_wise_activations[usable_labels == 1], axis=0)
            false_mass_mean = np.mean(usable_head_wise_activations[usable_labels == 0], axis=0)
            com_directions.append(true_mass_mean - false_mass_mean)
    return np.array(com_directions)


def ref_get_interventions_dict(top_heads, tuning_activations, num_heads, com_directions,
                               ddof=0):
    """Port of honest_llama utils.py `get_interventions_dict` with use_center_of_mass=True
    (ddof=1 reproduces validate_2fold.py's torch.std)."""
    interventions = {}
    for layer, head in top_heads:
        interventions[f"model.layers.{layer}.self_attn.head_out"] = []
    for layer, head in top_heads:
        direction = com_directions[layer * num_heads + head]
        direction = direction / np.linalg.norm(direction)
        activations = tuning_activations[:, layer, head, :]
        proj_vals = activations @ direction.T
        proj_val_std = np.std(proj_vals, ddof=ddof)
        interventions[f"model.layers.{layer}.self_attn.head_out"].append(
            (head, direction.squeeze(), proj_val_std))
    for layer, head in top_heads:
        key = f"model.layers.{layer}.self_attn.head_out"
        interventions[key] = sorted(interventions[key], key=lambda x: x[0])
    return interventions


def ref_train_probes(seed, train_set_idxs, val_set_idxs, separated_head_wise_activations,
                     separated_labels, num_layers, num_heads):
    """Port of honest_llama utils.py `train_probes` (sklearn, as there)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    all_head_accs = []
    all_X_train = np.concatenate([separated_head_wise_activations[i] for i in train_set_idxs], 0)
    all_X_val = np.concatenate([separated_head_wise_activations[i] for i in val_set_idxs], 0)
    y_train = np.concatenate([separated_labels[i] for i in train_set_idxs], axis=0)
    y_val = np.concatenate([separated_labels[i] for i in val_set_idxs], axis=0)
    for layer in range(num_layers):
        for head in range(num_heads):
            clf = LogisticRegression(random_state=seed, max_iter=1000).fit(
                all_X_train[:, layer, head, :], y_train)
            all_head_accs.append(accuracy_score(y_val, clf.predict(all_X_val[:, layer, head, :])))
    return np.array(all_head_accs)


def ref_top_heads(all_head_accs_np, num_heads, num_to_intervene):
    """The selection of honest_llama utils.py `get_top_heads` (global over layers x heads)."""
    flat = all_head_accs_np.reshape(-1)
    return [(int(i) // num_heads, int(i) % num_heads)
            for i in np.argsort(flat)[::-1][:num_to_intervene]]


def ref_caa_vector(pos_activations, neg_activations, layers):
    """Port of nrimsky/CAA generate_vectors.py `generate_save_vectors_for_behavior`'s vector:
    per layer, the mean over examples of positive minus negative activations."""
    out = {}
    for layer in layers:
        all_pos_layer = np.stack(pos_activations[layer])
        all_neg_layer = np.stack(neg_activations[layer])
        out[layer] = (all_pos_layer - all_neg_layer).mean(axis=0)
    return out


# ---- inputs ------------------------------------------------------------------------------

def _acts(seed, k=1, valid=None, head_shift=None):
    """Random activations; matching heads shifted by `head_shift` [S, H, D] (default random)."""
    ks = jax.random.split(jax.random.key(seed), 5)
    shift = (jax.random.normal(ks[4], (S, H, D)) * 0.7 if head_shift is None
             else jnp.asarray(head_shift, jnp.float32))
    hm = jax.random.normal(ks[2], (N, k, S, H, D)) + shift[None, None]
    return methods.Activations(jax.random.normal(ks[0], (N, k, S, C)) + 0.5,
                               jax.random.normal(ks[1], (N, k, S, C)),
                               hm, jax.random.normal(ks[3], (N, k, S, H, D)),
                               jnp.ones(N, bool) if valid is None else jnp.asarray(valid))


def _separated(acts):
    """honest_llama's layout: per question its answers' [2, S, H, D] activations, labels [1, 0]."""
    pos = np.asarray(acts.heads_match_NxKxSxHxD[:, 0], np.float64)
    neg = np.asarray(acts.heads_nonmatch_NxKxSxHxD[:, 0], np.float64)
    return [np.stack([p, q]) for p, q in zip(pos, neg)], [np.array([1, 0])] * len(pos)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---- ITI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
def test_iti_theta_and_sigma_match_honest_llama(masked):
    valid = (np.arange(N) % 5 != 3) if masked else np.ones(N, bool)
    acts = _acts(1, valid=valid)
    shift_SxHxD, _ = methods.iti(acts, num_heads=H)           # every head chosen
    shift = np.asarray(shift_SxHxD, np.float64)
    sigma_j = np.linalg.norm(shift, axis=-1)
    theta_j = shift / sigma_j[..., None]

    sep, labels = _separated(acts)
    usable = np.flatnonzero(valid)
    com = ref_get_com_directions(S, H, usable[::2], usable[1::2], sep, labels)
    tuning = np.concatenate([sep[i] for i in usable])          # both labels, the fit prompts
    heads = [(s, h) for s in range(S) for h in range(H)]
    for ddof in (0, 1):
        iv = ref_get_interventions_dict(heads, tuning, H, com, ddof=ddof)
        theta_r = np.stack([np.stack([d for _, d, _ in iv[f"model.layers.{s}.self_attn.head_out"]])
                            for s in range(S)])
        sigma_r = np.array([[v for _, _, v in iv[f"model.layers.{s}.self_attn.head_out"]]
                            for s in range(S)])
        np.testing.assert_allclose(_unit(com.reshape(S, H, D)), theta_r)
        assert np.max(np.abs(theta_j - theta_r)) < 1e-6
        assert np.min(np.sum(theta_j * theta_r, -1)) > 1 - 1e-6
        rel = np.abs(sigma_j / sigma_r - 1)
        if ddof == 0:                                            # utils.py's np.std
            assert rel.max() < 1e-5
            assert np.max(np.abs(shift - theta_r * sigma_r[..., None])) < 1e-5 * sigma_r.max()
        else:                                                    # validate_2fold's torch.std
            m = tuning.shape[0]
            np.testing.assert_allclose(sigma_r / sigma_j, np.sqrt(m / (m - 1)), rtol=1e-5)


def _one_informative_head():
    shift = np.zeros((S, H, D), np.float32)
    shift[1, 2] = 3.0 * _unit(np.arange(1.0, D + 1))
    return _acts(2, head_shift=shift)


def test_iti_probe_finds_the_same_informative_head_as_sklearn():
    pytest.importorskip("sklearn")
    acts = _one_informative_head()
    shift, acc_SxH = methods.iti(acts, num_heads=1)
    acc_j = np.asarray(acc_SxH)
    sep, labels = _separated(acts)
    acc_r = ref_train_probes(0, np.arange(0, N, 2), np.arange(1, N, 2), sep, labels, S, H)
    acc_r = acc_r.reshape(S, H)
    assert np.unravel_index(acc_j.argmax(), acc_j.shape) == (1, 2)
    assert ref_top_heads(acc_r, H, 1) == [(1, 2)]
    assert acc_j[1, 2] > 0.9 and acc_r[1, 2] > 0.9
    assert abs(acc_j[1, 2] - acc_r[1, 2]) <= 0.05
    # per layer vs global: jaxsim also shifts layer 0's best (noise) head; the reference,
    # asked for 1 head, shifts only (1, 2)
    chosen = np.linalg.norm(np.asarray(shift), axis=-1) > 0
    assert chosen.sum(1).tolist() == [1, 1] and chosen[1, 2]


def test_iti_graded_heads_rank_like_sklearn():
    pytest.importorskip("sklearn")
    strength = np.array([[0.0, 0.4, 0.8, 1.6], [0.2, 0.6, 1.2, 3.0]], np.float32)
    u = _unit(np.cos(np.arange(D) * 1.3))
    acts = _acts(3, head_shift=strength[..., None] * u)
    shift, acc_SxH = methods.iti(acts, num_heads=2)
    acc_j = np.asarray(acc_SxH)
    sep, labels = _separated(acts)
    acc_r = ref_train_probes(0, np.arange(0, N, 2), np.arange(1, N, 2), sep, labels,
                             S, H).reshape(S, H)
    assert np.max(np.abs(acc_j - acc_r)) <= 0.05
    # the strongest head of each layer is the most accurate under both probes
    assert acc_j.argmax(1).tolist() == acc_r.argmax(1).tolist() == [3, 3]
    # the reference selection applied to one layer's accuracies = jaxsim's per-layer choice
    chosen = np.linalg.norm(np.asarray(shift), axis=-1) > 0
    for s in range(S):
        ordered = np.sort(acc_j[s])[::-1]
        assert ordered[1] > ordered[2]                           # no tie at the boundary
        ref = {h for _, h in ref_top_heads(acc_j[s][None], H, 2)}
        assert ref == set(np.flatnonzero(chosen[s]).tolist())


# ---- CAA ---------------------------------------------------------------------------------

def _caa_ref_inputs(acts, keep):
    """Each kept (prompt, token) pair as one CAA example: {layer: [C] activations}."""
    rm = np.asarray(acts.resid_match_NxKxSxC, np.float64)
    rn = np.asarray(acts.resid_nonmatch_NxKxSxC, np.float64)
    pos = {s: [rm[n, t, s] for n in keep for t in range(rm.shape[1])] for s in range(S)}
    neg = {s: [rn[n, t, s] for n in keep for t in range(rn.shape[1])] for s in range(S)}
    return pos, neg


@pytest.mark.parametrize("k,masked", [(1, False), (1, True), (3, False)])
def test_caa_matches_generate_vectors(k, masked):
    valid = (np.arange(N) % 4 != 1) if masked else np.ones(N, bool)
    acts = _acts(4, k=k, valid=valid)
    got = np.asarray(methods.caa(acts), np.float64)
    pos, neg = _caa_ref_inputs(acts, np.flatnonzero(valid))
    ref = ref_caa_vector(pos, neg, range(S))
    ref = np.stack([ref[s] for s in range(S)])
    assert np.max(np.abs(got - ref)) < 1e-5 * np.max(np.abs(ref))
    cos = np.sum(got * ref, -1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 1 - 1e-6
