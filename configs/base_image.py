"""Image (grayscale CIFAR-10 as 1024 pixels) with the LRA repository's settings
(lra_benchmarks/image/configs/cifar10/base_cifar10_config.py)."""
import ml_collections

from configs import defaults

TRAIN_EXAMPLES = 45_000  # train[:90%]
NUM_EPOCHS = 200


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "image"
  config.data.max_length = 1024
  config.data.tfds_download = False  # True lets tfds.load download cifar10 itself
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 32, 1, 1
  model.qkv_dim, model.mlp_dim = 32, 64
  model.dropout_rate, model.attention_dropout_rate = 0.3, 0.2
  model.pooling, model.positions = "CLS", "learned"
  train = config.train
  steps_per_epoch = TRAIN_EXAMPLES // 256  # 175
  train.batch_size, train.learning_rate = 256, 5e-4
  # LRA: constant * linear_warmup * cosine_decay, warmup 1 epoch, one cycle over 200 epochs.
  train.schedule, train.warmup_steps = "cosine", steps_per_epoch
  train.num_train_steps = steps_per_epoch * NUM_EPOCHS  # 35,000
  train.weight_decay = 0.0
  # LRA evaluates once per epoch (eval_frequency = 45000 // 256) on the whole validation split
  # (num_eval_steps = 10000 // 256 = 39 batches, more than train[90%:]'s 19 full batches).
  train.eval_every, train.eval_batches = steps_per_epoch, 0
  # Ours every 10 epochs (resumable runs); LRA's every 100 (num_train_steps // 2).
  train.checkpoint_every = 10 * steps_per_epoch
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """CPU-sized: batch 32, 1500 steps of a 1-layer model on the full 1024-pixel sequences."""
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 2, 1, 32, 64
  train = config.train
  train.batch_size, train.learning_rate = 32, 1e-3  # differs from LRA: smaller batch, CPU
  train.warmup_steps, train.num_train_steps = 100, 1500
  train.weight_decay = 0.0  # Sinkhorn's LRA 0.7 would shrink a 1,500-step run's weights ~3x
  train.eval_every = train.checkpoint_every = 500
  train.eval_batches = 20
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests (run under tfds.testing.mock_data). Sequences stay 1024 long,
  so the model and batch are smaller than the other tasks' tiny presets."""
  quick(config)
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 8, 1, 1, 8, 16
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 4, 5, 12
  train.eval_every = train.checkpoint_every = 4
  train.eval_batches = 4
  train.log_every = 2


PRESETS = {"quick": quick, "tiny": tiny}
