"Two CPU processes (torchrun, gloo) train like one process on the same global batch, and write the adapter once."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from _training_fixtures import make_fixture, cli_args, sets, REPO
from a3tune.training import train_cli


def _first_log(run):
    state = json.loads((Path(run)/'checkpoint-1'/'trainer_state.json').read_text())
    return next(l for l in state['log_history'] if 'loss' in l)


def test_two_processes_match_one(tmp_path):
    make_fixture(tmp_path, n=4, unlabelled=1)          # 4 samples = exactly one global batch
    one = sets(max_steps=1, per_device_batch_size=4)
    assert train_cli(cli_args(tmp_path, 'single') + one) == 0
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]), 'CUDA_VISIBLE_DEVICES': '',
           'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'A3TUNE_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           '-m', 'a3tune.training'] + cli_args(tmp_path, 'ddp') + sets(max_steps=1, per_device_batch_size=2)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)   # a hang fails here
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count('a3tune: adapter saved to') == 1        # only the main process saves and reports
    assert p.stdout.count('a3tune train: global batch 4 = 2 per device × 1 accumulation × 2 processes') == 1   # stated once, by rank 0
    a, b = _first_log(tmp_path/'single'), _first_log(tmp_path/'ddp')
    for k in ('loss', 'grad_norm', 'lm_loss', 'align_loss', 'labelled_frac'):
        assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (k, a[k], b[k])
    assert b['unlabelled_samples'] == a['unlabelled_samples'] == 1
    files = sorted(p.name for p in (tmp_path/'ddp').iterdir())
    assert {'a3moe.safetensors', 'adapter_model.safetensors', 'a3tune_config.json'} <= set(files)
    assert not [f for f in files if f.endswith('.tmp') or 'rank' in f]
