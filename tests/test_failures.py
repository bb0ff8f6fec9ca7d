"Bad inputs to `a3tune train` announce themselves (issue 19): each gives one clear error line and exit status 2, or a correct run with a warning."
import json, os, sys, time, shutil, signal, logging, subprocess
from pathlib import Path
import pytest, torch
from _training_fixtures import make_fixture, cli_args, sets, SLAKE, REPO
from a3tune.training import train_cli, checkpoint_problem, last_checkpoint, CONFIG_FILE, PARTIAL_DIR
from a3tune.data import write_llava_json


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fail')
    base, proc, recs = make_fixture(tmp)
    return tmp, base, proc, recs


def _run(capsys, argv):
    "(exit status, stderr) of `a3tune train argv`."
    rc = train_cli(argv)
    return rc, capsys.readouterr().err


def _one_line(rc, err, *parts):
    "Exit status 2 and one error line (after any progress bars) holding each of `parts`."
    lines = [l.split('\r')[-1] for l in err.strip().split('\n')]
    errs = [l[l.index('a3tune train: error: '):] for l in lines if 'a3tune train: error: ' in l]   # a progress bar may precede it
    assert rc == 2 and len(errs) == 1 and lines[-1].endswith(errs[0]), (rc, err)
    for p in parts: assert p in errs[0], (p, err)


def _labels(tmp, name, fn):
    "A copy of the fixture's label file with its lines (header first, as dicts) passed through `fn`, which returns text lines."
    lines = [json.loads(l) for l in (tmp/'labels.jsonl').read_text().splitlines()]
    (tmp/name).write_text('\n'.join(fn(lines)) + '\n')
    return name

dumps = lambda ls: [json.dumps(l) for l in ls]


# 1. a diverged run never looks like a success
@pytest.mark.parametrize('over', [dict(lr=1e38), dict(lr=1e38, grad_accum=2, nan_policy='raise')])
def test_diverged_run_stops_without_adapter(fx, capsys, over):
    tmp = fx[0]
    out = f"div{len(over)}"
    rc, err = _run(capsys, cli_args(tmp, out) + sets(max_steps=4, **over))
    _one_line(rc, err, 'training diverged at step', 'samples of the step: [', 'Stopped without saving an adapter')
    assert not (tmp/out/CONFIG_FILE).exists()                               # no finished adapter
    for ck in (tmp/out).glob('checkpoint-*'):                               # checkpoints written before are finite
        from safetensors.torch import load_file
        assert all(torch.isfinite(v).all() for v in load_file(ck/'a3moe.safetensors').values())


# 2. every numeric field is checked
@pytest.mark.parametrize('kv,msg', [('lam=NaN', 'A3TuneConfig.lam=nan: must be finite'), ('lam=Infinity', 'A3TuneConfig.lam=inf: must be finite'),
                                    ('lr=-1', 'A3TuneConfig.lr=-1: must be >= 0'), ('per_device_batch_size=0', 'must be >= 1'),
                                    ('moe.expert_dropout=2', 'A3TuneConfig.moe.expert_dropout=2: must be in [0, 1]')])
def test_numeric_config_fields_are_checked(fx, capsys, kv, msg):
    _one_line(*_run(capsys, cli_args(fx[0], 'cfg') + sets() + ['--set', kv]), msg)


# 3. weak labels that do nothing
@pytest.mark.parametrize('name,fn', [
    ('other-ids', lambda ls: dumps([ls[0]] + [{**l, 'id': 'x' + l['id']} for l in ls[1:]])),
    ('header-only', lambda ls: dumps(ls[:1])),
    ('truncated', lambda ls: dumps(ls[:1]) + [json.dumps(ls[1])[:60]]),
    ('empty-masks', lambda ls: dumps([ls[0]] + [{**l, 'segments': []} for l in ls[1:]])),
    ('nan-masks', lambda ls: dumps([ls[0]] + [{k: v for k, v in l.items() if k != 'segments'} | {'grid_masks': {'grid': [4, 4], 'masks': [[0.] * 16]}} for l in ls[1:]]))])
def test_labels_that_label_nothing_are_refused(fx, capsys, name, fn):
    tmp = fx[0]
    _one_line(*_run(capsys, cli_args(tmp, 'lab', labels=_labels(tmp, f'{name}.jsonl', fn)) + sets()), 'no sample of the data has a usable weak label')


def test_unmatched_ids_are_named_and_nan_grid_masks_refused(fx, capsys):
    tmp = fx[0]
    _one_line(*_run(capsys, cli_args(tmp, 'lab', labels=_labels(tmp, 'other.jsonl', lambda ls: dumps([ls[0]] + [{**l, 'id': 'x' + l['id']} for l in ls[1:]]))) + sets()),
              "7 are for ids not in the data (e.g. 'x")
    nan = lambda ls: dumps([ls[0], {**ls[1], 'grid_masks': {'grid': [4, 4], 'masks': [[float('nan')] * 16]}}] + ls[2:])
    _one_line(*_run(capsys, cli_args(tmp, 'lab', labels=_labels(tmp, 'nan.jsonl', nan)) + sets()), "nan.jsonl: line 2 (sample", 'finite fractions in [0, 1]')


