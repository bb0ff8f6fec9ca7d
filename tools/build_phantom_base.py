#!/usr/bin/env python
"""Build the pre-trained phantom base that ships in `a3tune/assets/phantom_base/` (deterministic for a seed).

    python tools/build_phantom_base.py                 # the shipped recipe: 5,000 steps, batch 32, one thread
    python tools/build_phantom_base.py --kind pretrain_lesions --out a3tune/assets/phantom_base_lesions   # 'phantom-lesions'
    python tools/build_phantom_base.py --steps 300 --out /tmp/base   # a quick try
    python tools/base_sweep.py --device cuda                          # several recipes at once, with their LoRA margins

Prints the loss while training and the held-out accuracy per pre-training question type at the end; writes
`model.safetensors`, `config.json`, the processor/tokenizer files and `build_report.json` into `--out`.
"""
import argparse, json, os, sys
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1'); os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from a3tune.phantom import pretrain_phantom_base, save_phantom_base, PHANTOM_BASE, PRETRAIN_MIX

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=5000, help="optimizer steps")
    p.add_argument('--n-images', type=int, default=8000, help='pre-training images')
    p.add_argument('--bs', type=int, default=32, help='batch size')
    p.add_argument('--lr', type=float, default=1e-3, help='peak learning rate')
    p.add_argument('--n-eval', type=int, default=400, help='held-out images for the report')
    p.add_argument('--seed', type=int, default=0, help='seed of the model, data and batch order')
    p.add_argument('--vision-pos-std', type=float, default=.5, help="tiny_llava's vision position-embedding init std")
    p.add_argument('--patch-bias-std', type=float, default=0., help="tiny_llava's shared patch-bias init std (0: none)")
    p.add_argument('--kind', default='pretrain', choices=list(PRETRAIN_MIX),
                   help="question mix (phantom.PRETRAIN_MIX): 'pretrain', or that mix plus organ names or lesions in named slots")
    p.add_argument('--device', default='cpu', help="where it trains: 'cpu' or 'cuda'")
    p.add_argument('--out', default=str(PHANTOM_BASE), help='checkpoint folder')
    a = p.parse_args(argv)
    model, proc, report = pretrain_phantom_base(steps=a.steps, n_images=a.n_images, bs=a.bs, lr=a.lr, seed=a.seed, n_eval=a.n_eval,
                                                 vision_pos_std=a.vision_pos_std, patch_bias_std=a.patch_bias_std, kind=a.kind, device=a.device)
    out = save_phantom_base(model, proc, report, a.out)
    print(f"\nheld-out accuracy ({report['n_eval']} pre-training images never seen in training):")
    for k, v in report['heldout_accuracy'].items(): print(f"  {k:<15}{v:.3f}")
    print(f"{report['params']:,} parameters, {report['train_s']:.0f} s; wrote {out}:",
          ', '.join(f"{f.name} ({f.stat().st_size/1e3:.0f} kB)" for f in sorted(out.iterdir())))

if __name__ == '__main__': main()
