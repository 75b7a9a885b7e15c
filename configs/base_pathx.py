"""Path-X: Pathfinder at 128 x 128 (hard), 16,384 tokens, with the LRA repository's settings
(lra_tasks.md table): as Pathfinder-32 but learned positions, batch 64, gradient clipping 1.0,
500,000 steps."""
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
  train.eval_every = train.checkpoint_every = 2_500 * 5  # not in the table: every 5 epochs
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
