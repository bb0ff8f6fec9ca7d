"""Weak-label cost on CPU: seconds per image for segmenting and scoring, and N questions over M images.

    python bench/weak_labels.py [--slake ../shared/data/slake-mini] [--images 2]

Prints one table per measurement; ratios are measured side by side in the same run (one torch thread).
The point of the second table: segmenting and embedding happen once per unique image, each question adds
only a text embedding and a dot product, so the time follows M (images), not N (questions)."""
import argparse, json, os, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from a3tune.weak_labels import *

def timed(f, *a, **kw):
    t = time.perf_counter(); r = f(*a, **kw); return r, time.perf_counter() - t

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--slake', default=str(Path(__file__).resolve().parents[2]/'shared/data/slake-mini'))
    ap.add_argument('--images', type=int, default=2, help='real images for the per-image table')
    a = ap.parse_args(); torch.set_num_threads(1)
    imgs = sorted(Path(a.slake, 'imgs').glob('xmlab*/source.jpg'))
    imgs = [p for p in imgs if load_image(p).shape[0] <= 512][:max(a.images, 4)]
    if not imgs: sys.exit(f"no SLAKE images under {a.slake}; pass --slake")
    fz, lm, sc = Felzenszwalb(), LiteMedSAM(), MiniLMScorer()
    ref = LiteMedSAM(decoder='sam', batch=16)                                 # the reference mask decoder (the default before decode_shared)
    lm(load_image(imgs[0])); minilm_embed(['warm-up'])                        # first calls are slower (warm-up)
    print(f"## seconds per image (CPU, 1 thread), {a.images} SLAKE images\n")
    print("| image | px | Felzenszwalb s | segments | LiteMedSAM s | LiteMedSAM, reference decoder s | same segments | proposals | score s (pool+proj) | 1 question s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in imgs[:a.images]:
        img = load_image(p)
        f, tf = timed(fz, img); s, tl = timed(lm, img); s0, tr = timed(ref, img); _, ts = timed(sc.embed_segments, img, s)
        _, tq = timed(minilm_embed, ['Where is the liver in this image?'])
        print(f"| {p.parent.name} | {img.shape[0]} | {tf:.2f} | {len(f)} | {tl:.1f} | {tr:.1f} | {s0.rles == s.rles} | {len(s)} | {ts:.2f} | {tq:.3f} |")
    print("\n## N questions over M images (Felzenszwalb segments + default scorer, build_labels end to end)\n")
    print("| M images | N questions | seconds | s / image | s / question |"); print("|---|---|---|---|---|")
    qs = ['Where is the liver?', 'Which organ is abnormal?', 'Is the spleen visible?', 'Where is the kidney?',
          'What modality is this?', 'Does the image show the lung?', 'Which side is the heart on?', 'Where is the bladder?']
    with tempfile.TemporaryDirectory() as d:
        for m, per in [(2, 1), (2, 8), (4, 1), (4, 8)]:
            smp = [{'id': f'{i}-{j}', 'image': str(imgs[i]), 'prompt': qs[j]} for i in range(m) for j in range(per)]
            _, t = timed(build_labels, smp, Path(d)/f'{m}-{per}.jsonl', fz, sc, 4, '/', progress=False)
            print(f"| {m} | {m * per} | {t:.1f} | {t / m:.2f} | {t / (m * per):.2f} |")

if __name__ == '__main__': main()
