#!/usr/bin/env python
"""Build candidate phantom bases (one process per recipe, all at once) and measure which question types LoRA can learn on each.

    python tools/base_sweep.py --device cuda --out /tmp/sweep             # every recipe at once on one GPU
    python tools/base_sweep.py --device cpu --smoke --out /tmp/sweep      # a few steps each, to test the plumbing

Every recipe is pre-trained by `phantom.pretrain_phantom_base` (batch 32, 8,000 images, seed 0, the shipped base's
width: 0.46 M parameters, 1.9 MB) and saved by `save_phantom_base`; then `phantom.lora_sanity` (plain LoRA, 400 steps)
runs on it for `--seeds` on the same device. The JSON gives, per recipe, the held-out pre-training accuracy and, per
downstream type, LoRA, LoRA shown the wrong image, and their margin (`sanity_summary`). Why these recipes:

- `shipped`: the base in `a3tune/assets/phantom_base`, not retrained: the control every change is measured against.
- `pos05_8k`: the shipped recipe (position-embedding offset std 0.5, no patch bias) run longer: what steps alone buy.
- `bias02_5k`, `bias02_8k`: the vision fix at its source, `tiny_llava(patch_bias_std=0.2)` with CLIP's own tiny
  position embeddings (std 0.02), the fix `00_preliminaries` measures on two flat organ patches; at the shipped length
  and longer.
- `bias05_8k`: a larger patch bias (0.5), in case 0.2 is still too small to keep the brightness through the LayerNorm.
- `both_8k`: patch bias 0.2 and the 0.5 position offset together.
- `bias02_names_8k`, `both_names_8k`: the same with `kind='pretrain_names'`, which adds one question per image naming
  an organ and asking its side ('which side has the liver'): the shipped mix names organs only from a slot
  ('what is in the top') or to describe them, never to find one, which is what `lesion_in` and `where_organ` need.
- `lesions_5k`: the shipped recipe with `kind='pretrain_lesions'`, which adds, per image, a yes/no lesion question
  about one slot and one organ in other words than the fine-tuning set ('has the top a lesion'): the shipped mix asks
  which side has *the* lesion but never whether a *named* slot has one, which is what `lesion_at` / `lesion_in` need.
- `lesions_same_5k`: the same questions in the fine-tuning set's words ('is there a lesion in the top'): a base that has
  seen the downstream question form, as a general medical VLM has seen "is there X in Y" before fine-tuning.
Width is not swept: a wider language model (hidden 192) would still ship (about 4 MB), but it doubles the step time on
the CPU, where every grid and `a3tune demo` run.

On a shared GPU each step costs launches, not arithmetic (a 0.46 M model), so `--max-train-s` cuts every recipe's
steps, after measuring its own rate over steps 20-100, to what fits (the cut steps are in the JSON).

The pick (`pick`): the most types with a mean margin ≥ `MARGIN` (0.10); ties by the largest smallest margin over the
types, then by held-out pre-training accuracy. Types whose margin stays below `MARGIN` under the pick are 'dropped'.
"""
import argparse, json, os, subprocess, sys, time, shutil
from pathlib import Path
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1'); os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('USE_HUB_KERNELS', 'NO')
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {   # name -> pretrain_phantom_base arguments (None: the shipped base, not retrained)
    'shipped': None,
    'pos05_8k': dict(steps=8000, vision_pos_std=.5, patch_bias_std=0.),
    'bias02_5k': dict(steps=5000, vision_pos_std=.02, patch_bias_std=.2),
    'bias02_8k': dict(steps=8000, vision_pos_std=.02, patch_bias_std=.2),
    'bias05_8k': dict(steps=8000, vision_pos_std=.02, patch_bias_std=.5),
    'both_8k': dict(steps=8000, vision_pos_std=.5, patch_bias_std=.2),
    'bias02_names_8k': dict(steps=8000, vision_pos_std=.02, patch_bias_std=.2, kind='pretrain_names'),
    'both_names_8k': dict(steps=8000, vision_pos_std=.5, patch_bias_std=.2, kind='pretrain_names'),
    'lesions_5k': dict(steps=5000, kind='pretrain_lesions'),
    'lesions_same_5k': dict(steps=5000, kind='pretrain_lesions_same'),
}
SMOKE = dict(steps=30, n_images=60, n_eval=10, warmup=10)                  # pretrain_phantom_base overrides with --smoke
SMOKE_SANITY = dict(n_train=6, n_test=6, steps=4)                           # lora_sanity overrides with --smoke
SMOKE_RECIPES = ('shipped', 'bias02_names_8k')

