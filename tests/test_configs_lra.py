"""The full (not preset) configs carry the original LRA repository's values, task by task.

Each value is pinned with the file of google-research/long-range-arena it comes from
(paths below are under lra_benchmarks/). Optimiser everywhere: flax.optim.Adam(beta1=0.9,
beta2=0.98, eps=1e-9, weight_decay) in each task's train.py create_optimizer.
"""
import importlib

import pytest

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


# The per-model configs of the LRA repository, (variant, task) -> what our full config must hold:
# sizes (emb, heads, layers, qkv, mlp), (dropout, attention dropout), pooling, (learning rate,
# weight decay) and the attention settings it fixes. Files: listops/configs/<v>_base.py,
# text_classification/configs/<v>_base.py, matching/configs/<v>_base.py (Sinkhorn's two are
# sinkhorn_transformer_base.py), image/configs/cifar10/<v>_base.py,
# image/configs/pathfinder32/<v>_base.py. Path-X (pathfinder128/) has only transformer_base.py.
VARIANTS = ("bigbird", "linear_transformer", "linformer", "local", "longformer", "performer",
            "reformer", "sinkhorn", "sparse_transformer", "synthesizer")
_TEXT_LIKE = {  # the task base: these tasks' per-model files set only model_type
    "listops": ((512, 8, 4, 512, 1024), (0.1, 0.1), "CLS", (0.05, 0.1)),
    "text": ((256, 4, 4, 256, 1024), (0.1, 0.1), "CLS", (0.05, 0.1)),
    "retrieval": ((128, 4, 4, 128, 512), (0.1, 0.1), "CLS", (0.05, 0.1)),
}
LRA_MODEL_CONFIGS = {(v, t): row + ({},) for v in VARIANTS for t, row in _TEXT_LIKE.items()}
LRA_MODEL_CONFIGS.update({
    # listops/configs/performer_base.py: model_kwargs attention_fn_cls='softmax',
    # attention_fn_kwargs(ortho_scaling=0.0, nb_features=2) (listops/train.py passes them on).
    ("performer", "listops"): _TEXT_LIKE["listops"] + (
        {"kernel": "softmax", "num_features": 2, "scaling": "chi"},),
    # text_classification/configs/linformer_base.py sets config.low_rank_features = 32 outside
    # config.model, which text_classification/train.py never reads: LRA ran the default 16.
    ("linformer", "text"): _TEXT_LIKE["text"] + ({"k": 16},),
    # .../synthesizer_base.py's top-level synthesizer_mode/k/ignore_dot_product are likewise
    # unread: LRA ran SynthesizerEncoder's default mode 'random'.
    ("synthesizer", "text"): _TEXT_LIKE["text"] + ({"mode": "random"},),
    # image/configs/cifar10/<v>_base.py over base_cifar10_config.py (32/1/1/32/64, 0.3/0.2, CLS,
    # lr 5e-4, weight decay 0). bigbird_base.py's `num_head = 4` is a typo for num_heads.
    ("bigbird", "image"): ((128, 4, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0),
                           {"block_size": 64}),
    ("linear_transformer", "image"): ((128, 8, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0), {}),
    ("linformer", "image"): ((128, 8, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0), {}),
    ("local", "image"): ((128, 2, 1, 64, 128), (0.3, 0.2), "MEAN", (5e-4, 0.0),
                         {"block_size": 64}),
    # longformer: LongformerEncoder's global_mask=None, no global tokens (and no CLS to pool)
    ("longformer", "image"): ((128, 4, 4, 64, 128), (0.3, 0.2), "MEAN", (5e-4, 0.0),
                              {"global_positions": ()}),
    ("performer", "image"): ((128, 8, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0), {}),
    ("reformer", "image"): ((64, 8, 4, 32, 64), (0.3, 0.2), "CLS", (5e-4, 0.0), {}),
    ("sinkhorn", "image"): ((32, 1, 1, 32, 64), (0.1, 0.2), "CLS", (5e-4, 0.7),
                            {"block_size": 64}),
    ("sparse_transformer", "image"): ((128, 8, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0), {}),
    ("synthesizer", "image"): ((128, 8, 1, 64, 128), (0.3, 0.2), "CLS", (5e-4, 0.0),
                               {"mode": "random"}),
    # image/configs/pathfinder32/<v>_base.py over base_pathfinder32_config.py (32/2/1/16/32,
    # 0.1/0.1, MEAN, lr 1e-3, weight decay 0); none sets attention_dropout_rate.
    ("bigbird", "pathfinder"): ((64, 2, 4, 32, 64), (0.2, 0.1), "MEAN", (1e-3, 0.0),
                                {"block_size": 64}),
    ("linear_transformer", "pathfinder"): ((128, 2, 1, 64, 128), (0.2, 0.1), "MEAN", (1e-3, 0.0),
                                           {}),
    ("linformer", "pathfinder"): ((32, 2, 1, 16, 32), (0.2, 0.1), "MEAN", (1e-3, 0.0), {}),
    ("local", "pathfinder"): ((64, 4, 2, 32, 64), (0.1, 0.1), "MEAN", (1e-3, 0.0),
                              {"block_size": 64}),
    ("longformer", "pathfinder"): ((32, 2, 2, 16, 32), (0.1, 0.1), "MEAN", (1e-3, 0.0),
                                   {"global_positions": ()}),
    ("performer", "pathfinder"): ((32, 8, 4, 16, 32), (0.2, 0.1), "MEAN", (1e-3, 0.0), {}),
    ("reformer", "pathfinder"): ((64, 8, 2, 32, 64), (0.2, 0.1), "MEAN", (1e-3, 0.0), {}),
    ("sinkhorn", "pathfinder"): ((32, 4, 2, 16, 64), (0.2, 0.1), "MEAN", (1e-3, 0.0),
                                 {"block_size": 64}),
    ("sparse_transformer", "pathfinder"): ((32, 8, 1, 16, 32), (0.2, 0.1), "MEAN", (1e-3, 0.0),
                                           {}),
    ("synthesizer", "pathfinder"): ((64, 4, 2, 32, 64), (0.2, 0.1), "MEAN", (1e-3, 0.0),
                                    {"mode": "random"}),
})


