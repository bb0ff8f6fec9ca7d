"End to end on the tiny Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT, LLaVA-OneVision, LLaVA + Qwen2 (pad-to-square) and Gemma 3 (with and without pan-and-scan): A³Tune training steps, save, load, greedy generation equal to a full forward (CPU, ~1 min)."
import copy, json
import pytest, torch
from PIL import Image
from a3tune.preliminaries import set_threads, get_adapter
from a3tune.backbones import tiny_qwen2_vl, tiny_gemma3, tiny_llava_next, tiny_llava_onevision, tiny_llava_qwen2
from a3tune.a3moe import A3Context
from a3tune.data import slake_to_llava, slake_gt_labels, join_labels, A3Dataset, A3Collator, prompt_text
from a3tune.training import A3TuneConfig, train, load_a3tune, a3tune_model
from a3tune.decoding import generate_batch, a3_generation_context
from _data import slake_root

set_threads(1)
WORDS = ['modality', 'used', 'take', 'organ', 'largest', 'system', 'belong']
TINY = dict(moe=dict(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8, expert_dropout=0., lora_dropout=0.), R=3, lam=1.)

def _data(tmp, n=6):
    root = slake_root()
    recs = [r for r in slake_to_llava(root/'train.json') if r['image'].split('/')[0] in ('xmlab109', 'xmlab110')][:n]
    slake_gt_labels(recs[:n - 1], root/'imgs', tmp/'labels.jsonl', k=2)
    return A3Dataset(recs, root/'imgs', join_labels(recs, tmp/'labels.jsonl', root/'imgs'))

def _two(ds, proc):
    "Sample 0 and the first sample whose question has another length (so the prompt batch is padded)."
    n = lambda i: len(proc.tokenizer(ds[i]['question'])['input_ids'])
    return [0, next(i for i in range(1, len(ds)) if n(i) != n(0))]

def _greedy_equals_full_forward(model, proc, images, questions, n=5, **extra):
    "Greedy answers of `generate_batch` (A³MoE routing cached at prefill) equal the argmax of one full forward, token by token."
    vis_id = get_adapter(model).image_token_id   # a random model may emit the image token: not a valid answer, suppressed
    preds, out, inp = generate_batch(model, proc, images, questions, max_new_tokens=n, return_ids=True, suppress_tokens=[vis_id])
    T = inp['input_ids'].shape[1]
    assert (inp['attention_mask'][:, 0] == 0).any()                    # a left-padded batch
    am = torch.cat([inp['attention_mask'], torch.ones_like(out[:, T:])], 1)
    full = {k: v for k, v in inp.items() if k not in ('input_ids', 'attention_mask')}
    for k in ('mm_token_type_ids', 'token_type_ids'):
        if k in full: full[k] = torch.cat([full[k], torch.zeros_like(out[:, T:])], 1)
    pm = (out != vis_id) & am.bool() & (torch.arange(out.shape[1]) < T)
    with torch.no_grad():
        lg = model(input_ids=out, attention_mask=am, a3ctx=A3Context(out == vis_id, pm), **full, **extra).logits
    lg[..., vis_id] = float('-inf')
    new, ref = out[:, T:], lg[:, T-1:-1].argmax(-1)
    done = (new == proc.tokenizer.eos_token_id).long().cumsum(1).cumsum(1) > 1
    assert torch.equal(new[~done], ref[~done])
    return preds

BACKBONES = {'qwen2_vl': lambda: tiny_qwen2_vl(words=WORDS), 'qwen2_5_vl': lambda: tiny_qwen2_vl(version='2.5', words=WORDS),
             'llava_next': lambda: tiny_llava_next(words=WORDS), 'llava_onevision': lambda: tiny_llava_onevision(words=WORDS),
             'llava_qwen2_pad': lambda: tiny_llava_qwen2(words=WORDS)}   # HuatuoGPT-Vision's shape, LLaVA-Med v1.5's pad-to-square

