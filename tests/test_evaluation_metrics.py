"Integration tests of a3tune.evaluation's VQA and attention metrics (CPU, seconds)."
import math, os
from pathlib import Path
import numpy as np, pytest, torch
from a3tune.evaluation import *

torch.set_num_threads(1)

from _data import slake_root as _slake

@pytest.mark.parametrize('pred,ref,legacy,strict', [
    ('Yes', 'yes', 1, 1), ('no', 'No.', 1, 1), ('The liver looks normal', 'No', 1, 0), ('nodule', 'no', 1, 0),
    ('yes and no', 'no', 1, 0), ('liver', 'Liver', 0, 1), ('No', 'Yes', 0, 0), ('none', 'no', 0, 0)])
def test_closed(pred, ref, legacy, strict):
    assert legacy_closed_hit(pred, ref) == legacy and strict_closed_hit(pred, ref) == strict

@pytest.mark.parametrize('pred,ref,legacy,strict', [
    ('left lung', 'Left Lung', 1, 1), ('lung lung lung', 'left lung', .75, .5), ('heart', 'liver', 0, 0),
    ('the x-ray', 'X-Ray', 1, 1), ('Brain Edema, Brain Tumor', 'brain tumor', 1, 1), ('brain', 'Brain Edema, Brain Tumor', 1/3, 1/4)])
def test_open(pred, ref, legacy, strict):
    assert math.isclose(legacy_open_recall(pred, ref), legacy) and math.isclose(strict_open_recall(pred, ref), strict)

def test_table_is_seeded_and_grouped():
    items = [dict(id=i, answer_type='CLOSED' if i % 2 else 'OPEN', prediction='yes', reference='yes' if i % 3 else 'no',
                  modality='CT' if i < 10 else 'MRI', content_type='Organ') for i in range(20)]
    a, b = vqa_table(items, seed=1), vqa_table(items, seed=1)
    assert a.rows == b.rows and [r['group'] for r in a.rows] == ['all', 'CT', 'MRI', 'Organ']
    assert a.row('overall', 'all')['n_closed'] == 10 and '| modality | CT |' in a._repr_markdown_()

def test_attention_metrics_known_masks():
    gt = torch.zeros(8, 8); gt[2:6, 2:6] = 1
    inside = gt * 1.0 + 1e-9                       # all mass inside: everything perfect
    assert attention_metrics(inside, gt) == pytest.approx(dict(coverage=1, intensity=1, mass_in_gt=1), abs=1e-6)
    outside = 1 - gt                               # all mass outside: everything zero
    assert attention_metrics(outside, gt) == pytest.approx(dict(coverage=0, intensity=0, mass_in_gt=0))
    half = torch.zeros(8, 8); half[2:4, 2:6] = 1; half[0, 0] = 1   # half the GT hot, 8 of 9 mass units inside
    assert attention_metrics(half, gt) == pytest.approx(dict(coverage=.5, intensity=.5, mass_in_gt=8/9))

def test_slake_gt_on_mini():
    root = _slake(full=True)
    items = load_slake(root, 'train') + load_slake(root, 'validate')
    assert len(items) == 706
    gts = [slake_gt(q, root) for q in items]
    assert sum(g.level == 'question' for g in gts) == 217 and all(g.mask.any() for g in gts)
    for q, g in zip(items, gts):   # X-Ray regions are filled boxes
        if q['modality'] == 'X-Ray' and g.level == 'question':
            boxes = [b for l, b in read_detection(root/'imgs'/Path(q['img_name']).parent/'detection.json') if l in g.labels]
            assert g.mask.sum() == np.logical_or.reduce([box_mask(b, g.mask.shape) for b in boxes]).sum()
