"Generation with an A³Tune adapter: greedy = full-forward argmax, the collator's prompt, local DoLa, load_eval_model (CPU, seconds)."
import math, os, tempfile
from pathlib import Path
import pytest, torch
from peft import PeftModel
from a3tune.preliminaries import set_threads, tiny_llava, get_adapter
from a3tune.a3moe import A3Context
from a3tune.data import A3Collator
from a3tune.training import A3TuneConfig, a3tune_model, save_a3tune, load_a3tune
from a3tune.decoding import *
from a3tune.decoding import _repetition_penalty
from a3tune.evaluation import *

set_threads(1)
TINY_A3 = dict(moe=dict(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8, expert_dropout=0, lora_dropout=0), R=3)

from _data import slake_root as _slake

@pytest.fixture(scope='module')
def a3(tmp_path_factory):
    "A tiny A³Tune model with perturbed experts, saved and loaded back; its processor, adapter dir, three items."
    d = tmp_path_factory.mktemp('a3')
    tuned = a3tune_model(tiny_llava()[0], A3TuneConfig(**TINY_A3))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad: p.add_(torch.randn_like(p) * 0.5)
    save_a3tune(tuned, d/'adapter')
    base, proc = tiny_llava(); base.save_pretrained(d/'base'); proc.save_pretrained(d/'base')
    return load_a3tune(tiny_llava()[0], d/'adapter'), proc, d, slake_items(_slake())[:3]

def _full_forward_argmax(model, out, inp):
    T, vis = inp['input_ids'].shape[1], get_adapter(model).image_token_id
    mask = torch.cat([inp['attention_mask'], torch.ones_like(out[:, T:])], 1)
    ctx = A3Context(out == vis, (out != vis) & mask.bool() & (torch.arange(out.shape[1]) < T))
    with torch.no_grad():
        lg = model(input_ids=out, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                   pixel_values=inp['pixel_values'], a3ctx=ctx).logits
    return lg[:, T-1:-1].argmax(-1), ctx

def test_greedy_with_adapter_equals_full_forward_argmax(a3):
    model, proc, _, items = a3
    imgs, qs = [it['image'] for it in items], [it['question'] for it in items]
    preds, out, inp = generate_batch(model, proc, imgs, qs, max_new_tokens=6, return_ids=True)
    assert (inp['attention_mask'][:, 0] == 0).any()                    # a left-padded batch
    T = inp['input_ids'].shape[1]
    ref, ctx = _full_forward_argmax(model, out, inp)
    new = out[:, T:]
    done = (new == proc.tokenizer.eos_token_id).long().cumsum(1).cumsum(1) > 1
    assert torch.equal(new[~done], ref[~done])
    # the adapter matters: the plain base answers differently
    assert generate_batch(tiny_llava()[0], proc, imgs, qs, max_new_tokens=6) != preds
    # the Q routing is the prompt's: routing over prompt + answer would change the argmax somewhere
    mask = torch.cat([inp['attention_mask'], torch.ones_like(new)], 1)
    vis = get_adapter(model).image_token_id
    with torch.no_grad():
        lg = model(input_ids=out, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), pixel_values=inp['pixel_values'],
                   a3ctx=A3Context(out == vis, (out != vis) & mask.bool())).logits
    assert not torch.allclose(lg[:, T-1:-1], _logits_prompt_routed(model, out, inp)[:, T-1:-1])

def _logits_prompt_routed(model, out, inp):
    T, vis = inp['input_ids'].shape[1], get_adapter(model).image_token_id
    mask = torch.cat([inp['attention_mask'], torch.ones_like(out[:, T:])], 1)
    with torch.no_grad():
        return model(input_ids=out, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), pixel_values=inp['pixel_values'],
                     a3ctx=A3Context(out == vis, (out != vis) & mask.bool() & (torch.arange(out.shape[1]) < T))).logits

def test_beam_runs_under_the_context(a3):
    model, proc, _, items = a3
    preds = generate_batch(model, proc, [it['image'] for it in items], [it['question'] for it in items], 'beam', max_new_tokens=3)
    assert len(preds) == 3

def test_prompt_is_the_collators(a3):
    _, proc, _, items = a3
    tb = A3Collator(proc)([dict(id=it['id'], image=open_image(it['image']), question=it['question'], answer=it['answer'], label=None) for it in items])
    gi = vqa_inputs(proc, [it['image'] for it in items], [vqa_prompt(proc, it['question']) for it in items])
    for b in range(len(items)):
        p = gi['input_ids'][b][gi['attention_mask'][b].bool()]
        assert tb['input_ids'][b][:len(p)].tolist() == p.tolist()
        assert tb['labels'][b][len(p) - 1] == -100 and tb['labels'][b][len(p)] != -100
        full = vqa_inputs(proc, [items[b]['image']], [vqa_prompt(proc, items[b]['question'], items[b]['answer'])], 'right')['input_ids'][0]
        assert full.tolist() == tb['input_ids'][b][tb['attention_mask'][b].bool()].tolist()

