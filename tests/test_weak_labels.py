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

def _scan(h, w, blobs, seed=0):
    "Grey ellipse body with bright discs (cy, cx, r, value) and a little noise, [h, w, 3] uint8."
    yy, xx = np.mgrid[:h, :w]; g = np.zeros((h, w), np.float32)
    g[((yy - h/2) / (h*.45))**2 + ((xx - w/2) / (w*.45))**2 < 1] = 60
    for cy, cx, r, v in blobs: g[(yy - cy)**2 + (xx - cx)**2 < r*r] = v
    g += np.random.default_rng(seed).normal(0, 3, g.shape)
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, -1)

def test_multiscale_prompts_cover_a_small_structure_the_default_misses():
    img = _scan(256, 256, ((60, 60, 3, 230), (150, 140, 40, 130)), seed=1)   # a 6-px disc beside an 80-px one
    gt = np.array([[57, 57, 63, 63]], float)
    old, new = LiteMedSAM().prompts(img, 1.), LiteMedSAMMS().prompts(img, 1.)
    assert box_iou_xyxy(gt, old).max() < 0.5 <= box_iou_xyxy(gt, new).max()
    assert len(new) <= 96 and box_iou_xyxy([[100, 110, 180, 190]], new).max() > 0.8   # the large disc keeps its box
    assert torch.equal(new, LiteMedSAMMS().prompts(img, 1.))                           # deterministic

def test_one_decoder_call_equals_per_box_calls():
    img = _scan(128, 128, ((40, 40, 16, 200), (88, 80, 20, 120)))
    for dec in ('shared', 'sam'):
        one, per = LiteMedSAM(batch=0, decoder=dec), LiteMedSAM(batch=1, decoder=dec)
        ex = one.encode(img); boxes = torch.tensor([[16., 16, 64, 64], [120, 100, 216, 200], [0, 0, 256, 256]])
        (l1, i1), (l2, i2) = one.decode(ex['litemedsam_embed'], boxes), per.decode(ex['litemedsam_embed'], boxes)
        assert l1.shape == (3, 256, 256) and torch.allclose(l1, l2, atol=1e-4) and torch.allclose(i1, i2, atol=1e-5)
        assert one.decode(ex['litemedsam_embed'], torch.zeros(0, 4))[0].shape == (0, 256, 256)

def test_shared_decoder_equals_segment_anything_on_litemedsam():
    "The default decoder ('shared') gives LiteMedSAM's reference masks: logits to float rounding, the same segments."
    img = _scan(192, 160, ((50, 60, 14, 210), (120, 100, 25, 130), (150, 40, 6, 240)), seed=2)
    new, ref = LiteMedSAM(), LiteMedSAM(decoder='sam', batch=16)
    ex = new.encode(img); boxes = new.prompts(img, ex['litemedsam_scale'])
    (l1, i1), (l2, i2) = new.decode(ex['litemedsam_embed'], boxes), ref.decode(ex['litemedsam_embed'], boxes)
    assert len(boxes) >= 3 and torch.allclose(l1, l2, atol=1e-3) and torch.allclose(i1, i2, atol=1e-5)
    a, b = new(img), ref(img)
    assert a.rles == b.rles and np.allclose(a.scores, b.scores, atol=1e-5)
    assert 'decoder' not in new.settings() and new.settings() == ref.settings()    # same labels: label files stay valid

def test_xray_blobs_and_random_baseline_are_deterministic():
    yy, xx = np.mgrid[:200, :300]
    g = 90 + 20 * np.exp(-((yy - 120)**2 + (xx - 200)**2) / (2 * 12**2)) + np.random.default_rng(0).normal(0, 2, (200, 300))
    img = np.repeat(g.clip(0, 255).astype(np.uint8)[..., None], 3, -1)
    a, b = XrayBlobs()(img), XrayBlobs()(img)
    assert len(a) and np.array_equal(a.boxes, b.boxes) and a.rles == b.rles
    xyxy = lambda x: np.c_[x[:, :2], x[:, :2] + x[:, 2:]]
    assert box_iou_xyxy([[200 - 20, 120 - 20, 200 + 20, 120 + 20]], xyxy(a.boxes)).max() >= 0.5     # the opacity is proposed
    r1, r2, r3 = (random_boxes(a.boxes, (200, 300), seed=s) for s in (7, 7, 8))
    assert np.array_equal(r1, r2) and not np.array_equal(r1, r3) and np.array_equal(r1[:, 2:], a.boxes[:, 2:])
    assert (r1[:, :2] >= 0).all() and (r1[:, 0] + r1[:, 2] <= 300).all() and (r1[:, 1] + r1[:, 3] <= 200).all()
