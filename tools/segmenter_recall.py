"""Where does the weak-label segmenter lose SLAKE regions? Measured on every SLAKE-mini train + validate image.

For each CT/MRI ground-truth region it records the best IoU reached at each stage of the default LiteMedSAM pipeline
(prompt boxes that cover the region; all decoded prompt masks; after the predicted-IoU, area and NMS filters), and
two oracles that isolate LiteMedSAM's 256-px input: the region's own box as the prompt on the whole image, and the
same box on a crop around it upsampled to 256 px. For X-ray images it records the box IoU of every proposal with each
finding box. Optional extra segmenters (registered names) are measured beside the default. Writes JSON (default
nbs/cache/segmenter_recall.json); one torch thread.

    python tools/segmenter_recall.py [--out FILE] [--images xmlab0,xmlab1] [--extra NAME ...]
    python tools/segmenter_recall.py --no-default --extra NAME --out B.json     # in a second process, then
    python tools/segmenter_recall.py --merge A.json B.json                      # join them into --out
    python tools/segmenter_recall.py --shard 3/14 --no-scorer --feats F3.pt --out R3.json --extra litemedsam-ms   # one of 14 processes
    python tools/segmenter_recall.py --join R0.json R1.json ... --out R.json  # concatenate shards (image lists)
    python tools/segmenter_recall.py --cv 5 --out R.json --feats F0.pt F1.pt ...   # top-4 hits with a cross-validated scorer
    python tools/segmenter_recall.py --stages --images xmlab0,xmlab109 --out R.json   # CPU seconds per stage, both decoders

With --no-scorer, the question rows are left out and each method's proposal features (pooled LiteMedSAM embedding + box
position, what the MiniLM scorer projects), its IoU matrix with the ground truth and the ground-truth region features go
to --feats; --cv then fits the scorer projection per fold over the CT/MRI images (tools/train_scorer.py's folds; X-ray
images with a projection fitted on all CT/MRI images, which hold no X-ray) and writes the question rows of every method.
X-ray findings also get a random baseline: the same proposal box sizes at random positions (20 seeds).
"""
import argparse, json, math, os, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tools'))
from a3tune.weak_labels import LiteMedSAM, load_image, mask_nms, random_boxes, region_features, Segments
from _slake import SLAKE, gt_regions, image_folders, named_labels


def box_iou(a, b):
    "IoU of XYWH boxes a [N, 4] and b [M, 4] -> [N, M]."
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih; union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def random_best(boxes, gb, size, seeds=20):
    "Per finding box (XYWH) in gb, its best box IoU with `boxes` placed at random (same sizes), one value per seed."
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    if not len(boxes): return [[0.] * seeds for _ in range(len(gb))]
    R = [box_iou(gb, random_boxes(boxes, size, seed=k)).max(1) for k in range(seeds)]
    return [[round(float(R[k][j]), 4) for k in range(seeds)] for j in range(len(gb))]


VARIANTS = {   # study-only settings measured beside registered segmenters
    'litemedsam-ms-all': lambda device: __import__('a3tune.weak_labels', fromlist=['x']).LiteMedSAMMS(max_prompts=None, device=device),
    'litemedsam-ms-48': lambda device: __import__('a3tune.weak_labels', fromlist=['x']).LiteMedSAMMS(max_prompts=48, device=device),
    # the default before the shared decoder: segment_anything's MaskDecoder, 16 prompts per call (same settings, same labels)
    'litemedsam-ref': lambda device: LiteMedSAM(decoder='sam', batch=16, device=device),
}


def stage_times(img, scorer, question='Where is the liver in this image?'):
    "CPU seconds (process_time, one thread) of each stage of the default litemedsam + MiniLM scorer on one image, both decoders."
    pt = time.process_time; new, ref = LiteMedSAM(), LiteMedSAM(decoder='sam', batch=16); T = {}
    c = pt(); ex = new.encode(img); T['encode'] = pt() - c
    c = pt(); pr = new.prompts(img, ex['litemedsam_scale']); T['prompt_boxes'] = pt() - c
    c = pt(); ref.decode(ex['litemedsam_embed'], pr); T['decode_ref'] = pt() - c
    c = pt(); new.decode(ex['litemedsam_embed'], pr); T['decode_shared'] = pt() - c
    c = pt(); segs = new(img); T['call_shared'] = pt() - c
    T['filters_masks'] = max(0., T['call_shared'] - T['encode'] - T['prompt_boxes'] - T['decode_shared'])   # pred-IoU, area, NMS, full-size masks, RLE
    c = pt(); scorer.embed_segments(img, segs); T['scorer_regions'] = pt() - c
    c = pt(); scorer.embed_text([question]); T['scorer_question'] = pt() - c
    return {'prompts': len(pr), 'proposals': len(segs), **T}


