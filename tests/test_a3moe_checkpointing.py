"Gradient checkpointing recomputes A³MoE layers with the same per-forward context: gradients match a plain run."
import numpy as np, pytest, torch
from PIL import Image
from a3tune.preliminaries import tiny_llava, set_threads, attention_rows
from a3tune.a3moe import add_a3moe, A3MoEConfig, A3Context, a3moe_modules
from a3tune.loss import attention_align, objective

def _batch(proc):
    proc.tokenizer.padding_side = 'right'
    msg = lambda q: [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': q}]}]
    texts = [proc.apply_chat_template(msg(q), add_generation_prompt=True) + ' ' + a
             for q, a in [('Is there a lesion in the liver?', 'yes'), ('Which organ is this?', 'the left kidney')]]
    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 48, 3), dtype=np.uint8)) for i in range(2)]
    return proc(images=imgs, text=texts, return_tensors='pt', padding=True)

def _grads(checkpoint, reentrant=False):
    set_threads(1)
    model, proc = tiny_llava(num_kv_heads=2)
    b = _batch(proc)
    torch.manual_seed(0)
    m = add_a3moe(model, A3MoEConfig(lora_rank=8, expert_dropout=0., lora_dropout=0.))
    for mod in a3moe_modules(m).values(): torch.nn.init.normal_(mod.lora_B, std=.1)
    if checkpoint:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': reentrant})
        if reentrant: m.enable_input_require_grads()
    m.train()
    calls = []
    att = m.get_base_model().model.language_model.layers[1].self_attn
    att.register_forward_pre_hook(lambda mod, a, kw: calls.append(kw.get('a3ctx') is not None), with_kwargs=True)
    vis = b['input_ids'] == proc.tokenizer.image_token_id
    pos = torch.arange(vis.shape[1])[None]
    query = (pos > (vis * pos).amax(1, keepdim=True)) & b['attention_mask'].bool()
    seg = torch.zeros(2, 1, int(vis.sum(1)[0])); seg[:, 0, :4] = 1
    valid = torch.ones(2, 1, dtype=torch.bool)
    ctx = A3Context.from_inputs(b['input_ids'], proc.tokenizer.image_token_id, b['attention_mask'], balance=True)
    labels = b['input_ids'].masked_fill(b['attention_mask'] == 0, -100)
    rows, out = attention_rows(m, {**b, 'labels': labels, 'a3ctx': ctx}, query, return_outputs=True)
    al = attention_align(rows.probs, vis, rows.row_mask, seg, valid, R=4)
    (objective(out.loss, al.loss, valid, 1.).loss + .01 * ctx.balance_loss()).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}, calls

@pytest.mark.parametrize('reentrant', [False])
def test_checkpointing_gradient_parity(reentrant):
    (ref, calls_ref), (ck, calls_ck) = _grads(False), _grads(True, reentrant)
    assert calls_ref == [True] and calls_ck == [True, True]     # the layer was recomputed, with the context
    assert ref.keys() == ck.keys() and len(ref) > 0
    assert all(g is not None for g in ck.values())
    for n in ref: torch.testing.assert_close(ck[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)
