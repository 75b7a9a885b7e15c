"""The full (not preset) configs carry the original LRA repository's values, task by task.

Each value is pinned with the file of google-research/long-range-arena it comes from
(paths below are under lra_benchmarks/). Optimiser everywhere: flax.optim.Adam(beta1=0.9,
beta2=0.98, eps=1e-9, weight_decay) in each task's train.py create_optimizer.
"""
from configs import (base_image, base_pathfinder, transformer_image, transformer_listops,
                     transformer_pathfinder, transformer_pathx, transformer_retrieval,
                     transformer_text)


def sizes(config):
  m = config.model
  return m.emb_dim, m.num_heads, m.num_layers, m.qkv_dim, m.mlp_dim


def optimiser(config):
  t = config.train
  return t.b1, t.b2, t.eps


def schedule(config):
  t = config.train
  return (t.batch_size, t.learning_rate, t.schedule, t.warmup_steps, t.num_train_steps,
          t.weight_decay, t.grad_clip_norm)


def test_listops_full_config_is_lras():
  config = transformer_listops.get_config()
  # listops/configs/base_listops_config.py (transformer_base.py overrides nothing)
  assert sizes(config) == (512, 8, 4, 512, 1024)
  assert config.data.max_length == 2000
  # batch 32, lr 0.05, 'constant * linear_warmup * rsqrt_decay', warmup 1000, 5000 steps, wd 0.1
  assert schedule(config) == (32, 0.05, "rsqrt", 1000, 5000, 0.1, 0.0)
  assert config.train.eval_every == 50 and config.train.eval_batches == 0  # eval_frequency=50
  assert config.model.pooling == "CLS"  # pooling_mode (listops/train.py: the encoder's 'CLS')
  # models/transformer/transformer.py TransformerEncoder defaults (train.py passes neither)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.1, 0.1)
  assert config.model.positions == "sinusoidal"  # learn_pos_emb=False
  assert optimiser(config) == (0.9, 0.98, 1e-9)


def test_text_full_config_is_lras():
  config = transformer_text.get_config()
  # text_classification/configs/base_tc_config.py
  assert sizes(config) == (256, 4, 4, 256, 1024)
  assert config.data.max_length == 1000
  assert schedule(config) == (32, 0.05, "rsqrt", 8000, 20_000, 0.1, 0.0)
  assert config.train.eval_every == 100 and config.train.eval_batches == 0  # num_eval_steps=-1
  assert config.model.pooling == "CLS"  # classifier_pool
  # TransformerEncoder defaults
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.1, 0.1)
  assert config.model.positions == "sinusoidal"
  assert optimiser(config) == (0.9, 0.98, 1e-9)


def test_retrieval_full_config_is_lras():
  config = transformer_retrieval.get_config()
  # matching/configs/base_match_config.py
  assert sizes(config) == (128, 4, 4, 128, 512)
  assert config.data.max_length == 4000  # per document
  assert schedule(config) == (32, 0.05, "rsqrt", 8000, 5000, 0.1, 0.0)
  assert config.train.eval_every == 100 and config.train.eval_batches == 0
  assert config.model.pooling == "CLS"  # pooling_mode
  # models/transformer/transformer.py TransformerDualEncoder: no CLS token per tower;
  # models/layers/common_layers.py classifier_head_dual with interaction=None: [u, v]
  assert (config.model.interaction, config.model.tower_cls_token) == ("concat", False)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.1, 0.1)
  assert config.model.positions == "sinusoidal"
  assert optimiser(config) == (0.9, 0.98, 1e-9)


def test_image_full_config_is_lras():
  base, config = base_image.get_config(), transformer_image.get_config()
  # image/configs/cifar10/base_cifar10_config.py: model 32/1/1/32/64 ...
  assert sizes(base) == (32, 1, 1, 32, 64)
  # ... and image/configs/cifar10/transformer_base.py (since commit ee6649e): 128/8/1/64/128
  assert sizes(config) == (128, 8, 1, 64, 128)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.3, 0.2)
  assert (config.model.pooling, config.model.positions) == ("CLS", "learned")  # learn_pos_emb
  assert config.data.max_length == 1024
  # batch 256, lr 5e-4, 'constant * linear_warmup * cosine_decay', warmup 45000 // 256 = 175
  # (one epoch), 175 * 200 epochs, weight decay 0, grad_clip_norm None
  assert schedule(config) == (256, 5e-4, "cosine", 175, 35_000, 0.0, 0.0)
  assert config.train.eval_every == 175 and config.train.eval_batches == 0  # once per epoch
  assert optimiser(config) == (0.9, 0.98, 1e-9)


def test_pathfinder_full_config_is_lras():
  base, config = base_pathfinder.get_config(), transformer_pathfinder.get_config()
  # image/configs/pathfinder32/base_pathfinder32_config.py: 32/2/1/16/32, dropout 0.1 / 0.1
  assert sizes(base) == (32, 2, 1, 16, 32)
  assert (base.model.dropout_rate, base.model.attention_dropout_rate) == (0.1, 0.1)
  # image/configs/pathfinder32/transformer_base.py: 32/4/4/16/32 and dropout_rate 0.2 only
  assert sizes(config) == (32, 4, 4, 16, 32)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.2, 0.1)
  assert (config.model.pooling, config.model.positions) == ("MEAN", "sinusoidal")
  assert (config.data.resolution, config.data.max_length, config.data.difficulty) == (
      32, 1024, "hard")  # the paper's Pathfinder: pathfinder32, curv_contour_length_14
  # batch 512, lr 1e-3, cosine, warmup 160000 // 512 = 312, 312 * 200 epochs, wd 0, no clipping
  assert schedule(config) == (512, 1e-3, "cosine", 312, 62_400, 0.0, 0.0)
  assert config.train.eval_every == 312 and config.train.eval_batches == 0  # once per epoch
  assert optimiser(config) == (0.9, 0.98, 1e-9)


def test_pathx_full_config_is_lras():
  config = transformer_pathx.get_config()
  # image/configs/pathfinder128/base_pathfinder128_config.py (transformer_base.py overrides
  # nothing): 32/2/1/16/32, dropout 0.1 / 0.1, MEAN, learned positions
  assert sizes(config) == (32, 2, 1, 16, 32)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (0.1, 0.1)
  assert (config.model.pooling, config.model.positions) == ("MEAN", "learned")
  assert (config.data.resolution, config.data.max_length, config.data.difficulty) == (
      128, 16_384, "hard")
  # batch 64, lr 1e-3, cosine, warmup 160000 // 64 = 2500, 2500 * 200 epochs, wd 0, clip 1.0
  assert schedule(config) == (64, 1e-3, "cosine", 2_500, 500_000, 0.0, 1.0)
  assert config.train.eval_every == 2_500 and config.train.eval_batches == 0  # once per epoch
  assert optimiser(config) == (0.9, 0.98, 1e-9)
