"""Associative recall (decoder-only LM; lra/associative_recall.py). Not an LRA task, so no LRA
values exist: the full config is Zoology's scale (Arora et al. 2023: 64 key-value pairs,
vocabulary 8,192 split into keys and values, 100,000 training and 3,000 test sequences, a
2-layer model) with LRA's optimiser; the presets are CPU-sized."""
import ml_collections

from configs import defaults, token_tasks


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "associative_recall"
  data = config.data
  data.num_pairs = 64
  data.num_keys, data.num_values = 4096, 4096  # separate key and value vocabularies
  # k1 v1 .. kN vN q a: follows num_pairs (also after an override) unless set itself
  data.max_length = data.get_ref("num_pairs") * 2 + 2
  data.num_train, data.num_val, data.num_test = 100_000, 3_000, 3_000
  data.seed = 0
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 256, 4, 2
  model.qkv_dim, model.mlp_dim = 256, 1024
  model.dropout_rate = model.attention_dropout_rate = 0.0
  token_tasks.add_model_fields(config, encoder_decoder=False)
  train = config.train
  train.num_train_steps, train.eval_every, train.checkpoint_every = 20_000, 1000, 1000
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """CPU-sized: 8 pairs over 16 keys and 16 values (18 tokens), 2 layers of width 64."""
  data = config.data
  data.num_pairs, data.num_keys, data.num_values = 8, 16, 16
  data.num_train, data.num_val, data.num_test = 50_000, 1_000, 1_000
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 4, 2, 64, 128
  model.dropout_rate = model.attention_dropout_rate = 0.0
  train = config.train
  train.batch_size, train.schedule, train.learning_rate = 64, "cosine", 2e-3
  # measured with the Transformer: chance-level (1/8) until ~1,200 steps, then 99.9% on
  # validation at 1,500 and 100% from 2,000 (test 100% after 4,000 steps, ~6 min on 2 cores)
  train.warmup_steps, train.num_train_steps, train.weight_decay = 200, 4000, 0.0
  train.eval_every = train.checkpoint_every = 500
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests: 3 pairs (8 tokens)."""
  quick(config)
  data = config.data
  data.num_pairs, data.num_keys, data.num_values = 3, 4, 4
  data.num_train, data.num_val, data.num_test = 64, 16, 16
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 16, 2, 1, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 5, 12
  train.eval_every = train.checkpoint_every = 4
  train.log_every = 2


PRESETS = {"quick": quick, "tiny": tiny}
