"The notebooks read in file order: no module or cell imports from a later notebook (tools/check_import_order.py)."
import ast, importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location('check_import_order', Path(__file__).parents[1]/'tools'/'check_import_order.py')
cio = importlib.util.module_from_spec(spec); spec.loader.exec_module(cio)

def test_no_forward_import(): assert cio.check() == []

def test_detects_imports():
    src = "from .data import x\nfrom a3tune.training import y\nimport a3tune.phantom\nfrom a3tune import loss"
    assert set(cio.imported(ast.parse(src), True)) == {'data', 'training', 'phantom', 'loss'}
    assert set(cio.imported(ast.parse(src), False)) == {'training', 'phantom', 'loss'}

def test_order_sorts_letters_after_base():
    mods = cio.notebook_modules()
    assert mods['data'].name < mods['training'].name < mods['experiments'].name
