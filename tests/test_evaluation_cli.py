"`a3tune eval` end to end on tiny_llava and slake-mini, with an adapter trained by `a3tune train` (CPU, seconds)."
import json, os, sys
from pathlib import Path
import pytest, torch
sys.path.insert(0, str(Path(__file__).parent))
from _training_fixtures import make_fixture, cli_args, sets
from a3tune.preliminaries import set_threads, tiny_llava
from a3tune.cli import main
from a3tune.decoding import read_jsonl, RECORD_FIELDS
from a3tune.evaluation import load_items

set_threads(1)

from _data import slake_root as _slake

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny base model dir and an adapter trained for 2 steps by `a3tune train`."
    _slake()
    tmp = tmp_path_factory.mktemp('evaltrain')
    make_fixture(tmp, n=4, unlabelled=0)
    assert main(['train'] + cli_args(tmp, 'adapter') + sets(max_steps=2, save_steps=100, R=3)) == 0
    return tmp

@pytest.mark.parametrize('strategy', ['greedy', 'dola'])
def test_eval_cli_with_adapter(trained, tmp_path, strategy):
    root = _slake()
    rc = main(['eval', '--model', str(trained/'base'), '--adapter', str(trained/'adapter'), '--data', str(root), '--out', str(tmp_path/'o'),
               '--limit', '4', '--batch-size', '3', '--max-new-tokens', '3', '--strategy', strategy, '--no-progress',
               '--attention', '--figures', '1'])
    assert rc == 0
    recs = read_jsonl(tmp_path/'o/answers.jsonl')
    assert len(recs) == 4 and all(set(RECORD_FIELDS) <= set(r) for r in recs)
    res = json.loads((tmp_path/'o/metrics.json').read_text())
    assert res['strategy'] == strategy and res['R'] == 3 and set(res['strategy_options']) >= ({'layers'} if strategy == 'dola' else {'num_beams'}) and res['legacy'][0]['n_open'] + res['legacy'][0]['n_closed'] == 4
    assert res['attention'][0]['n_mass_in_gt'] == 4 and res['attention'][0]['n_heads_mass_in_gt'] == 4
    assert [p.suffix for p in (tmp_path/'o/figures').iterdir()] == ['.png']
    card = (trained/'adapter'/'README.md').read_text()   # the adapter's model card records the evaluation
    assert f"| `strategy` | {strategy} |" in card and '| `eval_split` |' in card and '| `legacy_closed` |' in card and str(root) not in card

def test_eval_cli_llava_json_beam(trained, tmp_path):
    rc = main(['eval', '--model', str(trained/'base'), '--adapter', str(trained/'adapter'), '--data', str(trained/'data.json'),
               '--images', str(_slake()/'imgs'), '--out', str(tmp_path/'o'), '--max-new-tokens', '3', '--strategy', 'beam', '--no-progress'])
    assert rc == 0
    recs = read_jsonl(tmp_path/'o/answers.jsonl')
    assert len(recs) == 4 and {r['answer_type'] for r in recs} <= {'OPEN', 'CLOSED'}

def test_eval_cli_base_model_only(tmp_path, capsys):
    "No --split: the paper's test split, or validate (printed, with the reason) in SLAKE-mini, which has no test.json."
    root = _slake()
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    assert main(['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--out', str(tmp_path/'o'), '--limit', '2',
                 '--max-new-tokens', '2', '--no-progress']) == 0
    assert f"a3tune eval: split 'validate' of {root} (no test.json in this folder; the paper reports test)" in capsys.readouterr().out
    assert json.loads((tmp_path/'o/metrics.json').read_text())['split'] == 'validate'

def test_eval_cli_attention_needs_slake_folder(trained, tmp_path, capsys):
    assert main(['eval', '--model', str(trained/'base'), '--data', str(trained/'data.json'), '--out', str(tmp_path/'o'), '--attention']) == 2
    assert capsys.readouterr().err.startswith('a3tune eval: error: --attention/--figures need a SLAKE folder')

def test_eval_ids_are_strings(trained, tmp_path):
    "A SLAKE folder (numeric qid) and a JSON file (string id) both write string ids."
    for data, o in ((str(_slake()), 'a'), (str(trained/'data.json'), 'b')):
        assert main(['eval', '--model', str(trained/'base'), '--data', data, '--images', str(_slake()/'imgs'), '--out', str(tmp_path/o),
                     '--limit', '2', '--max-new-tokens', '2', '--no-progress']) == 0
        assert {type(r['id']) for r in read_jsonl(tmp_path/o/'answers.jsonl')} == {str}

def test_eval_caps_R_and_writes_strict_json(tmp_path):
    "No adapter on an 8-head model: R is capped at 8 with a warning; an image without boxes gives null, not NaN."
    import shutil
    src, root = _slake(), tmp_path/'slake'
    shutil.copytree(src/'imgs'/'xmlab0', root/'imgs'/'xmlab0')
    (root/'imgs'/'xmlab0'/'detection.json').write_text('[]')                 # an image without boxes
    (root/'validate.json').write_text(json.dumps(json.loads((src/'validate.json').read_text())[:3]))
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    with pytest.warns(UserWarning, match='R=128 exceeds the model'):
        assert main(['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--out', str(tmp_path/'o'), '--limit', '3',
                     '--max-new-tokens', '2', '--no-progress', '--attention', '--R', '128']) == 0
    txt = (tmp_path/'o/metrics.json').read_text()
    res = json.loads(txt, parse_constant=lambda c: pytest.fail(f'non-strict JSON constant {c}'))
    assert res['R'] == 8
    for l in (tmp_path/'o/attention.jsonl').read_text().splitlines(): json.loads(l, parse_constant=lambda c: pytest.fail(c))
    assert res['attention'][0]['n_mass_in_gt'] == 0 and res['attention'][0]['mass_in_gt'] is None and 'NaN' not in txt

def test_eval_help_lists_the_strategy_registry(capsys):
    from a3tune.decoding import register_strategy, hf_generate, STRATEGIES
    register_strategy('toy_sampling', 'toy: sampling at temperature 0.7', do_sample=True, temperature=0.7)(hf_generate)
    try:
        with pytest.raises(SystemExit): main(['eval', '--help'])
        h = capsys.readouterr().out
        assert 'toy_sampling' in h and 'nucleus sampling' in h and '--dola-layers' in h
    finally: del STRATEGIES['toy_sampling']
