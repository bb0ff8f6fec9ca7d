"""Cost of each registered decoding strategy: time per generated token relative to greedy, on the same batch, side by side.

One process, one torch thread, one tiny LLaVA (optionally with a random A³Tune adapter). Every strategy decodes the same
left-padded batch of prompts of different lengths for exactly `--new` tokens (EOS is switched off, so no strategy stops
early); the strategies run in turn within each round (round-robin, so drift of the machine hits all alike), after one
warm-up round. Time per token = the whole decode (prefill included) / `--new`; the table gives the median over rounds
and the ratio to greedy's median. PAI amplifies layer 1 here (its start layer scales with depth: 2 of 32, at least 1),
so its cost includes the intervention. ControlMLLM steers to the top-left quarter of the image-token grid (4 optimisation
steps, then greedy); OPERA scores 5 candidates per beam every step.

    python bench/decoding.py                      # hidden 128, 2 layers, 64 image tokens, batch 4, 16 new tokens
    python bench/decoding.py --adapter            # the same under a random A³Tune adapter (LoRA + A³MoE)
"""
import argparse, statistics, time, types
import torch
from PIL import Image
from a3tune.preliminaries import set_threads, tiny_llava
from a3tune.decoding import STRATEGIES, vqa_inputs, vqa_prompt, a3_generation_context

QUESTIONS = ['is there a liver ?', 'what organ is shown in the left part of this image ?', 'where is the lesion ?',
             'does the picture contain any abnormality in the upper part of the chest or the abdomen ?']

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--strategies', nargs='+', default=list(STRATEGIES))
    ap.add_argument('--hidden', type=int, default=128); ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--image', type=int, default=64, help='image side in px (patch 8): (image/8)^2 image tokens')
    ap.add_argument('--batch', type=int, default=4); ap.add_argument('--new', type=int, default=16)
    ap.add_argument('--rounds', type=int, default=5); ap.add_argument('--adapter', action='store_true')
    a = ap.parse_args()
    set_threads(1)
    model, proc = tiny_llava(image_size=a.image, hidden_size=a.hidden, num_layers=a.layers)
    if a.adapter:
        from a3tune.training import A3TuneConfig, a3tune_model
        model = a3tune_model(model, A3TuneConfig(moe=dict(q_experts=2, k_experts=4, top_b=2, expert_rank=4, lora_rank=8,
                                                          expert_dropout=0, lora_dropout=0), R=3)).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad: p.add_(torch.randn_like(p) * 0.5)   # LoRA B starts at 0: make the experts do something
    g = torch.Generator().manual_seed(0)
    imgs = [Image.fromarray(torch.randint(0, 255, (a.image, a.image, 3), generator=g, dtype=torch.uint8).numpy()) for _ in range(a.batch)]
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(a.batch)]
    inputs = vqa_inputs(proc, imgs, [vqa_prompt(proc, q) for q in qs])
    tok = types.SimpleNamespace(eos_token_id=None, pad_token_id=proc.tokenizer.pad_token_id)   # no early stop
    base = model.get_base_model() if hasattr(model, 'get_base_model') else model
    base.generation_config.eos_token_id = None
    N = (a.image // 8) ** 2; seg = torch.zeros(a.batch, 1, N); seg[:, 0, :N // 4] = 1
    extra = dict(controlmllm=dict(seg=seg, seg_valid=torch.ones(a.batch, 1, dtype=torch.bool)))
    def run(name):
        st = STRATEGIES[name]
        t = time.perf_counter()
        with torch.no_grad(), a3_generation_context(model, inputs):   # as `generate_batch` runs a strategy
            out = st.decode(model, inputs, a.new, tok, **{**st.options, **extra.get(name, {})})
        dt = time.perf_counter() - t
        assert out.shape[1] - inputs['input_ids'].shape[1] == a.new, (name, out.shape)
        return 1000 * dt / a.new
    times = {n: [] for n in a.strategies}
    for r in range(a.rounds + 1):
        for n in a.strategies:
            torch.manual_seed(r); ms = run(n)
            if r: times[n].append(ms)                                    # round 0 is the warm-up
    med = {n: statistics.median(v) for n, v in times.items()}
    T = inputs['input_ids'].shape[1]
    print(f"hidden {a.hidden}, {a.layers} layers, {(a.image // 8) ** 2} image tokens, batch {a.batch} (prompts of {T} tokens "
          f"with left padding), {a.new} new tokens, {'A³Tune adapter' if a.adapter else 'no adapter'}, 1 thread; "
          f"median over {a.rounds} round-robin rounds")
    print('| strategy | ms / token | / greedy |'); print('|---|---|---|')
    for n in a.strategies: print(f"| {n} | {med[n]:.1f} | {med[n] / med.get('greedy', med[n]):.2f} |")

if __name__ == '__main__': main()
