"""Formal languages: the sampler against the grammar (an independent Earley parser, hand-written
feature parsers, production frequencies, the exact length law), the jax recognisers against
Earley, the masked objective, and the CLI end to end."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import cli, stages
import jaxsim.testbeds as testbeds
from jaxsim import config as cfglib
from jaxsim.testbeds.pcfg import earley as earley
from jaxsim.testbeds.pcfg import grammars as grammars
from jaxsim.testbeds.pcfg import task as pcfg
from jaxsim.testbeds.pcfg import recognise as recognise
from jaxsim.testbeds.pcfg.grammars import BOS
from jaxsim.testbeds.pcfg.grammars import EOS
from jaxsim.testbeds.pcfg.grammars import PAD
from jaxsim.training import as_arrays

GRAMMARS = ("dyck2", "expr", "english")

# The paper's grammars, written out again from its code (dgp/PCFG.py) for comparison.
PAPER = {
    "dyck2": "S -> S S [0.3] | Brack0 [0.35] | Brack1 [0.35]; "
             "Brack0 -> o0 S c0 [0.5] | o0 c0 [0.5]; Brack1 -> o1 S c1 [0.5] | o1 c1 [0.5]",
    "expr": "S -> Expr [1.0]; Expr -> OpExpr [0.4] | Digit [0.6]; "
            "OpExpr -> UnOp Expr [0.33] | BinOp Expr Expr [0.33] | TernOp Expr Expr Expr [0.34]",
    "english": "S -> NP VP [1.0]; NP -> Pro [0.2] | N [0.2] | NP Conj NP [0.25] | Adj N [0.35]; "
               "VP -> VP Conj VP [0.15] | VP Adv [0.45] | V NP [0.2] | V [0.2]",
}


def _parse_bnf(text):
    rules = {}
    for line in text.split(";"):
        lhs, alts = line.split("->")
        rules[lhs.strip()] = [(a.split("[")[0].strip(), float(a.split("[")[1].rstrip("] ")))
                              for a in alts.split("|")]
    return rules


def _spec(grammar, context_length=32):
    cfg = cfglib.from_dict({"task": {"name": "pcfg", "grammar": grammar,
                                     "context_length": context_length}})
    return cfglib.spec_of(cfg), as_arrays(cfglib.hparams_of(cfg))


def _sample(grammar, n, context_length=32, seed=0):
    spec, hp = _spec(grammar, context_length)
    return jax.device_get(jax.jit(lambda k: pcfg.sample(k, (), spec, hp, n))(
        jax.random.key(seed)))


# --- hand-written feature parsers, from the token strings alone ----------------------------

def _dyck_features(cats):
    stack, out = [], []
    for c in cats:
        kind, typ = c[0], int(c[1])
        if kind == "o":
            stack.append(typ)
        else:
            assert stack.pop() == typ
        out.append([len(stack), typ, int(kind == "o"), stack[-1] if stack else -1])
    return out


def _expr_features(cats):
    arity = {"Digit": 0, "UnOp": 1, "BinOp": 2, "TernOp": 3}
    out = []

    def parse(i, depth, parent_arity, arg):
        a = arity[cats[i]]
        out.append([depth, a, parent_arity, arg])
        j = i + 1
        for k in range(a):
            j = parse(j, depth + 1, a, k)
        return j

    assert parse(0, 0, 0, -1) == len(cats)
    return out


def _english_features(cats):
    pos = list(grammars.ENGLISH.categories)
    first_verb = cats.index("V")
    out = []
    for i, c in enumerate(cats):
        phrase = {"Pro": 0, "N": 0, "Adj": 0, "V": 1, "Adv": 1}.get(c)
        if c == "Conj":
            phrase = int(cats[i + 1] == "V")
        out.append([pos.index(c), int(i < first_verb), phrase])
    return out


FEATURES = {"dyck2": _dyck_features, "expr": _expr_features, "english": _english_features}


def test_grammars_are_the_papers():
    for name, text in PAPER.items():
        rules = grammars.GRAMMARS[name].rules
        assert {k: [(r, pytest.approx(p)) for r, p in v] for k, v in rules.items()} \
            == _parse_bnf(text)
        for alts in rules.values():
            assert sum(p for _, p in alts) == pytest.approx(1.0)
    assert grammars.vocab_size("dyck2") == 7 and grammars.vocab_size("expr") == 22
    assert grammars.vocab_size("english") == 55


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_samples_parse_and_features_match_an_independent_parser(grammar):
    b = _sample(grammar, 200)
    g = grammars.GRAMMARS[grammar]
    assert b.valid_B.all() and b.features_BxLxF.shape == (200, 32, len(g.features))
    for i in range(200):
        toks, n = b.tokens_BxL[i], int(b.length_B[i])
        assert toks[0] == BOS and toks[n + 1] == EOS and (toks[n + 2:] == PAD).all()
        assert earley.is_grammatical(grammar, toks)
        cats = earley.categories(grammar, toks[1:n + 1])
        np.testing.assert_array_equal(b.features_BxLxF[i, 1:n + 1], FEATURES[grammar](cats))
        assert (b.features_BxLxF[i, n + 1:] == -1).all() and (b.features_BxLxF[i, 0] == -1).all()
        np.testing.assert_array_equal(b.loss_mask_BxL[i], (np.arange(32) >= 1) & (np.arange(32) <= n + 1))
        assert not b.loss_mask_BxL[i, 0]


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_legal_next_tokens_are_exactly_the_viable_continuations(grammar):
    g = grammars.GRAMMARS[grammar]
    b = _sample(grammar, 12, seed=3)
    words = np.flatnonzero(grammars.category_of_token(grammar) >= 0)
    for i in range(12):
        n = int(b.length_B[i])
        for t in range(n + 1):                       # prefix = tokens 1..t
            prefix = earley.categories(grammar, b.tokens_BxL[i, 1:t + 1])
            expect = np.zeros(grammars.vocab_size(grammar), bool)
            for w in words:
                expect[w] = earley.viable(g.rules, g.start, prefix + earley.categories(
                    grammar, [w]))
            expect[EOS] = earley.accepts(g.rules, g.start, prefix)
            np.testing.assert_array_equal(b.legal_next_BxLxV[i, t], expect, err_msg=f"{i} {t}")


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_jax_recogniser_agrees_with_earley_on_corrupted_strings(grammar):
    b = _sample(grammar, 150, context_length=24, seed=5)
    rng = np.random.default_rng(0)
    v = grammars.vocab_size(grammar)
    seqs = [b.tokens_BxL[i].copy() for i in range(150)]
    for i in range(150):
        s, n = b.tokens_BxL[i].copy(), int(b.length_B[i])
        kind = i % 5
        if kind == 0:
            s[rng.integers(1, n + 1)] = rng.integers(3, v)        # substitute a word
        elif kind == 1:
            j = rng.integers(1, n + 1)                           # delete a word
            s = np.concatenate([s[:j], s[j + 1:], [PAD]])
        elif kind == 2:
            s[1:n + 1] = rng.permutation(s[1:n + 1])             # shuffle the sentence
        elif kind == 3:
            s = np.concatenate([[BOS], rng.integers(0, v, 23)])  # random tokens
        else:
            s[n + 1:] = rng.integers(0, v, 24 - n - 1)           # junk after EOS ...
            s[n + 1] = EOS if i % 10 == 4 else s[n + 1]          # ... or no EOS at all
        seqs.append(s)
    tokens = jnp.asarray(np.stack(seqs), jnp.int32)
    _, ok = jax.vmap(lambda x: recognise.run(grammar, x))(recognise.truncate_after_eos(tokens))
    expect = [earley.is_grammatical(grammar, s) for s in seqs]
    np.testing.assert_array_equal(np.asarray(ok), expect)
    assert 0.2 < np.mean(expect) < 0.9          # both kinds are exercised


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_production_frequencies_match_the_grammar(grammar):
    """Every expansion is an independent draw: over raw derivations (accepted or not), the share
    of each nonterminal's expansions that use a production is its probability."""
    draws = jax.jit(jax.vmap(lambda k: pcfg.derive(k, grammar, 62)))(
        jax.random.split(jax.random.key(1), 1500))
    prods = np.asarray(draws.prods_T).ravel()
    prods = prods[prods >= 0]
    names = grammars.production_names(grammar)
    probs = [p for alts in grammars.GRAMMARS[grammar].rules.values() for _, p in alts]
    for lhs in grammars.GRAMMARS[grammar].rules:
        ids = [i for i, nm in enumerate(names) if nm.startswith(lhs + " ->")]
        total = np.isin(prods, ids).sum()
        for i in ids:
            share, p = (prods == i).sum() / total, probs[i]
            assert abs(share - p) < 4.5 * np.sqrt(p * (1 - p) / total) + 1e-9, (names[i], share)


