"Gradient checkpointing (non-reentrant) gives the same A³Tune gradients; merging the LoRA part keeps the logits."
import copy
import pytest, torch, torch.nn as nn
from peft.tuners.lora import LoraLayer
from _training_fixtures import make_fixture, logits, SLAKE
from a3tune.a3moe import A3MoEConfig
from a3tune.training import A3TuneConfig, A3Trainer, a3tune_model, training_args, merge_lora
from a3tune.data import A3Collator, A3Dataset, join_labels

CFG = A3TuneConfig(moe=A3MoEConfig(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8, expert_dropout=0., lora_dropout=0.),
                   balance_coef=.01)


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gc')
    base, proc, recs = make_fixture(tmp, n=4)
    ds = A3Dataset(recs, SLAKE/'imgs', join_labels(recs, tmp/'labels.jsonl', SLAKE/'imgs'))
    return tmp, base, proc, A3Collator(proc)([ds[0], ds[1], ds[3]])


def _grads(tmp, base, batch, gc):
    m = a3tune_model(copy.deepcopy(base), CFG).train()
    torch.manual_seed(1)
    for n, p in m.named_parameters():
        if 'lora_B' in n: nn.init.normal_(p, std=.05)
    if gc: m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    t = A3Trainer(m, training_args(CFG, tmp/'gc', disable_tqdm=True))
    t.compute_loss(m, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}).backward()
    return {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_same_gradients(fx):
    tmp, base, proc, batch = fx
    assert batch['seg_valid'].any()
    g0, g1 = _grads(tmp, base, batch, False), _grads(tmp, base, batch, True)
    assert g0.keys() == g1.keys() and all(g.abs().sum() > 0 for g in g0.values())
    for k in g0: torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-7)


def test_merge_lora_keeps_logits(fx):
    tmp, base, proc, batch = fx
    m = a3tune_model(copy.deepcopy(base), CFG).eval()
    for n, p in m.named_parameters():
        if 'lora_B' in n: nn.init.normal_(p, std=.05)
    before = logits(m, batch)
    assert any(isinstance(mod, LoraLayer) for mod in m.modules())
    merged = merge_lora(m)
    assert not any(isinstance(mod, LoraLayer) for mod in merged.modules())
    torch.testing.assert_close(logits(merged, batch), before, rtol=1e-5, atol=1e-5)