def _variant_config(variant, task, preset=None):
  return importlib.import_module(f"configs.{variant}_{task}").get_config(preset)


@pytest.mark.parametrize("variant,task", sorted(LRA_MODEL_CONFIGS))
def test_variant_full_config_is_lras_model_config(variant, task):
  model_sizes, dropouts, pooling, (lr, weight_decay), settings = LRA_MODEL_CONFIGS[variant, task]
  config = _variant_config(variant, task)
  assert config.model.attention == variant
  assert sizes(config) == model_sizes
  if variant in ("performer", "linear_transformer", "nystromformer"):
    # LRA's config sets an attention dropout rate that its FAVOR+ / elu+1 attention never uses
    # (no attention weights); ours says 0, and a nonzero rate is refused at build time.
    dropouts = (dropouts[0], 0.0)
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == dropouts
  assert config.model.pooling == pooling
  assert (config.train.learning_rate, config.train.weight_decay) == (lr, weight_decay)
  for name, value in settings.items():
    assert config.model.attention_kwargs[name] == value, name
  # The rest of the protocol is the task's (pinned above for the Transformer).
  reference = importlib.import_module(f"configs.transformer_{task}").get_config()
  assert config.data.max_length == reference.data.max_length
  assert config.model.positions == reference.model.positions
  assert schedule(config)[2:5] == schedule(reference)[2:5]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_pathx_config_is_the_task_base(variant):
  # The LRA repository has no per-model Path-X config (image/configs/pathfinder128/ holds only
  # transformer_base.py): every variant runs the base Path-X model.
  config, reference = _variant_config(variant, "pathx"), transformer_pathx.get_config()
  assert sizes(config) == sizes(reference)
  # Attention dropout 0 where the variant forms no attention weights (see the test above).
  weightless = variant in ("performer", "linear_transformer", "nystromformer")
  assert (config.model.dropout_rate, config.model.attention_dropout_rate) == (
      0.1, 0.0 if weightless else 0.1)
  assert schedule(config) == schedule(reference)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", ["image", "pathfinder"])
@pytest.mark.parametrize("preset", ["quick", "tiny"])
def test_presets_still_shrink_the_variants_lra_models(variant, task, preset):
  base = importlib.import_module(f"configs.base_{task}").get_config(preset)
  assert sizes(_variant_config(variant, task, preset)) == sizes(base)
