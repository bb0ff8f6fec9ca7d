"`a3tune demo`, shrunken (a few phantom images, 2 optimiser steps), end to end through the console dispatcher."
import json, math, warnings
import torch
from PIL import Image
from a3tune.cli import main
from a3tune.experiments import SEEDS, DEMO_STAGES

torch.set_num_threads(1)
SMALL = ['--n-train', '6', '--n-test', '4', '--max-steps', '2', '--scorer-images', '10', '--scorer-steps', '20', '--threads', '1', '--no-progress']

def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path/'demo'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        rc = main(['demo', '--out', str(out), '--figures', '2', *SMALL])
    assert rc == 0
    assert not [w for w in caught if 'is_gradient_checkpointing' in str(w.message)]
    cap = capsys.readouterr(); printed = cap.out
    assert 'is_gradient_checkpointing' not in cap.err
    assert '| variant |' in printed and 'report:' in printed
    # progress without bars: one named line per stage, in order
    stage_lines = [l for l in printed.splitlines() if l.startswith('a3tune demo [')]
    assert len(stage_lines) == len(DEMO_STAGES) and all(s in l for s, l in zip(DEMO_STAGES, stage_lines)), stage_lines
    assert 'reusing' not in printed and 'not reusing' not in printed   # a fresh folder: nothing to say
    for f in ('results.json', 'results.md', 'report.md'): assert (out/f).is_file(), f
    figs = sorted((out/'figures').glob('attention_*.png'))
    assert len(figs) == 2 and all(f.stat().st_size > 1000 for f in figs)
    assert all(Image.open(f).size[0] >= 900 for f in figs), [Image.open(f).size for f in figs]   # readable: ≥ 900 px wide
    res = json.loads((out/'results.json').read_text())
    table = [r for r in res if r.get('table') != 'prior_shift']; shift = [r for r in res if r.get('table') == 'prior_shift']
    assert [r['name'] for r in table] == ['base', 'LoRA', 'A³Tune']
    assert [r['steps'] for r in table] == [0, 2, 2]
    assert [r['name'] for r in shift] == ['LoRA', 'A³Tune'] and all(0 <= r['shifted_acc'] <= 1 for r in shift)
    for r in table:
        for m in ('closed', 'open', 'coverage', 'intensity', 'mass_in_gt', 'mass_topR'):
            assert math.isfinite(r[m]) and 0 <= r[m] <= 1, (r['name'], m, r[m])
    rep = (out/'report.md').read_text()
    assert 'A³Tune − LoRA' in rep and '![attention_0' in rep
    assert rep.count('white contour: the question\'s ground-truth region') == 2   # a caption per figure
    assert '## Prior shift' in rep and '| shift | shifted | acc |' in rep
    assert f'{len(SEEDS)} seeds' in rep and 'three seeds' not in rep
    summary = json.loads((out/'summary.json').read_text())

    # a second demo with the same settings reuses every run; the numbers are the same
    assert main(['demo', '--out', str(out), '--figures', '2', *SMALL]) == 0
    printed = capsys.readouterr().out
    assert 'reusing the finished runs' in printed
    again = json.loads((out/'summary.json').read_text())
    assert again['results'] == summary['results'] and again['prior_shift'] == summary['prior_shift']

    # other settings: says why it does not reuse, in one line, and starts afresh
    assert main(['demo', '--out', str(out), '--figures', '1', *SMALL[:4], '--max-steps', '1', *SMALL[6:]]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if 'not reusing' in l]
    assert len(lines) == 1 and 'max_steps 2 → 1' in lines[0], lines
    assert [r['steps'] for r in json.loads((out/'results.json').read_text()) if r.get('table') != 'prior_shift'] == [0, 1, 1]
    assert len(list((out/'figures').glob('attention_*.png'))) == 1   # no stale figure of the earlier run

def test_demo_rejects_bad_arguments(capsys):
    try: main(['demo', '--seeds', 'zero'])
    except SystemExit as e: assert e.code == 2
    else: raise AssertionError('argparse should exit')
    assert "invalid int value: 'zero'" in capsys.readouterr().err

def test_demo_help_lists_options(capsys):
    try: main(['demo', '--help'])
    except SystemExit as e: assert e.code == 0
    h = capsys.readouterr().out
    for flag in ('--out', '--seeds', '--threads', '--n-train', '--n-test', '--epochs', '--max-steps', '--scorer-images',
                 '--scorer-steps', '--figures', '--base', '--no-progress'): assert flag in h, flag
