"Where the tests find SLAKE-mini: `$A3TUNE_SLAKE`, else `shared/data/slake-mini` beside the repository (as CI has it)."
import os
from pathlib import Path
import pytest

def slake_root()->Path:
    "The SLAKE-mini folder, or skip the test with the reason."
    for p in (os.environ.get('A3TUNE_SLAKE'), Path(__file__).parents[2]/'shared'/'data'/'slake-mini'):
        if p and (Path(p)/'validate.json').exists(): return Path(p)
    pytest.skip('slake-mini not found beside the repository; set A3TUNE_SLAKE')
