"`a3tune labels` against hostile input (issue 19): constant images, kills before the first flush, two writers, paths outside the image root, duplicate ids, SAM checkpoints."
import json, os, signal, subprocess, sys, time
from functools import partial
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from a3tune.weak_labels import labels_cli, read_labels, write_labels, build_labels, read_samples, load_sam, LabelFileError, Felzenszwalb, CLIPScorer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_weak_labels_cli import data, args, phantom, TINY_CLIP   # noqa: F401  (the `data` fixture: 4 phantoms + a blank image)

ENV = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}

def test_constant_image_gets_an_empty_label_with_litemedsam(tmp_path, capsys):
    "Case 6: no prompt boxes (a constant image) gave `cannot reshape tensor of 0 elements`; now an empty label, reported."
    (tmp_path/'imgs').mkdir(); Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tmp_path/'imgs'/'c.png')
    Image.fromarray(phantom(0)).save(tmp_path/'imgs'/'p.png')
    recs = [{'id': i, 'image': f'{i}.png', 'conversations': [{'from': 'human', 'value': '<image>\nwhere?'}]} for i in ('c', 'p')]
    (tmp_path/'d.json').write_text(json.dumps(recs))
    for seg in ('litemedsam', 'felzenszwalb'):
        out = tmp_path/f'{seg}.jsonl'; capsys.readouterr()
        assert labels_cli([str(tmp_path/'d.json'), '--images', str(tmp_path/'imgs'), '--out', str(out), '--segmenter', seg, '--no-progress']) == 0
        o = capsys.readouterr()
        assert json.loads(o.out.strip().splitlines()[-1])['no_proposals'] == 1 and 'no segment proposals' in o.err and 'c.png' in o.err
        r = read_labels(out)[1]
        assert r['c']['segments'] == [] and r['c']['n_proposals'] == 0 and r['p']['n_proposals'] > 0

KILLER = """
import os, signal, torch; torch.set_num_threads(1)
from a3tune.weak_labels import build_labels, read_samples, Felzenszwalb, CLIPScorer
class Killed(Felzenszwalb):   # the settings of `--segmenter felzenszwalb`, killed at its first image
    def settings(self): return Felzenszwalb().settings()
    def __call__(self, img): os.kill(os.getpid(), signal.SIGKILL)
build_labels(read_samples({data!r}), {out!r}, Killed(), CLIPScorer({clip!r}), k=3, image_root={imgs!r}, progress=False)
"""

def test_kill_before_first_flush_then_resume(data):
    "Case 7: SIGKILL before any record leaves a valid header (fsync'd), and a 0-byte file counts as new."
    out = data/'k.jsonl'
    p = subprocess.run([sys.executable, '-c', KILLER.format(data=str(data/'data.json'), out=str(out), clip=str(data/'tiny-clip.json'), imgs=str(data/'imgs'))],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert out.read_text().count('\n') == 1 and read_labels(out)[1] == {}    # header only, readable
    torch.manual_seed(0); assert labels_cli(args(data, out)) == 0 and len(read_labels(out)[1]) == 13   # the tiny CLIP is random: same seed
    empty = data/'empty.jsonl'; empty.write_bytes(b'')                         # killed before even the header
    torch.manual_seed(0); assert labels_cli(args(data, empty)) == 0
    assert read_labels(empty)[1] == read_labels(out)[1]

HOLDER = """
import sys, time; from a3tune.weak_labels import lock_output
f = lock_output(sys.argv[1]); print('locked', flush=True); time.sleep(120)
"""

def test_second_writer_is_refused_with_the_pid(data, capsys):
    "Case 8: a second `labels` on an output another process writes gets one line naming that pid; nothing is written."
    out = data/'l.jsonl'
    h = subprocess.Popen([sys.executable, '-c', HOLDER, str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert h.stdout.readline().strip() == 'locked'
        capsys.readouterr()
        assert labels_cli(args(data, out)) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith('a3tune labels: error: ') and f'in use by pid {h.pid}' in err
        assert out.read_bytes() == b''
    finally: h.kill(); h.wait()
    assert labels_cli(args(data, out)) == 0 and len(read_labels(out)[1]) == 13  # the lock goes with its process

@pytest.mark.parametrize('bad', ['../outside.png', 'ABS', 'link.png'])
def test_image_paths_stay_inside_the_root(data, capsys, bad):
    "Case 4: absolute paths, `../` and symlinks leading outside the image root are refused as `train` refuses them."
    Image.fromarray(phantom(9)).save(data/'outside.png')
    if bad == 'ABS': bad = str(data/'outside.png')
    if bad == 'link.png': (data/'imgs'/'link.png').symlink_to(data/'outside.png')
    recs = json.loads((data/'data.json').read_text()) + [{'id': 'x', 'image': bad, 'conversations': [{'from': 'human', 'value': '<image>\nq'}]}]
    (data/'data.json').write_text(json.dumps(recs)); capsys.readouterr()
    assert labels_cli(args(data, data/'o.jsonl')) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'sample x: image path' in err and 'escapes the image root' in err
    assert not (data/'o.jsonl').exists()                                       # refused before anything is written

def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    recs = [{'id': i, 'image': f'{i}.png', 'segments': []} for i in ('a', 'b', 'a')]
    p = write_labels(tmp_path/'l.jsonl', {'k': 4}, recs)
    with pytest.raises(LabelFileError, match=r"l.jsonl: line 4: sample a already has a record on line 2"): read_labels(p)

@pytest.fixture
def tiny_sam(monkeypatch):
    "A 1-block, 32-wide ViT SAM registered as model type 'tiny' (the real prompt encoder and mask decoder)."
    from segment_anything import sam_model_registry
    bs = sys.modules['segment_anything.build_sam']
    monkeypatch.setitem(sam_model_registry, 'tiny', partial(bs._build_sam, 32, 1, 1, [0]))
    torch.manual_seed(0); return sam_model_registry['tiny']()

class Evil:
    def __reduce__(self): return (os.system, ('echo pwned',))

def test_sam_checkpoint_loaded_with_weights_only(tmp_path, tiny_sam):
    "SAM checkpoints load through a3tune with weights_only=True: a state dict loads, a pickle with code is refused."
    sd = tiny_sam.state_dict(); torch.save(sd, tmp_path/'tiny.pth')
    m = load_sam(tmp_path/'tiny.pth', 'tiny')
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())
    torch.save({'x': Evil()}, tmp_path/'evil.pth')
    with pytest.raises(ValueError, match='evil.pth: not a loadable SAM state dict'): load_sam(tmp_path/'evil.pth', 'tiny')
    with pytest.raises(ValueError, match="does not fit SAM model type 'vit_b'"): load_sam(tmp_path/'tiny.pth', 'vit_b')
    with pytest.raises(FileNotFoundError, match='nope.pth'): load_sam(tmp_path/'nope.pth', 'tiny')
