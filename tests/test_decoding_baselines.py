"The baseline decoding strategies (VCD, M3ID, PAI, AVISC, DAMRO, OPERA, ControlMLLM): hand-made cases whose answer is known, zero strength, batching, the eval CLI."
import json, sys, types
from pathlib import Path
import pytest, torch
from PIL import Image
from a3tune.preliminaries import set_threads, tiny_llava, get_adapter
from a3tune.decoding import (STRATEGIES, two_branch_generate, generate_batch, vcd_generate, m3id_generate, pai_generate,
                             _outlier_contrast, vqa_inputs, vqa_prompt, strategy_options, opera_generate, over_trust, hf_generate,
                             controlmllm_generate, region_energy, pai_start_layer)
from a3tune.cli import main

set_threads(1)
sys.path.insert(0, str(Path(__file__).parent))
from _data import slake_root

BASELINES = ['vcd', 'm3id', 'pai', 'avisc', 'damro', 'opera', 'controlmllm']
GREEDY, CONTRAST = 5, 6      # vocabulary ids the hand-made model prefers with and without the image

class HandMade(torch.nn.Module):
    """A tiny LLaVA whose next-token logits are set by hand from what it sees: the clean image → P, where token GREEDY
    beats token CONTRAST by a little; no image, a noised image or only some image tokens → U, a language prior that
    likes GREEDY as much but not CONTRAST. Every contrast of the two branches must then answer CONTRAST, greedy GREEDY."""
    def __init__(self):
        super().__init__()
        self.inner, self.proc = tiny_llava()
        self.model, self.config = self.inner.model, self.inner.config
        V = self.config.text_config.vocab_size
        self.P = torch.full((V,), -9.); self.P[GREEDY], self.P[CONTRAST] = 2.0, 1.8
        self.U = torch.full((V,), -9.); self.U[GREEDY], self.U[CONTRAST] = 2.0, 0.0
        self.clean, self.calls = None, []
    def set_attn_implementation(self, *a): pass
    def forward(self, input_ids, attention_mask, pixel_values=None, **kw):
        vis = get_adapter(self).visual_mask(self.prompt)                          # [B, T0]
        sees_all = (attention_mask[:, :vis.shape[1]].bool() | ~vis).all(1)        # every image token visible
        clean = pixel_values is None or torch.equal(pixel_values, self.clean)
        self.calls.append(dict(sees_all=sees_all, clean=clean, kw=set(kw)))
        rows = torch.where((sees_all & clean)[:, None], self.P, self.U)           # [B, V]
        return types.SimpleNamespace(logits=rows[:, None].repeat(1, input_ids.shape[1], 1), cache=None, past_key_values=None)

@pytest.fixture
def hand():
    m = HandMade()
    inp = vqa_inputs(m.proc, [Image.new('RGB', (32, 32))] * 2,
                     [vqa_prompt(m.proc, 'is there a liver ?'), vqa_prompt(m.proc, 'what organ ?')])
    m.prompt, m.clean = inp['input_ids'], inp['pixel_values']
    return m, inp

def _new(m, ids, inp): return ids[:, inp['input_ids'].shape[1]:]

def test_hand_made_greedy_and_contrasts(hand):
    m, inp = hand; tok = m.proc.tokenizer
    greedy = two_branch_generate(m, inp, 3, lambda p, n, t: p)
    assert (_new(m, greedy, inp) == GREEDY).all()
    assert (_new(m, vcd_generate(m, inp, 3, tok), inp) == CONTRAST).all()                     # noised image → U
    assert (_new(m, vcd_generate(m, inp, 3, tok, alpha=0.), inp) == GREEDY).all()             # zero strength
    assert (_new(m, pai_generate(m, inp, 3, tok, alpha=0., gamma=3.), inp) == CONTRAST).all()  # text-only branch → U
    assert (_new(m, pai_generate(m, inp, 3, tok, alpha=0., gamma=1.1), inp) == GREEDY).all()  # γ = 1.1 too weak here
    keep = get_adapter(m).visual_mask(inp['input_ids']).cumsum(1) == 1                        # only the first image token
    assert (_new(m, _outlier_contrast(lambda *a: keep, m, inp, 3, tok, 1., 0.1, 1), inp) == CONTRAST).all()

def test_hand_made_m3id_grows_with_t(hand):
    """M3ID: the contrast flips the answer once its weight w = (1 − γ_t)/γ_t exceeds 0.2 / 1.8 (P's margin 0.2 against the
    log-prob gap 2 that U adds): with λ = 0.1, w = 0 at t = 0, 0.105 at t = 1, 0.221 at t = 2."""
    m, inp = hand
    new = _new(m, m3id_generate(m, inp, 4, m.proc.tokenizer, lam=0.1), inp)
    assert (new[:, :2] == GREEDY).all() and (new[:, 2:] == CONTRAST).all()
    assert (_new(m, m3id_generate(m, inp, 4, m.proc.tokenizer, lam=0.), inp) == GREEDY).all()

