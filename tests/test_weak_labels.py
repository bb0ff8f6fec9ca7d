"Unit tests of a3tune.weak_labels mechanisms that read badly as notebook lessons."
import numpy as np, torch, pytest
from PIL import Image
from a3tune.weak_labels import *

torch.set_num_threads(1)

def test_rle_roundtrip_random():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 3), (64, 48)]:
        for p in (0., .1, .5, 1.):
            m = rng.random(shape) < p; r = rle_encode(m)
            assert (rle_decode(r) == m).all() and rle_area(r) == m.sum() and sum(r['counts']) == m.size

def test_images_16bit_rgba_dicom(tmp_path):
    from pydicom.data import get_testdata_file
    a = (np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16)
    Image.fromarray(a).save(tmp_path/'a16.png')
    x = load_image(tmp_path/'a16.png'); assert x.shape == (30, 20, 3) and x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    for f in ['MR_small.dcm', 'examples_rgb_color.dcm', 'emri_small.dcm']:     # 16-bit grey, RGB, multi-frame
        y = load_image(get_testdata_file(f)); assert y.ndim == 3 and y.shape[2] == 3 and y.dtype == np.uint8
    (tmp_path/'x.dcm').write_bytes(b'\0' * 128 + b'DICM' + b'\1' * 20)
    with pytest.raises(ImageError, match='x.dcm'): load_image(tmp_path/'x.dcm')

def test_label_image_no_segments_and_fewer_than_k():
    class Two(Segmenter):
        def __call__(self, img):
            m = np.zeros(img.shape[:2], bool); m[:4] = True
            return Segments.from_masks([m, ~m])
    class Const(Scorer):
        def embed_text(self, ps): return torch.ones(len(ps), 2) / 2**.5
        def embed_segments(self, img, segs): return torch.tensor([[1., 0.], [0., 1.]])[:len(segs)]
    segs, top = label_image(np.zeros((8, 8, 3), np.uint8), ['a', 'b', 'a'], Two(), Const(), k=4)
    assert [len(t) for t in top] == [2, 2, 2]
    segs, top = label_image(np.zeros((8, 8, 3), np.uint8), ['a'], Felzenszwalb(), Const(), k=4)
    assert len(segs) == 0 and top == [[]]

def test_region_features_thin_segment_falls_back_to_centre_cell():
    emb = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    m = np.zeros((1024, 1024), bool); m[500, 600] = True                        # one pixel: 0.25 px at 256
    f = region_features(emb, Segments.from_masks([m]), 0.25)
    assert f.shape == (1, 6) and f[0, 0] > 0

def test_shipped_scorer_weights():
    sc = MiniLMScorer()
    assert sc.proj.weight.shape == (384, 261) and len(sc.settings()['weights_sha256']) == 64
    p = sc.provenance(); assert p['zero_shot'] is False and 'SLAKE' in p['trained_on']       # fitted on SLAKE ground truth
    assert SCORERS['minilm']().settings() == sc.settings()

def test_train_projection_deterministic_whatever_global_rng():
    "The same seed gives the same projection whatever the global RNG state (it made phantom weak labels differ run to run)."
    g = torch.Generator().manual_seed(0)
    feats, lab = torch.randn(24, 6, generator=g), ['liver', 'spleen'] * 12
    texts = {'liver': ['liver', 'the liver'], 'spleen': ['spleen', 'the spleen']}
    torch.manual_seed(1); a = train_projection(feats, lab, texts, steps=5)
    torch.manual_seed(2); b = train_projection(feats, lab, texts, steps=5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    c = train_projection(feats, lab, texts, steps=5, seed=1)
    assert not torch.equal(a.weight, c.weight)

def test_registries_build_what_the_cli_names():
    assert {'felzenszwalb', 'litemedsam', 'sam'} <= set(SEGMENTERS) and {'minilm', 'clip'} <= set(SCORERS)
    assert isinstance(SEGMENTERS['felzenszwalb'](device='cpu', unused=1), Felzenszwalb)
    with pytest.raises(FileNotFoundError, match='nope.pth'): SEGMENTERS['sam'](sam_checkpoint='nope.pth')

def test_write_labels_roundtrip_and_resume_compatible(tmp_path):
    recs = [{'id': str(i), 'image': f'{i}.png', 'segments': []} for i in range(3)]
    p = write_labels(tmp_path/'l.jsonl', {'k': 4}, recs)
    head, got = read_labels(p)
    assert head['settings_hash'] == settings_hash({'k': 4}) and 'provenance' not in head and list(got) == ['0', '1', '2']

def test_sam_filters_scale_with_image_size():
    "A 24-px box passes on a 256-px image (> 12 px) and fails on a 1024-px one (<= 48 px): filters follow the reference at 256²."
    for side, kept in [(256, 1), (1024, 0)]:
        m = np.zeros((side, side), bool); m[100:124, 100:124] = True
        assert len(sam_filters(Segments.from_masks([m]))) == kept
