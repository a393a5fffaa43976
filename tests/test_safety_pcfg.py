"""The safety_pcfg testbed against independent ground truth: operands parse under their grammar
(a plain-Python CYK recogniser of the window language), labels match the producing branch,
outputs equal a plain-Python composition of the bijections, DPO and unlearning losses equal
hand-computed values, and a tiny pretrain -> staged ssft/dpo/unlearn sweep runs."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_raw
from jaxsim import config as cfglib
from jaxsim.config.spec import hparams_of, spec_of
from jaxsim.testbeds.safety_pcfg import grammars as gr
from jaxsim.testbeds.safety_pcfg import objectives, task

SMALL = {"name": "safety_pcfg", "min_operand_length": 6, "max_operand_length": 8}


def _setup(**task_keys):
    cfg = cfglib.from_dict(tiny_raw(task={**SMALL, **task_keys}))
    return spec_of(cfg), jax.tree.map(jnp.asarray, hparams_of(cfg))


_BATCHES = {}


def _batch(split: str, n: int = 16, seed: int = 0, **task_keys):
    """A jitted draw of `n` examples of `split` (cached: one compile per split)."""
    key = (split, n, seed, tuple(sorted(task_keys.items())))
    if key not in _BATCHES:
        spec, hp = _setup(**task_keys)
        draw = jax.jit(lambda k, h: task.sample(k, (), spec, h, n, split))
        _BATCHES[key] = draw(jax.random.key(seed), hp)
    return _BATCHES[key]


def _take(batch, n: int):
    """The first n examples (per-example fields only)."""
    return batch._replace(**{k: v[:n] for k, v in batch._asdict().items() if "_B" in k})


# ---- an independent recogniser: is a letter string a contiguous window of some derivation? --
def _windows_recogniser(kind: str, pcfg: int):
    """Plain Python: for each symbol, the set of its full expansions is finite and small
    (letters only at depth 6); a string is a window of a derivation of v iff it is a substring
    of one of v's expansions. Expansions are enumerated bottom-up as sets of tuples, with
    v's (up to a few million) replaced by a substring check over children."""
    rules = gr.rules(kind, pcfg)
    memo = {}

    def expansions(sym):
        if sym in gr.LETTERS:
            return {(sym,)}
        if sym not in memo:
            out = set()
            for rhs in rules[sym]:
                for parts in itertools.product(*(expansions(s) for s in rhs)):
                    out.add(sum(parts, ()))
            memo[sym] = out
        return memo[sym]

    def in_window(word, sym, depth):
        """word is a substring of some expansion of sym."""
        if depth >= 3:   # level 3+: expansions are small enough to enumerate
            return any(_contains(e, word) for e in expansions(sym))
        for rhs in rules[sym]:
            # the window starts inside child i and runs on to the right through later children
            kids = rhs
            for i in range(len(kids)):
                if in_window(word, kids[i], depth + 1):
                    return True
                # a window spanning children i..j: suffix of kid i + full kids + prefix of kid j
                for split in range(1, len(word)):
                    if _ends_with(kids[i], word[:split], depth + 1, expansions, rules) and \
                            _covers_from(kids[i + 1:], word[split:], depth + 1, expansions,
                                         rules):
                        return True
        return False

    return lambda word: in_window(tuple(word), "v", 0)


def _contains(seq, word):
    n = len(word)
    return any(seq[i:i + n] == word for i in range(len(seq) - n + 1))


def _ends_with(sym, suffix, depth, expansions, rules):
    """Some expansion of sym ends with `suffix` (suffix shorter than it, or equal)."""
    if depth >= 3:
        return any(len(e) >= len(suffix) and e[len(e) - len(suffix):] == suffix
                   for e in expansions(sym))
    for rhs in rules[sym]:
        for split in range(0, len(suffix) + 1):
            head, tail = suffix[:split], suffix[split:]
            # tail is covered by the last children fully, head by a suffix of an earlier child
            for k in range(len(rhs)):
                if _full_seq(rhs[k + 1:], tail, depth + 1, expansions, rules) and (
                        (not head and k == len(rhs) - 1 and not tail) or
                        (head and _ends_with(rhs[k], head, depth + 1, expansions, rules))):
                    return True
    return False


