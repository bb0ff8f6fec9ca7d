"""One A³Tune step on the tiny fixture, in one process or sharded with torch FSDP2 (`fully_shard`) over CPU processes (gloo).

    python tests/_fsdp_worker.py FIXTURE OUT                                   # one process, the whole batch
    torchrun --nproc_per_node 2 tests/_fsdp_worker.py FIXTURE OUT --fsdp       # each rank half of the batch, FSDP2

The loss is `A3Trainer.compute_loss` (L_LM over the global token count + λ L_align + balance), then AdamW. FSDP: every
language-model decoder layer and the root are `fully_shard`ed. Writes the adapter (`save_a3tune` with the gathered full
state dict) to OUT/adapter and, per rank, OUT/rank{R}.json with the local and full sizes of the A³MoE tensors.
"""
import json, os, sys
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _training_fixtures import SLAKE, MOE

def main(fixture, out, fsdp=False):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from a3tune.a3moe import A3MoEConfig, a3moe_modules
    from a3tune.preliminaries import get_adapter
    from a3tune.training import A3TuneConfig, A3Trainer, a3tune_model, training_args, save_a3tune
    from a3tune.data import A3Dataset, A3Collator, join_labels, load_data
    torch.set_num_threads(1)
    fixture, out = Path(fixture), Path(out)
    cfg = A3TuneConfig(moe=A3MoEConfig(**MOE), lr=1e-3, warmup=0, max_steps=1, gradient_checkpointing=False, bf16='false')
    proc = AutoProcessor.from_pretrained(fixture/'base')
    model = a3tune_model(AutoModelForImageTextToText.from_pretrained(fixture/'base'), cfg).train()
    tr = A3Trainer(model, training_args(cfg, out/'trainer', disable_tqdm=True))   # under torchrun: the gloo process group
    recs, _ = load_data(fixture/'data.json', 'train')
    ds = A3Dataset(recs, SLAKE/'imgs', join_labels(recs, fixture/'labels.jsonl', SLAKE/'imgs'))
    grid = get_adapter(model).grid(proc)
    coll = A3Collator(proc, cfg.query, cfg.max_length, cfg.k_segments, grid, get_adapter(model).image_token_id)
    full = coll([ds[i] for i in range(len(ds))])
    n_tokens = (full['labels'][:, 1:] != -100).sum()                                # the global batch's answer tokens
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    batch = coll([ds[i] for i in range(len(ds)) if i % world == rank])             # rank r: samples r, r + world, ...
    sizes = {}
    if fsdp:
        from torch.distributed.fsdp import fully_shard
        for layer in get_adapter(model).layers: fully_shard(layer)
        fully_shard(model)
        names = {id(p): n for n, p in model.named_parameters()}
        for k, m in a3moe_modules(model).items():
            for n, p in m.named_parameters():
                if not n.startswith('base.'): sizes[f'{k}.{n}'] = [p.to_local().numel(), p.numel(), type(p).__name__]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.)
    loss = tr.compute_loss(model, batch, num_items_in_batch=n_tokens)
    loss.backward()
    opt.step()
    if fsdp:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, StateDictOptions
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))   # on rank 0
    else: sd = None
    if rank == 0: save_a3tune(model, out/'adapter', cfg, state_dict=sd)
    (out/f'rank{rank}.json').write_text(json.dumps(dict(world=world, loss=loss.item(), samples=len(batch['labels']), sizes=sizes)))
    if fsdp: torch.distributed.barrier()

if __name__ == '__main__':
    a = [x for x in sys.argv[1:] if not x.startswith('--')]
    main(a[0], a[1], fsdp='--fsdp' in sys.argv)
