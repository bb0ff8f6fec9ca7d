"""GPU smoke check: exact attention rows vs eager attention on CUDA, and A³Tune fine-tuning of the shipped phantom base
in fp32 and in bf16 (60 steps each, GT labels), then reloading each adapter. Prints one JSON object.

    python tools/gpu_check.py            # STEPS=60 by default; runs on the CPU (fp32 only) when no GPU is present
"""
import time, json, math, tempfile, torch
from pathlib import Path
from a3tune.preliminaries import tiny_llava, attention_rows
from a3tune.phantom import make_phantom_set, write_phantom_dataset, write_gt_labels
from a3tune.experiments import phantom_config, finetune_phantom, LORA
from a3tune.training import load_a3tune, A3TuneModel
from a3tune.phantom import load_phantom_base
import os
DEV = 'cuda' if torch.cuda.is_available() else 'cpu'; STEPS = int(os.environ.get('STEPS', 60))
out = {'device': torch.cuda.get_device_name(0) if DEV == 'cuda' else 'cpu', 'torch': torch.__version__}
import transformers, peft; out.update(transformers=transformers.__version__, peft=peft.__version__)
# 1. rows vs eager on CUDA (fp32), batch 2 with left padding
m, proc = tiny_llava(0); m = m.to(DEV).eval()
from PIL import Image; import numpy as np
imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(2)]
msgs = lambda q: [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': q}]}]
txt = [proc.apply_chat_template(msgs(q), add_generation_prompt=True) for q in ('is there a lesion', 'where is the lesion in the left kidney')]
proc.tokenizer.padding_side = 'left'
inp = {k: v.to(DEV) for k, v in proc(images=imgs, text=txt, return_tensors='pt', padding=True).items()}
qm = inp['attention_mask'].bool() & (inp['input_ids'] != proc.tokenizer.convert_tokens_to_ids('<image>'))
with torch.no_grad():
    r = attention_rows(m, inp, qm)
    m.set_attn_implementation('eager')
    e = m(**inp, output_attentions=True).attentions
out['rows_ok'] = True
try:
    E = torch.stack(e, 1)  # [B, L, H, T, T]
    ref = torch.stack([E[b, :, :, r.rows[b]] for b in range(E.shape[0])])
    out['rows_max_abs_diff_fp32'] = float(((r.probs - ref).abs() * r.row_mask[:, None, None, :, None]).max())
except Exception as ex: out['rows_err'] = repr(ex)[:300]
# 2. A³Tune on the phantom base, CUDA, fp32 vs bf16, 60 steps, GT labels
w = Path(tempfile.mkdtemp()); items = make_phantom_set(120, 100); jp = write_phantom_dataset(items, w/'d'); gt = write_gt_labels(items, jp, w/'gt.jsonl')
for prec in (('false', 'true') if DEV == 'cuda' else ('false',)):
    cfg = phantom_config(max_steps=STEPS, bf16=prec, per_device_batch_size=16, logging_steps=max(1, STEPS // 6))
    t = time.time(); model, pr, tr = finetune_phantom(jp, gt, cfg, w/f'a3-{prec}'); dt = time.time() - t
    logs = [l for l in tr.state.log_history if 'loss' in l or 'train_loss' in l] or [{}]
    out[f'bf16={prec}'] = dict(seconds=round(dt, 1), s_per_step=round(dt / STEPS, 3), first=logs[0], last=logs[-1],
                              peak_mem_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if DEV == 'cuda' else None,
                              trainable_dtypes=sorted({str(p.dtype) for p in model.parameters() if p.requires_grad}))
    base, _ = load_phantom_base(); l = load_a3tune(base, w/f'a3-{prec}')
    out[f'bf16={prec}']['reload_ok'] = isinstance(l, A3TuneModel)
    if DEV == 'cuda': torch.cuda.reset_peak_memory_stats()
print(json.dumps(out, indent=1, default=str))