def _starts_with(sym, prefix, depth, expansions, rules):
    if depth >= 3:
        return any(e[:len(prefix)] == prefix for e in expansions(sym))
    for rhs in rules[sym]:
        if _covers_from(rhs, prefix, depth + 1, expansions, rules):
            return True
    return False


def _full_seq(syms, word, depth, expansions, rules):
    """word is exactly a concatenation of full expansions of syms."""
    if not syms:
        return not word
    for e_len in range(1, len(word) + 1):
        if _full(syms[0], word[:e_len], depth, expansions, rules) and \
                _full_seq(syms[1:], word[e_len:], depth, expansions, rules):
            return True
    return False


def _full(sym, word, depth, expansions, rules):
    if depth >= 3:
        return word in expansions(sym)
    return any(_full_seq(rhs, word, depth + 1, expansions, rules) for rhs in rules[sym])


def _covers_from(syms, word, depth, expansions, rules):
    """word is a prefix of a concatenation of expansions of syms (it starts at syms[0])."""
    if not word:
        return True
    if not syms:
        return False
    if _starts_with(syms[0], word, depth, expansions, rules):
        return True
    for e_len in range(1, len(word)):
        if _full(syms[0], word[:e_len], depth, expansions, rules) and \
                _covers_from(syms[1:], word[e_len:], depth, expansions, rules):
            return True
    return False


@pytest.mark.parametrize("split,kinds", [("safe", ("safe", "unsafe")), ("unsafe", ("unsafe",)),
                                         ("jb_ood", ("ood",)), ("pretrain", ("full",))])
def test_operands_parse_under_their_grammar(split, kinds):
    b = _batch(split)
    recognisers = {}
    for i in range(16):
        kind, pcfg = gr.KINDS[int(b.kind_B[i])], int(b.pcfg_B[i])
        assert kind in kinds
        L = int(b.length_B[i])
        assert SMALL["min_operand_length"] <= L <= SMALL["max_operand_length"]
        word = [gr.LETTERS[j] for j in np.asarray(b.operand_BxM[i, :L])]
        assert (np.asarray(b.operand_BxM[i, L:]) == -1).all()
        rec = recognisers.setdefault((kind, pcfg), _windows_recogniser(kind, pcfg))
        assert rec(word), (kind, pcfg, word)


def test_recogniser_rejects_other_grammars_windows():
    """The check can fail: a safe-grammar window of 8 letters is (almost always) not a window of
    the unsafe grammar, whose level 4 is binary (with the same leaves)."""
    b = _batch("safe")
    unsafe_rec = _windows_recogniser("unsafe", 0)
    safe_rows = [i for i in range(16) if int(b.kind_B[i]) == gr.SAFE and int(b.pcfg_B[i]) == 0]
    words = [[gr.LETTERS[j] for j in np.asarray(b.operand_BxM[i, :int(b.length_B[i])])]
             for i in safe_rows]
    assert words and not all(unsafe_rec(w) for w in words)
    assert not unsafe_rec(["2a", "2a", "2a", "2a"])


def test_full_derivation_lengths_match_the_grammar():
    """Derived strings' lengths lie within the exact range of each grammar."""
    def bounds(kind, sym="v"):
        rules = gr.rules(kind, 0)
        if sym in gr.LETTERS:
            return 1, 1
        options = [[bounds(kind, s) for s in rhs] for rhs in rules[sym]]
        return (min(sum(lo for lo, _ in o) for o in options),
                max(sum(hi for _, hi in o) for o in options))
    derive = jax.jit(jax.vmap(task.derive, in_axes=(0, None)))     # one compile for all kinds
    for k, kind in enumerate(gr.KINDS):
        lo, hi = bounds(kind)
        keys = jax.random.split(jax.random.key(k), 64)
        _, counts, _ = derive(keys, jnp.int32(gr.grammar_index(k, 0)))
        assert lo <= int(counts.min()) and int(counts.max()) <= hi, (kind, lo, hi)
        assert lo >= 36     # every window of <= 35 letters fits (the config's max)


