"""FSDP: torch FSDP2 over two CPU processes (gloo) shards the A³MoE tensors, trains, and saves the same adapter as one
process on the same global batch; the configs users copy (configs/fsdp.yaml, zero2.yaml, zero3.yaml) load with accelerate's
config loader, and `accelerate launch` with configs/fsdp.yaml on CPUs is run to record what accelerate does there."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from _training_fixtures import make_fixture, cli_args, sets, REPO
from a3tune.training import train_cli

CONFIGS = REPO/'configs'
WORKER = Path(__file__).parent/'_fsdp_worker.py'


def _env(**kw):
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]), 'CUDA_VISIBLE_DEVICES': '',
            'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'A3TUNE_THREADS': '1', **kw}


def _run(cmd, **kw):
    p = subprocess.run(cmd, env=_env(**kw), capture_output=True, text=True, timeout=500)   # a hang fails here
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


# a launcher script: `a3tune train` plus a callback that records, on every rank after step 1, the model's wrapper class
# and the number of elements of each A³MoE tensor this rank holds
PROBE = '''
import json, os, sys
from transformers import TrainerCallback
from a3tune import training

class Probe(TrainerCallback):
    def __init__(self, trainer): self.trainer = trainer
    def on_step_end(self, args, state, control, **kw):
        if state.global_step != 1: return
        model = self.trainer.model_wrapped
        local = {n: p.numel() for n, p in model.named_parameters()
                 if ('.q_proj.' in n or '.k_proj.' in n) and ('lora_' in n or 'router' in n)}
        from torch.distributed.fsdp import FSDPModule
        d = dict(wrapper='FSDPModule' if isinstance(model, FSDPModule) else type(model).__name__, local=local)
        with open(os.path.join(os.environ['A3_PROBE'], f"rank{os.environ['RANK']}.json"), 'w') as f: json.dump(d, f)

_init = training.A3Trainer.__init__
def init(self, *a, **k): _init(self, *a, **k); self.add_callback(Probe(self))
training.A3Trainer.__init__ = init
sys.exit(training.train_cli(sys.argv[1:]))
'''


def _adapter(run):
    return {**load_file(Path(run)/'a3moe.safetensors'), **{f'lora.{k}': v for k, v in load_file(Path(run)/'adapter_model.safetensors').items()}}


def test_fsdp2_two_cpu_processes_shard_and_match_one(tmp_path):
    from a3tune.a3moe import a3moe_state_dict
    from a3tune.training import A3TuneConfig, a3tune_model, load_a3tune
    from transformers import AutoModelForImageTextToText
    make_fixture(tmp_path, n=4, unlabelled=1)                      # 4 samples = one global batch, 2 per rank
    _run([sys.executable, str(WORKER), str(tmp_path), str(tmp_path/'one')])
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533',
          str(WORKER), str(tmp_path), str(tmp_path/'fsdp'), '--fsdp'])
    ranks = [json.loads((tmp_path/'fsdp'/f'rank{r}.json').read_text()) for r in (0, 1)]
    one = json.loads((tmp_path/'one'/'rank0.json').read_text())
    assert [r['samples'] for r in ranks] == [2, 2] and one['samples'] == 4
    # sharded: every A³MoE tensor is a DTensor; each rank holds a part, the ranks together all of it
    sizes = ranks[0]['sizes']
    assert sizes and all(v[2] == 'DTensor' for v in sizes.values())
    for k, (loc, full, _) in sizes.items(): assert loc + ranks[1]['sizes'][k][0] == full and loc < full, k
    total = sum(v[1] for v in sizes.values())
    assert all(sum(v[0] for v in r['sizes'].values()) <= total / 2 + 64 for r in ranks)
    # trained like one process: the loss is the mean of the ranks' (equal halves), the adapter is the same
    assert sum(r['loss'] for r in ranks) / 2 == pytest.approx(one['loss'], rel=1e-5)
    for f in ('a3moe.safetensors', 'adapter_model.safetensors'):
        a, b = load_file(tmp_path/'one'/'adapter'/f), load_file(tmp_path/'fsdp'/'adapter'/f)
        assert a.keys() == b.keys() and a
        for k in a: torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    fp = lambda d: json.loads((tmp_path/d/'adapter'/'a3tune_config.json').read_text())['base']
    assert fp('fsdp') == fp('one') and fp('fsdp')['embed_probe']     # the fingerprint from the gathered embedding
    base = lambda: AutoModelForImageTextToText.from_pretrained(tmp_path/'base')
    cfg = A3TuneConfig.from_dict(json.loads((tmp_path/'one'/'adapter'/'a3tune_config.json').read_text())['config'])
    init, moe = a3moe_state_dict(a3tune_model(base(), cfg)), load_file(tmp_path/'fsdp'/'adapter'/'a3moe.safetensors')
    moved = [k for k in init if not torch.equal(init[k].float(), moe[k])]
    assert {k for k in init if 'lora_B' in k} <= set(moved), moved   # step 1: lora_B moves (routers wait for a non-zero B)
    m = load_a3tune(base(), tmp_path/'fsdp'/'adapter')            # loads with the base check on
    torch.testing.assert_close(a3moe_state_dict(m), moe)


def test_accelerate_fsdp_config_on_cpu(tmp_path):
    "`accelerate launch --config_file configs/fsdp.yaml` on 2 CPU processes: it trains like one process; FSDP itself is GPU-only."
    make_fixture(tmp_path, n=4, unlabelled=1)
    kw = dict(max_steps=1, warmup=0, lr=1e-3)
    assert train_cli(cli_args(tmp_path, 'single') + sets(per_device_batch_size=4, **kw)) == 0
    (tmp_path/'probe.py').write_text(PROBE); (tmp_path/'probe').mkdir()
    p = _run([sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(CONFIGS/'fsdp.yaml'), '--num_processes', '2',
              '--mixed_precision', 'no', '--main_process_port', '29535', str(tmp_path/'probe.py')]
             + cli_args(tmp_path, 'fsdp') + sets(per_device_batch_size=2, **kw), A3_PROBE=str(tmp_path/'probe'))
    assert p.stdout.count('a3tune: adapter saved to') == 1
    a, b = _adapter(tmp_path/'single'), _adapter(tmp_path/'fsdp')
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    wrappers = {json.loads((tmp_path/'probe'/f'rank{r}.json').read_text())['wrapper'] for r in (0, 1)}
    if wrappers != {'FSDPModule'}:
        pytest.skip(f"accelerate applies FSDP to GPU processes only: with configs/fsdp.yaml on CPUs it trained with {wrappers} "
                    "(AcceleratorState sets DistributedType.FSDP only for MULTI_GPU-like types, not MULTI_CPU); "
                    "FSDP2 on CPUs is tested directly in test_fsdp2_two_cpu_processes_shard_and_match_one")


@pytest.mark.parametrize('name,kind', [('fsdp', 'FSDP'), ('zero2', 'DEEPSPEED'), ('zero3', 'DEEPSPEED')])
def test_engine_configs_load(name, kind):
    "The configs users copy parse with accelerate's own loader (DeepSpeed itself is not installed here: not launched)."
    from accelerate.commands.config.config_args import load_config_from_file
    c = load_config_from_file(str(CONFIGS/f'{name}.yaml'))
    assert c.distributed_type == kind and c.mixed_precision == 'bf16' and c.num_processes >= 2
    if kind == 'FSDP':
        assert c.fsdp_config['fsdp_state_dict_type'] == 'FULL_STATE_DICT' and c.fsdp_config['fsdp_version'] == 2
    else:
        assert c.deepspeed_config['zero_stage'] == int(name[-1])
        if name == 'zero3': assert c.deepspeed_config['zero3_save_16bit_model'] is True
