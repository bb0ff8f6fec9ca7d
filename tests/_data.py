"Where the tests find SLAKE-mini: `a3tune.formats.slake_mini()` ($A3TUNE_DATA, else ../shared/data beside the repository, else the vendored copy)."
import pytest
from pathlib import Path
from a3tune.formats import slake_mini, missing_files, DATA_ENV

def slake_root(full:bool=False)->Path:
    "The SLAKE-mini folder, or skip the test with the reason (`full`: every image of the set, not only the vendored ones)."
    p = slake_mini()
    if not (p/'validate.json').exists(): pytest.skip(f'slake-mini not found at {p}; set {DATA_ENV}')
    if full and (miss := missing_files(p)): pytest.skip(f'needs the full slake-mini ({len(miss)} files missing at {p}); set {DATA_ENV}')
    return p
