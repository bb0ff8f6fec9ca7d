"A user's first hour (issue 18): shipped model names, fail-fast Hub ids, labelled progress, several `--set` pairs per flag."
import json, os, time, warnings
from pathlib import Path
import pytest
from _training_fixtures import make_fixture, cli_args, sets, SLAKE
from a3tune import training
from a3tune.training import train_cli, train_command, A3TuneModel, SHIPPED_MODELS, load_base, a3tune_model, save_a3tune, A3TuneConfig
from a3tune.preliminaries import cli_parser


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('first')
    make_fixture(tmp, n=4, unlabelled=0)
    return tmp


def _no_install_path(folder:Path):
    "No saved file of `folder` holds an absolute path or the package's install location."
    site = str(SHIPPED_MODELS['phantom'].folder.parent.parent)
    for f in folder.rglob('*'):
        if f.suffix in ('.json', '.md', '.jinja'):
            t = f.read_text()
            assert site not in t and str(folder) not in t and '/site-packages/' not in t, f


def test_train_and_eval_a_shipped_name(fx, capsys):
    "`--model tiny-llava` trains, the adapter and card record the name, and both `from_pretrained` and `eval --model` take it back."
    from a3tune.evaluation import eval_cli
    run = fx/'tiny'
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)   # e.g. PEFT's "Could not find a config file in tiny-llava"
        assert train_cli(['tiny-llava', '--data', str(fx/'data.json'), '--images', str(SLAKE/'imgs'), '--out', str(run)]
                         + sets(max_steps=1, save_steps=10)) == 0
    assert json.loads((run/'adapter_config.json').read_text())['base_model_name_or_path'] == 'tiny-llava'
    assert json.loads((run/'a3tune_config.json').read_text())['base']['name_or_path'] == 'tiny-llava'
    card = (run/'README.md').read_text()
    assert "a3tune's shipped model `tiny-llava`" in card and "A3TuneModel.from_pretrained('tiny-llava'," in card
    m = A3TuneModel.from_pretrained(None, run)          # the base the folder names, by name
    assert m.get_base_model().config._name_or_path == 'tiny-llava'
    capsys.readouterr()
    assert eval_cli(['--model', 'tiny-llava', '--adapter', str(run), '--data', str(fx/'data.json'), '--images', str(SLAKE/'imgs'),
                     '--out', str(fx/'ev'), '--limit', '2', '--max-new-tokens', '2', '--no-progress']) == 0
    assert json.loads((fx/'ev'/'metrics.json').read_text())['model'] == 'tiny-llava'
    _no_install_path(run)


def test_phantom_by_name_or_install_path_is_saved_as_the_name(tmp_path):
    "The shipped phantom base, loaded by name or by its site-packages folder, is recorded as `phantom`."
    for how in ('phantom', str(SHIPPED_MODELS['phantom'].folder)):
        m, proc = load_base(how)
        out = save_a3tune(a3tune_model(m, A3TuneConfig()), tmp_path/'ph')
        assert json.loads((out/'a3tune_config.json').read_text())['base']['name_or_path'] == 'phantom'
        assert json.loads((out/'adapter_config.json').read_text())['base_model_name_or_path'] == 'phantom'
        _no_install_path(out)


def _fails_fast(fx, capsys, model='a3tune-tests/no-such-model', limit=10.):
    t0 = time.time()
    rc = train_cli([model, '--data', str(fx/'data.json'), '--images', str(SLAKE/'imgs'), '--out', str(fx/'never')] + sets(max_steps=1))
    dt, err = time.time() - t0, capsys.readouterr().err.strip()
    assert rc == 2 and dt < limit, (rc, dt)
    assert err.count('\n') == 0 and err.startswith(f'a3tune train: error: --model {model}: not a local folder'), err
    assert 'local model folder' in err and not (fx/'never').exists()
    return err


