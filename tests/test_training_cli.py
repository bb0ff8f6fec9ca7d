"`a3tune train` end to end on a tiny LLaVA and SLAKE-mini: train, save, load, resume, and each bad input."
import json, shutil, copy, warnings
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from _training_fixtures import make_fixture, cli_args, sets, logits, SLAKE, WORDS
from a3tune import training
from a3tune.training import train_cli, train_command, load_a3tune, read_adapter_config, A3TuneConfig, A3Trainer, a3tune_model, training_args, TABLE7, CONFIG_FILE
from a3tune.a3moe import A3MoEConfig
from a3tune.preliminaries import cli_parser
from a3tune.data import A3Collator, A3Dataset, join_labels, read_llava_json, write_llava_json
from a3tune.preliminaries import tiny_llava
from a3tune.weak_labels import ImageError


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('train')
    base, proc, recs = make_fixture(tmp)
    return tmp, base, proc, recs


def _adapter(d):
    return {**load_file(Path(d)/'a3moe.safetensors'), **load_file(Path(d)/'adapter_model.safetensors')}


def test_cli_train_save_load_same_logits(fx, monkeypatch, capsys):
    tmp, base, proc, recs = fx
    seen = {}
    def spy(*a, **k): seen['tr'] = training._train_orig(*a, **k); return seen['tr']
    monkeypatch.setattr(training, '_train_orig', training.train, raising=False)
    monkeypatch.setattr(training, 'train', spy)
    assert train_cli(cli_args(tmp, 'run') + sets(gradient_checkpointing=True)) == 0
    out = capsys.readouterr().out
    assert out.count('a3tune: adapter saved to') == 1
    assert 'a3tune train: global batch ' in out and ' × 1 process' in out
    run = tmp/'run'
    assert {'adapter_model.safetensors', 'a3moe.safetensors', 'a3tune_config.json', 'chat_template.jinja'} <= set(p.name for p in run.iterdir())
    tr = seen['tr']
    logs = [l for l in tr.state.log_history if 'lm_loss' in l]
    assert len(logs) == 3 and all(l['align_loss'] == l['align_loss'] for l in logs)   # the alignment term ran every step
    assert logs[-1]['unlabelled_samples'] >= 1                                        # the unlabelled sample was counted
    ds = A3Dataset(recs, SLAKE/'imgs')
    batch = A3Collator(proc)([ds[0], ds[5]])
    trained = logits(tr.model.eval(), batch)
    loaded = load_a3tune(copy.deepcopy(base), run)
    torch.testing.assert_close(logits(loaded, batch), trained, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits(copy.deepcopy(base), batch), trained, atol=1e-4)   # training changed the model
    with pytest.raises(ValueError, match='different weights'):
        load_a3tune(tiny_llava(seed=3, words=WORDS)[0], run)
    # an adapter saved before `moe` was nested (its 14 MoE fields flat) loads to the same model, with one deprecation warning
    old = tmp/'run_flat'; shutil.copytree(run, old)
    meta = json.loads((old/CONFIG_FILE).read_text()); new = meta['config']
    flat = ('q_experts', 'k_experts', 'top_b', 'expert_rank', 'expert_alpha', 'expert_dropout', 'router', 'k_gate', 'balance_fold',
            'shared_rank', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_targets')
    meta['config'] = {k: v for k, v in new.items() if k != 'moe'} | {k: new['moe'][k] for k in flat}
    (old/CONFIG_FILE).write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        m = load_a3tune(copy.deepcopy(base), old)
    assert len([x for x in w if 'moe.top_b' in str(x.message)]) == 1
    assert m.a3tune_config == tr.model.a3tune_config
    torch.testing.assert_close(logits(m, batch), trained, rtol=1e-5, atol=1e-5)


def test_resume_from_checkpoint(fx):
    tmp, base, proc, recs = fx
    args = sets(max_steps=2)
    assert train_cli(cli_args(tmp, 'full') + args) == 0
    (tmp/'resumed').mkdir()
    shutil.copytree(tmp/'full'/'checkpoint-1', tmp/'resumed'/'checkpoint-1')
    assert train_cli(cli_args(tmp, 'resumed') + args + ['--resume']) == 0
    state = json.loads((tmp/'resumed'/'checkpoint-2'/'trainer_state.json').read_text())
    assert state['global_step'] == 2
    a, b = _adapter(tmp/'full'), _adapter(tmp/'resumed')
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    # and the resumed run really started from step 1: its first log is step 2
    assert [l['step'] for l in state['log_history'] if 'loss' in l] == [1, 2]


def test_missing_image_names_sample_and_path(fx):
    tmp, base, proc, recs = fx
    write_llava_json([{**recs[0], 'image': 'xmlab109/missing.jpg'}] + recs[1:], tmp/'missing.json')
    with pytest.raises(ImageError, match=rf"sample {recs[0]['id']}: image file not found: .*xmlab109/missing.jpg"):
        train_cli(cli_args(tmp, 'x', data='missing.json', labels=None) + sets() + ['--debug'])


def test_unreadable_image_names_sample_and_path(fx, tmp_path):
    tmp, base, proc, recs = fx
    (tmp_path/'xmlab109').mkdir()
    (tmp_path/'xmlab109'/'source.jpg').write_bytes(b'\xff\xd8 truncated jpeg')
    write_llava_json(recs[:2], tmp/'two.json')
    with pytest.raises(ImageError, match=rf"sample {recs[0]['id']}: cannot read image .*xmlab109/source.jpg"):
        train_cli(cli_args(tmp, 'y', data='two.json', labels=None, images=tmp_path) + sets(max_steps=1) + ['--debug'])


def test_image_path_escaping_root_is_refused(fx):
    tmp, base, proc, recs = fx
    write_llava_json([{**recs[0], 'image': '../train.json'}], tmp/'escape.json')
    with pytest.raises(ValueError, match="escapes the image root"):
        train_cli(cli_args(tmp, 'z', data='escape.json', labels=None) + sets() + ['--debug'])


def _rewrite_labels(tmp, name, fn):
    lines = [json.loads(l) for l in (tmp/'labels.jsonl').read_text().splitlines()]
    lines[1] = fn(lines[1])
    (tmp/name).write_text('\n'.join(json.dumps(l) for l in lines) + '\n')


def test_label_grid_mismatch_fails_before_training(fx):
    tmp, base, proc, recs = fx
    _rewrite_labels(tmp, 'grid8.jsonl', lambda r: {**r, 'grid_masks': {'grid': [8, 8], 'masks': [[0.] * 64]}})
    with pytest.raises(ValueError, match=r"label grid \(8, 8\) of sample .* does not match the model's visual-token grid \(4, 4\)"):
        train_cli(cli_args(tmp, 'g', labels='grid8.jsonl') + sets() + ['--debug'])
    assert not (tmp/'g').exists()                     # nothing was trained or written
    _rewrite_labels(tmp, 'size.jsonl', lambda r: {**r, 'size': [256, 256], 'segments': [{**s, 'rle': {'size': [256, 256], 'counts': [0, 256 * 256]}} for s in r['segments']]})
    with pytest.raises(ValueError, match=r"labels were drawn on a \(256, 256\) image but the image is \(512, 512\)"):
        train_cli(cli_args(tmp, 'g', labels='size.jsonl') + sets() + ['--debug'])


def test_labels_for_other_settings_or_images_are_refused(fx):
    tmp, base, proc, recs = fx
    _rewrite_labels(tmp, 'hash.jsonl', lambda r: {**r, 'settings_hash': '0000'})
    with pytest.raises(ValueError, match='was labelled with settings 0000'):
        train_cli(cli_args(tmp, 'h', labels='hash.jsonl') + sets() + ['--debug'])
    _rewrite_labels(tmp, 'sha.jsonl', lambda r: {**r, 'image_sha256': 'f' * 64})
    with pytest.raises(ValueError, match='changed since its labels were written'):
        train_cli(cli_args(tmp, 'h', labels='sha.jsonl') + sets() + ['--debug'])


def test_user_errors_are_one_line_and_no_check_images_skips_the_hash(fx, capsys):
    tmp, base, proc, recs = fx
    assert train_cli(cli_args(tmp, 'h', labels='sha.jsonl') + sets()) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and err.startswith('a3tune train: error: ') and 'changed since its labels were written' in err
    assert train_cli(cli_args(tmp, 'h', labels='sha.jsonl') + sets(max_steps=1) + ['--no-check-images']) == 0


def test_nan_alignment_is_reported_with_sample_ids(fx):
    tmp, base, proc, recs = fx
    labels = join_labels(recs, tmp/'labels.jsonl', SLAKE/'imgs')
    ds = A3Dataset(recs, SLAKE/'imgs', labels)
    cfg = A3TuneConfig(moe=A3MoEConfig(q_experts=2, k_experts=4, lora_rank=8, expert_rank=4), nan_policy='raise')
    m = a3tune_model(copy.deepcopy(base), cfg)
    t = A3Trainer(m, training_args(cfg, tmp/'nan', disable_tqdm=True))
    b = A3Collator(proc)([ds[0], ds[1]]); b['seg'][1, 0, 3] = float('nan')
    with pytest.raises(FloatingPointError, match=rf"samples \['{recs[0]['id']}', '{recs[1]['id']}'\]"):
        t.compute_loss(m.train(), b)


def test_unknown_config_key_is_an_error(fx, capsys):
    tmp, *_ = fx
    assert train_cli(cli_args(tmp, 'k') + ['--set', 'lamda=0.2']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "a3tune train: error: override: unknown A3TuneConfig field 'lamda'; did you mean 'lam'?" in err
    with pytest.raises(ValueError, match="did you mean 'top_b'"):
        train_cli(cli_args(tmp, 'k') + ['--set', 'moe.top_bb=1', '--debug'])


def test_parser_from_the_signature():
    p = cli_parser(train_command, 'a3tune train')
    a = p.parse_args(['m', '--data', 'd.json', '--out', 'o', '--preset', 'vqa-rad', '--variant', 'reference', '--set', 'lam=0.1',
                      '--set', 'moe.top_b=3', '--resume', '--no-check-images', '--report-to', 'tensorboard', '--split', 'test'])
    assert (a.model, a.data, a.out, a.preset, a.variant, a.set, a.resume, a.check_images, a.report_to, a.split) == \
           ('m', 'd.json', 'o', 'vqa-rad', 'reference', ['lam=0.1', 'moe.top_b=3'], True, False, 'tensorboard', 'test')
    assert p.parse_args(['m', '--data', 'd', '--out', 'o', '--resume', 'ck-3']).resume == 'ck-3'
    assert p.parse_args(['m', '--data', 'd', '--out', 'o']).resume is None
    help = p.format_help()
    assert all(k in help for k in TABLE7) and 'moe.top_b' in help and 'max_steps' in help
    with pytest.raises(SystemExit): p.parse_args(['m', '--data', 'd', '--out', 'o', '--preset', 'chexpert'])
    with pytest.raises(SystemExit): p.parse_args(['m', '--out', 'o'])          # --data is required


def test_flat_keys_still_load_with_one_warning(fx, tmp_path):
    "`--set top_b=3`, a flat `--config` file and flat keyword arguments load, each with one warning naming `moe.KEY`."
    flat = {'q_experts': 8, 'top_b': 3, 'lam': .2}
    (tmp_path/'flat.json').write_text(json.dumps(flat))
    with pytest.warns(FutureWarning, match=r'write moe\.q_experts, moe\.top_b') as w: cfg = A3TuneConfig().update(flat)
    assert len(w) == 1 and (cfg.moe.q_experts, cfg.moe.top_b, cfg.lam) == (8, 3, .2)
    with pytest.warns(FutureWarning, match='moe.top_b'): assert A3TuneConfig(top_b=3).moe.top_b == 3
    with pytest.warns(FutureWarning, match='moe.top_b'): assert A3TuneConfig.from_json(tmp_path/'flat.json') == cfg
    with pytest.warns(FutureWarning, match='moe.top_b'): assert A3TuneConfig().update(['top_b=3']).moe.top_b == 3
    assert A3TuneConfig().update(['moe.top_b=3', 'moe.q_experts=8', 'lam=0.2']) == cfg
    with pytest.warns(FutureWarning, match='moe.top_b'): assert A3TuneConfig.preset('vqa-rad', top_b=3).moe == A3MoEConfig(top_b=3)


def test_labels_then_train_through_the_a3tune_command(fx, tmp_path):
    "`a3tune labels` (Felzenszwalb segments, a tiny random CLIP scorer) then `a3tune train` on its label file."
    from a3tune.cli import main
    tmp, base, proc, recs = fx
    one = [r for r in recs if r['image'].startswith('xmlab110')][:4]          # one image: segmented once
    write_llava_json(one, tmp_path/'one.json')
    (tmp_path/'tinyclip.json').write_text(json.dumps({'embed_dim': 32, 'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 64, 'patch_size': 16},
                                                      'text_cfg': {'context_length': 32, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1}}))
    assert main(['labels', str(tmp_path/'one.json'), '--images', str(SLAKE/'imgs'), '--out', str(tmp_path/'weak.jsonl'),
                 '--segmenter', 'felzenszwalb', '--scorer', 'clip', '--clip-model', str(tmp_path/'tinyclip.json'), '--no-progress']) == 0
    labels = join_labels(one, tmp_path/'weak.jsonl', SLAKE/'imgs')
    assert len(labels) == 4 and not labels.unlabelled
    args = [str(tmp/'base'), '--data', str(tmp_path/'one.json'), '--images', str(SLAKE/'imgs'), '--labels', str(tmp_path/'weak.jsonl'),
            '--out', str(tmp_path/'run')] + sets(max_steps=2)
    assert main(['train'] + args) == 0
    state = json.loads((tmp_path/'run'/'checkpoint-2'/'trainer_state.json').read_text())
    assert [l['labelled_frac'] for l in state['log_history'] if 'loss' in l] == [1.0, 1.0]
    ds = A3Dataset(one, SLAKE/'imgs')
    batch = A3Collator(proc)([ds[0], ds[1]])
    a, b = load_a3tune(copy.deepcopy(base), tmp_path/'run'), load_a3tune(copy.deepcopy(base), tmp_path/'run'/'checkpoint-2')
    torch.testing.assert_close(logits(a, batch), logits(b, batch))
