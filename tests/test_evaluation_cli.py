"`a3tune eval` end to end on tiny_llava and slake-mini (CPU, seconds)."
import json, os
from pathlib import Path
import pytest, torch
from a3tune.preliminaries import set_threads, tiny_llava
from a3tune.cli import main
from a3tune.evaluation import read_jsonl, RECORD_FIELDS

set_threads(1)

def _slake():
    for p in (os.environ.get('A3TUNE_SLAKE'), '../shared/data/slake-mini', 'shared/data/slake-mini', '/work/shared/data/slake-mini'):
        if p and (Path(p)/'validate.json').exists(): return Path(p)
    pytest.skip('slake-mini not found; set A3TUNE_SLAKE')

def test_eval_cli(tmp_path):
    root = _slake()
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    rc = main(['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--out', str(tmp_path/'o'), '--limit', '4',
               '--batch-size', '3', '--max-new-tokens', '3', '--strategy', 'beam', '--no-progress', '--attention'])
    assert rc == 0
    recs = read_jsonl(tmp_path/'o/answers.jsonl')
    assert len(recs) == 4 and all(set(RECORD_FIELDS) <= set(r) for r in recs)
    res = json.loads((tmp_path/'o/metrics.json').read_text())
    assert res['strategy'] == 'beam' and res['legacy'][0]['n_open'] + res['legacy'][0]['n_closed'] == 4
    assert res['attention'][0]['n_mass_in_gt'] == 4

def test_eval_cli_dola_needs_permission(tmp_path):
    root = _slake()
    model, proc = tiny_llava()
    model.save_pretrained(tmp_path/'m'); proc.save_pretrained(tmp_path/'m')
    with pytest.raises(ValueError, match='transformers-community/dola'):
        main(['eval', '--model', str(tmp_path/'m'), '--data', str(root), '--out', str(tmp_path/'o'), '--limit', '1',
              '--strategy', 'dola', '--no-progress'])
