"SLAKE-mini helpers shared by the weak-label tools, on a3tune.formats' one ground-truth rule."
import json
from pathlib import Path
from a3tune.formats import slake_mini, slake_regions, named_labels as _named

SLAKE = slake_mini()


def gt_regions(folder, xray=False):
    "[(label, [H, W] bool mask)] of a CT/MRI SLAKE folder; [(label, XYWH box)] for X-ray (its mask.png is not a mask)."
    regs = slake_regions(folder, 'X-Ray' if xray else 'CT')
    return [(l, [float(v) for v in b]) for l, b, _ in regs] if xray else [(l, m) for l, _, m in regs]


def named_labels(question, labels):
    "Labels a question names (a3tune.formats' rule: full name, longest match, plurals; else last word)."
    return set(_named(question, list(labels)))


def image_folders(root=SLAKE, splits=('train', 'validate')):
    "{folder name: (split, modality)} of the SLAKE-mini images, in image-number order."
    out = {}
    for s in splits:
        for d in json.loads((Path(root) / f'{s}.json').read_text()): out[Path(d['img_name']).parent.name] = (s, d['modality'])
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][5:])))
