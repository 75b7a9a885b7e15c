"""Byte-level language model (decoder-only; lra/byte_lm.py). Not an LRA task, so no LRA values
exist. The text: `config.data.text_file`, or a TFDS text data set (`config.data.tfds_name`), or
by default CPython's pydoc_data/topics.py (ships with Python; lra/byte_lm.py says more). The
full config is a 6-layer model of width 512 on 512-byte windows with LRA's optimiser; the
presets are CPU-sized."""
import ml_collections

from configs import defaults, token_tasks


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "byte_lm"
  data = config.data
  data.max_length = 512          # next-byte predictions per window
  data.text_file = ""            # any text file; "" = TFDS or the default text
  data.split_fractions = (0.9, 0.05, 0.05)  # train/validation/test spans of a single text
  data.tfds_name = ""            # e.g. "tiny_shakespeare"
  data.tfds_splits = ("train", "validation", "test")  # TFDS split names for our three
  data.tfds_text_feature = "text"
  data.tfds_download = False     # let TFDS download and prepare the data set
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 512, 8, 6
  model.qkv_dim, model.mlp_dim = 512, 2048
  token_tasks.add_model_fields(config, encoder_decoder=False)
  train = config.train
  train.num_train_steps, train.eval_every, train.checkpoint_every = 20_000, 1000, 1000
  train.eval_batches = 100
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """CPU-sized: 128-byte windows of the default text, 2 layers of width 128."""
  config.data.max_length = 128
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = (
      128, 4, 2, 128, 512)
  model.dropout_rate = model.attention_dropout_rate = 0.0
  train = config.train
  train.batch_size, train.schedule, train.learning_rate = 32, "cosine", 2e-3
  # Bits per byte fall below 3 within 500 steps (measured: 2.34 on validation at step 500 of
  # 2,000 with the Transformer); 1,000 steps keep the run within minutes on a CPU.
  train.warmup_steps, train.num_train_steps, train.weight_decay = 100, 1000, 0.0
  train.eval_every = train.checkpoint_every = 250
  train.eval_batches = 0  # the whole validation span (about 180 windows)
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests."""
  quick(config)
  config.data.max_length = 16
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 16, 2, 1, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 5, 12
  train.eval_every = train.checkpoint_every = 4
  train.eval_batches = 4
  train.log_every = 2


PRESETS = {"quick": quick, "tiny": tiny}
