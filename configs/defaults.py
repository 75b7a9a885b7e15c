"""Fields every config has. Task bases fill in their LRA values; a config is locked once
built, so a misspelt override (`--config.model.emb_dm=...`) is an error."""
import ml_collections


def shared_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = ""
  config.data_dir = ""   # an LRA release (or its task folder); "" = built-in/generated data
  config.cache_dir = ""  # generated data and caches; "" = $LRA_CACHE_DIR or ~/.cache/lra_zoo
  config.seed = 0        # model init, dropout and batch order
  config.data = ml_collections.ConfigDict({"max_length": 0})

  model = config.model = ml_collections.ConfigDict()
  model.attention = "transformer"
  model.attention_kwargs = ml_collections.ConfigDict()
  model.emb_dim = 0
  model.num_heads = 0
  model.num_layers = 0
  model.qkv_dim = 0
  model.mlp_dim = 0
  model.dropout_rate = 0.1
  model.attention_dropout_rate = 0.1
  model.pooling = "CLS"          # "CLS" (a prepended learned token) or "MEAN"
  model.positions = "sinusoidal"  # or "learned"
  model.activation = "gelu"      # LRA's MlpBlock uses GELU
  model.causal = False
  model.reversible = False       # RevNet residuals (Reformer sec. 3)
  model.ffn_chunk_size = 0       # chunked feed-forward (Reformer sec. 3); 0 = off
  model.dtype = "float32"        # or "bfloat16"

  train = config.train = ml_collections.ConfigDict()
  train.batch_size = 32
  train.learning_rate = 0.05
  train.schedule = "rsqrt"  # "rsqrt" (LRA's constant*linear_warmup*rsqrt_decay), "cosine", "constant"
  train.warmup_steps = 1000
  train.num_train_steps = 5000
  train.weight_decay = 0.1  # decoupled (AdamW), as flax.optim.Adam's weight_decay in LRA
  train.grad_clip_norm = 0.0  # 0 = no clipping
  train.b1 = 0.9
  train.b2 = 0.98
  train.eps = 1e-9
  train.eval_every = 1000
  train.eval_batches = 0     # 0 = the whole split
  train.checkpoint_every = 1000
  train.keep_checkpoints = 2
  train.log_every = 100
  return config


def attention(config: ml_collections.ConfigDict, name: str, **kwargs) -> ml_collections.ConfigDict:
  """Selects the attention variant and its settings (used by `<model>_<task>.py`)."""
  config.model.attention = name
  with config.unlocked():
    config.model.attention_kwargs = ml_collections.ConfigDict(kwargs)
  return config


def finalize(config: ml_collections.ConfigDict, preset: str | None,
             presets: dict) -> ml_collections.ConfigDict:
  """Applies a named preset (`configs/x.py:quick`) and locks the config."""
  if preset:
    if preset not in presets:
      raise ValueError(f"unknown config preset {preset!r}; known presets: "
                       f"{', '.join(sorted(presets))}")
    presets[preset](config)
  config.lock()
  return config