def mask_ious(masks, gts):
    "IoU [G, N] of G ground-truth masks with N masks (all [H, W] bool)."
    if not len(masks) or not len(gts): return np.zeros((len(gts), len(masks)))
    m = torch.from_numpy(np.stack(masks)).flatten(1).float(); g = torch.from_numpy(np.stack(gts)).flatten(1).float()
    inter = g @ m.T; return (inter / (g.sum(1)[:, None] + m.sum(1)[None] - inter).clamp(min=1)).numpy()


def tight_box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] if len(xs) else [0, 0, 0, 0]


@torch.no_grad()
def crop_oracle(lm, img, box, side=256):
    "Mask from LiteMedSAM prompted with `box` (XYWH) on a square crop around it (3x the box, >= 64 px) upsampled to 256."
    H, W = img.shape[:2]; x, y, w, h = box; c = max(64, 3 * max(w, h)); cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(max(0, min(W - c, cx - c / 2))), int(max(0, min(H - c, cy - c / 2)))
    x1, y1 = int(min(W, x0 + c)), int(min(H, y0 + c))
    crop = img[y0:y1, x0:x1]; ex = lm.encode(crop); s = ex['litemedsam_scale']; hh, ww = ex['litemedsam_hw']
    b = torch.tensor([[(x - x0) * s, (y - y0) * s, (x - x0 + w) * s, (y - y0 + h) * s]], dtype=torch.float32)
    lo, iou = lm.decode(ex['litemedsam_embed'], b)
    m = F.interpolate(lo[:, :hh, :ww][None], size=(y1 - y0, x1 - x0), mode='bilinear', align_corners=False)[0, 0] > 0
    out = np.zeros((H, W), bool); out[y0:y1, x0:x1] = m.numpy(); return out, float(iou[0])


@torch.no_grad()
def study_image(lm, img, regs, xray):
    H, W = img.shape[:2]; c0 = time.process_time(); t0 = time.time(); ex = lm.encode(img); t_enc = time.time() - t0
    s = ex['litemedsam_scale']; h, w = ex['litemedsam_hw']
    t0 = time.time(); pr = lm.prompts(img, s); t_box = time.time() - t0
    t0 = time.time(); logits, piou = lm.decode(ex['litemedsam_embed'], pr); t_dec = time.time() - t0
    lo = logits[:, :h, :w] > 0; frac = lo.flatten(1).float().mean(1); cpu = time.process_time() - c0
    ok_iou = (piou >= lm.iou_thresh); ok_area = ok_iou & (frac >= lm.min_area) & (frac <= lm.max_area)
    ok = torch.nonzero(ok_area)[:, 0]; ok = ok[piou[ok].argsort(descending=True)]
    kept = ok[mask_nms(lo[ok], lm.nms)] if len(ok) else ok
    full = (F.interpolate(logits[:, :h, :w][:, None], size=(H, W), mode='bilinear', align_corners=False)[:, 0] > 0).numpy()
    pbox = (pr.numpy() / s); pbox = np.c_[pbox[:, :2], pbox[:, 2:] - pbox[:, :2]]                  # XYWH, original px
    img_rec = {'prompts': len(pr), 'proposals': len(kept), 'encode_s': t_enc, 'boxes_s': t_box, 'decode_s': t_dec, 'cpu_s': cpu, 'scale': s}
    from a3tune.weak_labels import Segments
    study_image.segs = Segments.from_masks([full[i] for i in kept.tolist()], scores=piou[kept].numpy(), size=(H, W), extras=ex) if len(kept) else Segments((H, W), [], np.zeros((0, 4), np.float32), np.zeros(0, np.float32), ex)
    if xray:
        gb = np.array([b for _, b in regs], float).reshape(-1, 4)
        fb = np.array([tight_box(full[i]) for i in kept.tolist()], float).reshape(-1, 4)
        I = box_iou(gb, fb)
        return img_rec, [{'label': l, 'box': list(map(float, b)), 'proposal_box_ious': [round(float(v), 4) for v in row],
                          'prompt_box_best': float(box_iou(b, pbox).max(initial=0)), 'random_best': rb} for (l, b), row, rb in zip(regs, I, random_best(fb, gb, (H, W)))]
    gts = [m for _, m in regs]; I = mask_ious(list(full), gts)
    gboxes = np.array([tight_box(g) for g in gts], float).reshape(-1, 4); BI = box_iou(gboxes, pbox)
    recs = []
    for j, (l, g) in enumerate(regs):
        gb = gboxes[j]; area = int(g.sum())
        b = torch.tensor([[gb[0] * s, gb[1] * s, (gb[0] + gb[2]) * s, (gb[1] + gb[3]) * s]], dtype=torch.float32)
        olo, oiou = lm.decode(ex['litemedsam_embed'], b)
        om = (F.interpolate(olo[:, :h, :w][None], size=(H, W), mode='bilinear', align_corners=False)[0, 0] > 0).numpy()
        side = math.sqrt(area) * s
        rec = {'label': l, 'area': area, 'side_256': side, 'box': gb.tolist(),
               'prompt_box_best': float(BI[j].max(initial=0)),
               'raw_best': float(I[j].max(initial=0)),
               'iou_filter_best': float(I[j][ok_iou.numpy()].max(initial=0)),
               'area_filter_best': float(I[j][ok_area.numpy()].max(initial=0)),
               'final_best': float(I[j][kept.numpy()].max(initial=0)) if len(kept) else 0.,
               'oracle_box': float(mask_ious([om], [g])[0, 0]), 'oracle_box_pred_iou': float(oiou[0])}
        if side < 32:
            cm, ciou = crop_oracle(lm, img, gb); rec['oracle_crop'] = float(mask_ious([cm], [g])[0, 0]); rec['oracle_crop_pred_iou'] = ciou
        else: rec['oracle_crop'] = rec['oracle_box']
        recs.append(rec)
    return img_rec, recs