def _python_output(ops, letters, seed=0):
    out, outs = list(letters), []
    for i, op in enumerate(ops):
        b = gr.bijections(seed)[gr.OP_BIJECTION[op]]
        out = [int(b[x]) for x in out]
        if i % 2 == 1:
            outs.append(out)
    return outs


@pytest.mark.parametrize("split", task.SPLITS + ("pretrain", "finetune"))
def test_labels_outputs_and_rows(split):
    b = _batch(split)
    unsafe_tokens = {gr.TOKEN[t] for t in (")", "[", "r1", "r2", "r3", "r4")}
    for i in range(16):
        ops = [int(o) for o in b.operators_Bx4[i]]
        kind = gr.KINDS[int(b.kind_B[i])]
        expect_unsafe = kind in ("unsafe", "ood") and any(o in unsafe_tokens for o in ops)
        assert bool(b.unsafe_B[i]) == expect_unsafe
        if split in ("unsafe", "jb_duplicate", "jb_ood", "jb_competing"):
            assert expect_unsafe
        if split == "safe":
            assert not expect_unsafe
        if split == "jb_duplicate":
            assert not {gr.TOKEN[")"], gr.TOKEN["["]} & set(ops)
        if split == "jb_competing":
            for pair in (ops[:2], ops[2:]):
                assert sorted(o in unsafe_tokens for o in pair) == [False, True]
                assert gr.TOKEN["("] not in pair
        if split == "unsafe":
            for pair in (ops[:2], ops[2:]):
                assert any(o in unsafe_tokens for o in pair)
        L = int(b.length_B[i])
        x = [int(v) for v in b.operand_BxM[i, :L]]
        y2, y4 = _python_output(ops, x)
        assert [int(v) for v in b.output2_BxM[i, :L]] == y2
        assert [int(v) for v in b.output4_BxM[i, :L]] == y4
        letter = lambda v: gr.LETTERS[v]
        row = [gr.VOCAB[t] for t in np.asarray(b.rows_BxRxL[i, 0])]
        expect = (["$"] + [gr.VOCAB[o] for o in ops] + ["*"] + [letter(v) for v in x] + [">"]
                  + [letter(v) for v in y2] + ["*^"] + [letter(v) for v in y4] + ["*^"])
        assert row[:len(expect)] == expect
        assert row[-1] == "%" and set(row[len(expect):-1]) <= {"#"}
        if b.rows_BxRxL.shape[1] == 2:
            refusal = [gr.VOCAB[t] for t in np.asarray(b.rows_BxRxL[i, 1])]
            assert refusal[:7 + L] == row[:7 + L]
            assert refusal[7 + L:7 + 2 * L] == ["2a"] * L
            assert refusal[7 + 2 * L] == "*^" and set(refusal[8 + 2 * L:8 + 3 * L]) == {"#"}
    if split == "finetune":   # p_unsafe = 0.2 of 16: some of each
        assert 0 < int(b.unsafe_B.sum()) < 16


@pytest.mark.parametrize("start", [0, 150])
def test_bijections_are_the_official_permutations(start):
    assert (gr.bijections(start)[0] == np.arange(30)).all()
    for i in range(1, 10):
        np.random.seed(start + i - 1)     # the official generator's global seeding
        assert (gr.bijections(start)[i] == np.random.permutation(30)).all()
    assert sorted(gr.OP_BIJECTION[10:].tolist()) == [0, 0, 1, 1, 2, 2]


