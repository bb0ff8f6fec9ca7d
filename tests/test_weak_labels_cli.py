"Integration tests of `a3tune labels`: sharded runs with 2 CPU processes, resume, bad input, empty images."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from a3tune.weak_labels import labels_cli, read_labels, rle_decode

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}

def phantom(seed, h=48, w=48):
    rng = np.random.default_rng(seed); yy, xx = np.mgrid[:h, :w]; g = np.full((h, w), 30.)
    for _ in range(2):
        cy, cx, r = rng.integers(10, h - 10), rng.integers(10, w - 10), rng.integers(4, 9)
        g[(yy - cy)**2 + (xx - cx)**2 < r * r] = rng.integers(100, 250)
    return np.clip(g + rng.normal(0, 2, g.shape), 0, 255).astype(np.uint8)

@pytest.fixture
def data(tmp_path):
    imgs = tmp_path/'imgs'; imgs.mkdir()
    for i in range(4): Image.fromarray(phantom(i)).save(imgs/f'{i}.png')
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(imgs/'blank.png')          # no segment inside the area limits
    recs = [{'id': f'q{i}{j}', 'image': f'{i}.png', 'conversations': [{'from': 'human', 'value': f'<image>\nquestion {j} about image {i}'}, {'from': 'gpt', 'value': 'x'}]}
            for i in range(4) for j in range(3)]
    recs.append({'id': 'blank', 'image': 'blank.png', 'conversations': [{'from': 'human', 'value': '<image>\nanything?'}]})
    (tmp_path/'data.json').write_text(json.dumps(recs))
    (tmp_path/'tiny-clip.json').write_text(json.dumps(TINY_CLIP))
    return tmp_path

def args(d, out, *extra):
    return [str(d/'data.json'), '--images', str(d/'imgs'), '--out', str(out), '--segmenter', 'felzenszwalb', '--scorer', 'clip',
            '--clip-model', str(d/'tiny-clip.json'), '-k', '3', '--no-progress', *extra]

def run_rank(d, out, rank, world):
    env = {**os.environ, 'RANK': str(rank), 'WORLD_SIZE': str(world), 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    code = f"import torch; torch.manual_seed(0); torch.set_num_threads(1); from a3tune.weak_labels import labels_cli; labels_cli({args(d, out)!r})"
    return subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def test_two_process_shards_merge_to_single_run(data):
    torch.manual_seed(0); single = data/'single.jsonl'
    assert labels_cli(args(data, single)) == 0
    ps = [run_rank(data, data/'sharded.jsonl', r, 2) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert all(p.returncode == 0 for p in ps), outs
    logs = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(l['images'] for l in logs) == [2, 3]                          # 5 unique images split over 2 ranks
    h1, r1 = read_labels(single); h2, r2 = read_labels(data/'sharded.jsonl')
    assert h1 == h2 and list(r2) == list(r1) and len(r1) == 13                   # merged in data order
    for i in r1: assert [s['rle'] for s in r1[i]['segments']] == [s['rle'] for s in r2[i]['segments']]
    assert not list(data.glob('sharded.jsonl.*'))                               # parts and markers removed
    assert r1['blank']['segments'] == [] and r1['blank']['n_proposals'] == 0   # zero labels, not a crash
    assert all(len(r['segments']) == 3 for i, r in r1.items() if i != 'blank')
    m = rle_decode(r1['q00']['segments'][0]['rle']); assert m.shape == (48, 48) and m.any()

def test_resume_and_settings_mismatch(data, capsys):
    out = data/'l.jsonl'
    assert labels_cli(args(data, out)) == 0
    full = out.read_text(); lines = full.splitlines()
    out.write_text('\n'.join(lines[:5]) + '\n' + lines[5][:40])                   # interrupted mid-line
    assert labels_cli(args(data, out)) == 0
    assert read_labels(out)[1].keys() == read_labels(data/'l.jsonl')[1].keys() and len(read_labels(out)[1]) == 13
    capsys.readouterr()
    assert labels_cli(args(data, out)[:-3] + ['-k', '2', '--no-progress']) == 2                # one line, exit status 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('a3tune labels: error: ') and 'other settings' in err[-1]
    with pytest.raises(ValueError, match='other settings'): labels_cli(args(data, out)[:-3] + ['-k', '2', '--no-progress', '--debug'])

def test_bad_image_error_and_skip(data, capsys):
    (data/'imgs'/'3.png').write_bytes((data/'imgs'/'3.png').read_bytes()[:100])    # truncated PNG
    assert labels_cli(args(data, data/'a.jsonl')) == 2 and '3.png' in capsys.readouterr().err
    with pytest.raises(ValueError, match='3.png'): labels_cli(args(data, data/'a.jsonl', '--debug'))
    assert labels_cli(args(data, data/'b.jsonl', '--skip-bad')) == 0
    assert len(read_labels(data/'b.jsonl')[1]) == 10

def test_provenance_printed_and_in_header(data, capsys):
    assert labels_cli(args(data, data/'p.jsonl')) == 0
    assert 'zero-shot labels: yes' in capsys.readouterr().err
    assert read_labels(data/'p.jsonl')[0]['provenance']['scorer']['zero_shot'] is True

def _tiny_sam(checkpoint=None):
    "A random-init 0.19 M-parameter Sam (256-px input), registered below as SAM model type 'tiny'."
    from segment_anything.modeling import Sam, ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer
    torch.manual_seed(0)
    return Sam(image_encoder=ImageEncoderViT(img_size=256, patch_size=16, embed_dim=64, depth=2, num_heads=2, out_chans=32, window_size=4, global_attn_indexes=(1,)),
               prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=4),
               mask_decoder=MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2), iou_head_hidden_dim=32)).eval()

def test_sam_filter_options_reach_the_segmenter(data, monkeypatch):
    "--segmenter sam: the three filters are on by default, and each command-line option reaches them (label-file header)."
    from segment_anything import sam_model_registry
    monkeypatch.setitem(sam_model_registry, 'tiny', _tiny_sam)
    torch.save(_tiny_sam().state_dict(), data/'tiny.pth')
    base = [str(data/'data.json'), '--images', str(data/'imgs'), '--segmenter', 'sam', '--sam-checkpoint', str(data/'tiny.pth'),
            '--sam-model-type', 'tiny', '--scorer', 'clip', '--clip-model', str(data/'tiny-clip.json'), '--no-progress']
    assert labels_cli(base + ['--out', str(data/'on.jsonl')]) == 0
    assert labels_cli(base + ['--out', str(data/'off.jsonl'), '--sam-max-area', '1', '--no-sam-drop-border', '--sam-min-box', '0']) == 0
    on, off = (read_labels(data/f)[0]['settings']['segmenter'] for f in ('on.jsonl', 'off.jsonl'))
    assert on['filters'] == {'max_area': 40000 / 65536, 'drop_border': True, 'min_box': 12 / 256} and on['model_type'] == 'tiny'
    assert off['filters'] == {'max_area': 1.0, 'drop_border': False, 'min_box': 0.0}