def question_hits(scorer, img, segs, regs, questions, xray, k=4):
    "Per question naming a label: is a top-1 / top-k proposal (by the scorer) a hit (IoU >= 0.5 with a named region; box IoU for X-ray)?"
    from a3tune.weak_labels import top_k, Segments
    if not questions: return []
    labels = [l for l, _ in regs]; n = len(segs)
    if xray: I = box_iou(np.array([b for _, b in regs], float).reshape(-1, 4), np.asarray(segs.boxes, float).reshape(-1, 4))
    else: I = mask_ious([segs.mask(i) for i in range(n)], [m for _, m in regs])
    sims = scorer.score(img, segs, [q for q, _ in questions]) if n else torch.zeros(len(questions), 0)
    out = []
    for (q, named), row in zip(questions, sims):
        good = (I[[labels.index(l) for l in named]] >= .5).any(0) if n else np.zeros(0, bool); h = int(good.sum())
        r = {'question': q, 'named': named, 'candidates': n, 'reachable': bool(h)}
        for kk in (1, k):
            t = top_k(row, kk); r[f'top{kk}'] = bool(good[t].any()) if t else False
            r[f'random{kk}'] = 1 - math.comb(n - h, min(kk, n)) / math.comb(n, min(kk, n)) if n else 0.
        out.append(r)
    return out


def extra_image(seg, img, regs, xray):
    c0 = time.process_time(); t0 = time.time(); segs = seg(img); dt = time.time() - t0; cpu = time.process_time() - c0
    extra_image.segs = segs; rec = {'proposals': len(segs), 'seconds': dt, 'cpu_s': cpu}
    if xray:
        gb = np.array([b for _, b in regs], float).reshape(-1, 4)
        I = box_iou(gb, np.asarray(segs.boxes, float).reshape(-1, 4)); extra_image.I = I
        return rec, [([round(float(v), 4) for v in row], rb) for row, rb in zip(I, random_best(segs.boxes, gb, img.shape[:2]))]
    I = mask_ious([segs.mask(i) for i in range(len(segs))], [m for _, m in regs]); extra_image.I = I
    return rec, [float(r.max(initial=0)) for r in I]


