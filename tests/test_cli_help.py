"`a3tune CMD --help`: every option has a description and states its default once (train, eval, demo; labels is checked in 01)."
import importlib, pytest
from a3tune.cli import COMMANDS
from a3tune.preliminaries import cli_parser, _HelpFormatter

def _parser(name, monkeypatch):
    "The parser `a3tune NAME` builds, caught where its `*_cli` hands the engine to `run_cli`."
    c, got = COMMANDS[name], []
    mod = importlib.import_module(c.module)
    for m in {mod, importlib.import_module('a3tune.evaluation')}:   # `eval` dispatches through a task registry to evaluation's CLI
        if hasattr(m, 'run_cli'): monkeypatch.setattr(m, 'run_cli', lambda f, argv, prog: got.append((f, prog)) or 0)
    getattr(mod, c.func)([])
    return cli_parser(*got[0])

@pytest.mark.parametrize('name', ['train', 'eval', 'demo'])
def test_every_option_described_with_default(name, monkeypatch):
    p = _parser(name, monkeypatch)
    fmt = _HelpFormatter(p.prog)
    for a in p._actions:
        if a.dest == 'help': continue
        assert (a.help or '').strip(), f'{name}: {a.option_strings or a.dest} has no description'
        h = fmt._get_help_string(a)
        if a.option_strings and not a.required: assert 'default' in h, f'{name}: {a.option_strings} states no default: {h!r}'
        assert h.count('(default') <= 1 and '(default: None)' not in h, f'{name}: {a.option_strings}: {h!r}'
    out = p.format_help()
    assert '(default: None)' not in out and 'show progress bars (default: True)' not in out


@pytest.mark.parametrize('name', ['train', 'eval'])
def test_model_help_names_the_shipped_models(name, monkeypatch):
    "`--model` (train's positional MODEL, eval's --model) lists the shipped names; train's `--set` takes several KEY=VALUE pairs and lists keys."
    h = ' '.join(_parser(name, monkeypatch).format_help().split())
    assert 'phantom' in h and 'tiny-llava' in h and 'Hub id' in h
    if name == 'train': assert 'KEY=VALUE [KEY=VALUE ...]' in h and 'several per flag' in h and 'moe.top_b' in h