def test_hub_id_offline_fails_fast(fx, capsys, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert 'the Hub is offline (HF_HUB_OFFLINE)' in _fails_fast(fx, capsys)


def test_hub_id_without_network_fails_fast(fx, capsys, monkeypatch):
    "HF_HUB_OFFLINE unset, the network down (mocked: the probe raises a connection error as a dead network does): no retries."
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    calls = []
    def dead(url, timeout=None, **kw): calls.append(timeout); raise ConnectionError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(training, 'get_hf_file_metadata', dead)
    assert 'the Hub is unreachable (ConnectionError) within 5 s' in _fails_fast(fx, capsys)
    assert calls == [5.]


def test_hub_id_real_probe_ends_within_seconds(fx, capsys, monkeypatch):
    "The real probe, network or not: no such model, or no network, is one line and exit 2 within seconds."
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    _fails_fast(fx, capsys, limit=30.)


def test_set_takes_several_pairs_per_flag():
    p = cli_parser(train_command, 'a3tune train')
    a = p.parse_args(['m', '--data', 'd', '--out', 'o', '--set', 'lam=0.1', 'moe.top_b=3', '--set', 'max_steps=2'])
    assert a.set == ['lam=0.1', 'moe.top_b=3', 'max_steps=2']
    assert A3TuneConfig().update(a.set) == A3TuneConfig().update(['lam=0.1']).update(['moe.top_b=3']).update(['max_steps=2'])
    h = ' '.join(p.format_help().split())
    assert 'KEY=VALUE [KEY=VALUE ...]' in h and 'several per flag' in h and 'moe.top_b' in h and 'lam_warmup_steps' in h


def test_progress_bar_is_labelled_and_no_deprecation_noise(fx, capsys, monkeypatch):
    "The Trainer's bar names its stage; PEFT's `is_gradient_checkpointing` FutureWarning is not shown; several pairs per --set."
    from transformers.utils import logging as hf_logging
    if os.environ.get('TQDM_DISABLE'): pytest.skip('TQDM_DISABLE is set: tqdm reads it once, at import')
    level = hf_logging.get_verbosity(); hf_logging.set_verbosity_warning()   # the Trainer hides its bar above WARNING
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert train_cli(cli_args(fx, 'bar', labels=None) + ['--set', 'max_steps=2', 'save_steps=10', 'logging_steps=1',
                                                             'per_device_batch_size=2', 'grad_accum=1', 'bf16=false']) == 0
    hf_logging.set_verbosity(level)
    err = capsys.readouterr().err
    assert 'train bar: 100%' in err.replace('\r', '\n'), err[-500:]
    assert not [x for x in w if 'is_gradient_checkpointing' in str(x.message)]
    assert '`past_key_values`/`cache_params` are deprecated' not in err and '`use_cache=True` is incompatible' not in err
    assert training.read_adapter_config(fx/'bar')['config']['max_steps'] == 2


def test_error_after_an_open_bar_is_on_its_own_line(fx, capsys):
    "A run that diverges midway leaves the Trainer's bar unfinished; the error still starts a line of its own."
    assert train_cli(cli_args(fx, 'div', labels=None) + sets(max_steps=3, lr=1e38)) == 2
    lines = capsys.readouterr().err.replace('\r', '\n').splitlines()
    assert lines[-1].startswith('a3tune train: error: A³Tune: training diverged at step'), lines[-3:]


REPO = Path(__file__).parents[1]

def _figure_cells():
    for p in sorted((REPO/'nbs').glob('*.ipynb')):
        for c in json.loads(p.read_text())['cells']:
            if c['cell_type'] == 'code' and any(k.startswith('image/') for o in c.get('outputs', []) for k in o.get('data', {})):
                yield p.name, c

def test_every_figure_has_alt_text():
    "Every notebook cell with an image output carries Quarto's `#| fig-alt:` (a real sentence), among its leading directives."
    cells = list(_figure_cells())
    assert len(cells) >= 12
    for name, c in cells:
        lines = ''.join(c['source']).splitlines()
        head = [l for l in lines[:next((i for i, l in enumerate(lines) if not l.startswith('#|')), len(lines))]]
        alt = [l.split(':', 1)[1].strip() for l in head if l.startswith('#| fig-alt:')]
        assert alt and len(alt[0].split()) >= 8, f"{name}: figure cell {c.get('id')} has no `#| fig-alt:` directive (or a too short one)"

def test_rendered_docs_carry_the_alt_text():
    "tools/render_docs.py turns `#| fig-alt` into the cell's `alt` metadata, which nbconvert writes into the `<img alt=...>`."
    import sys; sys.path.insert(0, str(REPO/'tools'))
    import render_docs
    nb = {'cells': [{'cell_type': 'code', 'metadata': {}, 'source': '#| fig-alt: a grey square\nplot()', 'outputs': [], 'execution_count': None}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    c = render_docs.filter_nb(nb)['cells'][0]
    assert c['metadata']['alt'] == 'a grey square' and c['source'] == 'plot()'
    import nbformat
    from nbconvert import HTMLExporter
    png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAWk1v8QAAAABJRU5ErkJggg=='
    nb['cells'][0]['outputs'] = [{'output_type': 'display_data', 'data': {'image/png': png, 'text/plain': '<Figure>'}, 'metadata': {}}]
    node = nbformat.from_dict(render_docs.filter_nb(nb))
    body = render_docs.add_alts(HTMLExporter(template_name='lab').from_notebook_node(node)[0], node)
    assert '<img alt="a grey square"' in body and 'No description has been provided' not in body

def test_readme_figure_has_alt_text_and_exists():
    "The README shows one demo attention figure, a small committed PNG, with alt text."
    import re
    imgs = re.findall(r'!\[([^\]]+)\]\(([^)\s]+)\)', (REPO/'README.md').read_text())
    assert imgs, 'no figure in the README'
    for alt, path in imgs:
        assert len(alt.split()) >= 8 and (REPO/path).is_file() and (REPO/path).stat().st_size < 200_000, (alt, path)


def _forms(tmp:Path)->dict:
    "The same four records of one SLAKE image in each data form, each with its images where the form's default says."
    import shutil
    from a3tune.data import slake_to_llava, write_llava_json
    from a3tune.formats import RAD_FILE, RAD_IMAGES
    raw = [q for q in json.loads((SLAKE/'train.json').read_text()) if q['img_name'].startswith('xmlab110')][:4]
    (tmp/'slake').mkdir(); (tmp/'slake'/'train.json').write_text(json.dumps(raw))
    shutil.copytree(SLAKE/'imgs'/'xmlab110', tmp/'slake'/'imgs'/'xmlab110')
    (tmp/'conv').mkdir(); write_llava_json(slake_to_llava(tmp/'slake'/'train.json'), tmp/'conv'/'conv.json')
    shutil.copytree(SLAKE/'imgs'/'xmlab110', tmp/'conv'/'xmlab110')
    rad = SLAKE.parent/'vqarad-mini'; recs = json.loads((rad/RAD_FILE).read_text())
    img = next(r['image_name'] for r in recs if not str(r['phrase_type']).startswith('test') and (rad/RAD_IMAGES/r['image_name']).is_file())
    (tmp/'rad'/RAD_IMAGES).mkdir(parents=True); shutil.copy(rad/RAD_IMAGES/img, tmp/'rad'/RAD_IMAGES/img)
    (tmp/'rad'/RAD_FILE).write_text(json.dumps([r for r in recs if r['image_name'] == img]))
    return {'SLAKE folder': tmp/'slake', 'SLAKE split file': tmp/'slake'/'train.json', 'LLaVA JSON': tmp/'conv'/'conv.json', 'VQA-RAD folder': tmp/'rad'}

def test_labels_train_eval_read_every_form_the_same_way(fx, tmp_path, capsys):
    "`a3tune labels`, `train` and `eval` on each data form, with no --images: one reader (formats.load_data), one image default."
    from a3tune.cli import main
    from a3tune.data import load_data, join_labels
    (tmp_path/'tinyclip.json').write_text(json.dumps({'embed_dim': 32, 'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 64, 'patch_size': 16},
                                                      'text_cfg': {'context_length': 32, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1}}))
    for name, data in _forms(tmp_path).items():
        recs, root = load_data(data)
        lab, run, ev = tmp_path/f'{data.stem}.jsonl', tmp_path/f'run-{data.stem}', tmp_path/f'ev-{data.stem}'
        assert main(['labels', str(data), '--out', str(lab), '-k', '2', '--segmenter', 'felzenszwalb', '--scorer', 'clip',
                     '--clip-model', str(tmp_path/'tinyclip.json'), '--no-progress']) == 0, (name, capsys.readouterr().err)
        assert len(join_labels(recs, lab, root)) == len(recs) > 0, name
        assert main(['train', str(fx/'base'), '--data', str(data), '--labels', str(lab), '--out', str(run)] + sets(max_steps=1, save_steps=10)) == 0, name
        assert main(['eval', '--model', str(fx/'base'), '--adapter', str(run), '--data', str(data), '--split', 'train', '--out', str(ev),
                     '--limit', '2', '--max-new-tokens', '2', '--no-progress']) == 0, (name, capsys.readouterr().err)
        assert json.loads((ev/'metrics.json').read_text())['n'] == 2, name