def _length_law(grammar, n_max):
    """[n_max + 1] exact P(sentence length = n) from the rules, by dynamic programming."""
    g = grammars.GRAMMARS[grammar]
    f = {x: np.zeros(n_max + 1) for x in list(g.rules) + list(g.categories)}
    for c in g.categories:
        f[c][1] = 1.0
    for _ in range(2 * n_max + 4):                 # each sweep fixes one more length
        for lhs, alts in g.rules.items():
            new = np.zeros(n_max + 1)
            for rhs, p in alts:
                conv = np.zeros(n_max + 1)
                conv[0] = 1.0
                for sym in rhs.split():
                    conv = np.convolve(conv, f[sym])[:n_max + 1]
                new += p * conv
            f[lhs] = new
    return f[g.start]


@pytest.mark.parametrize("grammar,context", [("dyck2", 24), ("expr", 16), ("english", 16)])
def test_length_law_is_the_grammar_conditioned_on_the_cap(grammar, context):
    cap = context - 2
    law = _length_law(grammar, cap)
    b = _sample(grammar, 4000, context_length=context, seed=2)
    lengths = b.length_B
    cdf_emp = np.array([(lengths <= n).mean() for n in range(cap + 1)])
    cdf_true = np.cumsum(law) / law.sum()
    assert np.abs(cdf_emp - cdf_true).max() < 0.03        # KS at n = 4000 (5 %: 0.021)
    raw = jax.jit(jax.vmap(lambda k: pcfg.derive(k, grammar, cap)))(
        jax.random.split(jax.random.key(7), 4000))
    accept = np.asarray(raw.ok).mean()
    assert abs(accept - law.sum()) < 4 * np.sqrt(law.sum() * (1 - law.sum()) / 4000) + 1e-3
    if grammar == "dyck2":
        assert law.sum() < 0.9                 # the cap matters: rejection is exercised