@pytest.mark.parametrize('backbone', list(BACKBONES))
def test_train_save_load_generate(tmp_path, backbone):
    ds = _data(tmp_path)
    base, proc = BACKBONES[backbone]()
    tr = train(copy.deepcopy(base), proc, ds, A3TuneConfig(**TINY), tmp_path/'run', max_steps=3, per_device_train_batch_size=2,
               logging_steps=1, save_steps=100, disable_tqdm=True, report_to='none')
    logs = [l for l in tr.state.log_history if 'align_loss' in l]
    assert len(logs) == 3 and all(l['align_loss'] > 0 and l['lm_loss'] > 0 for l in logs)
    model = load_a3tune(copy.deepcopy(base), tmp_path/'run')
    ims, qs = [Image.fromarray(ds[i]['image']) for i in _two(ds, proc)], [ds[i]['question'] for i in _two(ds, proc)]
    _greedy_equals_full_forward(model, proc, ims, qs)
    b = A3Collator(proc)([ds[0], ds[1]])
    kw = {k: b[k] for k in ('input_ids', 'attention_mask', 'pixel_values', 'image_grid_thw', 'mm_token_type_ids', 'image_sizes', 'batch_num_images') if k in b}
    with torch.no_grad():
        got = model(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
        ref = tr.model.eval()(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
        plain = base(**kw).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)     # the saved adapter is the trained one
    assert (got - plain).abs().max() > 1e-4                         # and it changes the base

def test_gemma3_train_save_load_generate(tmp_path):
    "Gemma 3 through `train` (A3Collator: nested images, the soft image token), save, load, greedy = full forward."
    ds = _data(tmp_path)
    base, proc = tiny_gemma3(words=WORDS)
    tr = train(copy.deepcopy(base), proc, ds, A3TuneConfig(**TINY), tmp_path/'g', max_steps=3, per_device_train_batch_size=2,
               logging_steps=1, save_steps=100, disable_tqdm=True, report_to='none')
    logs = [l for l in tr.state.log_history if 'align_loss' in l]
    assert len(logs) == 3 and all(l['align_loss'] > 0 and l['lm_loss'] > 0 for l in logs)
    loaded = load_a3tune(copy.deepcopy(base), tmp_path/'g')
    b = A3Collator(proc, image_token_id=get_adapter(base).image_token_id)([ds[0], ds[1]])
    assert b['visual_mask'].sum(1).tolist() == [16, 16]
    with torch.no_grad():
        kw = {k: b[k] for k in ('input_ids', 'attention_mask', 'pixel_values', 'token_type_ids')}
        ref = tr.model.eval()(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
        got = loaded(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
        plain = base(**kw).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)     # the saved adapter is the trained one
    assert (got - plain).abs().max() > 1e-4                         # and it changes the base

    # greedy generation (Q-routing cached at prefill) equals a full forward's argmax, token by token
    vis_id, n = get_adapter(loaded).image_token_id, 5
    idx = _two(ds, proc)
    inp = dict(proc(images=[[Image.fromarray(ds[i]['image'])] for i in idx], return_tensors='pt', padding=True, padding_side='left',
                    text=[prompt_text(proc, ds[i]['question']) for i in idx], add_special_tokens=False))
    assert (inp['attention_mask'][:, 0] == 0).any()
    with torch.no_grad(), a3_generation_context(loaded, inp):
        out = loaded.generate(**inp, max_new_tokens=n, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id, suppress_tokens=[vis_id])
    T = inp['input_ids'].shape[1]
    am = torch.cat([inp['attention_mask'], torch.ones_like(out[:, T:])], 1)
    pm = (out != vis_id) & am.bool() & (torch.arange(out.shape[1]) < T)
    with torch.no_grad():
        lg = loaded(input_ids=out, attention_mask=am, pixel_values=inp['pixel_values'], a3ctx=A3Context(out == vis_id, pm),
                    token_type_ids=torch.cat([inp['token_type_ids'], torch.zeros_like(out[:, T:])], 1)).logits
    lg[..., vis_id] = float('-inf')
    new, ref = out[:, T:], lg[:, T-1:-1].argmax(-1)
    done = (new == proc.tokenizer.eos_token_id).long().cumsum(1).cumsum(1) > 1
    assert torch.equal(new[~done], ref[~done])


def test_gemma3_generate_batch(tmp_path):
    "a3tune's own generation path (`generate_batch`: nested images through `batch_images`) runs Gemma 3 = full forward."
    ds = _data(tmp_path)
    base, proc = tiny_gemma3(words=WORDS)
    model = a3tune_model(copy.deepcopy(base), A3TuneConfig(**TINY))
    ims, qs = [Image.fromarray(ds[i]['image']) for i in _two(ds, proc)], [ds[i]['question'] for i in _two(ds, proc)]
    _greedy_equals_full_forward(model.eval(), proc, ims, qs)


def test_gemma3_check_prompts_counts_the_processor(tmp_path):
    "`check_prompts` counts a Gemma 3 prompt as its processor writes it: soft tokens plus `<start_of_image>`, `<end_of_image>` and blank lines."
    from a3tune.data import check_prompts, image_overhead
    ds = _data(tmp_path)
    base, proc = tiny_gemma3(words=WORDS)
    one = A3Dataset(ds.recs[:1], ds.root)
    b = A3Collator(proc, image_token_id=get_adapter(base).image_token_id)([ds[0]])
    real = int(b['attention_mask'][0].sum()) - int(b['labels'][0].ne(-100).sum())      # the prompt as the collator builds it
    n_vis = int(b['visual_mask'][0].sum())
    assert image_overhead(proc) == 1                                                    # boi kept, eoi added; blank lines are whitespace here
    assert check_prompts(one, proc, None, n_vis) == real
    with pytest.raises(ValueError, match='max_length'): check_prompts(one, proc, real, n_vis)
    check_prompts(one, proc, real + 1, n_vis)                                           # one answer token fits


def test_gemma3_pan_and_scan_train_save_load_generate(tmp_path):
    "Gemma 3 with pan-and-scan crops (2 per square SLAKE image at ratio 1.0): labels mapped into the whole image and each crop, train, save, load, greedy = full forward."
    from a3tune.backbones import gemma3_pan_and_scan, gemma3_views
    ds = _data(tmp_path)
    base, proc = tiny_gemma3(words=WORDS)
    gemma3_pan_and_scan(proc, min_crop_size=8, min_ratio_to_activate=1.0)
    assert len(gemma3_views(proc, ds[0]['image'].shape[:2])) == 3                   # the whole image and two crops
    b = A3Collator(proc, image_token_id=get_adapter(base).image_token_id)([ds[0], ds[1]])
    assert b['visual_mask'].sum(1).tolist() == [48, 48] and b['seg'].shape[-1] == 48
    assert (b['seg'][:, :, 16:].sum(-1) > 0).any()                                   # the labels reach the crops' tokens
    tr = train(copy.deepcopy(base), proc, ds, A3TuneConfig(**TINY), tmp_path/'g', max_steps=3, per_device_train_batch_size=2,
               logging_steps=1, save_steps=100, disable_tqdm=True, report_to='none')
    logs = [l for l in tr.state.log_history if 'align_loss' in l]
    assert len(logs) == 3 and all(l['align_loss'] > 0 and l['lm_loss'] > 0 for l in logs)
    loaded = load_a3tune(copy.deepcopy(base), tmp_path/'g')
    with torch.no_grad():
        kw = {k: b[k] for k in ('input_ids', 'attention_mask', 'pixel_values', 'token_type_ids')}
        ref = tr.model.eval()(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
        got = loaded(**kw, a3ctx=A3Context(b['visual_mask'], b['prompt_mask'])).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    ims, qs = [Image.fromarray(ds[i]['image']) for i in _two(ds, proc)], [ds[i]['question'] for i in _two(ds, proc)]
    _greedy_equals_full_forward(loaded, proc, ims, qs)


def test_onevision_through_the_a3tune_train_command(tmp_path):
    "LLaVA-OneVision through the `a3tune train` command line (a saved base loaded by the Auto classes), then load and greedy = full forward."
    import shutil
    from _training_fixtures import make_fixture, cli_args, sets, SLAKE
    from a3tune.training import train_cli
    make_fixture(tmp_path)                                     # data.json and labels.jsonl (labels are drawn on the original images)
    shutil.rmtree(tmp_path/'base')
    base, proc = tiny_llava_onevision(words=WORDS)
    base.save_pretrained(tmp_path/'base'); proc.save_pretrained(tmp_path/'base')
    assert train_cli(cli_args(tmp_path, 'run') + sets()) == 0
    assert {'a3moe.safetensors', 'adapter_model.safetensors'} <= {p.name for p in (tmp_path/'run').iterdir()}
    model = load_a3tune(copy.deepcopy(base), tmp_path/'run')
    recs = json.loads((tmp_path/'data.json').read_text())
    ims = [Image.open(SLAKE/'imgs'/r['image']).convert('RGB') for r in recs[:2]]
    qs = [recs[0]['conversations'][0]['value'].replace('<image>', '').strip(), 'is this a ct scan ?']
    _greedy_equals_full_forward(model, proc, ims, qs)
