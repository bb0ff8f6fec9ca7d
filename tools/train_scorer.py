"""Train the shipped MiniLM <-> LiteMedSAM scorer projection on SLAKE-mini train ground-truth regions.

This is the only place that writes a3tune/assets/minilm_litemedsam_scorer.safetensors (no notebook cell writes into
the package). Every CT/MRI ground-truth region of the train images gives one sample (mask-pooled LiteMedSAM features +
box position); its texts are the label name, three templates and the train questions that name only that label.
`--cv N` also measures the scorer by N-fold cross-validation over the train + validate images (the projection never
sees the held-out images): for each held-out question naming a label, is a named region ranked first among the image's
ground-truth regions? A summary goes to nbs/cache/scorer_training.json. One torch thread.

    python tools/train_scorer.py                 # retrain and overwrite the shipped weights
    python tools/train_scorer.py --out /tmp/w.safetensors --cv 5
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tools')]
from safetensors.torch import save_file
from a3tune.weak_labels import LiteMedSAM, Segments, load_image, region_features, train_projection, minilm_embed, default_scorer_weights
from _slake import SLAKE, gt_regions, named_labels, image_folders

META = {'trained_on': 'SLAKE-mini train split, CT/MRI ground-truth regions', 'text_model': 'all-MiniLM-L6-v2',
        'image_features': 'LiteMedSAM TinyViT neck, mask-mean-pooled, + 5-d position'}
TEMPLATES = lambda l: [l, f'the {l.lower()}', f'where is the {l.lower()}?', f'a scan showing the {l.lower()}']


def image_samples(root, folders):
    "Per image: region features, labels, and the questions of both splits with the labels each names."
    qa = [d for s in ('train', 'validate') for d in json.loads((Path(root) / f'{s}.json').read_text())]
    lm, out = LiteMedSAM(), {}
    for f in folders:
        regs = gt_regions(Path(root) / 'imgs' / f); ex = lm.encode(load_image(Path(root) / 'imgs' / f / 'source.jpg'))
        labs = [l for l, _ in regs]
        qs = [(d['question'], sorted(named_labels(d['question'], set(labs)))) for d in qa if Path(d['img_name']).parent.name == f]
        out[f] = {'feats': region_features(ex['litemedsam_embed'], Segments.from_masks([m for _, m in regs]), ex['litemedsam_scale']),
                  'labels': labs, 'questions': [(q, n) for q, n in qs if n]}
    return out


def fit(samples, folders, steps=400, seed=0):
    "The projection trained on `folders`' regions, with the questions that name exactly one label as extra texts."
    feats = torch.cat([samples[f]['feats'] for f in folders]); labs = [l for f in folders for l in samples[f]['labels']]; qs = {}
    for f in folders:
        for q, n in samples[f]['questions']:
            if len(n) == 1: qs.setdefault(n[0], []).append(q)
    texts = {l: TEMPLATES(l) + qs.get(l, []) for l in set(labs)}
    return train_projection(feats, labs, texts, steps=steps, seed=seed), feats, labs, texts


@torch.no_grad()
def gt_top1(proj, samples, folders):
    "Held-out questions naming a label: 1 if a named region is ranked first among the image's ground-truth regions."
    hits, rnd = [], []
    for f in folders:
        s = samples[f]; emb = F.normalize(proj(s['feats']), dim=-1)
        for q, named in s['questions']:
            good = np.array([l in named for l in s['labels']])
            hits.append(float(good[int((minilm_embed([q])[0] @ emb.T).argmax())])); rnd.append(good.mean())
    return hits, rnd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default=str(SLAKE)); p.add_argument('--out', default=str(default_scorer_weights()))
    p.add_argument('--summary', default=str(REPO / 'nbs' / 'cache' / 'scorer_training.json'))
    p.add_argument('--steps', type=int, default=400); p.add_argument('--cv', type=int, default=0, help='folds over train + validate images (0: none)')
    a = p.parse_args(argv); torch.set_num_threads(1)
    folders = {f: sm for f, sm in image_folders(a.data).items() if sm[1] != 'X-Ray'}
    t0 = time.time(); samples = image_samples(a.data, folders); t_feat = time.time() - t0
    train = sorted(f for f, (s, _) in folders.items() if s == 'train')   # string order, as the weights were first fitted
    t0 = time.time(); proj, feats, labs, texts = fit(samples, train, a.steps); t_train = time.time() - t0
    save_file({'proj.weight': proj.weight.detach().contiguous(), 'proj.bias': proj.bias.detach().contiguous()}, a.out, metadata=META)
    val = [f for f, (s, _) in folders.items() if s == 'validate']; vh, vr = gt_top1(proj, samples, val)
    summ = {'regions': len(labs), 'labels': len(texts), 'texts': sum(map(len, texts.values())), 'params': sum(p.numel() for p in proj.parameters()),
            'kB': round(Path(a.out).stat().st_size / 1024), 'feature_s': round(t_feat), 'train_s': round(t_train, 1),
            'validate_gt_top1': [int(sum(vh)), len(vh)], 'validate_gt_random1': round(float(sum(vr)), 2)}
    if a.cv:
        names = list(folders); rng = np.random.default_rng(0); order = rng.permutation(len(names)); cv = {'folds': a.cv, 'hits': 0, 'random': 0., 'n': 0, 'per_modality': {}}
        for k in range(a.cv):
            held = [names[i] for i in order[k::a.cv]]; rest = [f for f in names if f not in held]
            pk = fit(samples, rest, a.steps)[0]
            for f in held:
                h, r = gt_top1(pk, samples, [f]); m = cv['per_modality'].setdefault(folders[f][1], [0, 0])
                cv['hits'] += sum(h); cv['random'] += float(sum(r)); cv['n'] += len(h); m[0] += int(sum(h)); m[1] += len(h)
        summ['cv_gt_top1'] = cv
    Path(a.summary).parent.mkdir(parents=True, exist_ok=True); Path(a.summary).write_text(json.dumps(summ, indent=1) + '\n')
    print(json.dumps(summ)); return 0


if __name__ == '__main__': sys.exit(main())