def seg_feats(lm, img, segs):
    "What the MiniLM scorer projects: pooled LiteMedSAM features + position of each segment [N, 261]."
    ex = segs.extras if 'litemedsam_embed' in segs.extras else lm.encode(img)
    return region_features(ex['litemedsam_embed'], segs, ex['litemedsam_scale'])


def coverage(root, caps=(None, 96, 64, 48)):
    "Prompt boxes alone (no LiteMedSAM): per CT/MRI region, the best box IoU of the default's and of litemedsam-ms's prompts (at each cap)."
    from a3tune.weak_labels import LiteMedSAMMS, rank_boxes
    old, ms, rows = LiteMedSAM(), LiteMedSAMMS(), []
    for f, (sp, mod) in image_folders(root).items():
        if mod == 'X-Ray': continue
        img = load_image(root / 'imgs' / f / 'source.jpg'); s = 256 / max(img.shape[:2]); regs = gt_regions(root / 'imgs' / f)
        gb = np.array([tight_box(m) for _, m in regs], float) * s
        xywh = lambda b: np.c_[b[:, :2], b[:, 2:] - b[:, :2]]
        c0 = time.process_time(); b = np.asarray(ms.boxes_from(img).boxes, np.float64).reshape(-1, 4) * s; t_ms = time.process_time() - c0
        b = np.round(np.c_[b[:, :2], b[:, :2] + b[:, 2:]] / ms.dedup) * ms.dedup; u, n = np.unique(b, axis=0, return_counts=True)
        c0 = time.process_time(); po = old.prompts(img, s).numpy(); t_old = time.process_time() - c0
        best = {'default': box_iou(gb, xywh(po)).max(1, initial=0)}
        for c in caps: best[f'ms_{c or "all"}'] = box_iou(gb, xywh(u[rank_boxes(u, n, ms.box_nms, c)])).max(1, initial=0)
        rows += [{'image': f, 'modality': mod, 'label': l, 'side_256': float(math.sqrt(m.sum()) * s), **{k: float(v[j]) for k, v in best.items()}}
                 for j, (l, m) in enumerate(regs)]
        rows[-1].update(prompts_default=len(po), unique_ms=len(u), boxes_cpu_s_default=t_old, boxes_cpu_s_ms=t_ms)
        print(f, flush=True)
    return rows


def join(files):
    "Concatenate shard outputs (same methods, disjoint images)."
    outs = [json.loads(Path(f).read_text()) for f in files]; out = outs[0]
    for o in outs[1:]:
        for k in ('images', 'regions', 'findings', 'questions'): out[k] += o[k]
        for n, e in o['extras'].items():
            for k in e: out['extras'][n][k] += e[k]
    return out


