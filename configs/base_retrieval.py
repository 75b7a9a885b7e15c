"""Retrieval (byte-level AAN document matching, dual encoder) with the LRA repository's
settings (lra_benchmarks/matching/configs/base_match_config.py)."""
import ml_collections

from configs import defaults


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = defaults.shared_config()
  config.task = "retrieval"
  config.data.max_length = 4000  # per text: two towers of 4000 bytes, 8K in total
  # Synthetic citation-matching pairs (lra/retrieval.py), NOT AAN: used only when this is True
  # and config.data_dir is empty. Sizes mirror the AAN splits.
  config.data.synthetic = ml_collections.ConfigDict(dict(
      use_when_no_release=False, num_train=147_086, num_eval=18_090, num_test=17_437,
      doc_length=4000, num_keys=64, num_citations=2, seed=0))
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers = 128, 4, 4
  model.qkv_dim, model.mlp_dim = 128, 512
  model.dropout_rate = model.attention_dropout_rate = 0.1
  # "CLS" here is LRA's: position 0 of each tower, the document's first byte, with no CLS token
  # prepended (LRA's dual encoder builds its encoder without classifier=True); the two pooled
  # vectors are concatenated, [u, v] (matching/train.py passes no `interaction`). See
  # models/dual_encoder.py. tower_cls_token=True / interaction="nli" ([u, v, u*v, u-v]) differ.
  model.pooling, model.positions = "CLS", "sinusoidal"
  model.interaction = "concat"   # Retrieval-only fields, read by models/build.py; or "nli"
  model.tower_cls_token = False
  train = config.train
  train.batch_size, train.learning_rate = 32, 0.05
  # As in the repository: warmup 8000 with only 5,000 steps, so the rate never reaches its
  # peak (0.05 * 5000/8000 / sqrt(8000) at the end).
  train.schedule, train.warmup_steps, train.num_train_steps = "rsqrt", 8000, 5000
  train.weight_decay = 0.1
  # LRA evaluates every 100 steps on the whole evaluation split (eval_frequency=100,
  # num_eval_steps=-1). Checkpoints: ours every 1000 steps (resumable runs); LRA's every 10000.
  train.eval_every, train.eval_batches = 100, 0
  return defaults.finalize(config, preset, PRESETS)


def quick(config: ml_collections.ConfigDict) -> None:
  """CPU-sized: SYNTHETIC pairs of ~128-byte documents (unless config.data_dir points at the
  release), a small dual encoder, 1000 steps (a few minutes on 2 cores)."""
  config.data.max_length = 128
  syn = config.data.synthetic
  syn.use_when_no_release = True
  syn.num_train, syn.num_eval, syn.num_test = 10_000, 1_000, 1_000
  syn.doc_length, syn.num_keys = 128, 16
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 4, 2, 64, 128
  model.dropout_rate = model.attention_dropout_rate = 0.0
  train = config.train
  train.learning_rate, train.warmup_steps, train.num_train_steps = 0.05, 200, 1000
  train.weight_decay = 0.0  # differs from LRA: 0.1 decoupled decay stalls tiny, short runs
  train.eval_every = train.checkpoint_every = 250
  train.log_every = 50


def tiny(config: ml_collections.ConfigDict) -> None:
  """Seconds-sized, for tests: a few hundred short synthetic pairs."""
  quick(config)
  config.data.max_length = 48
  syn = config.data.synthetic
  syn.num_train, syn.num_eval, syn.num_test = 256, 64, 64
  syn.doc_length, syn.num_keys = 48, 8
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 16, 2, 1, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.1
  train = config.train
  train.batch_size, train.warmup_steps, train.num_train_steps = 16, 5, 12
  train.eval_every = train.checkpoint_every = 4
  train.log_every = 2


PRESETS = {"quick": quick, "tiny": tiny}
