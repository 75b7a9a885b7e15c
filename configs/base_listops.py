"""ListOps with the LRA repository's settings (lra_benchmarks/listops/configs/base_listops_config.py)."""
import ml_collections

from configs import approximate_regime, defaults


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "listops"
  config.data.max_length = 2000
  config.data.generator = ml_collections.ConfigDict(dict(
      operators=["[MIN", "[MAX", "[MED", "[SM"], max_depth=10, max_args=10,
      min_length=500, max_length=2000, operator_prob=0.25,
      num_train=96_000, num_val=2_000, num_test=2_000, seed=0))
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 512, 8, 4
  model.qkv_dim, model.mlp_dim = 512, 1024
  model.dropout_rate = model.attention_dropout_rate = 0.1
  model.pooling, model.positions = "CLS", "sinusoidal"
  train = config.train
  train.batch_size, train.learning_rate = 32, 0.05
  train.schedule, train.warmup_steps, train.num_train_steps = "rsqrt", 1000, 5000
  train.weight_decay = 0.1
  # LRA evaluates every 50 steps on the whole validation split (eval_frequency=50,
  # num_eval_steps=99999). Checkpoints: ours every 1000 steps (resumable runs); LRA's every 10000.
  train.eval_every, train.eval_batches = 50, 0
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """CPU-sized: short, shallow expressions and a small model; learns in a few minutes."""
  gen = config.data.generator
  gen.max_depth, gen.max_args, gen.min_length, gen.max_length = 3, 5, 10, 40
  gen.num_train, gen.num_val, gen.num_test = 10_000, 1_000, 1_000
  config.data.max_length = 40
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 4, 2, 64, 128
  model.dropout_rate = model.attention_dropout_rate = 0.0
  train = config.train
  train.learning_rate, train.warmup_steps, train.num_train_steps = 0.05, 200, 2000
  train.weight_decay = 0.0  # differs from LRA: 0.1 decoupled decay stalls tiny, short runs
  train.eval_every = train.checkpoint_every = 500
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests: a few steps on a few hundred short examples."""
  quick(config)
  gen = config.data.generator
  gen.max_depth, gen.max_args, gen.min_length, gen.max_length = 2, 4, 3, 16
  gen.num_train, gen.num_val, gen.num_test = 256, 64, 64
  config.data.max_length = 16
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 16, 2, 1, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 5, 12
  train.eval_every = train.checkpoint_every = 4
  train.log_every = 2


def small(config: ml_collections.ConfigDict) -> None:
  """The CPU comparison protocol (README "Survey table on a CPU"): expressions of 48-128 tokens
  (depth 4, up to 5 arguments), where every variant runs in its approximate regime: each
  variant's window, landmarks, blocks, features or buckets cover at most a quarter of the 128
  positions (configs/approximate_regime.py says how each is scaled). The `quick` model, 1,000
  steps: a few minutes per run on one core. Differs from LRA in length (LRA: 500-2,000 tokens,
  depth 10) and model size; the task, tokens and labels are LRA's."""
  quick(config)
  gen = config.data.generator
  gen.max_depth, gen.max_args, gen.min_length, gen.max_length = 4, 5, 48, 128
  config.data.max_length = 128
  train = config.train
  train.warmup_steps, train.num_train_steps = 200, 1000
  train.eval_every = train.checkpoint_every = 250
  approximate_regime.scale_to(config, config.data.max_length)


PRESETS = {"quick": quick, "small": small, "tiny": tiny}