def test_hand_made_branches_see_what_they_should(hand):
    m, inp = hand
    m.calls.clear(); pai_generate(m, inp, 1, m.proc.tokenizer)
    pos, neg = m.calls
    assert pos['sees_all'].all() and 'a3_mask' in pos['kw'] and not neg['sees_all'].any() and 'a3_mask' not in neg['kw']
    m.calls.clear(); vcd_generate(m, inp, 1, m.proc.tokenizer)
    assert m.calls[0]['clean'] and not m.calls[1]['clean'] and m.calls[1]['sees_all'].all()

@pytest.mark.parametrize('name', BASELINES)
def test_batched_equals_one_by_one(name):
    "Left padding changes nothing: a batch of three prompts of different lengths decodes as each prompt alone."
    model, proc = tiny_llava()
    imgs = [Image.fromarray(torch.randint(0, 255, (32, 32, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8).numpy()) for i in range(3)]
    qs = ['is there a liver ?', 'what organ is shown in the left part of this image ?', 'where ?']
    kw = dict(start_layer=0, alpha=0.5) if name == 'pai' else dict(top_k=3) if name in ('avisc', 'damro') else {}
    if name == 'opera': kw = dict(threshold=2, scale_factor=200.)                 # rollbacks within the 4 tokens
    if name == 'controlmllm':
        seg = torch.zeros(3, 1, 16); seg[:, 0, :4] = 1
        kw = dict(seg=seg, seg_valid=torch.ones(3, 1, dtype=torch.bool))
    torch.manual_seed(0); batch = generate_batch(model, proc, imgs, qs, name, max_new_tokens=4, **kw)
    ones = []
    for j, (i, q) in enumerate(zip(imgs, qs)):
        kj = {k: v[j:j + 1] if k.startswith('seg') else v for k, v in kw.items()}
        torch.manual_seed(0); ones += generate_batch(model, proc, [i], [q], name, max_new_tokens=4, **kj)
    if name == 'vcd': assert len(batch) == 3            # the noise depends on the batch: only the shape is comparable
    else: assert batch == ones

def test_registry_has_every_baseline():
    assert set(BASELINES) <= set(STRATEGIES)
    assert strategy_options('m3id', ['lam=0']) == dict(lam=0.)

def test_eval_cli_lists_and_sets_options(tmp_path, capsys):
    root = slake_root()
    with pytest.raises(SystemExit): main(['eval', '--help'])
    help_ = capsys.readouterr().out
    assert all(f'{n}:' in help_ for n in ['greedy', 'beam', 'nucleus', 'dola'] + BASELINES) and '--strategy-set' in help_
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    base = ['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--limit', '3', '--max-new-tokens', '3', '--no-progress']
    assert main(base + ['--out', str(tmp_path/'g')]) == 0
    assert main(base + ['--out', str(tmp_path/'v'), '--strategy', 'vcd', '--strategy-set', 'alpha=0', 'noise_steps=100']) == 0
    res = json.loads((tmp_path/'v/metrics.json').read_text())
    assert res['strategy'] == 'vcd' and res['strategy_options'] == dict(alpha=0.0, beta=0.1, noise_steps=100)
    answers = lambda o: [json.loads(l)['prediction'] for l in (tmp_path/o/'answers.jsonl').read_text().splitlines()]
    assert answers('v') == answers('g')                                           # zero strength = greedy
    assert main(base + ['--out', str(tmp_path/'x'), '--strategy', 'pai', '--strategy-set', 'delta=1']) == 2
    assert "strategy 'pai' takes KEY=VALUE with KEY one of" in capsys.readouterr().err


def test_opera_zero_strength_is_beam_search_and_penalty_acts():
    "Penalty 0: generate's beam search token for token (with an eos the tiny model produces, so beams finish); penalty on: it moves."
    model, proc = tiny_llava()
    imgs = [Image.new('RGB', (32, 32), c) for c in ('red', 'blue')]
    inp = vqa_inputs(proc, imgs, [vqa_prompt(proc, 'is there a liver ?'), vqa_prompt(proc, 'where ?')])
    for eos in (proc.tokenizer.eos_token_id, 61):
        tk = types.SimpleNamespace(eos_token_id=eos, pad_token_id=proc.tokenizer.pad_token_id)
        model.generation_config.eos_token_id = eos
        assert torch.equal(opera_generate(model, inp, 8, tk, penalty=0., threshold=0), hf_generate(model, inp, 8, proc.tokenizer, do_sample=False, num_beams=5))
    model.generation_config.eos_token_id = proc.tokenizer.eos_token_id
    strong = opera_generate(model, inp, 8, proc.tokenizer, penalty=1e3, scale_factor=1e3, threshold=0)
    assert not torch.equal(strong, hf_generate(model, inp, 8, proc.tokenizer, do_sample=False, num_beams=5))

def test_opera_over_trust_hand_made():
    "Column 0 gathers every row's attention: its product is φ, and a penalty large enough turns the choice to the other candidate."
    win = torch.zeros(2, 3, 3); win[:, :2, :2] = torch.tensor([[1., 0.], [.9, .1]])
    win[0, 2] = torch.tensor([.8, .1, .1]); win[1, 2] = torch.tensor([.1, .8, .1])
    phi, col = over_trust(win, 2.)
    assert torch.allclose(phi, torch.tensor([2 * 1.8 * 1.6, 2 * 1.8 * .2]).double(), atol=1e-5) and col.tolist() == [0, 0]
    logp = torch.tensor([-.5, -.7])
    assert (logp - 0 * phi.float()).argmax() == 0 and (logp - .1 * phi.float()).argmax() == 1

def test_controlmllm_lowers_the_energy_and_zero_is_greedy():
    model, proc = tiny_llava()
    imgs = [Image.new('RGB', (32, 32), c) for c in ('red', 'blue')]
    inp = vqa_inputs(proc, imgs, [vqa_prompt(proc, 'is there a liver ?'), vqa_prompt(proc, 'where ?')])
    seg = torch.zeros(2, 1, 16); seg[:, 0, 12:] = 1; valid = torch.ones(2, 1, dtype=torch.bool)
    g = generate_batch(model, proc, imgs, ['is there a liver ?', 'where ?'], max_new_tokens=5, return_ids=True)[1]
    assert torch.equal(generate_batch(model, proc, imgs, ['is there a liver ?', 'where ?'], 'controlmllm', max_new_tokens=5,
                                      return_ids=True, alpha=0., seg=seg, seg_valid=valid)[1], g)
    seen = []
    import a3tune.decoding as D
    orig = D.hf_generate
    def probe(m, inputs, *a, **kw):
        with torch.enable_grad(): seen.append(region_energy(m, inputs, seg, valid).detach())
        return orig(m, inputs, *a, **kw)
    D.hf_generate = probe
    try:
        for steps in (0, 4): controlmllm_generate(model, inp, 1, proc.tokenizer, steps=steps, seg=seg, seg_valid=valid)
    finally: D.hf_generate = orig
    assert (seen[1] < seen[0]).all()

def test_pai_start_layer_scales():
    assert [pai_start_layer(n) for n in (2, 32, 40)] == [1, 2, 2]

def test_controlmllm_eval_cli(tmp_path, capsys):
    from a3tune.data import slake_to_llava, slake_gt_labels
    root = slake_root()
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    slake_gt_labels(slake_to_llava(root/'validate.json')[:3], root/'imgs', tmp_path/'gt.jsonl', k=1)
    base = ['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--limit', '3', '--max-new-tokens', '3', '--no-progress']
    assert main(base + ['--out', str(tmp_path/'g')]) == 0
    assert main(base + ['--out', str(tmp_path/'c'), '--strategy', 'controlmllm', '--strategy-set', f"labels={tmp_path/'gt.jsonl'}", 'alpha=0']) == 0
    res = json.loads((tmp_path/'c/metrics.json').read_text())
    assert res['strategy_options']['labels'] == str(tmp_path/'gt.jsonl') and res['strategy_options']['steps'] == 4
    answers = lambda o: [json.loads(l)['prediction'] for l in (tmp_path/o/'answers.jsonl').read_text().splitlines()]
    assert answers('c') == answers('g')                                           # α = 0: greedy
    assert main(base + ['--out', str(tmp_path/'s'), '--strategy', 'controlmllm', '--strategy-set', f"labels={tmp_path/'gt.jsonl'}", 'steps=2']) == 0
    capsys.readouterr()
    assert main(base + ['--out', str(tmp_path/'x'), '--strategy', 'controlmllm']) == 2
    err = capsys.readouterr().err
    assert 'needs a label file: --strategy-set labels=FILE' in err.strip().splitlines()[-1]        # one line (after the loading bar)
    assert main(base + ['--out', str(tmp_path/'y'), '--strategy', 'controlmllm', '--strategy-set', 'labels=/nonexistent.jsonl']) == 2
    assert 'label file /nonexistent.jsonl not found' in capsys.readouterr().err
