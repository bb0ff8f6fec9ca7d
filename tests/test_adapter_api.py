"""A trained adapter used like any PEFT / transformers model: plain forward and generate (no a3ctx), from_pretrained /
save_pretrained, pipeline, the model card, no absolute path in the folder (CPU, seconds)."""
import copy, json, os
from pathlib import Path
import pytest, torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import pipeline
from _training_fixtures import make_fixture, cli_args, sets, WORDS
from a3tune.preliminaries import set_threads, tiny_llava, get_adapter
from a3tune.a3moe import A3Context, a3_context, a3moe_state_dict, A3MoEConfig
from a3tune.training import (A3TuneModel, A3TuneConfig, a3tune_model, save_a3tune, load_a3tune, read_adapter_config, merge_lora,
                             train_cli, write_model_card)
from a3tune.decoding import vqa_inputs, vqa_prompt

set_threads(1)
MOE = dict(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8, expert_dropout=0, lora_dropout=0)
QS = [['Which modality is used?', 'Which organ is the largest in this image, and which system does it belong to?'],
      ['Is this the organ system?', 'Which modality?']]


def _images(n, seed=0):
    from PIL import Image
    import numpy as np
    return [Image.fromarray(np.random.default_rng(seed + i).integers(0, 255, (40 + 8*i, 60, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    "A tiny base saved to disk, an A³Tune model with every trained tensor perturbed, saved with save_pretrained."
    tmp = tmp_path_factory.mktemp('api')
    base, proc = tiny_llava(seed=0, words=WORDS)
    base.save_pretrained(tmp/'base'); proc.save_pretrained(tmp/'base')
    tuned = a3tune_model(copy.deepcopy(base), A3TuneConfig(moe=MOE, R=3))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad: p.add_(torch.randn_like(p) * .5)
    tuned.save_pretrained(tmp/'adapter')
    return tmp, base, proc, tuned.eval()


def _batches(proc):
    return [vqa_inputs(proc, _images(2, 3*i), [vqa_prompt(proc, q) for q in qs]) for i, qs in enumerate(QS)]


def _ctx(model, inp):
    return A3Context.from_inputs(inp['input_ids'], get_adapter(model).image_token_id, inp['attention_mask'])


def test_plain_forward_equals_explicit_context(fx):
    tmp, base, proc, _ = fx
    model = A3TuneModel.from_pretrained(tmp/'base', tmp/'adapter')
    b1, b2 = _batches(proc)
    assert (b1['attention_mask'][:, 0] == 0).any()                                # left padding
    with torch.no_grad():
        ref1, ref2 = (model(**b, a3ctx=_ctx(model, b)).logits for b in (b1, b2))
        assert torch.equal(model(**b1).logits, ref1)
        assert torch.equal(model(**b2).logits, ref2)                            # a second, different batch: nothing carried over
        assert torch.equal(model(**b1).logits, ref1)
        assert not torch.allclose(copy.deepcopy(base)(**b1).logits, ref1, atol=1e-4)   # the adapter matters
        with pytest.raises(RuntimeError, match='needs the spans of the batch'):
            model(inputs_embeds=torch.zeros(1, 3, 64))


@pytest.mark.parametrize('beams', [1, 2])
def test_plain_generate_equals_explicit_context(fx, beams):
    tmp, _, proc, _ = fx
    model = A3TuneModel.from_pretrained(tmp/'base', tmp/'adapter')
    kw = dict(max_new_tokens=5, do_sample=False, num_beams=beams, pad_token_id=proc.tokenizer.pad_token_id)
    for b in _batches(proc) * 2:                                                  # two batches, twice, in a row
        with torch.no_grad():
            with a3_context(_ctx(model, b)): ref = model.generate(**b, **kw, output_logits=True, return_dict_in_generate=True)
            got = model.generate(**b, **kw, output_logits=True, return_dict_in_generate=True)
        assert torch.equal(got.sequences, ref.sequences)
        assert torch.equal(torch.stack(got.logits), torch.stack(ref.logits))


def test_round_trip_is_exact_and_portable(fx):
    tmp, base, proc, tuned = fx
    m1 = A3TuneModel.from_pretrained(tmp/'base', tmp/'adapter')
    assert isinstance(m1, PeftModel) and isinstance(m1, A3TuneModel) and not m1.training
    m1.save_pretrained(tmp/'again')
    m2 = A3TuneModel.from_pretrained(None, tmp/'again')                          # the base the folder names
    w = lambda m: {**a3moe_state_dict(m), **get_peft_model_state_dict(m)}
    assert w(tuned).keys() == w(m2).keys() and all(torch.equal(v, w(m2)[k]) for k, v in w(tuned).items())
    assert m2.a3tune_config == tuned.a3tune_config
    b = _batches(proc)[0]
    with torch.no_grad(): assert torch.equal(m2(**b).logits, tuned(**b).logits)
    assert read_adapter_config(tmp/'again')['base']['name_or_path'] == './../base'
    assert json.loads((tmp/'again'/'adapter_config.json').read_text())['base_model_name_or_path'] == './../base'
    for d in ('adapter', 'again'):
        assert {'adapter_config.json', 'adapter_model.safetensors', 'a3moe.safetensors', 'a3tune_config.json', 'README.md'} <= set(os.listdir(tmp/d))
        for f in (tmp/d).iterdir(): assert str(tmp).encode() not in f.read_bytes(), f
    # the folder moves: copied elsewhere with its base, it loads by relative path
    import shutil
    moved = tmp/'moved'; shutil.copytree(tmp/'again', moved/'run'); shutil.copytree(tmp/'base', moved/'base')
    m3 = A3TuneModel.from_pretrained(None, moved/'run')
    with torch.no_grad(): assert torch.equal(m3(**b).logits, tuned(**b).logits)
    with pytest.raises(ValueError, match='does not name its base model'):
        A3TuneModel.from_pretrained(None, tmp/'adapter')                         # saved from an in-memory base: no name


def test_peft_save_pretrained_keeps_a3moe(fx):
    "The model straight from add_a3moe (before any load) is an A3TuneModel: PEFT's save path does not drop the experts."
    tmp, base, proc, tuned = fx
    assert type(tuned) is A3TuneModel
    tuned.save_pretrained(tmp/'direct')
    m = load_a3tune(copy.deepcopy(base), tmp/'direct')
    b = _batches(proc)[1]
    with torch.no_grad(): assert torch.equal(m(**b).logits, tuned(**b).logits)


def test_pipeline_runs_a_loaded_model(fx):
    tmp, _, proc, _ = fx
    model = A3TuneModel.from_pretrained(tmp/'base', tmp/'adapter')
    img, q = _images(1, 7)[0], QS[0][0]
    pipe = pipeline('image-text-to-text', model=model, processor=proc)
    msgs = [{'role': 'user', 'content': [{'type': 'image', 'image': img}, {'type': 'text', 'text': q}]}]
    said = pipe(text=msgs, generate_kwargs=dict(max_new_tokens=5, do_sample=False))[0]['generated_text'][-1]['content']
    inp = proc(images=[img], text=[proc.apply_chat_template([{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': q}]}],
                                                             add_generation_prompt=True)], return_tensors='pt')
    with torch.no_grad(), a3_context(_ctx(model, inp)): ids = model.generate(**inp, max_new_tokens=5, do_sample=False)
    assert said.strip() == proc.decode(ids[0, inp['input_ids'].shape[1]:], skip_special_tokens=True).strip() != ''


def test_model_card(fx):
    tmp, *_ = fx
    card = (tmp/'adapter'/'README.md').read_text()
    assert card.startswith('---\nlibrary_name: peft\n') and '@inproceedings{chang2025a3tune' in card
    assert 'A3TuneModel.from_pretrained(None, "adapter")' in card and '| `lam` | 0.1 |' in card and '| `R` | 3 |' in card
    assert '| `hidden_size` | 64 |' in card and 'Not evaluated yet.' in card
    card = write_model_card(tmp/'adapter', {'closed': 0.75, 'open_recall': 0.5})
    assert '| `closed` | 0.75 |' in card and (tmp/'adapter'/'README.md').read_text() == card


def test_trained_folder_has_no_absolute_path(tmp_path, capsys):
    "`a3tune train` with absolute paths everywhere: the text files of the final adapter folder hold none of them."
    make_fixture(tmp_path)
    assert train_cli(cli_args(tmp_path, 'run') + sets(max_steps=1, save_steps=5)) == 0
    run = tmp_path/'run'
    assert read_adapter_config(run)['base']['name_or_path'] == './../base'
    texts = [f for f in run.iterdir() if f.is_file() and f.suffix in ('.json', '.md', '.jinja', '.txt')]
    assert {'README.md', 'a3tune_config.json', 'adapter_config.json'} <= {f.name for f in texts}
    assert [f.name for f in texts if str(tmp_path) in f.read_text()] == []
    assert str(tmp_path).encode() not in (run/'training_args.bin').read_bytes()   # the pickled TrainingArguments too
    card = (run/'README.md').read_text()
    assert '| `data` | data.json |' in card and '| `labels` | labels.jsonl |' in card and '| `samples` |' in card   # the run's data, by name
    m = A3TuneModel.from_pretrained(None, run)
    assert type(m) is A3TuneModel


def test_merged_model_still_runs_plainly(fx):
    tmp, _, proc, tuned = fx
    b = _batches(proc)[0]
    merged = merge_lora(A3TuneModel.from_pretrained(tmp/'base', tmp/'adapter'))
    with torch.no_grad(): torch.testing.assert_close(merged(**b).logits, tuned(**b).logits, rtol=1e-5, atol=1e-5)


def test_broken_adapter_folders_are_named(fx, tmp_path):
    "Issue 19 cases 5 and 11: a config without embed_probe, invalid config JSON and a truncated safetensors file name the file."
    import shutil
    tmp, base, proc, tuned = fx
    for case in ('probe', 'json', 'trunc'):
        d = tmp_path/case; shutil.copytree(tmp/'adapter', d)
        f = d/'a3tune_config.json'
        if case == 'probe':
            meta = json.loads(f.read_text()); meta['base'].pop('embed_probe'); f.write_text(json.dumps(meta))
            with pytest.raises(ValueError, match='no `embed_probe`.*check=False'): load_a3tune(copy.deepcopy(base), d)
            load_a3tune(copy.deepcopy(base), d, check=False)   # the way out the message names
        elif case == 'json':
            f.write_text(f.read_text()[:-20])
            with pytest.raises(ValueError, match=r'a3tune_config\.json: not a valid A³Tune adapter config'): read_adapter_config(d)
        else:
            s = d/'a3moe.safetensors'; s.write_bytes(s.read_bytes()[:len(s.read_bytes()) // 2])
            with pytest.raises(ValueError, match=r'a3moe\.safetensors: not a readable safetensors file'): load_a3tune(copy.deepcopy(base), d)
