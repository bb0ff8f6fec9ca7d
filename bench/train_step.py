"""Train-step cost of full A³Tune against plain LoRA and a reference-style step, measured side by side in one run.

Model: `tiny_llava` with hidden 256, 4 layers, 8 heads, 256 visual + 64 text tokens, batch 2 (defaults below).
Every process uses one torch thread (set explicitly). A step is forward + backward + AdamW step + zero_grad.

Time: each configuration runs `--rounds` times in fresh processes, interleaved with the others; reported are the best
round's median over `--reps` steps after one warm-up step, and the minimum over all steps. Then all configurations are
built in one process and stepped in turn, so that load from other processes on a shared machine hits them alike.
Memory: one more fresh process per configuration, with MALLOC_MMAP_THRESHOLD_ fixed so that freed tensors return to the
OS (this slows allocation, so time runs do not use it): the peak resident set size during one step (after a warm-up step,
so AdamW's state exists) above the RSS just before it, i.e. the step's transient memory (activations, gradients,
attention rows) above the built model and optimizer.

Configurations:
  lora       PEFT LoRA r=64 on all seven linear modules of the language model (q,k,v,o,gate,up,down), SDPA, L_LM only.
  a3moe      `add_a3moe` alone (paper defaults: LoRA 64 on v,o,gate,up,down; Q-MoE 4x16, K-MoE 8x16 top-2, MLP routers,
             fused experts), SDPA, L_LM only: the cost of the experts.
  a3tune     a3moe + the attention-row recorder on SDPA + `recorded_align` (Eq. 8 for all heads without gradient, the
             top-R heads' rows with gradient, Eq. 9-10) + balance loss: L_LM + 0.1 L_align + 0.01 L_bal.
  a3_loop    as a3tune but experts computed one at a time (`impl='loop'`), to isolate the fused-expert gain.
  reference  the reference code's way: eager attention with output_attentions on all layers, per-expert loop,
             linear routers, single unweighted K expert, per-query-row loss on the rows sliced from the full maps.
Where the time goes: lora, a3moe and a3tune in one process, stepped in turn, timed per phase (forward; for a3tune also
Eq. 8 for all heads, the head selection, the selected heads' rows with L_align, the objective; backward; AdamW step).
Plus a micro-benchmark of the expert computation alone (forward + backward of `MoELoRALinear.experts`), fused vs loop.

Real size, beside it: the per-decoder-layer step memory of A³Tune and LoRA at the LLaVA-Med v1.5 layer size, read from
bench/scale.py's fits (nbs/cache/scale.json), and their time measured here: bench/scale.py's lora and a3tune models with
1 and 2 real-size decoder layers (576 image + 64 text tokens, batch 1, bf16 autocast; a forward + backward, no optimizer
step) built in one process and stepped in turn (`--real-reps` each); per layer = the 2-layer minus the 1-layer median.

    python bench/train_step.py
"""
import argparse, json, os, subprocess, sys, time, statistics

from _mem import rss as _rss, reset_hwm as _reset_hwm