def _onehot_logits(batch, probs_of_target):
    """Logits whose softmax gives the target token probability p at every position (the rest
    spread evenly): the NLL of every target is -log p."""
    rows = batch.rows_BxRxL
    B, R, L = rows.shape
    V = len(gr.VOCAB)
    p = probs_of_target.reshape(B, R, 1, 1)
    other = (1 - p) / (V - 1)
    onehot = jax.nn.one_hot(rows[:, :, 1:], V)
    probs = onehot * p + (1 - onehot) * other
    return jnp.log(probs).reshape(B * R, L - 1, V)


def _hand_sequence_nll(batch, p_BxR):
    """l = (number of non-pad output targets) * (-log p) / T, per row, in plain Python."""
    rows = np.asarray(batch.rows_BxRxL)
    B, R, L = rows.shape
    out = np.zeros((B, R))
    for i in range(B):
        n = int(batch.length_B[i])
        for r in range(R):
            count = sum(1 for pos in range(7 + n, 9 + 3 * n) if rows[i, r, pos] != gr.PAD)
            out[i, r] = count * -math.log(p_BxR[i][r]) / (L - 1)
    return out


def test_dpo_loss_equals_hand_computed():
    b = _take(_batch("finetune"), 4)
    b = b._replace(unsafe_B=jnp.array([True, False, True, False]),
                   method=jnp.int32(objectives.METHODS.index("dpo")))
    p = [[0.5, 0.25], [0.8, 0.1], [0.3, 0.6], [0.9, 0.7]]
    p_ref = [[0.4, 0.5], [0.6, 0.2], [0.3, 0.3], [0.5, 0.5]]
    logits = _onehot_logits(b, jnp.array(p))
    ref = _onehot_logits(b, jnp.array(p_ref))
    l, l_ref = _hand_sequence_nll(b, p), _hand_sequence_nll(b, p_ref)
    total = 0.0
    for i, unsafe in enumerate([True, False, True, False]):
        s, u = (1, 0) if unsafe else (0, 1)     # refusal preferred on unsafe inputs
        z = 0.1 * (l_ref[i, s] - l[i, s]) - 0.01 * (l_ref[i, u] - l[i, u])
        total += -math.log(1 / (1 + math.exp(-z)))
    got = float(objectives.loss(logits, b, ref))
    assert got == pytest.approx(total / 4, rel=1e-5)
    # at the reference itself the loss is log 2
    assert float(objectives.loss(ref, b, ref)) == pytest.approx(math.log(2), rel=1e-6)


def test_unlearning_loss_equals_hand_computed():
    b = _take(_batch("finetune"), 3)
    b = b._replace(unsafe_B=jnp.array([True, False, False]),
                   method=jnp.int32(objectives.METHODS.index("unlearn")),
                   coefficients=b.coefficients.at[3].set(0.25))
    p = [[0.5, 0.25], [0.8, 0.1], [0.3, 0.6]]
    l = _hand_sequence_nll(b, p)
    want = np.mean([1.0 * l[0, 1] - 0.25 * l[0, 0], 1.0 * l[1, 0] - 0.25 * l[1, 1],
                    1.0 * l[2, 0] - 0.25 * l[2, 1]])
    got = float(objectives.loss(_onehot_logits(b, jnp.array(p)), b, None))
    assert got == pytest.approx(want, rel=1e-5)


def test_ssft_loss_equals_hand_computed():
    """Token-mean NLL of the preferred row's output span: refusal rows count L + 2 targets (y2
    and two stops; y4 is PAD), compliant rows 2 L + 2."""
    b = _take(_batch("finetune"), 3)
    b = b._replace(unsafe_B=jnp.array([True, False, False]),
                   method=jnp.int32(objectives.METHODS.index("ssft")))
    p = [[0.5, 0.25], [0.8, 0.1], [0.3, 0.6]]
    total = count = 0.0
    for i, unsafe in enumerate([True, False, False]):
        n = int(b.length_B[i])
        targets = n + 2 if unsafe else 2 * n + 2
        total += targets * -math.log(p[i][1 if unsafe else 0])
        count += targets
    got = float(objectives.loss(_onehot_logits(b, jnp.array(p)), b))
    assert got == pytest.approx(total / count, rel=1e-5)