def build_one(name:str, out, device:str='cpu', seeds=(0, 1), max_train_s:float=None, smoke:bool=False)->dict:
    "Pre-train recipe `name` into `out` (the shipped base is copied) and run `lora_sanity` on it per seed; writes and returns `out/result.json`."
    from a3tune.phantom import pretrain_phantom_base, save_phantom_base, lora_sanity, sanity_summary, PHANTOM_BASE
    out, t0, rec = Path(out), time.time(), RECIPES[name]
    res = out/'result.json'
    if res.exists(): return json.loads(res.read_text())
    if rec is None or (out/'model.safetensors').exists() and (out/'build_report.json').exists():   # the shipped base, or one built before: reused
        out.mkdir(parents=True, exist_ok=True)
        if rec is None:
            for f in PHANTOM_BASE.iterdir(): shutil.copy(f, out/f.name)
        report = json.loads((out/'build_report.json').read_text())
    else:
        kw = dict(rec, **(SMOKE if smoke else {}), device=device, log_every=0 if smoke else 1000)
        if smoke: kw['steps'] = min(kw['steps'], SMOKE['steps'])
        model, proc, report = pretrain_phantom_base(**kw, max_train_s=max_train_s if not smoke else None)
        report['recipe'] = name; save_phantom_base(model, proc, report, out)
    t1 = time.time()
    runs = [lora_sanity(str(out), seed=s, device=device, **(SMOKE_SANITY if smoke else {})) for s in seeds]   # the wrong-image control: `wrong_images`
    r = dict(recipe=name, args=rec, device=device, build_s=round(t1 - t0, 1), sanity_s=round(time.time() - t1, 1),
             report=report, sanity=sanity_summary(runs))
    res.write_text(json.dumps(r, indent=1))
    return r

def rank_key(r:dict, margin:float=None)->tuple:
    "The pick's order: (types with margin ≥ `margin`, smallest margin, held-out pre-training accuracy); larger is better."
    from a3tune.phantom import MARGIN
    m = {q: v for q, v in r['sanity']['margin'].items() if q != 'all'}
    return (sum(v >= (MARGIN if margin is None else margin) for v in m.values()), round(min(m.values()), 4),
            r['report']['heldout_accuracy'].get('all', 0.))

def pick(results:dict)->dict:
    "The recipe to ship (see the module docstring) and the types that stay below the margin under it."
    from a3tune.phantom import MARGIN
    ok = {n: r for n, r in results.items() if r and 'sanity' in r}
    if not ok: raise RuntimeError('base_sweep: no recipe finished')
    best = max(ok, key=lambda n: rank_key(ok[n]))
    return dict(recipe=best, rule=f"most types with mean margin (LoRA − LoRA wrong image) ≥ {MARGIN}; then the largest smallest margin; "
                "then held-out pre-training accuracy", key=list(rank_key(ok[best])), dropped=ok[best]['sanity']['dropped'],
                ranking=sorted(([n, list(rank_key(r))] for n, r in ok.items()), key=lambda x: x[1], reverse=True))

def table(results:dict)->str:
    "A markdown table: per recipe, held-out pre-training accuracy and the per-type margin (mean over seeds)."
    ok = {n: r for n, r in results.items() if r and 'sanity' in r}
    if not ok: return '(no recipe finished)'
    qs = [q for q in next(iter(ok.values()))['sanity']['margin'] if q != 'all']
    lines = ['| recipe | steps | held-out | ' + ' | '.join(f'{q} (lora/wrong/margin)' for q in qs) + ' |', '|---' * (3 + len(qs)) + '|']
    for n, r in ok.items():
        s = r['sanity']
        lines.append(f"| {n} | {r['report']['steps']} | {r['report']['heldout_accuracy']['all']:.3f} | " +
                     ' | '.join(f"{s['lora'][q]:.2f}/{s['lora_wrong_image'][q]:.2f}/{s['margin'][q]:+.2f}" for q in qs) + ' |')
    return '\n'.join(lines)

def launch(names, out, device, seeds, max_train_s, smoke)->dict:
    "Start one process per recipe (the GPU shared); returns {name: Popen}."
    out = Path(out); out.mkdir(parents=True, exist_ok=True); procs = {}
    for n in names:
        (out/n).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), '--one', n, '--device', device, '--out', str(out),
               '--seeds', *map(str, seeds)] + (['--max-train-s', str(max_train_s)] if max_train_s else []) + (['--smoke'] if smoke else [])
        procs[n] = subprocess.Popen(cmd, stdout=open(out/n/'log.txt', 'w'), stderr=subprocess.STDOUT)
    return procs

def collect(names, out)->dict:
    "Every finished recipe's result (None where it did not finish)."
    return {n: json.loads((Path(out)/n/'result.json').read_text()) if (Path(out)/n/'result.json').exists() else None for n in names}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', help="'cuda' or 'cpu'")
    p.add_argument('--out', default='/tmp/a3tune-sweep', help='folder: one sub-folder per recipe (base, log, result.json) and sweep.json')
    p.add_argument('--recipes', nargs='+', default=None, help=f'recipes to build (default: all; {", ".join(RECIPES)})')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1], help='lora_sanity seeds per recipe')
    p.add_argument('--max-train-s', type=float, default=None, help='cut each recipe to the steps that fit in this many seconds')
    p.add_argument('--smoke', action='store_true', help='a few steps per recipe, two recipes, one seed')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)   # internal: build one recipe in this process
    a = p.parse_args(argv)
    if a.one: build_one(a.one, Path(a.out)/a.one, a.device, a.seeds, a.max_train_s, a.smoke); return 0
    names = a.recipes or (list(SMOKE_RECIPES) if a.smoke else list(RECIPES))
    seeds = a.seeds[:1] if a.smoke else a.seeds
    procs = launch(names, a.out, a.device, seeds, a.max_train_s, a.smoke)
    rcs = {n: pr.wait() for n, pr in procs.items()}
    res = collect(names, a.out); chosen = pick(res)
    Path(a.out, 'sweep.json').write_text(json.dumps(dict(pick=chosen, return_codes=rcs, recipes=res), indent=1))
    print(table(res)); print(json.dumps(chosen))
    return 0 if all(rc == 0 for rc in rcs.values()) else 1

if __name__ == '__main__': sys.exit(main())