def test_duplicate_label_ids_are_an_error(fx, capsys):
    tmp = fx[0]
    dup = _labels(tmp, 'dup.jsonl', lambda ls: dumps(ls + [ls[2]]))
    _one_line(*_run(capsys, cli_args(tmp, 'lab', labels=dup) + sets()), f"dup.jsonl: line 9: sample {fx[3][1]['id']} already has a record on line 3")


def test_few_labels_warn_and_the_summary_counts_usable_masks(fx, capsys, caplog):
    tmp = fx[0]
    few = _labels(tmp, 'few.jsonl', lambda ls: dumps(ls[:3] + [{**l, 'segments': []} for l in ls[3:]]))
    with caplog.at_level(logging.WARNING, 'a3tune'): rc = train_cli(cli_args(tmp, 'few', labels=few) + sets(max_steps=1))
    assert rc == 0
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any('2 of 8 samples have a usable weak label' in w and '(5 with empty masks)' in w for w in warn), warn
    assert json.loads(capsys.readouterr().out.splitlines()[-1])['labelled'] == 2


def test_warnings_are_visible_by_default(fx):
    "The `a3tune` logger's warnings reach stderr without any logging set-up (a fresh process)."
    tmp = fx[0]
    few = _labels(tmp, 'few.jsonl', lambda ls: dumps(ls[:3] + [{**l, 'segments': []} for l in ls[3:]]))
    code = ("import json, sys; from a3tune.data import join_labels, read_llava_json; "
            f"join_labels(read_llava_json({str(tmp/'data.json')!r}), {str(tmp/few)!r})")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert r.returncode == 0 and '2 of 8 samples have a usable weak label' in r.stderr, r.stderr


# 4. one path rule
def test_paths_leaving_the_image_root_get_one_message(fx, capsys, tmp_path):
    tmp, _, _, recs = fx
    root = tmp_path/'imgs'; shutil.copytree(SLAKE/'imgs'/'xmlab109', root/'xmlab109')
    (root/'out.jpg').symlink_to(SLAKE/'imgs'/'xmlab110'/'source.jpg')
    for bad in (str(root/'xmlab109'/'source.jpg'), '../imgs/../../x.jpg', 'out.jpg'):
        write_llava_json([{**recs[0], 'image': bad}], tmp_path/'d.json')
        rc, err = _run(capsys, [str(tmp/'base'), '--data', str(tmp_path/'d.json'), '--images', str(root), '--out', str(tmp_path/'o')] + sets())
        _one_line(rc, err, f"sample {recs[0]['id']}: image path {bad!r} escapes the image root", 'image paths must be relative and stay inside it')


# 5. / 9. records: extra turns, empty answer, id null, <image> in an answer; prompts longer than max_length; malformed RLE
@pytest.mark.parametrize('edit,msg', [
    (lambda r: {**r, 'conversations': r['conversations'] + [{'from': 'human', 'value': 'and?'}]}, "has 3 turns"),
    (lambda r: {**r, 'conversations': [r['conversations'][0], {'from': 'gpt', 'value': ''}]}, 'the answer (gpt turn) is empty'),
    (lambda r: {**r, 'id': None}, "'id' must be a non-empty string or integer"),
    (lambda r: {**r, 'conversations': [r['conversations'][0], {'from': 'gpt', 'value': '<image> CT'}]}, "the answer contains '<image>'")])
def test_bad_records_are_refused_naming_the_record(fx, capsys, edit, msg):
    tmp, _, _, recs = fx
    (tmp/'bad.json').write_text(json.dumps([recs[0], edit(recs[1])] + recs[2:]))
    _one_line(*_run(capsys, cli_args(tmp, 'rec', data='bad.json', labels=None) + sets()), 'bad.json: record 1', msg)


def test_long_prompts_are_found_before_step_1(fx, capsys):
    tmp = fx[0]
    _one_line(*_run(capsys, cli_args(tmp, 'long') + sets(max_length=12)), '8 samples have prompts of at least max_length=12 tokens')
    assert not (tmp/'long').exists()


@pytest.mark.parametrize('rle,msg', [(lambda r: {**r, 'counts': r['counts'][:-1]}, 'RLE covers'), (lambda r: {**r, 'counts': [-5] + r['counts']}, 'non-negative'),
                                     (lambda r: {**r, 'size': [3, 3]}, "mask is [3, 3]"), (lambda r: None, 'has no RLE mask')])
