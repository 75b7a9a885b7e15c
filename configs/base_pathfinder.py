"""Pathfinder-32 (hard) with the LRA repository's settings
(lra_benchmarks/image/configs/pathfinder32/base_pathfinder32_config.py; lra_tasks.md table)."""
import ml_collections

from configs import defaults


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "pathfinder"
  config.data.max_length = 32 * 32
  config.data.resolution = 32
  config.data.difficulty = "hard"  # curv_contour_length_14, as in the paper
  config.data.split_seed = 0       # the 80/10/10 split; independent of config.seed
  # Used when config.data_dir is empty: images drawn by lra/pathfinder_draw.py into the
  # cache on first use. 200k images per difficulty, like the release.
  config.data.generator = ml_collections.ConfigDict(dict(num_images=200_000, seed=0,
                                                         processes=0))  # 0 = all cores
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 32, 2, 1
  model.qkv_dim, model.mlp_dim = 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  model.pooling, model.positions = "MEAN", "sinusoidal"
  train = config.train
  train.batch_size, train.learning_rate = 512, 1e-3
  # Cosine decay with one epoch of warm-up: 160k train images / 512 = 312 steps per epoch;
  # 62,400 steps = 200 epochs.
  train.schedule, train.warmup_steps, train.num_train_steps = "cosine", 312, 62_400
  train.weight_decay = 0.0
  # LRA evaluates once per epoch (eval_frequency = 160000 // 512) on 39 batches of 512
  # (num_eval_steps = 20000 // 512), the 20,000-image validation split less its last 32.
  train.eval_every, train.eval_batches = 312, 0
  # Ours every 5 epochs (resumable runs); LRA's every 100 (num_train_steps // 2).
  train.checkpoint_every = 312 * 5
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """A 2-core CPU run of a few minutes on 4,000 generated 32 px images (1,024 tokens).
  Differs from LRA: the easy difficulty (6-dash contours, the best chance of signal in a short
  run); LRA's base Pathfinder model (32/2/1/16/32) whatever the attention config says, batch
  16 and 400 steps, since full attention over 1,024 tokens costs seconds per step on a CPU
  with the 4-layer Transformer. Expect accuracy near chance: Pathfinder needs long training."""
  config.data.difficulty = "easy"
  config.data.generator.num_images = 4_000
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 2, 1, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 40, 400
  train.eval_every = train.checkpoint_every = 200
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests: a few steps on 200 generated 16 px images (256 tokens; the
  drawing scales down to 16 px for the easy difficulty only, which is all a smoke test needs)."""
  quick(config)
  config.data.resolution, config.data.max_length = 16, 16 * 16
  config.data.generator.num_images = 200
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 16, 2, 1, 16, 16
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 4, 12
  train.eval_every = train.checkpoint_every = 6
  train.log_every = 3


PRESETS = {"quick": quick, "tiny": tiny}
