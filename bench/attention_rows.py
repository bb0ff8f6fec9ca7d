"""Cost of `attention_rows` against plain SDPA and eager `output_attentions`, measured side by side in one run.

Each (method, visual tokens) configuration runs in a fresh Python process with one torch thread. Time is the median
of forward+backward over `--reps` steps after one warm-up; memory is the peak resident set size during the first
forward+backward above the process's RSS once the model and inputs are built (the kernel's high-water mark is reset
through /proc/self/clear_refs just before), so the interpreter's own footprint does not hide the difference.

Methods: (a) plain SDPA; (b) SDPA + `attention_rows` on the text rows (all 64 text tokens after the image), loss
through the rows; (c) eager attention with `output_attentions=True` on all layers (the reference code's way), loss
through the same rows sliced from the full maps.

    python bench/attention_rows.py            # hidden 256, 4 layers, 8 heads, batch 2, 64 text tokens
"""
import argparse, json, os, subprocess, sys, time, statistics

from _mem import rss as _rss, reset_hwm as _reset_hwm

def one(method, n_vis, reps, hidden, layers, heads, text, batch):
    import torch
    from a3tune.preliminaries import tiny_llava, set_threads, attention_rows, AttentionRecorder, query_rows, enable_attention_rows
    set_threads(1)
    grid = int(round(n_vis ** 0.5)); patch = 8
    model, proc = tiny_llava(image_size=grid*patch, patch_size=patch, hidden_size=hidden, num_layers=layers,
                             num_heads=heads, vision_hidden=32)
    model.train()
    tok = proc.tokenizer
    g = torch.Generator().manual_seed(0)
    words = torch.randint(len(tok) - 50, len(tok) - 1, (batch, text - 1), generator=g)
    ids = torch.cat([torch.full((batch, 1), tok.bos_token_id), torch.full((batch, n_vis), tok.image_token_id), words], 1)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  pixel_values=torch.randn(batch, 3, grid*patch, grid*patch, generator=g), labels=ids.clone())
    vis = ids == tok.image_token_id
    qm = torch.zeros_like(vis); qm[:, 1 + n_vis:] = True
    if method == 'sdpa': model.set_attn_implementation('sdpa')
    elif method == 'rows': enable_attention_rows(model)
    else: model.set_attn_implementation('eager')
    rows, row_mask = query_rows(qm)
    def get_loss():   # like a training step's compute_loss: only the loss leaves it
        if method == 'sdpa': return model(**inputs).loss
        if method == 'rows':
            rec = AttentionRecorder(rows, row_mask)
            out = model(**inputs, a3_rows=rec)
            probs = rec.result().probs                                       # [B, L, H, Q, T]
            return out.loss + 1e-3 * probs[..., 1:1 + n_vis].sum()
        out = model(**inputs, output_attentions=True)
        att = torch.stack(out.attentions, 1)                                 # [B, L, H, T, T]
        return out.loss + 1e-3 * att[:, :, :, 1 + n_vis:, 1:1 + n_vis].sum()
    def step():
        get_loss().backward()
        model.zero_grad(set_to_none=True)
    base, _ = _rss(); _reset_hwm()
    step()
    _, peak = _rss()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    return dict(method=method, n_vis=n_vis, ms=1000 * statistics.median(times), mem=peak - base)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tokens', type=int, nargs='+', default=[256, 576, 1024])
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--hidden', type=int, default=256); ap.add_argument('--layers', type=int, default=4)
    ap.add_argument('--heads', type=int, default=8); ap.add_argument('--text', type=int, default=64)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--one', nargs=2, metavar=('METHOD', 'N'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    cfg = dict(reps=a.reps, hidden=a.hidden, layers=a.layers, heads=a.heads, text=a.text, batch=a.batch)
    if a.one: print(json.dumps(one(a.one[0], int(a.one[1]), **cfg))); return
    # big tensors are mmap'd and returned to the OS when freed, so the resident high-water mark follows real use
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', HF_HUB_OFFLINE='1',
               MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
    res = {}
    for n in a.tokens:
        for m in ['sdpa', 'rows', 'eager']:
            cmd = [sys.executable, __file__, '--one', m, str(n)] + sum([[f'--{k}', str(v)] for k, v in cfg.items()], [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode: sys.exit(f'{m} {n} failed:\n{out.stderr[-2000:]}')
            res[m, n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"hidden {a.hidden}, {a.layers} layers, {a.heads} heads, batch {a.batch}, {a.text} text tokens, 1 thread; "
          f"median of {a.reps} forward+backward; memory = peak RSS above the built model (MiB)")
    print('| visual tokens | (a) SDPA ms | (b) +rows ms | (c) eager ms | (a) MiB | (b) MiB | (c) MiB | (b)/(a) time | (b)/(a) mem | (c)/(b) time | (c)/(b) mem |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for n in a.tokens:
        s, r, e = res['sdpa', n], res['rows', n], res['eager', n]
        print(f"| {n} | {s['ms']:.0f} | {r['ms']:.0f} | {e['ms']:.0f} | {s['mem']:.0f} | {r['mem']:.0f} | {e['mem']:.0f} | "
              f"{r['ms']/s['ms']:.2f} | {r['mem']/s['mem']:.2f} | {e['ms']/r['ms']:.2f} | {e['mem']/r['mem']:.2f} |")

if __name__ == '__main__': main()