def test_malformed_rle_is_found_at_join(fx, capsys, rle, msg):
    tmp, _, _, recs = fx
    seg = lambda l: {**l, 'segments': [{**l['segments'][0], 'rle': rle(l['segments'][0]['rle'])}]}
    name = _labels(tmp, 'rle.jsonl', lambda ls: dumps(ls[:3] + [seg(ls[3])] + ls[4:]))
    _one_line(*_run(capsys, cli_args(tmp, 'rle', labels=name) + sets()), f"rle.jsonl: line 4 (sample {recs[2]['id']}): segment 0", msg)


# 10. / 5. / 11. checkpoints: incomplete, without optimizer.pt, truncated weights, invalid JSON
def test_resume_skips_incomplete_checkpoints_and_refuses_a_named_one(fx, capsys, caplog):
    tmp = fx[0]
    assert train_cli(cli_args(tmp, 'ck') + sets(max_steps=3, save_total_limit=None)) == 0
    capsys.readouterr()
    run = tmp/'ck'
    assert not (run/PARTIAL_DIR).exists() and all(checkpoint_problem(c) is None for c in run.glob('checkpoint-*'))
    (run/'checkpoint-3'/'trainer_state.json').unlink()                        # killed while saving (the old, non-atomic way)
    (run/'checkpoint-2'/'optimizer.pt').unlink()
    b = (run/'checkpoint-1'/'a3moe.safetensors').read_bytes()
    (run/'checkpoint-1'/'a3moe.safetensors').write_bytes(b[:len(b) // 2])     # truncated weights
    with caplog.at_level(logging.WARNING, 'a3tune'): assert last_checkpoint(run) is None
    msgs = ' '.join(r.getMessage() for r in caplog.records)
    assert 'skipping checkpoint checkpoint-3: it lacks trainer_state.json' in msgs and 'checkpoint-2: it lacks optimizer.pt' in msgs
    assert 'checkpoint-1: it has a corrupt a3moe.safetensors' in msgs
    for ck, msg in [('checkpoint-2', 'lacks optimizer.pt, so resuming would silently restart the optimiser'), ('checkpoint-1', 'has a corrupt a3moe.safetensors')]:
        _one_line(*_run(capsys, cli_args(tmp, 'ck2') + sets(max_steps=3) + ['--resume', str(run/ck)]), f"cannot resume from {run/ck}: it {msg}")
    (run/'checkpoint-2'/'optimizer.pt').write_bytes(b'')
    (run/'checkpoint-2'/CONFIG_FILE).write_text('{"format": ')
    _one_line(*_run(capsys, cli_args(tmp, 'ck2') + sets(max_steps=3) + ['--resume', str(run/'checkpoint-2')]), 'has an unreadable a3tune_config.json')


def test_sigkill_while_checkpointing_leaves_only_complete_checkpoints(fx):
    "Kill a run (SIGKILL) while it writes a checkpoint; every checkpoint left is complete and `--resume` finishes the run."
    tmp = fx[0]
    out = tmp/'kill'
    argv = cli_args(tmp, 'kill') + sets(max_steps=40, save_total_limit=None)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, '-m', 'a3tune.training'] + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None:
        if (out/PARTIAL_DIR).is_dir() and any(out.glob('checkpoint-*')): p.send_signal(signal.SIGKILL); break
        time.sleep(.002)
    p.wait()
    assert p.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
    done = list(out.glob('checkpoint-*'))
    assert done and all(checkpoint_problem(c) is None for c in done)
    assert train_cli(argv + ['--resume']) == 0
    assert json.loads((out/'checkpoint-40'/'trainer_state.json').read_text())['global_step'] == 40


# 12. malformed files name the file
def test_malformed_json_files_are_named(fx, capsys):
    tmp = fx[0]
    (tmp/'cut.json').write_text((tmp/'data.json').read_text()[:-30])
    _one_line(*_run(capsys, cli_args(tmp, 'js', data='cut.json', labels=None) + sets()), 'cut.json: not a valid data file (')
    (tmp/'cfg.json').write_text('{"lam": 0.1,}')
    _one_line(*_run(capsys, cli_args(tmp, 'js') + sets() + ['--config', str(tmp/'cfg.json')]), 'cfg.json: not a valid A3TuneConfig JSON (')


def test_unsupported_backbone_is_refused_before_loading(fx, capsys):
    "A model folder of a type a3tune has no adapter for: one line naming the supported types, exit 2."
    tmp, *_ = fx
    (tmp/'idefics').mkdir(exist_ok=True)
    (tmp/'idefics'/'config.json').write_text(json.dumps({'model_type': 'idefics3'}))
    rc, err = _run(capsys, [str(tmp/'idefics')] + cli_args(tmp, 'nope')[1:])
    _one_line(rc, err, "model_type='idefics3' is not supported", 'llava', 'qwen2_vl', 'Bring your own backbone')
    assert not (tmp/'nope').exists()
