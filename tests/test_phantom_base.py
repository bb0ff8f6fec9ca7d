"The shipped phantom base and its build script (CPU, one thread, seconds)."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from a3tune.phantom import PHANTOM_BASE, load_phantom_base, make_phantom_set, phantom_accuracy, phantom_base_path, PHANTOM_WORDS

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

BASES = ['phantom', 'phantom-lesions']   # the shipped phantom bases (registered in a3tune.training)

def test_base_names_resolve():
    assert phantom_base_path() == PHANTOM_BASE == phantom_base_path('phantom')
    assert phantom_base_path('phantom-lesions').name == 'phantom_base_lesions'
    with pytest.raises(FileNotFoundError, match='phantom-lesions'): phantom_base_path('/some/folder')

@pytest.mark.parametrize('name', BASES)
def test_shipped_base_is_small_and_loads(name):
    files = {f.name: f.stat().st_size for f in phantom_base_path(name).iterdir()}
    assert 'model.safetensors' in files and 'build_report.json' in files, files
    assert sum(files.values()) < 3.2e6, files
    model, proc = load_phantom_base(name)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert set(PHANTOM_WORDS) <= set(proc.tokenizer.get_vocab())

@pytest.mark.parametrize('name', BASES)
def test_shipped_base_matches_its_report(name):
    rep = json.loads((phantom_base_path(name)/'build_report.json').read_text())
    model, proc = load_phantom_base(name)
    items = make_phantom_set(rep['n_eval'], rep['seed'] + 1000, rep.get('kind', 'pretrain'), qtypes=['is_organ', 'any_enlarged'])
    acc = phantom_accuracy(model, proc, items)
    for k in ('is_organ', 'any_enlarged'): assert abs(acc[k] - rep['heldout_accuracy'][k]) < .03, (k, acc[k], rep)

def test_build_script_is_deterministic(tmp_path):
    env = os.environ | {'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(ROOT)}
    outs = []
    for k in range(2):
        out = tmp_path/f'b{k}'
        r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_phantom_base.py'), '--steps', '6', '--n-images', '20', '--n-eval', '5',
                            '--out', str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert 'held-out accuracy' in r.stdout and 'is_organ' in r.stdout
        outs.append((out/'model.safetensors').read_bytes())
    assert outs[0] == outs[1]