def _inputs(tok, batch, n_vis, text, img):
    import torch
    g = torch.Generator().manual_seed(0)
    words = torch.randint(len(tok) - 50, len(tok) - 1, (batch, text - 1), generator=g)
    ids = torch.cat([torch.full((batch, 1), tok.bos_token_id), torch.full((batch, n_vis), tok.image_token_id), words], 1)
    ids[1, -5:] = tok.pad_token_id                                                   # some padding in sample 1
    am = (ids != tok.pad_token_id).long()
    pos = torch.arange(ids.shape[1])[None]
    vis = ids == tok.image_token_id
    prompt = ((pos > n_vis) & (pos < n_vis + 1 + text // 2)).expand(batch, -1)       # the question: first half of the text
    query = (pos > n_vis) & am.bool()                                                # every text token after the image
    labels = ids.masked_fill(~((pos >= n_vis + 1 + text // 2) & am.bool()), -100)    # the answer: second half
    grid = int(round(n_vis ** 0.5)); K = 4
    seg = torch.zeros(batch, K, grid, grid)
    for b in range(batch):
        for k in range(K):
            y, x = torch.randint(0, grid - 4, (2,), generator=g).tolist(); seg[b, k, y:y+4, x:x+6] = 1
    valid = torch.ones(batch, K, dtype=torch.bool); valid[1, 2:] = False
    inputs = dict(input_ids=ids, attention_mask=am, pixel_values=torch.randn(batch, 3, img, img, generator=g), labels=labels)
    return inputs, vis, prompt, query, seg.flatten(2), valid

def build(method, hidden, layers, heads, text, n_vis, batch, R, laps=None):
    "The model of `method` and a function running one train step on the fixed batch (`laps`: a dict collecting phase times)."
    import torch
    from a3tune.preliminaries import tiny_llava, set_threads, enable_attention_rows, query_rows, AttentionRecorder
    from a3tune.a3moe import add_a3moe, A3MoEConfig, A3Context
    from a3tune.loss import attention_align, recorded_align, objective
    from a3tune.head_selection import recorded_ratio, select_heads
    set_threads(1)
    clock = [0.]
    def lap(name=None):   # time since the previous lap, filed under `name` (no name: start the clock; nothing when laps is None)
        t = time.perf_counter()
        if laps is not None and name: laps.setdefault(name, []).append(t - clock[0])
        clock[0] = t
    grid, patch = int(round(n_vis ** 0.5)), 4
    model, proc = tiny_llava(image_size=grid*patch, patch_size=patch, hidden_size=hidden, num_layers=layers,
                             num_heads=heads, vision_hidden=32)
    inputs, vis, prompt, query, seg, valid = _inputs(proc.tokenizer, batch, n_vis, text, grid*patch)
    if method == 'lora':
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model.requires_grad_(False), LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, bias='none',
                               target_modules=r'.*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)'))
    elif method in ('a3tune', 'a3_loop', 'a3moe'):
        model = add_a3moe(model, A3MoEConfig(impl='loop' if method == 'a3_loop' else 'fused'))
        if method != 'a3moe': enable_attention_rows(model)
    else:
        model = add_a3moe(model, A3MoEConfig.reference(impl='loop'))
        model.get_base_model().set_attn_implementation('eager')
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rows, row_mask = query_rows(query)
    def get_loss():   # like the Trainer's compute_loss: only the loss leaves it (the recorder and outputs are freed)
        if method == 'lora': return model(**inputs).loss
        if method == 'a3moe': return model(**inputs, a3ctx=A3Context(vis, prompt)).loss
        if method in ('a3tune', 'a3_loop'):
            ctx, rec = A3Context(vis, prompt, balance=True), AttentionRecorder(rows, row_mask)
            out = model(**inputs, a3ctx=ctx, a3_rows=rec); lap('forward')
            ratio = recorded_ratio(rec, vis); lap('Eq. 8 ratio, all heads')
            hm = select_heads(ratio, R); lap('head selection')
            al = recorded_align(rec, vis, seg, valid, R=R, ratio=ratio, head_mask=hm); lap("selected heads' rows + L_align")
            return objective(out.loss, al.loss, valid, 0.1).loss + 0.01 * ctx.balance_loss()
        ctx = A3Context(vis, prompt, balance=True)
        out = model(**inputs, a3ctx=ctx, output_attentions=True)
        att = torch.stack(out.attentions, 1)                                              # [B, L, H, T, T]
        probs = att.gather(3, rows[:, None, None, :, None].expand(*att.shape[:3], rows.shape[1], att.shape[-1]))
        al = attention_align(probs, vis, row_mask, seg, valid, R=R, form='rows')
        return objective(out.loss, al.loss, valid, 0.1).loss + 0.01 * ctx.balance_loss()
    def step():
        lap(); loss = get_loss(); lap('objective' if method in ('a3tune', 'a3_loop') else 'forward')   # those lap their forward inside
        loss.backward(); lap('backward')
        opt.step(); opt.zero_grad(set_to_none=True); lap('AdamW step')
    return step, sum(p.numel() for p in params)

def one(method, reps, what, **cfg):
    "Memory (`what='mem'`: peak RSS of one step after a warm-up) or time (`what='time'`: median and min of `reps` steps)."
    step, n_params = build(method, **cfg)
    step()                                                                                # warm-up, AdamW state
    if what == 'mem':
        base, _ = _rss(); _reset_hwm()
        step()
        return dict(method=method, mem=_rss()[1] - base, trainable=n_params)
    times = []
    for _ in range(reps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    return dict(method=method, ms=1000 * statistics.median(times), min_ms=1000 * min(times))

def in_turn(steps:dict, reps:int)->dict:
    "Run every step function of `steps` once (warm-up), then all of them in turn `reps` times; each key's median ms."
    for f in steps.values(): f()
    ts = {k: [] for k in steps}
    for _ in range(reps):
        for k, f in steps.items(): t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in ts.items()}

def phases(methods, reps, **cfg):
    "Time only, per phase of a step (forward, the alignment pieces, backward, AdamW), all `methods` in one process, in turn."
    laps = {m: {} for m in methods}
    in_turn({m: build(m, laps=laps[m], **cfg)[0] for m in methods}, reps)
    return {m: {k: 1000 * statistics.median(v[1:]) for k, v in d.items()} for m, d in laps.items()}   # v[0]: the warm-up

def interleaved(methods, reps, **cfg):
    "Time only: all `methods` built in one process and stepped in turn, so load from other processes hits them alike."
    return in_turn({m: build(m, **cfg)[0] for m in methods}, reps)

def experts_bench(reps, hidden, T, batch):
    import torch, torch.nn as nn
    from a3tune.a3moe import MoELoRALinear
    torch.set_num_threads(1)
    res = {}
    for name, E, per_token in (('K-MoE 8x16', 8, True), ('Q-MoE 4x16', 4, False)):
        m = MoELoRALinear(nn.Linear(hidden, hidden), E, rank=16); nn.init.normal_(m.lora_B)
        x = torch.randn(batch, T, hidden, requires_grad=True)
        gate = torch.rand(batch, T if per_token else 1, E, requires_grad=True)
        for impl in ('fused', 'loop'):
            m.impl = impl
            def f(): m.experts(x, gate).sum().backward()
            f(); ts = []
            for _ in range(reps): t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
            res[name, impl] = 1000 * statistics.median(ts)
    return {f'{k[0]}|{k[1]}': v for k, v in res.items()}

def real_interleaved(reps, layers=(1, 2), n_img=576, batch=1):
    """Time only, at the real LLaVA-Med v1.5 layer size (bench/scale.py's models, bf16 autocast): LoRA and A³Tune with 1 and 2
    decoder layers built in one process and stepped in turn; the per-layer time is the 2-layer minus the 1-layer median."""
    from scale import build, stepper, REAL
    from a3tune.preliminaries import set_threads
    set_threads(1)
    steps = {}
    for L in layers:
        for s in ('lora', 'a3tune'):
            model, _ = build(s, REAL, L, n_img, 'cpu', 'bfloat16')
            steps[s, L] = stepper(s, model, REAL, L, n_img, batch, 'cpu', 'bfloat16')
    return {f'{s}|{L}': ms for (s, L), ms in in_turn(steps, reps).items()}

def real_size_overhead(path=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'nbs', 'cache', 'scale.json')):
    "Print A³Tune's per-decoder-layer step cost over LoRA's at the real LLaVA-Med v1.5 layer size, from bench/scale.py's stored fits."
    if not os.path.exists(path): print(f"\nreal size: {path} not found; run bench/scale.py --json {path}"); return
    sc = json.load(open(path)); m = sc['meta']
    fits = {(r['style'], r['images'], int(b)): d for r in sc['projection'] for b, d in r['batches'].items() if d['per_layer_mib'] is not None}
    print(f"\nreal size, step memory per decoder layer (bench/scale.py: hidden {m['dims']['hidden']}, {m['dtype']}, {m['device_name']}; slope of the "
          f"1/2/4-layer fit; nbs/cache/scale.json):")
    print('| image tokens | batch | LoRA MiB / layer | A³Tune MiB / layer | memory / LoRA |')   # scale.py's CPU times are single steps: not here
    print('|---|---|---|---|---|')
    for (s_, n, b), d in sorted(fits.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if s_ != 'lora' or ('a3tune', n, b) not in fits: continue
        e = fits['a3tune', n, b]
        print(f"| {n} | {b} | {d['per_layer_mib']:.0f} | {e['per_layer_mib']:.0f} | {e['per_layer_mib']/d['per_layer_mib']:.2f} |")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--hidden', type=int, default=256); ap.add_argument('--layers', type=int, default=4)
    ap.add_argument('--heads', type=int, default=8); ap.add_argument('--text', type=int, default=64)
    ap.add_argument('--n_vis', type=int, default=256); ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--R', type=int, default=16)
    ap.add_argument('--methods', nargs='+', default=['lora', 'a3moe', 'a3tune', 'a3_loop', 'reference'])
    ap.add_argument('--rounds', type=int, default=3, help='fresh timing processes per configuration, interleaved')
    ap.add_argument('--one', metavar='METHOD', help=argparse.SUPPRESS)
    ap.add_argument('--real-reps', type=int, default=5, help='steps per model in the real-size interleaved timing (0: skip it)')
    ap.add_argument('--experts', type=int, nargs='*', default=[256, 1024], help='hidden sizes for the expert micro-benchmark')
    a = ap.parse_args()
    cfg = dict(reps=a.reps, hidden=a.hidden, layers=a.layers, heads=a.heads, text=a.text, n_vis=a.n_vis, batch=a.batch, R=a.R)
    if a.one == 'interleaved:time':
        c = {k: v for k, v in cfg.items() if k != 'reps'}
        print(json.dumps(interleaved(a.methods, 4 * a.reps, **c))); return
    if a.one == 'experts:time': print(json.dumps({h: experts_bench(4 * a.reps, h, a.n_vis + a.text, a.batch) for h in a.experts})); return
    if a.one == 'phases:time': print(json.dumps(phases([m for m in ('lora', 'a3moe', 'a3tune') if m in a.methods], 4 * a.reps, **{k: v for k, v in cfg.items() if k != 'reps'}))); return
    if a.one == 'real:time': print(json.dumps(real_interleaved(a.real_reps))); return
    if a.one: m, what = a.one.split(':'); print(json.dumps(one(m, what=what, **cfg))); return
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', A3TUNE_THREADS='1', HF_HUB_OFFLINE='1')
    # memory runs only: a fixed mmap threshold so that freed tensors go back to the OS and RSS follows the live tensors
    # (it slows allocation-heavy code, so time runs use the default allocator)
    mem_env = dict(env, MALLOC_MMAP_THRESHOLD_='131072', MALLOC_TRIM_THRESHOLD_='131072')
    def run(m, e=env):
        cmd = [sys.executable, __file__, '--one', m, '--real-reps', str(a.real_reps), '--experts', *map(str, a.experts), '--methods', *a.methods] + sum([[f'--{k}', str(v)] for k, v in cfg.items()], [])
        out = subprocess.run(cmd, env=e, capture_output=True, text=True)
        if out.returncode: sys.exit(f'{m} failed:\n{out.stderr[-3000:]}')
        return json.loads(out.stdout.strip().splitlines()[-1])
    mem = {m: run(f'{m}:mem', mem_env) for m in a.methods}
    rounds = [{m: run(f'{m}:time') for m in a.methods} for _ in range(a.rounds)]   # interleaved: m1 m2 ... m1 m2 ...
    res = {m: dict(mem[m], ms=min(r[m]['ms'] for r in rounds), min_ms=min(r[m]['min_ms'] for r in rounds)) for m in a.methods}
    print(f"hidden {a.hidden}, {a.layers} layers, {a.heads} heads, {a.n_vis} visual + {a.text} text tokens, batch {a.batch}, R={a.R}, "
          f"1 thread; {a.rounds} rounds of fresh processes x {a.reps} train steps: best round's median and overall min; "
          f"memory = peak RSS of one step above the built model + optimizer (MiB, separate process)")
    print('| configuration | median ms / step | min ms / step | step MiB | trainable params | time / LoRA (median, min) | memory / LoRA |')
    print('|---|---|---|---|---|---|---|')
    l = res.get('lora')
    for m, r in res.items():
        tr = f"{r['ms']/l['ms']:.2f}, {r['min_ms']/l['min_ms']:.2f} | {r['mem']/l['mem']:.2f}" if l else '- | -'
        print(f"| {m} | {r['ms']:.0f} | {r['min_ms']:.0f} | {r['mem']:.0f} | {r['trainable']/1e6:.2f} M | {tr} |")
    if 'a3tune' in res and 'reference' in res:
        print(f"\nreference / a3tune: time {res['reference']['ms']/res['a3tune']['ms']:.2f}, memory {res['reference']['mem']/res['a3tune']['mem']:.2f}")
    il = run('interleaved:time')
    print(f"\ntime, all configurations built in one process and stepped in turn ({4 * a.reps} steps each):")
    print('| configuration | median ms / step | time / LoRA |'); print('|---|---|---|')
    for m, v in il.items(): print(f"| {m} | {v:.0f} | {v / il['lora']:.2f} |" if 'lora' in il else f"| {m} | {v:.0f} | - |")
    ph = run('phases:time')
    names = list(dict.fromkeys(k for d in ph.values() for k in d))
    print(f"\nwhere the time goes: the same configurations built in one process and stepped in turn ({4 * a.reps} steps each), median ms per phase:")
    print('| phase | ' + ' | '.join(ph) + ' |'); print('|---|' + '---|' * len(ph))
    for k in names: print(f"| {k} | " + ' | '.join(f"{d[k]:.1f}" if k in d else '' for d in ph.values()) + ' |')
    print('| sum | ' + ' | '.join(f"{sum(d.values()):.1f}" for d in ph.values()) + ' |')
    real_size_overhead()
    if a.real_reps:
        rt = run('real:time')
        per = {s_: rt[f'{s_}|2'] - rt[f'{s_}|1'] for s_ in ('lora', 'a3tune')}
        print(f"\nreal size, time (one process, 1 thread, bf16 autocast, 576 image + 64 text tokens, batch 1; LoRA and A³Tune with 1 and 2 "
              f"decoder layers stepped in turn, median of {a.real_reps}; per layer = 2 layers minus 1 layer):")
        print('| | LoRA ms | A³Tune ms | A³Tune / LoRA |'); print('|---|---|---|---|')
        for L in (1, 2): print(f"| {L} layer(s) | {rt[f'lora|{L}']:.0f} | {rt[f'a3tune|{L}']:.0f} | {rt[f'a3tune|{L}']/rt[f'lora|{L}']:.2f} |")
        print(f"| per layer | {per['lora']:.0f} | {per['a3tune']:.0f} | {per['a3tune']/per['lora']:.2f} |")
    if a.experts:
        ex = run('experts:time')
        print(f"\nexpert computation alone (forward + backward, batch {a.batch}, {a.n_vis + a.text} tokens, median ms):")
        print('| hidden | experts | fused ms | loop ms | loop / fused |'); print('|---|---|---|---|---|')
        for h, d in ex.items():
            for name in ('K-MoE 8x16', 'Q-MoE 4x16'):
                f_, l_ = d[f'{name}|fused'], d[f'{name}|loop']
                print(f"| {h} | {name} | {f_:.2f} | {l_:.2f} | {l_/f_:.2f} |")

if __name__ == '__main__': main()
