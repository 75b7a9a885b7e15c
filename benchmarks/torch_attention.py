"""torch's fused attention on the CPU, timed like `lra.benchmark --block=attention`.

The same train step as the benchmark's attention-only rows: q/k/v projections (emb 256 -> 4 heads
x 64), `torch.nn.functional.scaled_dot_product_attention`, the output projection, loss
mean(out**2), backward and an AdamW update; batch 2, median over repeats after a warm-up.
The project does not depend on torch: run this in a scratch environment,

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python benchmarks/torch_attention.py --lengths=4096,8192 --out=torch.json

and compare with `python -m lra.benchmark --attention=transformer --block=attention ...` run
next to it on the same machine; `--compare=bench.json` prints the table of both (no torch
needed for that):

    python benchmarks/torch_attention.py --torch_rows=torch.json --compare=bench.json
"""
import argparse
import json
import os
import resource
import statistics
import time

EXACT = ("dense", "blocked", "xla")


def attention_module(emb_dim: int, num_heads: int, qkv_dim: int):
  """q/k/v projections, torch's fused attention, output projection."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  class Attention(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.qkv = torch.nn.Linear(emb_dim, 3 * qkv_dim)
      self.out = torch.nn.Linear(qkv_dim, emb_dim)

    def forward(self, x):
      b, length, _ = x.shape
      q, k, v = self.qkv(x).view(b, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(q, k, v)  # [b, h, L, d]
      return self.out(y.transpose(1, 2).reshape(b, length, -1))

  return Attention()


def measure(length: int, args) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = attention_module(args.emb_dim, args.num_heads, args.qkv_dim)
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


def comparison(torch_rows: list[dict], bench_rows: list[dict]) -> str:
  """Markdown: per length, torch's step time beside each exact `transformer` implementation's
  (from `lra.benchmark` rows) and their ratio (> 1: ours is faster)."""
  lengths = sorted({r["length"] for r in torch_rows})
  ours = {(r.get("implementation"), r["length"]): r for r in bench_rows
          if r["attention"] == "transformer" and r["status"] == "ok"}
  lines = ["| exact attention | " + " | ".join(f"s/step @{n}" for n in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  theirs = {r["length"]: r["step_time_s"] for r in torch_rows}
  lines.append("| torch " + torch_rows[0]["torch"] + " `scaled_dot_product_attention` | "
               + " | ".join(f"{theirs[n]:.2f}" for n in lengths) + " |")
  for impl in EXACT:
    cells = [f"{ours[impl, n]['step_time_s']:.2f} ({theirs[n] / ours[impl, n]['step_time_s']:.2f}x)"
             if (impl, n) in ours else "-" for n in lengths]
    lines.append(f"| ours, `{impl}` (speed vs torch) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", default="4096,8192")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--emb_dim", type=int, default=256)
  parser.add_argument("--num_heads", type=int, default=4)
  parser.add_argument("--qkv_dim", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=None)
  parser.add_argument("--torch_rows", default=None,
                      help="rows written by an earlier --out; skip measuring")
  parser.add_argument("--compare", default=None,
                      help="an lra.benchmark --block=attention JSON: print the comparison")
  args = parser.parse_args()
  if args.torch_rows:
    with open(args.torch_rows) as f:
      rows = json.load(f)
    if args.compare:
      with open(args.compare) as f:
        print(comparison(rows, json.load(f)), end="")
    return
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  rows = [measure(int(length), args) for length in args.lengths.split(",")]
  for row in rows:
    print(json.dumps(row))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
  if args.compare:
    with open(args.compare) as f:
      print(comparison(rows, json.load(f)), end="")


if __name__ == "__main__":
  main()
