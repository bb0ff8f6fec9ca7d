"SLAKE-mini helpers shared by the weak-label tools: the data folder, ground-truth regions, which labels a question names."
import json, math, os, re
from pathlib import Path
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SLAKE = Path(os.environ.get('A3TUNE_SLAKE_MINI', REPO.parent / 'shared' / 'data' / 'slake-mini'))

try:    # the one SLAKE ground-truth rule of a3tune, once it exists
    from a3tune.formats import slake_regions as _formats_regions, named_labels as _formats_named
except ImportError: _formats_regions = _formats_named = None


def gt_regions(folder, xray=False):
    "[(label, [H, W] bool mask)] of a CT/MRI SLAKE folder; [(label, XYWH box)] for X-ray (its mask.png is not a mask)."
    folder = Path(folder); dets = [next(iter(d.items())) for d in json.loads((folder / 'detection.json').read_text())]
    if xray: return [(l, [float(v) for v in b]) for l, b in dets]
    if _formats_regions is not None: return _formats_regions(folder)
    grey = np.asarray(Image.open(folder / 'mask.png').convert('RGB'))[..., 0]; H, W = grey.shape; out = []
    for lab, (x, y, w, h) in dets:       # old rule: the dominant non-zero grey level inside the box
        box = np.zeros((H, W), bool); box[int(y):int(math.ceil(y + h)), int(x):int(math.ceil(x + w))] = True
        v = np.bincount(grey[box & (grey > 0)], minlength=256)
        out.append((lab, (grey == v.argmax()) & box if v.sum() else box))
    return out


def named_labels(question, labels):
    "Labels a question names: full name, else last word (case-insensitive, whole words)."
    if _formats_named is not None: return set(_formats_named(question, labels))
    q = question.lower(); full = [l for l in labels if re.search(rf'\b{re.escape(l.lower())}\b', q)]
    return set(full) or {l for l in labels if re.search(rf'\b{re.escape(l.lower().split()[-1])}s?\b', q)}


def image_folders(root=SLAKE, splits=('train', 'validate')):
    "{folder name: (split, modality)} of the SLAKE-mini images, in image-number order."
    out = {}
    for s in splits:
        for d in json.loads((Path(root) / f'{s}.json').read_text()): out[Path(d['img_name']).parent.name] = (s, d['modality'])
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][5:])))
