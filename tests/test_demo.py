"`a3tune demo`, shrunken (a few phantom images, 2 optimiser steps), end to end through the console dispatcher."
import json, math
import torch
from a3tune.cli import main

torch.set_num_threads(1)

def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path/'demo'
    rc = main(['demo', '--out', str(out), '--n-train', '6', '--n-test', '4', '--max-steps', '2', '--scorer-images', '10',
               '--scorer-steps', '20', '--figures', '2', '--threads', '1', '--no-progress'])
    assert rc == 0
    printed = capsys.readouterr().out
    assert '| variant |' in printed and 'report:' in printed
    for f in ('results.json', 'results.md', 'report.md'): assert (out/f).is_file(), f
    figs = sorted((out/'figures').glob('attention_*.png'))
    assert len(figs) == 2 and all(f.stat().st_size > 1000 for f in figs)
    res = json.loads((out/'results.json').read_text())
    assert [r['name'] for r in res] == ['base', 'LoRA', 'A³Tune']
    assert [r['steps'] for r in res] == [0, 2, 2]
    for r in res:
        for m in ('closed', 'open', 'coverage', 'intensity', 'mass_in_gt', 'mass_topR'):
            assert math.isfinite(r[m]) and 0 <= r[m] <= 1, (r['name'], m, r[m])
    rep = (out/'report.md').read_text()
    assert 'A³Tune − LoRA' in rep and '![attention_0' in rep

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
