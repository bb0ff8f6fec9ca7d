"""The benchmarks keep working: bench/scale.py's merge and fits, and bench/train_step.py's per-phase timing on a tiny model."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))
import scale   # bench/scale.py

ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', A3TUNE_THREADS='1', HF_HUB_OFFLINE='1', PYTHONPATH=str(ROOT))


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], env=ENV, capture_output=True, text=True, cwd=ROOT)


def _scale_json(path, points, dtype='bfloat16'):
    meta = dict(device='cpu', device_name='test', dtype=dtype, torch='x', quick=True, dims=scale.QUICK, text_tokens=64, R_share=0.125,
                capacities_gib=[24, 40, 80], context_gib=1.0, reps=1, frozen_full=10**9, method='', wall_s=1.0)
    path.write_text(json.dumps(dict(meta=meta, points=points, projection=[])))
    return path


def _pt(style, layers, batch, mem, images=576):
    return dict(style=style, images=images, layers=layers, batch=batch, trainable=1000 * layers, mem_mib=mem, ms=10. * layers)


def test_scale_merge(tmp_path):
    # memory exactly 100 + 50·L + 30·(b-1)·L: the merged fit must recover fixed 100 and slope 50 / 80 with zero residual
    a = [_pt('lora', L, 1, 100 + 50 * L) for L in (1, 2)] + [_pt('lora', 4, 1, 999)]         # a wrong 4-layer point ...
    b = [_pt('lora', 4, 1, 300)] + [_pt('lora', L, 2, 100 + 80 * L) for L in (1, 2, 4)]       # ... replaced by the later file
    out = tmp_path/'m.json'
    r = _run(ROOT/'bench'/'scale.py', '--merge', _scale_json(tmp_path/'a.json', a), _scale_json(tmp_path/'b.json', b), '--json', out)
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert len(m['points']) == 6 and m['meta']['runs'] == 2 and m['meta']['wall_s'] == 2.0
    fit = m['projection'][0]['batches']
    assert fit['1']['fixed_mib'] == pytest.approx(100) and fit['1']['per_layer_mib'] == pytest.approx(50) and fit['1']['residual_mib'] < 1e-9
    assert fit['2']['per_layer_mib'] == pytest.approx(80)
    assert 'fits' in m['projection'][0]                                                    # batch 1 and 2: the projection exists
    bad = _run(ROOT/'bench'/'scale.py', '--merge', tmp_path/'a.json', _scale_json(tmp_path/'c.json', b, dtype='float32'))
    assert bad.returncode != 0 and 'dtype' in bad.stderr and 'c.json' in bad.stderr
    (tmp_path/'d.json').write_text('{"a": 1}')
    for f, says in ((tmp_path/'missing.json', 'cannot read'), (tmp_path/'d.json', 'not a bench/scale.py --json file')):
        r = _run(ROOT/'bench'/'scale.py', '--merge', tmp_path/'a.json', f)
        assert r.returncode != 0 and says in r.stderr and f.name in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_train_step_phases():
    r = _run(ROOT/'bench'/'train_step.py', '--one', 'phases:time', '--hidden', 32, '--layers', 1, '--heads', 2, '--n_vis', 64,
             '--text', 16, '--R', 1, '--reps', 1, '--experts')
    assert r.returncode == 0, r.stderr[-2000:]
    ph = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(ph) == {'lora', 'a3moe', 'a3tune'}
    assert {'forward', 'backward', 'AdamW step'} <= set(ph['lora'])
    assert {'Eq. 8 ratio, all heads', 'head selection', "selected heads' rows + L_align", 'objective', 'backward'} <= set(ph['a3tune'])
    assert all(v > 0 for d in ph.values() for v in d.values())


def test_train_step_laps_once_per_phase():
    import train_step   # bench/train_step.py
    for method in ('lora', 'a3_loop'):                    # a3_loop laps its forward inside the loss, as a3tune does
        laps = {}
        step, _ = train_step.build(method, hidden=32, layers=1, heads=2, text=16, n_vis=64, batch=2, R=1, laps=laps)
        step(); step()
        assert laps and all(len(v) == 2 for v in laps.values()), (method, {k: len(v) for k, v in laps.items()})
