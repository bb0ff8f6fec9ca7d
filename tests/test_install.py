"Packaging: setup.py builds metadata without the licence-classifier deprecation; CI's pinned versions lie inside settings.ini's ranges."
import configparser, shlex, shutil, subprocess, sys
from pathlib import Path
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]

def _requirements():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return {Requirement(r).name.lower(): Requirement(r) for r in shlex.split(cfg['DEFAULT']['requirements'])}

def test_setup_metadata_without_deprecation(tmp_path):
    for f in ('setup.py', 'settings.ini', 'README.md', 'MANIFEST.in', 'LICENSE', 'pyproject.toml'): shutil.copy(ROOT/f, tmp_path/f)
    shutil.copytree(ROOT/'a3tune', tmp_path/'a3tune', ignore=shutil.ignore_patterns('__pycache__', 'assets'))
    r = subprocess.run([sys.executable, 'setup.py', 'egg_info'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'License classifiers are deprecated' not in r.stderr + r.stdout
    info = next(tmp_path.glob('*.egg-info'))/'PKG-INFO'
    assert 'License-Expression: Apache-2.0' in info.read_text() or 'License: Apache-2.0' in info.read_text()

def test_ci_pins_inside_declared_ranges():
    reqs = _requirements()
    pins = [Requirement(l) for l in (ROOT/'.ci'/'constraints.txt').read_text().splitlines() if l.strip() and not l.startswith('#')]
    for p in pins:
        (v,) = [s.version for s in p.specifier]
        assert reqs[p.name.lower()].specifier.contains(v), f'{p} is outside settings.ini: {reqs[p.name.lower()]}'
    for name, floor in [('transformers', '5.23.0'), ('peft', '0.18.0'), ('accelerate', '1.3.0'), ('torch', '2.6.0')]:
        assert reqs[name].specifier.contains(floor), f'the tested floor {name} {floor} is excluded: {reqs[name]}'
