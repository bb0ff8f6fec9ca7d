"""bf16: the custom autograd paths (fused experts, attention rows) under CPU autocast and with bf16 tensors agree with
float32 within bf16 tolerance; the training path keeps trainable tensors float32 and trains and saves in bf16 on a CPU."""
import copy
import pytest, torch, torch.nn as nn
from _training_fixtures import make_fixture, SLAKE, MOE
from a3tune.a3moe import MoELoRALinear, A3MoEConfig
from a3tune.preliminaries import AttentionRecorder, query_rows, _RowsTap
from a3tune.head_selection import selected_rows, recorded_ratio

TOL = 2e-2   # relative (Frobenius) error: bf16 keeps 8 significant bits (2^-8 = 0.4 %); a few roundings along a product chain
BF = torch.bfloat16


def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _experts(mod, x, gate, amp):
    "Output and gradients (x, A, B, gate) of the fused experts under a fixed random output weighting."
    x, gate = x.detach().clone().requires_grad_(), gate.detach().clone().requires_grad_()
    mod.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=BF, enabled=amp): y = mod.experts(x, gate)
    (y.float() * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return [y, x.grad, mod.lora_A.grad, mod.lora_B.grad, gate.grad]


@pytest.mark.parametrize('case', ['autocast', 'bf16 weights', 'bf16 input, float32 experts, autocast'])
def test_fused_experts_bf16(case):
    torch.manual_seed(0)
    m = MoELoRALinear(nn.Linear(96, 80), 4, rank=8, shared_rank=4).train(); nn.init.normal_(m.lora_B, std=.1)
    assert m.impl == 'fused'
    x, gate = torch.randn(2, 24, 96), torch.rand(2, 24, 4)
    ref = _experts(m, x, gate, False)
    if case == 'autocast': got = _experts(m, x, gate, True)
    elif case == 'bf16 weights': got = _experts(copy.deepcopy(m).to(BF), x.to(BF), gate.to(BF), False)
    else:                                                                # the training path: bf16 base, float32 trainables
        mb = copy.deepcopy(m); mb.base.to(BF)
        got = _experts(mb, x.to(BF), gate, True)
    for name, g, r in zip(('output', 'dx', 'dA', 'dB', 'dgate'), got, ref):
        assert torch.isfinite(g).all() and rel(g, r) < TOL, (case, name, rel(g, r))
    if case != 'bf16 weights':
        assert got[2].dtype == got[3].dtype == torch.float32             # float32 parameters get float32 gradients


def _rows(dtype, amp, qs, ks, rows, row_mask, masks):
    "Rows of all layers (`_Rows`, through per-layer `_RowsTap`s), the selected heads' rows and Eq. 8, with the gradients of q/k of two layers."
    rec = AttentionRecorder(rows, row_mask)
    q = [t.detach().to(dtype).requires_grad_() for t in qs]; k = [t.detach().to(dtype).requires_grad_() for t in ks]
    for i in range(len(q)):                                              # what `AttentionRecorder.record` files per layer
        rec.q[i], rec.k[i], rec.mask[i] = q[i], k[i], masks[i]
        rec.tap[i] = _RowsTap.apply(rec.pending, i, masks[i], rows, row_mask, q[i], k[i])
    B, T = k[0].shape[0], k[0].shape[2]
    vis = torch.zeros(B, T, dtype=torch.bool); vis[:, 1:17] = True
    hm = torch.zeros(B, len(q), q[0].shape[1], dtype=torch.bool); hm[:, 0, 1] = hm[:, 2, 3] = True
    with torch.autocast('cpu', dtype=BF, enabled=amp):
        p, s, r = rec.result().probs, selected_rows(rec, hm), recorded_ratio(rec, vis)
    g = torch.Generator().manual_seed(2)
    (p.float() * torch.randn(p.shape, generator=g)).sum().backward(retain_graph=True)
    gp = [q[0].grad, k[0].grad]
    for t in q + k: t.grad = None
    (s.float() * torch.randn(s.shape, generator=g)).sum().backward()
    return dict(probs=p, selected=s, ratio=r, dq_all=gp[0], dk_all=gp[1], dq_sel=q[2].grad, dk_sel=k[2].grad)


@pytest.mark.parametrize('dtype,amp', [(torch.float32, True), (BF, False), (BF, True)])
@pytest.mark.parametrize('scale', [0.25, 2.])                                     # logits up to about 4 and 35
def test_attention_rows_bf16(dtype, amp, scale):
    torch.manual_seed(0)
    B, H, Hkv, T, D, L = 2, 4, 2, 30, 16, 3
    qm = torch.zeros(B, T, dtype=torch.bool); qm[:, 20:] = True; qm[1, 28:] = False
    rows, row_mask = query_rows(qm)
    qs = [torch.randn(B, H, rows.shape[1], D) * scale for _ in range(L)]; ks = [torch.randn(B, Hkv, T, D) for _ in range(L)]
    pad = torch.ones(B, 1, rows.shape[1], T, dtype=torch.bool); pad[1, ..., :3] = False     # a padded sample in one layer's mask
    masks = [None, pad & (torch.arange(T) <= rows[:, None, :, None]), None]
    ref, got = _rows(torch.float32, False, qs, ks, rows, row_mask, masks), _rows(dtype, amp, qs, ks, rows, row_mask, masks)
    for k in ref:
        assert torch.isfinite(got[k]).all() and rel(got[k], ref[k]) < TOL, (k, rel(got[k], ref[k]))
    assert got['dq_all'].dtype == got['dk_sel'].dtype == dtype                    # gradients in the leaves' dtype
    assert (got['probs'][~row_mask[:, None, None, :, None].expand_as(got['probs'])] == 0).all()   # padded rows stay 0


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    from a3tune.data import A3Dataset, join_labels
    tmp = tmp_path_factory.mktemp('bf16')
    base, proc, recs = make_fixture(tmp, n=4)
    return tmp, base, proc, A3Dataset(recs, SLAKE/'imgs', join_labels(recs, tmp/'labels.jsonl', SLAKE/'imgs'))


def test_a3tune_model_keeps_trainables_float32(fx):
    from a3tune.training import A3TuneConfig, a3tune_model
    tmp, base, proc, ds = fx
    m = a3tune_model(copy.deepcopy(base).to(BF), A3TuneConfig(moe=A3MoEConfig(**MOE)))
    train = {n: p.dtype for n, p in m.named_parameters() if p.requires_grad}
    assert train and set(train.values()) == {torch.float32}
    assert any('lora_A' in n for n in train) and any('router' in n for n in train)
    assert {p.dtype for p in m.parameters() if not p.requires_grad} == {BF}


def test_train_bf16_on_cpu_matches_float32(fx):
    "`A3Trainer` with bf16=True on a CPU (autocast): float32 trainables, first-step losses and gradient norm within bf16 tolerance, a loadable adapter."
    from a3tune.training import A3TuneConfig, train, load_a3tune, a3tune_model
    tmp, base, proc, ds = fx
    logs, models = {}, {}
    for bf in ('false', 'true'):
        cfg = A3TuneConfig(moe=A3MoEConfig(**MOE), max_steps=2, per_device_batch_size=2, logging_steps=1, save_steps=100,
                           bf16=bf, lr=1e-3, warmup=0)
        tr = train(copy.deepcopy(base).to(BF if bf == 'true' else torch.float32), proc, ds, cfg, tmp/f'run_{bf}', disable_tqdm=True)
        assert tr.args.bf16 == (bf == 'true')
        assert {p.dtype for p in tr.model.parameters() if p.requires_grad} == {torch.float32}
        logs[bf] = [l for l in tr.state.log_history if 'loss' in l]
        models[bf] = tr.model
    a, b = logs['false'], logs['true']
    assert len(a) == len(b) == 2
    for i in range(2):
        for k in ('loss', 'lm_loss', 'align_loss', 'grad_norm'):
            assert b[i][k] == pytest.approx(a[i][k], rel=TOL), (i, k, a[i][k], b[i][k])
    assert a[1]['loss'] != a[0]['loss']                                            # the first update changed the model
    tb = {n: p.detach() for n, p in models['true'].named_parameters() if p.requires_grad}
    ta = {n: p.detach() for n, p in models['false'].named_parameters() if p.requires_grad}
    # AdamW's first update is about lr·sign(g): bf16 noise flips the sign of near-zero gradients, so compare the whole update
    init = {n: p.detach() for n, p in a3tune_model(copy.deepcopy(base), cfg).named_parameters() if p.requires_grad}   # same seed
    upd = lambda t: torch.cat([(t[n] - init[n]).flatten() for n in init])
    assert upd(ta).norm() > 0 and torch.nn.functional.cosine_similarity(upd(tb), upd(ta), 0) > 0.95
    m = load_a3tune(copy.deepcopy(base).to(BF), tmp/'run_true')
    for n, p in m.named_parameters():
        if 'lora_' in n or 'router' in n:
            assert p.dtype == torch.float32 and torch.equal(p, tb[n].detach()), n


def test_fused_experts_save_bf16_input_under_autocast():
    """On the training path (bf16 base, float32 trainables, autocast) the experts keep the bf16 input for the backward,
    not a float32 copy: half the bytes the fused product saves per projection."""
    torch.manual_seed(0)
    m = MoELoRALinear(nn.Linear(64, 32), 4, rank=8).train(); m.base.to(BF)
    x = torch.randn(2, 24, 64, dtype=BF, requires_grad=True)
    saved = []
    def pack(t): saved.append(t); return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast('cpu', dtype=BF):
        m.experts(x, torch.rand(2, 24, 4))
    inputs = [t for t in saved if t.shape == (48, 64)]
    assert inputs and all(t.dtype == BF for t in inputs), [(tuple(t.shape), t.dtype) for t in saved]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        saved.clear(); m.experts(x.float(), torch.rand(2, 24, 4))                    # no autocast: float32, as the factors
    assert all(t.dtype == torch.float32 for t in saved if t.shape == (48, 64))