def test_masked_loss_ignores_padding_and_legal_mass_is_one_on_legal_logits():
    spec, hp = _spec("expr", 16)
    batch = pcfg.sample(jax.random.key(0), (), spec, hp, 32)
    logits = jax.random.normal(jax.random.key(1), (32, 15, 22))
    obj = testbeds.get("pcfg").objective
    mask = batch.loss_mask_BxL[:, 1:]
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch.tokens_BxL[:, 1:, None], -1)[..., 0]
    assert float(obj.loss(logits, batch)) == pytest.approx(float(ce[mask].mean()), rel=1e-5)
    junk = jnp.where(mask[..., None], logits, 100.0 * jax.random.normal(jax.random.key(2),
                                                                        logits.shape))
    assert float(obj.loss(junk, batch)) == pytest.approx(float(obj.loss(logits, batch)), rel=1e-6)
    legal = batch.legal_next_BxLxV[:, :-1]
    perfect = jnp.where(legal, 0.0, -1e9)
    assert float(testbeds.pcfg.legal_mass(perfect, batch)) == pytest.approx(1.0, abs=1e-6)
    uniform = jnp.zeros_like(logits)
    expect = (legal.sum(-1) / 22.0)[mask].mean()
    assert float(testbeds.pcfg.legal_mass(uniform, batch)) == pytest.approx(float(expect), rel=1e-5)


def test_bad_pcfg_configs():
    with pytest.raises(cfglib.ConfigError, match="task.grammar"):
        cfglib.from_dict({"task": {"name": "pcfg", "grammar": "french"}})
    with pytest.raises(cfglib.ConfigError, match="model.name"):
        cfglib.from_dict({"task": {"name": "pcfg"}, "model": {"name": "encoder"}})
    with pytest.raises(cfglib.ConfigError, match="task.context_length"):
        cfglib.from_dict({"task": {"name": "pcfg", "context_length": 3}})


