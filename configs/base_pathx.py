"""Path-X: Pathfinder at 128 x 128 (hard), 16,384 tokens, with the LRA repository's settings
(lra_benchmarks/image/configs/pathfinder128/base_pathfinder128_config.py): as Pathfinder-32
(same model 32/2/1/16/32, dropout 0.1/0.1, MEAN pooling, lr 1e-3, cosine, no weight decay) but
learned positions, batch 64, gradient clipping 1.0, 500,000 steps (200 epochs)."""
import ml_collections

from configs import base_pathfinder, defaults


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_pathfinder.get_config()
  config.task = "pathx"
  config.data.max_length = 128 * 128
  config.data.resolution = 128
  config.model.positions = "learned"
  train = config.train
  train.batch_size = 64
  # 160k train images / 64 = 2,500 steps per epoch: one epoch of warm-up; 200 epochs.
  train.warmup_steps, train.num_train_steps = 2_500, 500_000
  train.grad_clip_norm = 1.0
  # LRA evaluates once per epoch (eval_frequency = 160000 // 64) on 312 batches of 64
  # (num_eval_steps = 20000 // 64), the validation split less its last 32 images.
  train.eval_every, train.eval_batches = 2_500, 0
  # Ours every 5 epochs (resumable runs); LRA's every 100 (num_train_steps // 2).
  train.checkpoint_every = 2_500 * 5
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """A 2-core CPU run of a few minutes. Differs from LRA: 16,384 tokens are far out of reach
  for quadratic attention on a CPU, so this runs Path-X's model and optimiser settings on
  generated 32 px (easy) images, like configs/base_pathfinder.py:quick."""
  config.data.resolution, config.data.max_length = 32, 32 * 32
  base_pathfinder.quick(config)


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests (16 px images, see configs/base_pathfinder.py:tiny)."""
  base_pathfinder.tiny(config)


PRESETS = {"quick": quick, "tiny": tiny}
