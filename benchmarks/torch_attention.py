"""torch's fused attention on the CPU, timed like `lra.benchmark --block=attention`.

The same train step as the benchmark's attention-only rows: q/k/v projections (emb 256 -> 4 heads
x 64), `torch.nn.functional.scaled_dot_product_attention`, the output projection, loss
mean(out**2), backward and an AdamW update; batch 2, median over repeats after a warm-up.
The project does not depend on torch: run this in a scratch environment,

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python benchmarks/torch_attention.py --lengths=4096,8192 --out=torch.json

and compare with `python -m lra.benchmark --attention=transformer --block=attention ...` run
right after it on the same machine.
"""
import argparse
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F


class Attention(torch.nn.Module):

  def __init__(self, emb_dim: int, num_heads: int, qkv_dim: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = torch.nn.Linear(emb_dim, 3 * qkv_dim)
    self.out = torch.nn.Linear(qkv_dim, emb_dim)

  def forward(self, x):
    b, length, _ = x.shape
    q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v)  # [b, h, L, d]
    return self.out(y.transpose(1, 2).reshape(b, length, -1))


def measure(length: int, args) -> dict:
  torch.manual_seed(0)
  model = Attention(args.emb_dim, args.num_heads, args.qkv_dim)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9,
                          weight_decay=0.1)
  x = torch.randn(args.batch, length, args.emb_dim)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    return loss

  step()  # warm-up
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(args.repeats):
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
  after = resource.getrusage(resource.RUSAGE_SELF)
  n = args.repeats
  return {"attention": "torch_sdpa", "length": length, "batch": args.batch,
          "step_time_s": statistics.median(times), "steps_per_s": 1 / statistics.median(times),
          "user_s_per_step": (after.ru_utime - before.ru_utime) / n,
          "sys_s_per_step": (after.ru_stime - before.ru_stime) / n,
          "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / n,
          "torch": torch.__version__, "threads": torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", default="4096,8192")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--emb_dim", type=int, default=256)
  parser.add_argument("--num_heads", type=int, default=4)
  parser.add_argument("--qkv_dim", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  rows = [measure(int(length), args) for length in args.lengths.split(",")]
  for row in rows:
    print(json.dumps(row))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
