"""Does A³Tune fit at the size users run? Train-step memory and time at the real LLaVA-Med v1.5 layer size, projected to 7B.

Model: `LlavaForConditionalGeneration` built from a config (random weights, nothing downloaded) with the text shape of
LLaVA-Med v1.5 (Mistral-7B: hidden 4096, 32 heads, 8 KV heads, MLP 14336) cut to 1, 2 and 4 decoder layers, and the
CLIP-L/336 → LLM projector (1024 → 4096 → 4096). The vision tower keeps CLIP-L's width (1024) but only one layer (it is
frozen, runs once without gradient, and only its output reaches the language model); its image side sets the number of
image tokens (336 px / 14 px patches = 576, 448 px = 1024, 672 px = 2304). Every sequence is 1 BOS + the image tokens +
63 text tokens (the first half is the question, the second the answer), no padding.

Styles (one train step = forward + backward of the training loss; the AdamW step is not timed):
  lora       PEFT LoRA r=64 on q,k,v,o,gate,up,down of the language model, SDPA, L_LM only.
  a3tune     `add_a3moe` (paper defaults: Q-MoE 4x16, K-MoE 8x16 top-2, LoRA 64 on v,o,gate,up,down, fused experts), the
             'a3_sdpa' attention with an `AttentionRecorder` on every text token after the image, `recorded_align`
             (Eq. 8 for all heads without gradient, the top-R heads' rows with gradient, Eq. 9-10), balance loss:
             L_LM + 0.1 L_align + 0.01 L_bal; R = 128/1024 of the heads (4 per layer, as 128 of 32x32 in the full model).
  reference  the reference code's way: eager attention with `output_attentions` on every layer, per-expert loop,
             linear routers, max-index K gate, the rows sliced from the full maps (as in bench/train_step.py).
The model is built in `--dtype`; trainable tensors are float32 (as `a3tune_model` keeps them); with bfloat16 the step
runs under `torch.autocast` (as the Trainer's `bf16=True` does).

Memory: the peak of one step above the memory just before it (model built, gradients None), i.e. activations, saved
tensors, attention maps and the trainable parameters' gradients. CUDA: `torch.cuda.max_memory_allocated`; CPU: the peak
resident set size (bench/_mem.py) in a fresh process per point with MALLOC_MMAP_THRESHOLD_ fixed, so that freed tensors go
back to the OS. Time: median of `--reps` steps after one warm-up step.

Projection to the full model (32 layers), for each style, image-token count and batch b:
  step(L, b)  = fixed_b + per_layer_b · L            least squares over the 1/2/4-layer points (residual printed)
  step(32, b) = s0 + s1 · b                          from b = 1 and 2: s1 is the per-sample cost, s0 the rest
  static      = 2 B · frozen parameters of the full model (bf16; counted on the meta device: Mistral-7B + CLIP-L/336 +
                projector) + 12 B · trainable parameters at 32 layers (float32 tensor + AdamW's two moments; their
                gradients are in `step`)
  total(b)    = static + s0 + s1 · b;  the AdamW update (after the activations are freed) needs static + 12 B · trainable
                (gradients + foreach temporaries) and counts where larger.
  fits on C GiB at batch N: the largest N with total(N) + 1 GiB (CUDA context, allocator slack) ≤ C.
The 32-layer time is fixed + 32 · per-layer from the same fit (batch 1 and 2).

    python bench/scale.py --quick                                    # hidden 512 etc.: the whole pipeline on a CPU in minutes
    python bench/scale.py --device cuda --dtype bfloat16 --json scale.json      # the real size, the whole grid on one GPU (not yet run)
    python bench/scale.py --layers 1 --batches 1 --images 576        # the real size on a CPU: one point per style
    cp OUT/scale.json nbs/cache/ && python bench/scale.py --render nbs/06_experiments.ipynb && nbdev_clean   # update 06
"""
import argparse, gc, json, math, os, platform, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import rss as _rss, reset_hwm as _reset_hwm

GIB, MIB = 2**30, 2**20
STYLES = ('lora', 'a3tune', 'reference')
# LLaVA-Med v1.5: Mistral-7B text model, CLIP ViT-L/14-336 vision tower, 2-layer MLP projector
REAL = dict(hidden=4096, heads=32, kv_heads=8, mlp=14336, vocab=32000, full_layers=32, vision_hidden=1024, vision_mlp=4096,
            vision_heads=16, vision_layers=24, patch=14, lora_rank=64, expert_rank=16)