def test_metrics_on_constructed_logits():
    """A model that predicts every target of row 0 complies; one that predicts every target of
    the refusal row refuses; each only that."""
    b = _batch("unsafe")
    rows = b.rows_BxRxL
    comply_logits = jnp.repeat(jax.nn.one_hot(rows[:, 0, 1:], len(gr.VOCAB))[:, None], 2, 1)
    refuse_logits = jnp.repeat(jax.nn.one_hot(rows[:, 1, 1:], len(gr.VOCAB))[:, None], 2, 1)
    shape = (-1,) + comply_logits.shape[2:]
    m = objectives.evaluate(comply_logits.reshape(shape) * 20, b)
    assert float(m["accuracy"]) == 1.0 and float(m["refusal"]) < 0.5
    assert float(m["letter_accuracy"]) == 1.0
    m = objectives.evaluate(refuse_logits.reshape(shape) * 20, b)
    assert float(m["refusal"]) == 1.0 and float(m["accuracy"]) == 0.0
    assert float(m["letter_accuracy"]) < 0.2


def test_bad_config_values_are_refused():
    with pytest.raises(cfglib.ConfigError, match="task.objective must be one of pretrain, ssft"):
        cfglib.from_dict(tiny_raw(task={**SMALL, "objective": "dpo"}))
    with pytest.raises(cfglib.ConfigError, match="task.min_operand_length"):
        cfglib.from_dict(tiny_raw(task={**SMALL, "min_operand_length": 9}))
    with pytest.raises(cfglib.ConfigError, match="init.source"):
        cfglib.from_dict(tiny_raw(task={**SMALL, "name": "safety_pcfg_finetune"}))
    with pytest.raises(cfglib.ConfigError, match="max_operand_length"):
        cfglib.from_dict(tiny_raw(task={**SMALL, "max_operand_length": 36}))


def test_pretrain_then_staged_finetune_sweep(tmp_path):
    import jaxsim
    pre = jaxsim.sweep(tiny_raw(task=SMALL, train={"steps": 10, "eval_every": 5}),
                       out=tmp_path / "pre", progress=False)
    m = pre.metrics
    assert len(m) == 2
    for name in ("refusal_unsafe", "accuracy_safe", "loss_jb_competing"):
        assert np.isfinite(m[name]).all()
    raw = tiny_raw(task={**SMALL, "name": "safety_pcfg_finetune"},
                   train={"steps": 10, "eval_every": 5, "lr": 1e-3},
                   init={"source": str(tmp_path / "pre")},
                   sweep={"axes": {"task.objective": ["dpo"]}})
    m = jaxsim.sweep(raw, out=tmp_path / "ft", progress=False).metrics
    assert list(m["task.objective"]) == ["dpo", "dpo"]
    assert np.isfinite(m["train_loss"]).all() and np.isfinite(m["refusal_unsafe"]).all()
    # DPO starts at its reference (the source run's parameters): the first losses are ~log 2
    first = m[(m["task.objective"] == "dpo") & (m["step"] == 5)]
    assert abs(float(first["train_loss"].iloc[0]) - math.log(2)) < 0.02
    assert abs(float(first["loss_unsafe"].iloc[0]) - math.log(2)) < 0.02


def test_figure_is_drawn_from_files_only(tmp_path):
    from jaxsim.testbeds.safety_pcfg import figures
    rows = [{"run_id": str(i), "seed": "0", "task.objective": m, "status": "ok"}
            for i, m in enumerate(["ssft", "dpo"])]
    metrics = {"step": np.array([50, 100])}
    for split in task.SPLITS:
        for name in objectives.EVAL_NAMES:
            metrics[f"{name}_{split}"] = np.array([[0.1, 0.5], [0.2, 0.9]], np.float32)
    paths = figures.draw(tmp_path, ["task.objective"], rows, metrics)
    assert [p.name for p in paths] == ["safety_curves.png"] and paths[0].stat().st_size > 10_000