def test_judge_counts_grammatical_finished_and_legal_tokens():
    from jaxsim.testbeds.pcfg import grammaticality as grammaticality
    o0, c0, _o1, c1 = 3, 5, 4, 6   # _o1: the second open bracket, unused here
    seqs = np.array([[BOS, o0, c0, EOS, 1, 2, 3, 4],      # grammatical (junk after EOS ignored)
                     [BOS, o0, c1, c0, EOS, 0, 0, 0],     # wrong close at token 2
                     [BOS, o0, o0, o0, o0, o0, o0, o0]])  # never finishes
    m = grammaticality.judge("dyck2", jnp.asarray(seqs, jnp.int32))
    assert float(m["grammatical"]) == pytest.approx(1 / 3)
    assert float(m["finished"]) == pytest.approx(2 / 3)
    # legal tokens: 3 of 3, then 1 of 4 (o0 legal; c1, c0, EOS after the error are not), 7 of 7
    assert float(m["legal_tokens"]) == pytest.approx((3 + 1 + 7) / 14)
    assert float(m["mean_length"]) == pytest.approx(2.0)


def test_cli_sweep_analyze_plot(tmp_path):
    import yaml
    raw = {"task": {"name": "pcfg", "context_length": 16},
           "model": {"num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
           "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16,
                     "lr": 3e-3},
           "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False,
                     "axes": {"task.grammar": ["dyck2", "english"]}}}
    path = tmp_path / "pcfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    m = np.load(out / "metrics.npz")
    assert m["eval_loss_id"].shape == (2, 2) and np.isfinite(m["eval_loss_id"]).all()
    assert ((m["legal_mass_id"] > 0) & (m["legal_mass_id"] <= 1)).all()
    assert cli.main(["analyze", str(out), "--sequences", "8"]) == 0
    assert cli.main(["plot", str(out)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["task"] == "pcfg" and [r["grammar"] for r in doc["runs"]] == ["dyck2", "english"]
    for run in doc["runs"]:
        assert len(run["grammatical"]) == len(run["steps"]) and run["earley_agreement"] == 1.0
        assert all(0 <= g <= 1 for g in run["grammatical"])
    with np.load(out / "analysis_samples.npz") as f:
        assert f["samples"].shape == (2, 8, 16) and (f["samples"][:, :, 0] == BOS).all()
    for name in ("loss_curves.png", "grammaticality.png", "sample_lengths.png"):
        assert (out / "figures" / name).stat().st_size > 0
    # the trained dyck2 run feeds SAEs with the grammar's features at every input position
    from jaxsim.testbeds.activations import source as activations
    sae = cfglib.from_dict({"task": {"name": "activations", "source": str(out), "site": "block0",
                                     "dim": 16},
                            "model": {"name": "sae", "d_sae": 32, "k": 2}})
    spec, hp = stages.first_run(sae)
    assert activations.feature_names(spec) == list(grammars.GRAMMARS["dyck2"].features)
    assert activations.feature_sizes(spec) == [8, 2, 2, 2]
    consts = activations.constants(jax.random.key(0), spec, hp)
    ctx = activations.context(jax.random.key(1), consts, spec, 6)
    tokens, feats = np.asarray(ctx.inputs_BxT), np.asarray(ctx.features_BxTxK)
    assert feats.shape == tokens.shape + (4,)
    # depth after each bracket, recomputed from the tokens the model read (o0 o1 c0 c1 = 3..6)
    step = np.select([(tokens == 3) | (tokens == 4), (tokens == 5) | (tokens == 6)], [1, -1], 0)
    depth = np.where(tokens >= 3, np.cumsum(step, axis=1), -1)
    np.testing.assert_array_equal(feats[..., 0], depth)
    np.testing.assert_array_equal(feats[..., 2], np.where(tokens >= 3, tokens <= 4, -1))
    # SAE points are sentence positions first (padding only once those run out)
    inside = int((feats[..., 0] >= 0).sum())
    pts = activations.points(ctx, 40)
    got = np.asarray(pts.features_BxK)[:, 0]
    assert (got[:min(inside, 40)] >= 0).all() and inside > 0
