"Shared set-up for the training tests: a tiny LLaVA saved as a model directory and a few SLAKE-mini samples with labels."
import json, os, copy
from pathlib import Path
import torch
from a3tune.formats import slake_mini

torch.set_num_threads(1)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

REPO = Path(__file__).parents[1]
SLAKE = slake_mini()   # $A3TUNE_DATA, else ../shared/data beside the repository, else the vendored copy
WORDS = ['modality', 'used', 'take', 'organ', 'largest', 'system', 'belong']
# a tiny A³Tune: 2 Q experts, 4 K experts, rank-8 LoRA, no dropout (runs must be comparable), 1 log per step
TINY = dict(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8, expert_dropout=0, lora_dropout=0,
            logging_steps=1, per_device_batch_size=2, grad_accum=1, max_steps=3, save_steps=1, bf16='false')

def sets(**kw):
    "`--set key=value` arguments for `TINY` updated with `kw`."
    return [a for k, v in {**TINY, **kw}.items() for a in ('--set', f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]

def make_fixture(tmp:Path, n:int=8, unlabelled:int=1):
    "Write `tmp/base` (tiny LLaVA + processor), `tmp/data.json` (n SLAKE samples) and `tmp/labels.jsonl`."
    from a3tune.preliminaries import tiny_llava
    from a3tune.data import slake_to_llava, slake_gt_labels, write_llava_json
    base, proc = tiny_llava(seed=0, words=WORDS)
    base.save_pretrained(tmp/'base'); proc.save_pretrained(tmp/'base')
    recs = [r for r in slake_to_llava(SLAKE/'train.json') if r['image'].split('/')[0] in ('xmlab109', 'xmlab110')]
    recs = recs[:n // 2] + [r for r in recs if r['image'].startswith('xmlab110')][:n - n // 2]
    write_llava_json(recs, tmp/'data.json')
    slake_gt_labels(recs[:n - unlabelled], SLAKE/'imgs', tmp/'labels.jsonl', k=2)
    return base, proc, recs

def cli_args(tmp:Path, out:str, data='data.json', labels='labels.jsonl', images=None):
    a = [str(tmp/'base'), '--data', str(tmp/data), '--images', str(images or SLAKE/'imgs'), '--out', str(tmp/out)]
    return a + (['--labels', str(tmp/labels)] if labels else [])

def logits(model, batch):
    from a3tune.a3moe import A3Context
    with torch.no_grad():
        return model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'], pixel_values=batch['pixel_values'],
                     a3ctx=A3Context(batch['visual_mask'], batch['prompt_mask'])).logits