def cv_questions(out, feats, qa, folds=5, steps=400, cache=None):
    "Question rows of every method, scored by a projection fitted per fold without the held-out images (train_scorer's folds)."
    from train_scorer import fit, image_samples
    from a3tune.weak_labels import minilm_embed, top_k
    ct = [f for f, (_, m) in image_folders(SLAKE).items() if m != 'X-Ray']
    if cache and Path(cache).is_file(): samples = torch.load(cache, weights_only=False)
    else:   # ground-truth region features of every CT/MRI image (the folds' training data)
        samples = image_samples(SLAKE, ct)
        if cache: torch.save(samples, cache)
    order = np.random.default_rng(0).permutation(len(ct)); proj_of = {}
    for k in range(folds):
        held = [ct[i] for i in order[k::folds]]; pk = fit(samples, [f for f in ct if f not in held], steps)[0]
        proj_of.update({f: pk for f in held})
    p_all = fit(samples, ct, steps)[0]
    methods = ['default'] + list(out['extras'])
    for m in methods: (out if m == 'default' else out['extras'][m])['questions'] = []
    for f, d in feats.items():
        proj = proj_of.get(f, p_all); labels = d['labels']
        for m in methods:
            md = d['methods'].get(m)
            if md is None: continue
            I, n = np.asarray(md['iou']).reshape(len(labels), -1), md['feats'].shape[0]
            with torch.no_grad(): emb = F.normalize(proj(md['feats']), dim=-1) if n else torch.zeros(0, 384)
            rows = []
            for q, named in d['questions']:
                good = (I[[labels.index(l) for l in named]] >= .5).any(0) if n else np.zeros(0, bool); h = int(good.sum())
                sims = minilm_embed([q])[0] @ emb.T if n else torch.zeros(0)
                r = {'image': f, 'split': d['split'], 'modality': d['modality'], 'question': q, 'named': named, 'candidates': n,
                     'reachable': bool(h), 'held_out': f in proj_of or d['modality'] == 'X-Ray'}
                for kk in (1, 4):
                    t = top_k(sims, kk); r[f'top{kk}'] = bool(good[t].any()) if t else False
                    r[f'random{kk}'] = 1 - math.comb(n - h, min(kk, n)) / math.comb(n, min(kk, n)) if n else 0.
                rows.append(r)
            (out if m == 'default' else out['extras'][m])['questions'] += rows
    out['scorer'] = f'MiniLM projection fitted per fold ({folds}-fold over the CT/MRI images, the held-out image never seen); X-ray: fitted on all CT/MRI'
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=str(SLAKE))
    p.add_argument('--out', default=str(REPO / 'nbs' / 'cache' / 'segmenter_recall.json'))
    p.add_argument('--images', default=None, help='comma-separated image folders (default: all of train + validate)')
    p.add_argument('--extra', nargs='*', default=[], help='registered segmenter names measured beside the default')
    p.add_argument('--device', default='cpu', help='torch device for LiteMedSAM (timings are only meaningful on one CPU thread)')
    p.add_argument('--no-default', action='store_true', help='skip the default pipeline study (extras only)')
    p.add_argument('--merge', nargs='*', default=[], help='only merge: the default study FILE, then extras-only runs, into --out')
    p.add_argument('--shard', default=None, help='I/N: this process runs every N-th image from the I-th')
    p.add_argument('--no-scorer', action='store_true', help='no question rows; write proposal features to --feats instead')
    p.add_argument('--feats', nargs='*', default=[], help='feature file to write (with --no-scorer), or files to read (with --cv)')
    p.add_argument('--join', nargs='*', default=[], help='only concatenate these shard outputs into --out')
    p.add_argument('--cv', type=int, default=0, help='only: question rows of --out from --feats, scorer by N-fold cross-validation')
    p.add_argument('--samples', default=None, help='with --cv: cache file of the ground-truth region features (made if missing)')
    p.add_argument('--stages', action='store_true', help='only: per-stage CPU seconds of the default (both decoders) on --images, into --out["stages"]')
    p.add_argument('--coverage', action='store_true', help='only: prompt-box coverage of every CT/MRI region (no LiteMedSAM) into --out')
    a = p.parse_args(argv)
    if a.coverage: Path(a.out).write_text(json.dumps({'coverage': coverage(Path(a.data))}, default=float)); return 0
    if a.join: Path(a.out).write_text(json.dumps(join(a.join), default=float)); return 0
    if a.cv:
        torch.set_num_threads(1); feats = {}
        for f in a.feats: feats.update(torch.load(f, weights_only=False))
        qa = [d for sp in ('train', 'validate') for d in json.loads((Path(a.data) / f'{sp}.json').read_text())]
        out = cv_questions(json.loads(Path(a.out).read_text()), feats, qa, a.cv, cache=a.samples)
        Path(a.out).write_text(json.dumps(out, default=float)); return 0
    if a.merge:   # runs split over processes (e.g. the default and --no-default --extra NAME), joined into one file
        out = json.loads(Path(a.merge[0]).read_text())
        for f in a.merge[1:]: out['extras'].update(json.loads(Path(f).read_text())['extras'])
        Path(a.out).write_text(json.dumps(out, default=float)); return 0
    torch.set_num_threads(1); root = Path(a.data)
    if a.stages:   # merged into --out when it exists
        from a3tune.weak_labels import MiniLMScorer
        sc = MiniLMScorer(); folders = image_folders(root); LiteMedSAM()(load_image(root / 'imgs' / a.images.split(',')[0] / 'source.jpg'))   # warm-up
        sc.embed_text(['warm-up']); rows = []
        for f in a.images.split(','):
            img = load_image(root / 'imgs' / f / 'source.jpg')
            rows.append({'image': f, 'modality': folders[f][1], 'size': list(img.shape[:2]), **stage_times(img, sc)}); print(rows[-1], flush=True)
        out = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
        Path(a.out).write_text(json.dumps({**out, 'stages': rows}, default=float)); return 0
    folders = image_folders(root); split_of = {f: s for f, (s, _) in folders.items()}; mod_of = {f: m for f, (_, m) in folders.items()}
    if a.images: names = a.images.split(',')
    else:   # modalities interleaved, so a run cut short still covers CT, MRI and X-ray alike
        by = {}
        for f, (_, m) in folders.items(): by.setdefault(m, []).append(f)
        names = [f for grp in zip(*[iter(sorted(v, key=lambda f: int(f[5:])) + [None] * 99) for v in by.values()]) for f in grp if f]
        names = list(dict.fromkeys(names))
    if a.shard: i, n = map(int, a.shard.split('/')); names = names[i::n]
    lm = LiteMedSAM(device=a.device)
    if a.extra: from a3tune.weak_labels import SEGMENTERS
    extras = {n: (VARIANTS[n](a.device) if n in VARIANTS else SEGMENTERS[n](device=a.device)) for n in a.extra}
    if not a.no_scorer:
        from a3tune.weak_labels import MiniLMScorer
        scorer = MiniLMScorer(device=a.device)
    feats = {}
    qa = [d for sp in ('train', 'validate') for d in json.loads((root / f'{sp}.json').read_text())]
    out = {'data': 'SLAKE-mini train + validate', 'scorer': 'shipped MiniLM projection (fitted on train images)', 'images': [], 'regions': [], 'findings': [], 'questions': [],
           'extras': {n: {'images': [], 'regions': [], 'findings': [], 'questions': []} for n in extras}}
    for k, f in enumerate(names):
        xray = mod_of[f] == 'X-Ray'; img = load_image(root / 'imgs' / f / 'source.jpg')
        regs = gt_regions(root / 'imgs' / f, xray=xray)
        base = {'image': f, 'split': split_of[f], 'modality': mod_of[f]}
        labels = [l for l, _ in regs]
        qs = [(d['question'], sorted(named_labels(d['question'], labels)) or                  # X-ray abnormality/position questions: any finding
               (labels if xray and d['content_type'] in ('Abnormality', 'Position') else [])) for d in qa if Path(d['img_name']).parent.name == f]
        qs = [(q, n) for q, n in qs if n]
        fd = feats[f] = {**base, 'labels': labels, 'questions': qs, 'methods': {}}
        if a.no_scorer and not xray:
            ex = lm.encode(img); fd['gt_feats'] = region_features(ex['litemedsam_embed'], Segments.from_masks([m for _, m in regs]), ex['litemedsam_scale'])
        def keep(name, segs):
            if not a.no_scorer: return
            gI = (box_iou(np.array([b for _, b in regs], float).reshape(-1, 4), np.asarray(segs.boxes, float).reshape(-1, 4)) if xray
                  else mask_ious([segs.mask(i) for i in range(len(segs))], [m for _, m in regs]))
            fd['methods'][name] = {'feats': seg_feats(lm, img, segs) if len(segs) else torch.zeros(0, 261), 'iou': np.round(gI, 4)}
        if not a.no_default:
            im, recs = study_image(lm, img, regs, xray)
            out['images'].append({**base, 'size': list(img.shape[:2]), **im})
            out['findings' if xray else 'regions'] += [{**base, **r} for r in recs]
            if a.no_scorer: keep('default', study_image.segs)
            else: out['questions'] += [{**base, **r} for r in question_hits(scorer, img, study_image.segs, regs, qs, xray)]
        for n, seg in extras.items():
            im, r = extra_image(seg, img, regs, xray)
            out['extras'][n]['images'].append({**base, 'size': list(img.shape[:2]), **im})
            if a.no_scorer: keep(n, extra_image.segs)
            else: out['extras'][n]['questions'] += [{**base, **r} for r in question_hits(scorer, img, extra_image.segs, regs, qs, xray)]
            if xray: out['extras'][n]['findings'] += [{**base, 'label': l, 'proposal_box_ious': row, 'random_best': rb} for (l, _), (row, rb) in zip(regs, r)]
            else: out['extras'][n]['regions'] += [{**base, 'label': l, 'area': int(m.sum()), 'best_iou': v} for (l, m), v in zip(regs, r)]
        print(f'{k + 1}/{len(names)} {f} {mod_of[f]}', flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, default=float))
        if a.no_scorer and a.feats: torch.save(feats, a.feats[0])   # after every image: a run cut short keeps its features
    return 0


if __name__ == '__main__': sys.exit(main())