QUICK = dict(REAL, hidden=512, heads=8, kv_heads=2, mlp=1792, vocab=512, vision_hidden=128, vision_mlp=512, vision_heads=4,
             lora_rank=16, expert_rank=8)
TEXT = 64                     # text tokens per sample (BOS + 63)
CAPACITIES = (24, 40, 80)     # GiB
CONTEXT_GIB = 1.0             # CUDA context and allocator slack kept free
R_SHARE = 128 / 1024          # R as a share of all heads (the paper's 128 of LLaVA-Med's 32 x 32)

def llava_config(dims:dict, layers:int, n_img:int, vision_layers:int=1):
    "A LLaVA config with LLaVA-Med v1.5's text shape (`dims`), `layers` decoder layers and `n_img` image tokens."
    from transformers import LlavaConfig, MistralConfig, CLIPVisionConfig
    side = int(round(math.sqrt(n_img)))
    if side * side != n_img: raise ValueError(f"--images {n_img}: image tokens must be a square number (576, 1024, 2304)")
    d = dims
    tc = MistralConfig(vocab_size=d['vocab'], hidden_size=d['hidden'], intermediate_size=d['mlp'], num_hidden_layers=layers,
                       num_attention_heads=d['heads'], num_key_value_heads=d['kv_heads'], max_position_embeddings=32768,
                       sliding_window=None, rope_theta=1e6, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    vc = CLIPVisionConfig(hidden_size=d['vision_hidden'], intermediate_size=d['vision_mlp'], num_hidden_layers=vision_layers,
                          num_attention_heads=d['vision_heads'], image_size=side * d['patch'], patch_size=d['patch'],
                          projection_dim=768)
    return LlavaConfig(vision_config=vc, text_config=tc, image_token_index=d['vocab'] - 1, image_seq_length=n_img,
                       vision_feature_layer=-1, vision_feature_select_strategy='default', projector_hidden_act='gelu')

def full_model_params(dims:dict)->int:
    "Parameters of the whole LLaVA-Med v1.5-shaped model (all layers, the 24-layer vision tower), counted on the meta device."
    import torch
    from transformers import LlavaForConditionalGeneration
    with torch.device('meta'): m = LlavaForConditionalGeneration(llava_config(dims, dims['full_layers'], 576, dims['vision_layers']))
    return sum(p.numel() for p in m.parameters())

def _inputs(dims, n_img, batch, dev):
    import torch
    g = torch.Generator().manual_seed(0)
    V, img_id = dims['vocab'], dims['vocab'] - 1
    words = torch.randint(3, V - 1, (batch, TEXT - 1), generator=g)
    ids = torch.cat([torch.full((batch, 1), 1), torch.full((batch, n_img), img_id), words], 1)      # [B, T]
    T = ids.shape[1]; pos = torch.arange(T)[None]
    vis = ids == img_id
    prompt = ((pos > n_img) & (pos < n_img + 1 + TEXT // 2)).expand(batch, -1)       # the question: first half of the text
    query = (pos > n_img).expand(batch, -1)                                          # every text token after the image
    labels = ids.masked_fill(~(pos >= n_img + 1 + TEXT // 2).expand(batch, -1), -100)   # the answer: second half
    grid, K = int(round(math.sqrt(n_img))), 4
    seg = torch.zeros(batch, K, grid, grid)
    for b in range(batch):
        for k in range(K):
            y, x = torch.randint(0, grid - grid // 4, (2,), generator=g).tolist(); seg[b, k, y:y + grid // 6 + 1, x:x + grid // 4] = 1
    side = grid * dims['patch']
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                  pixel_values=torch.randn(batch, 3, side, side, generator=g))
    mv = lambda t: t.to(dev)
    return {k: mv(v) for k, v in inputs.items()}, mv(vis), mv(prompt), mv(query), mv(seg.flatten(2)), mv(torch.ones(batch, K, dtype=torch.bool))

def build(style:str, dims:dict, layers:int, n_img:int, dev:str, dtype:str):
    "The model of `style` (random weights) and its trainable parameter count."
    import torch
    from transformers import LlavaForConditionalGeneration
    from a3tune.preliminaries import enable_attention_rows
    from a3tune.a3moe import add_a3moe, A3MoEConfig, lora_regex
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    with torch.device(dev): model = LlavaForConditionalGeneration._from_config(llava_config(dims, layers, n_img), dtype=dt)
    model.set_attn_implementation('sdpa')
    if style == 'lora':
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model.requires_grad_(False), LoraConfig(r=dims['lora_rank'], lora_alpha=16, lora_dropout=0.05, bias='none',
                               target_modules=lora_regex(('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'))))
    elif style == 'a3tune':
        model = enable_attention_rows(add_a3moe(model, A3MoEConfig(lora_rank=dims['lora_rank'], expert_rank=dims['expert_rank'])))
    elif style == 'reference':
        model = add_a3moe(model, A3MoEConfig.reference(impl='loop', lora_rank=dims['lora_rank'], expert_rank=dims['expert_rank']))
        model.get_base_model().set_attn_implementation('eager')
    else: raise ValueError(f"unknown style {style!r}: choose from {STYLES}")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.dtype != torch.float32: p.data = p.data.float()     # trainable tensors stay float32, as in a3tune_model
    return model.train(), sum(p.numel() for p in params)

def stepper(style, model, dims, layers, n_img, batch, dev, dtype):
    "A function running forward + backward of `style`'s training loss on a fixed batch."
    import torch
    from a3tune.preliminaries import query_rows, AttentionRecorder
    from a3tune.a3moe import A3Context
    from a3tune.loss import attention_align, recorded_align, objective
    inputs, vis, prompt, query, seg, valid = _inputs(dims, n_img, batch, dev)
    R = max(1, round(R_SHARE * layers * dims['heads']))
    rows, row_mask = query_rows(query)
    amp = dict(device_type=torch.device(dev).type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16')
    def step():
        with torch.autocast(**amp):
            if style == 'lora': loss = model(**inputs).loss
            elif style == 'a3tune':
                ctx, rec = A3Context(vis, prompt, balance=True), AttentionRecorder(rows, row_mask)
                out = model(**inputs, a3ctx=ctx, a3_rows=rec)
                al = recorded_align(rec, vis, seg, valid, R=R)
                loss = objective(out.loss, al.loss, valid, 0.1).loss + 0.01 * ctx.balance_loss()
            else:
                ctx = A3Context(vis, prompt, balance=True)
                out = model(**inputs, a3ctx=ctx, output_attentions=True)
                att = torch.stack(out.attentions, 1)                                      # [B, L, H, T, T]
                probs = att.gather(3, rows[:, None, None, :, None].expand(*att.shape[:3], rows.shape[1], att.shape[-1]))
                al = attention_align(probs, vis, row_mask, seg, valid, R=R, form='rows')
                loss = objective(out.loss, al.loss, valid, 0.1).loss + 0.01 * ctx.balance_loss()
        loss.backward()
        for p in model.parameters(): p.grad = None
    return step

def measure(step, dev:str, reps:int)->dict:
    "Peak memory of a step above the memory before it (MiB) and the median step time (ms), after one warm-up step."
    import torch
    cuda = dev.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step(); sync()                                                                    # warm-up
    gc.collect()
    if cuda: base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    else: base = _rss()[0]; _reset_hwm()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() - base) / MIB if cuda else _rss()[1] - base
    return dict(mem_mib=peak, ms=1000 * statistics.median(times))

def run_points(styles, layers_list, batches, images, dims, dev, dtype, reps, log=print)->list:
    "Measure every (images, layers, style, batch) point in this process (one model per images/layers/style)."
    import torch
    pts = []
    for n_img in images:
        for L in layers_list:
            for s in styles:
                t0 = time.perf_counter()
                model, n_train = build(s, dims, L, n_img, dev, dtype)
                for b in batches:
                    try: r = measure(stepper(s, model, dims, L, n_img, b, dev, dtype), dev, reps)
                    except torch.OutOfMemoryError as e: r = dict(mem_mib=None, ms=None, error=str(e).split('\n')[0])
                    pts.append(dict(style=s, images=n_img, layers=L, batch=b, trainable=n_train, **r))
                    log(f"  {s:9s} {n_img:5d} img  {L} layer(s)  batch {b}: " +
                        (f"{r['mem_mib']:9.0f} MiB {r['ms']:9.1f} ms" if r['mem_mib'] is not None else r['error']) +
                        f"  ({time.perf_counter() - t0:.0f} s)")
                del model; gc.collect()
                if dev.startswith('cuda'): torch.cuda.empty_cache()
    return pts

def _fit(xs, ys):
    "Least-squares line `(intercept, slope, max |residual|)`; slope None with fewer than two distinct x."
    n = len(xs)
    if n < 2 or len(set(xs)) < 2: return None, None, None
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    return a, b, max(abs(a + b * x - y) for x, y in zip(xs, ys))

def project(pts:list, dims:dict, frozen_full:int)->list:
    "Per style and image count: the layer fits, the 32-layer projection and the largest batch per GPU size."
    out, full = [], dims['full_layers']
    for n_img in sorted({p['images'] for p in pts}):
        for s in [s for s in STYLES if any(p['style'] == s for p in pts)]:
            P = [p for p in pts if p['style'] == s and p['images'] == n_img and p['mem_mib'] is not None]
            row = dict(style=s, images=n_img, batches={})
            for b in sorted({p['batch'] for p in P}):
                q = sorted((p for p in P if p['batch'] == b), key=lambda p: p['layers'])
                f, per, res = _fit([p['layers'] for p in q], [p['mem_mib'] for p in q])
                tf, tper, tres = _fit([p['layers'] for p in q], [p['ms'] for p in q])
                row['batches'][b] = dict(layers=[p['layers'] for p in q], mem_mib=[p['mem_mib'] for p in q], ms=[p['ms'] for p in q],
                                         fixed_mib=f, per_layer_mib=per, residual_mib=res, fixed_ms=tf, per_layer_ms=tper,
                                         step32_mib=None if per is None else f + full * per, ms32=None if tper is None else tf + full * tper)
            tr = {p['layers']: p['trainable'] for p in P}
            tf_, tper_, _ = _fit(list(tr), list(tr.values()))
            bs = row['batches']
            if tper_ is None or len([b for b in bs if bs[b]['step32_mib'] is not None]) < 2: out.append(row); continue
            b1, b2 = sorted(b for b in bs if bs[b]['step32_mib'] is not None)[:2]
            s1 = (bs[b2]['step32_mib'] - bs[b1]['step32_mib']) / (b2 - b1)                 # per sample, MiB
            s0 = bs[b1]['step32_mib'] - s1 * b1
            trainable = tf_ + full * tper_
            static = (2 * frozen_full + 12 * trainable) / MIB
            opt = static + 12 * trainable / MIB
            total = lambda b: max(static + s0 + s1 * b, opt)
            fits = {}
            for c in CAPACITIES:
                room = c * 1024 - CONTEXT_GIB * 1024
                n = math.floor((room - static - s0) / s1) if s1 > 0 else None
                fits[c] = n if (n is None or (n >= 1 and opt <= room)) else 0
            row.update(trainable32=trainable, static_mib=static, per_sample_mib=s1, rest_mib=s0, optimizer_mib=opt,
                       total_b1_gib=total(1) / 1024, total_b2_gib=total(2) / 1024, fits=fits)
            out.append(row)
    return out

def report(pts, proj, meta):
    "Markdown tables of the measured points, the per-layer fits and the projection."
    L = [f"{meta['device_name']}, {meta['dtype']}, torch {meta['torch']}; hidden {meta['dims']['hidden']}, {meta['dims']['heads']} heads, "
         f"{meta['dims']['kv_heads']} KV heads, MLP {meta['dims']['mlp']}, vocab {meta['dims']['vocab']}; {TEXT} text tokens; "
         f"step = forward + backward; memory = peak above the built model (MiB)", '',
         '| style | image tokens | layers | batch | step MiB | ms / step | trainable |', '|---|---|---|---|---|---|---|']
    for p in pts:
        L.append(f"| {p['style']} | {p['images']} | {p['layers']} | {p['batch']} | " +
                 (f"{p['mem_mib']:.0f} | {p['ms']:.1f}" if p['mem_mib'] is not None else f"OOM | -") + f" | {p['trainable']/1e6:.2f} M |")
    fitted = [(r, b, d) for r in proj for b, d in r['batches'].items() if d['per_layer_mib'] is not None]
    if fitted:
        L += ['', 'Fit step(L) = fixed + per-layer · L over the measured layer counts, and its 32-layer value:', '',
              '| style | image tokens | batch | fixed MiB | per-layer MiB | max residual MiB | 32 layers GiB | per-layer ms | 32 layers ms |',
              '|---|---|---|---|---|---|---|---|---|']
        for r, b, d in fitted:
            L.append(f"| {r['style']} | {r['images']} | {b} | {d['fixed_mib']:.0f} | {d['per_layer_mib']:.1f} | {d['residual_mib']:.1f} | "
                     f"{d['step32_mib']/1024:.2f} | {d['per_layer_ms']:.2f} | {d['ms32']:.0f} |")
    full = [r for r in proj if 'fits' in r]
    if full:
        L += ['', f"Full model ({meta['frozen_full']/1e9:.2f} B frozen parameters in bf16, {meta['dims']['full_layers']} layers), AdamW on the "
              f"float32 trainable parameters; total = static + rest + per-sample · batch; largest batch with total + {CONTEXT_GIB:g} GiB ≤ the GPU:", '',
              '| style | image tokens | trainable | static GiB | per-sample GiB | total at batch 1 GiB | ' + ' | '.join(f'fits on {c} GB at batch' for c in CAPACITIES) + ' |',
              '|---|---|---|---|---|---|' + '---|' * len(CAPACITIES)]
        for r in full:
            L.append(f"| {r['style']} | {r['images']} | {r['trainable32']/1e6:.0f} M | {r['static_mib']/1024:.1f} | {r['per_sample_mib']/1024:.2f} | "
                     f"{r['total_b1_gib']:.1f} | " + ' | '.join(str(r['fits'][c]) if r['fits'][c] else 'no' for c in CAPACITIES) + ' |')
    return '\n'.join(L)

def merge(files:list, out:str=None)->int:
    "Combine the points of several scale JSON files (later files replace the same point), recompute fits and projection."
    def read(f):
        try: r = json.loads(open(f).read())
        except (OSError, ValueError) as e: sys.exit(f"--merge: cannot read {f}: {e}")
        if not (isinstance(r, dict) and {'meta', 'points'} <= set(r)): sys.exit(f"--merge: {f} is not a bench/scale.py --json file (no 'meta' and 'points')")
        return r
    runs = [read(f) for f in files]
    meta = dict(runs[0]['meta'])
    for f, r in zip(files[1:], runs[1:]):
        for k in ('device', 'dtype', 'dims', 'quick'):
            if r['meta'][k] != meta[k]: sys.exit(f"--merge: {f} has {k}={r['meta'][k]!r} but {files[0]} has {meta[k]!r}; merge only runs of one setting")
    key = lambda p: (p['style'], p['images'], p['layers'], p['batch'])
    pts = {}
    for r in runs:
        for p in r['points']: pts[key(p)] = p
    order = {s: i for i, s in enumerate(STYLES)}
    pts = sorted(pts.values(), key=lambda p: (p['images'], p['layers'], order[p['style']], p['batch']))
    meta.update(wall_s=sum(r['meta']['wall_s'] for r in runs), runs=len(runs))
    reps = sorted({r['meta']['reps'] for r in runs}); meta['reps'] = reps[0] if len(reps) == 1 else reps
    proj = project(pts, meta['dims'], meta['frozen_full'])
    print(report(pts, proj, meta))
    if out:
        with open(out, 'w') as f: json.dump(dict(meta=meta, points=pts, projection=proj), f, indent=1)
        print(f"\nwrote {out}")
    return 0

def render_notebook(nb='nbs/06_experiments.ipynb'):
    "Re-run the cell of `nb` that renders nbs/cache/scale.json and store its output (after the cache was replaced)."
    from fastcore.test import test_eq
    from IPython.display import Markdown
    from a3tune.formats import repo_root
    d = json.load(open(nb))
    cell = next(c for c in d['cells'] if c['cell_type'] == 'code' and "CACHE/'scale.json'" in ''.join(c['source']))
    body, last = ''.join(cell['source']).rsplit('\n', 1)
    g = dict(json=json, test_eq=test_eq, Markdown=Markdown, repo_root=repo_root, CACHE=repo_root()/'nbs'/'cache')
    exec(body, g); md = eval(last, g).data
    cell['outputs'] = [dict(data={'text/markdown': md.splitlines(True), 'text/plain': ['<IPython.core.display.Markdown object>']},
                            execution_count=None, metadata={}, output_type='execute_result')]
    with open(nb, 'w') as f: json.dump(d, f, indent=1, ensure_ascii=False); f.write('\n')
    print(md)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    ap.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    ap.add_argument('--json', metavar='OUT', help='write the points, fits and projection to this JSON file')
    ap.add_argument('--quick', action='store_true', help='hidden 512, 8 heads, MLP 1792, vocab 512: the pipeline in minutes on a CPU')
    ap.add_argument('--layers', type=int, nargs='+', default=[1, 2, 4])
    ap.add_argument('--batches', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--images', type=int, nargs='+', default=[576, 1024, 2304], help='image tokens (square numbers)')
    ap.add_argument('--styles', nargs='+', default=list(STYLES), choices=STYLES)
    ap.add_argument('--reps', type=int, default=None, help='timed steps per point (default 3 on CUDA, 1 on CPU)')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--merge', nargs='+', metavar='JSON', help='combine the points of several --json files (a later file replaces the same point) '
                    'into --json, with the fits and projection recomputed; the files must share device, dtype and dims')
    ap.add_argument('--render', metavar='NOTEBOOK', help="only re-render NOTEBOOK's scale cell from nbs/cache/scale.json (run from the repo root)")
    a = ap.parse_args(argv)
    if a.render: render_notebook(a.render); return 0
    if a.merge: return merge(a.merge, a.json)
    dims = QUICK if a.quick else REAL
    reps = a.reps or (3 if a.device == 'cuda' else 1)
    import torch
    if a.device == 'cpu':
        from a3tune.preliminaries import set_threads
        set_threads(int(os.environ.get('A3TUNE_THREADS', 1)))
    if a.one:                                                                          # one CPU point, in its own process
        s, L, n, b = json.loads(a.one)
        print(json.dumps(run_points([s], [L], [b], [n], dims, a.device, a.dtype, reps, log=lambda *_: None)[0])); return 0
    if a.device == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device is visible')
    name = torch.cuda.get_device_name() if a.device == 'cuda' else (platform.processor() or platform.machine()) + ' CPU, 1 thread'
    meta = dict(device=a.device, device_name=name, dtype=a.dtype, torch=torch.__version__, quick=a.quick, dims=dims, text_tokens=TEXT,
                R_share=R_SHARE, capacities_gib=list(CAPACITIES), context_gib=CONTEXT_GIB, reps=reps,
                frozen_full=None, method=__doc__.split('Projection')[0].strip())
    print(f"bench/scale.py: {name}, {a.dtype}, {'quick' if a.quick else 'real'} size; styles {a.styles}, layers {a.layers}, "
          f"batches {a.batches}, image tokens {a.images}", flush=True)
    t0 = time.perf_counter()
    if a.device == 'cuda': pts = run_points(a.styles, a.layers, a.batches, a.images, dims, a.device, a.dtype, reps, log=lambda m: print(m, flush=True))
    else:
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', A3TUNE_THREADS='1', HF_HUB_OFFLINE='1',
                   MALLOC_MMAP_THRESHOLD_='131072', MALLOC_TRIM_THRESHOLD_='131072')
        pts = []
        for n in a.images:
            for L in a.layers:
                for s in a.styles:
                    for b in a.batches:
                        cmd = [sys.executable, os.path.abspath(__file__), '--device', 'cpu', '--dtype', a.dtype, '--reps', str(reps),
                               '--one', json.dumps([s, L, n, b])] + (['--quick'] if a.quick else [])
                        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                        if p.returncode: sys.exit(f"{s} {n} img {L} layer(s) batch {b} failed:\n{p.stderr[-3000:]}")
                        pts.append(json.loads(p.stdout.strip().splitlines()[-1])); r = pts[-1]
                        print(f"  {s:9s} {n:5d} img  {L} layer(s)  batch {b}: {r['mem_mib']:9.0f} MiB {r['ms']:9.1f} ms "
                              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    meta['frozen_full'] = full_model_params(dims)   # the base model: LoRA and the experts are added on top, counted as trainable
    meta['wall_s'] = time.perf_counter() - t0
    proj = project(pts, dims, meta['frozen_full'])
    print('\n' + report(pts, proj, meta))
    if a.json:
        with open(a.json, 'w') as f: json.dump(dict(meta=meta, points=pts, projection=proj), f, indent=1)
        print(f"\nwrote {a.json}")
    return 0

if __name__ == '__main__': sys.exit(main())