def test_dola_scores_hand_made():
    fin = torch.tensor([[2.0, 1.8, 0.0, -3.0]]).log_softmax(-1)
    same, other = fin.clone(), torch.tensor([[3.0, 0.0, 0.0, 0.0]]).log_softmax(-1)
    s, M = dola_scores(fin, torch.stack([same, other]))
    assert M.tolist() == [1] and s[0, 3] == -math.inf and s.argmax(-1).tolist() == [1]
    assert torch.allclose(s[0, :3], (fin - other)[0, :3])
    assert dola_scores(fin, torch.stack([same, other]), alpha=1.0)[0].argmax(-1).tolist() == [0]
    s2, M2 = dola_scores(fin, torch.stack([same]))                      # premature = final: all plausible scores tie at 0
    assert M2.tolist() == [0] and torch.equal(s2[0, :3], torch.zeros(3))
    assert _repetition_penalty(torch.tensor([[2., -2., 1.]]), torch.tensor([[0, 1]]), 2.).tolist() == [[1., -4., 1.]]
    assert dola_layers(2, 'high') == [1] and dola_layers(2, 'low') == [0] and dola_layers(32, 'high') == list(range(16, 32, 2))
    with pytest.raises(ValueError, match=r'\[0, 2\)'): dola_layers(2, [2])

def test_dola_alpha_one_is_greedy_and_matches_uncached(a3):
    model, proc, _, items = a3
    imgs, qs = [it['image'] for it in items], [it['question'] for it in items]
    _, g, _ = generate_batch(model, proc, imgs, qs, max_new_tokens=5, return_ids=True)
    _, d, _ = generate_batch(model, proc, imgs, qs, 'dola', max_new_tokens=5, alpha=1.0, repetition_penalty=1.0, return_ids=True)
    assert torch.equal(d, g)
    _, d, inp = generate_batch(model, proc, imgs, qs, 'dola', max_new_tokens=4, layers=[0, 1], return_ids=True)
    T = inp['input_ids'].shape[1]
    norm, head = get_adapter(model).language_model.norm, model.get_base_model().get_output_embeddings()
    for t in range(T, d.shape[1]):
        mk = torch.cat([inp['attention_mask'], torch.ones_like(d[:, T:t])], 1)
        with torch.no_grad(), a3_generation_context(model, dict(input_ids=d[:, :t], attention_mask=mk), T):
            o = model(input_ids=d[:, :t], attention_mask=mk, position_ids=(mk.cumsum(-1) - 1).clamp(min=0),
                      pixel_values=inp['pixel_values'], output_hidden_states=True)
            s, _ = dola_scores(o.logits[:, -1], torch.stack([head(norm(o.hidden_states[j][:, -1])) for j in (0, 1)]))
        alive = (d[:, T:t] != proc.tokenizer.eos_token_id).all(1)
        assert torch.equal(d[alive, t], _repetition_penalty(s, d[:, :t], 1.2).argmax(-1)[alive])

def test_load_eval_model_with_adapter(a3):
    model, proc, d, items = a3
    m, p = load_eval_model(d/'base', d/'adapter')
    assert type(m).__name__ == 'A3TuneModel' and isinstance(m, PeftModel) and not m.training
    imgs, qs = [it['image'] for it in items], [it['question'] for it in items]
    assert generate_batch(m, p, imgs, qs, max_new_tokens=4) == generate_batch(model, proc, imgs, qs, max_new_tokens=4)
    with pytest.raises(FileNotFoundError, match='a3tune_config.json'): load_eval_model(d/'base', d)

def test_heads_map(a3):
    model, proc, _, items = a3
    it = items[0]
    a = attention_maps(model, proc, it['image'], it['question'], R=3)
    assert a['eq2'].shape == a['heads'].shape == (4, 4) and int(a['head_mask'].sum()) == 3
    b = attention_maps(model, proc, it['image'], it['question'], R=8)          # every head: Eq. 9 is Eq. 2
    assert torch.allclose(b['heads'], b['eq2'], atol=1e-6)
    rec = attention_records(model, proc, items[:2], _slake(), R=3)
    assert all(0 <= r['heads_mass_in_gt'] <= 1 for r in rec)
    assert attention_table(rec)[0]['n_heads_mass_in_gt'] == 2
