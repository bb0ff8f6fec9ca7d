"""Fail if reading the notebooks in file order would meet a name imported from a later notebook.

Each notebook's `#| default_exp` names its module; notebooks sort by file name (`04a_data` after `04_loss`, before
`05_training`). Checked: every exported module (`a3tune/*.py`, relative imports) and every code cell of every numbered
notebook (`from a3tune.X import ...`, `import a3tune.X`), since a reader meets the cells too.

    python tools/check_import_order.py        # exit 1 and a line per forward import
"""
import ast, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB = ROOT/'nbs', ROOT/'a3tune'

def notebook_modules():
    "module name -> notebook path, for every numbered notebook with a `default_exp`."
    res = {}
    for nb in sorted(NBS.glob('[0-9]*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if m: res[m.group(1)] = nb; break
    return res

def imported(tree, relative:bool):
    "Names of a3tune modules a parsed file imports."
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if relative and n.level == 1 and n.module: yield n.module.split('.')[0]
            elif n.module and n.module.startswith('a3tune.'): yield n.module.split('.')[1]
            elif n.module == 'a3tune': yield from (a.name for a in n.names)
        elif isinstance(n, ast.Import):
            yield from (a.name.split('.')[1] for a in n.names if a.name.startswith('a3tune.'))

def _cell_tree(src):
    src = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!')))
    try: return ast.parse(src)
    except SyntaxError: return None

def check()->list:
    mods = notebook_modules()
    order = {m: nb.name for m, nb in mods.items()}
    bad = []
    def _check(where, own_nb, deps):
        for d in deps:
            if d in order and order[d] > own_nb: bad.append(f'{where} imports a3tune.{d} from the later notebook {order[d]}')
    for m, nb in mods.items():
        py = LIB/(m.replace('.', '/') + '.py')
        if py.exists(): _check(f'a3tune/{py.name} ({nb.name})', nb.name, set(imported(ast.parse(py.read_text()), True)))
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            if c['cell_type'] != 'code': continue
            t = _cell_tree(''.join(c['source']))
            if t is not None: _check(f'{nb.name} cell {i}', nb.name, set(imported(t, False)))
    return bad

if __name__ == '__main__':
    bad = check()
    for b in bad: print('FAIL:', b)
    if bad: sys.exit(1)
    print(f'import order ok: {len(notebook_modules())} notebooks, no forward import')
