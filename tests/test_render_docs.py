"The offline docs site (tools/render_docs.py) renders pages with a sidebar and their figures; notebooks run from any folder."
import base64, importlib.util, io, json, re, shutil, subprocess
from pathlib import Path
import pytest
from PIL import Image

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location('render_docs', ROOT/'tools'/'render_docs.py')
rd = importlib.util.module_from_spec(spec); spec.loader.exec_module(rd)

def test_sidebar_order():
    names = [p.stem for p in rd.notebooks()]
    assert names[0] == 'index' and names[1:] == sorted(names[1:]) and '00_preliminaries' in names

def test_quarto_syntax_stripped():
    md = '[source](https://x/y.py#L3){target="_blank" style="float:right"}\n::: {.callout-note}\ntext\n:::'
    assert rd.quarto_md(md) == '[source](https://x/y.py#L3)\ntext'

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    rd.render(out, ['index', '00_preliminaries'], proc=False)
    return out

def test_pages_and_figures(site):
    idx, pre = (site/'index.html').read_text(), (site/'00_preliminaries.html').read_text()
    for page in (idx, pre):
        assert 'class="a3-sidebar"' in page and 'href="00_preliminaries.html"' in page and 'href="index.html"' in page
    assert '<title>preliminaries – a3tune</title>' in pre and 'class=active>preliminaries<' in pre
    assert '#|' not in pre and 'hf_logging.disable_progress_bar' not in pre     # directives stripped, `#| hide` cells gone
    imgs = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', pre)
    assert len(imgs) >= 2                                                      # the geometry and Eq. 2 figures, embedded
    for b in imgs: assert min(Image.open(io.BytesIO(base64.b64decode(b))).size) > 50
    assert 'Results, measured here' in idx and '<table' in idx                # the cached results table

@pytest.mark.skipif(not shutil.which('chromium'), reason='headless Chromium not installed')
def test_pages_load_in_chromium(site, tmp_path):
    dom = subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--dump-dom',
                          (site/'00_preliminaries.html').as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'a3-sidebar' in dom and dom.count('<img') >= 2
    shot = tmp_path/'index.png'
    subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--window-size=1000,700',
                    f'--screenshot={shot}', (site/'index.html').as_uri()], capture_output=True, timeout=120)
    im = Image.open(shot).convert('L'); assert im.size == (1000, 700)
    assert im.getextrema()[0] < 100                                             # text drawn, not a blank page

CWD_PATH = re.compile(r"""(Path|open)\(\s*['"](cache|assets|\.\./)""")

def test_notebooks_use_no_cwd_relative_paths():
    "Notebooks find their files from the package (`formats.repo_root()`), so they run from nbs/, the repo root or elsewhere."
    bad = [(p.name, l.strip()) for p in sorted((ROOT/'nbs').glob('*.ipynb')) for c in json.loads(p.read_text())['cells']
           if c['cell_type'] == 'code' for l in ''.join(c['source']).splitlines() if CWD_PATH.search(l)]
    assert bad == []
