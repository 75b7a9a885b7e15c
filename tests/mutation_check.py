"""The mutation check: small breaking changes the suite must catch.

Each `Mutation` replaces one exact line fragment of the code (it must occur exactly once in its
file) in a copy of the repository and runs the named tests there; the mutation is caught when
at least one of them fails. Run every entry, two at a time:

    python -m pytest -m mutations -n 2            # about 10 minutes on 2 cores
    python -m pytest -m mutations -k bigbird      # the entries whose name matches

It is not part of the default run (`pytest.ini` deselects the `mutations` marker);
`tests/test_mutation_list.py`, which is, checks that every entry still applies and names
existing tests, and that every registered mixer has an entry.
"""
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str   # relative to the repository root
  old: str    # occurs exactly once in the file
  new: str
  tests: tuple[str, ...]  # pytest node ids; at least one must fail
  why: str = ""           # the issue or audit finding it keeps fixed


MUTATIONS: list[Mutation] = [
    # Issue 16, section 1: mutations an audit found passing the suite.
    Mutation("train_step_never_updates", "train.py",
             "updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)",
             "updated = state.replace(step=state.step + 1)",
             ("tests/test_train.py::test_the_train_step_updates_parameters_and_fits_one_batch",),
             "parameters never updated passed every end-to-end run"),
    Mutation("train_batches_never_reshuffle", "lra/batches.py",
             "order = np.random.default_rng([seed, epoch]).permutation(n)",
             "order = np.random.default_rng([seed, 0]).permutation(n)",
             ("tests/test_batches.py::test_each_epoch_is_a_new_permutation_of_the_whole_split",),
             "train_batches reshuffling across epochs was untested"),
    Mutation("train_batches_too_small_split_accepted", "lra/batches.py",
             "  if n < batch_size:", "  if n < 0:",
             ("tests/test_batches.py::"
              "test_split_smaller_than_a_batch_is_an_error_naming_both_sizes",),
             "the too-small-split error was untested"),
    Mutation("eval_batches_mark_a_real_row_padded", "lra/batches.py",
             "valid[len(rows):] = False", "valid[len(rows) - 1:] = False",
             ("tests/test_batches.py::"
              "test_eval_batches_cover_the_split_in_order_once_with_the_last_padded",)),
    Mutation("checkpoints_keep_one_too_many", "lra/checkpoints.py",
             "options=options(max(keep, 1)))", "options=options(max(keep, 1) + 1))",
             ("tests/test_checkpoints.py::"
              "test_keeps_the_newest_latest_and_one_best_across_reopening",),
             "lra/checkpoints had no test module"),
    Mutation("release_accepts_an_incomplete_folder", "lra/release.py",
             "if all((candidate / f).is_file() for f in required):",
             "if any((candidate / f).is_file() for f in required):",
             ("tests/test_release.py::test_an_incomplete_folder_is_skipped_for_a_complete_one",),
             "lra/release had no test module"),
    Mutation("run_log_resume_drops_the_restored_step", "lra/run_log.py",
             "if step <= resume_step:", "if step < resume_step:",
             ("tests/test_run_log.py::test_resume_keeps_records_up_to_the_step_and_appends",),
             "lra/run_log had no test module"),
    Mutation("tasks_pathx_loads_images", "lra/tasks.py",
             '"pathx": "pathfinder"}', '"pathx": "image"}',
             ("tests/test_tasks.py::test_load_task_calls_its_modules_load_with_the_config",),
             "lra/tasks had no test module"),
    Mutation("tfds_source_shuffles_files", "lra/tfds_source.py",
             "shuffle_files=False)", "shuffle_files=True)",
             ("tests/test_tfds_source.py::test_what_tfds_load_is_asked_for",),
             "lra/tfds_source had no test module"),
    Mutation("eval_counts_padded_rows_against_a_hand_count", "train.py",
             'valid = batch["valid"].astype(jnp.float32)',
             'valid = jnp.ones_like(batch["valid"], jnp.float32)',
             ("tests/test_eval.py::test_padded_last_batch_counts_only_the_real_examples",),
             "test_eval compared with train.evaluate, the code under test"),
    Mutation("train_step_applies_zero_gradients", "train.py",
             "updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)",
             "updated = state.apply_gradients(grads=jax.tree_util.tree_map(jnp.zeros_like, grads))",
             ("tests/test_train.py::test_tiny_run_writes_a_self_describing_run_dir",),
             "end-to-end runs checked step counts and finite losses only"),
    Mutation("test_at_best_validation_is_the_final_test", "train.py",
             'dict(results["splits"]["test"]) if best[2] == results["steps"] else',
             'dict(results["splits"]["test"]) if True else',
             ("tests/test_train.py::test_tiny_run_writes_a_self_describing_run_dir",),
             "test_at_best_validation in results.json was never checked"),
    Mutation("devices_divisibility_unchecked", "lra/parallel.py",
             "  if batch_size % devices:", "  if False:",
             ("tests/test_train.py::test_batch_not_divisible_by_the_devices_is_named",),
             "the batch-not-divisible-by-devices error was untested"),
    Mutation("benchmark_ratio_against_the_fastest_exact", "lra/benchmark.py",
             "reference[length] = (dense or main)[0]", "reference[length] = exact[0]",
             ("tests/test_benchmark.py::test_ratios_of_every_row_are_recomputed_from_the_raw_numbers",),
             "test_benchmark compared the Transformer's ratio with itself"),
    Mutation("optim_adam_ignores_config_b2", "lra/optim.py",
             "b1=train.b1, b2=train.b2,", "b1=train.b1, b2=0.999,",
             ("tests/test_optim.py::test_three_updates_equal_adamw_written_out",),
             "test_optim checked isinstance only"),
    Mutation("reversible_branch_ignores_activation", "models/blocks.py",
             "self.dropout_rate, self.attention_dropout_rate, self.activation,",
             'self.dropout_rate, self.attention_dropout_rate, "relu",',
             ("tests/test_models.py::"
              "test_reversible_config_builds_revnet_residuals_with_matching_gradients",),
             "'reversible honoured' checked that a parameter key exists"),
    Mutation("reversible_backward_drops_a_gradient", "models/reversible.py",
             "dy2 = dy2 + df_x2", "dy2 = df_x2",
             ("tests/test_models.py::"
              "test_reversible_config_builds_revnet_residuals_with_matching_gradients",)),
    Mutation("config_causal_not_passed", "models/classifier.py",
             'causal = overrides.get("causal", model_cfg.get("causal", False))',
             'causal = overrides.get("causal", False)',
             ("tests/test_model_options.py::test_causal_config_keeps_each_position_blind_to_later_tokens",),
             "model.causal=True end to end was untested"),
    Mutation("activation_name_ignored", "models/blocks.py",
             "    h = act(h)", "    h = nn.gelu(h)",
             ("tests/test_model_options.py::"
              "test_each_activation_name_gives_its_function_in_the_built_feed_forward",),
             "activations were untested"),
    Mutation("positions_none_adds_sinusoids", "models/embedding.py",
             "      pos = 0.0",
             "      pos = jnp.asarray(sinusoidal_table(total_len, self.features))[None, :length]",
             ("tests/test_model_options.py::test_without_positions_the_encoder_is_permutation_equivariant",),
             'positions="none" was untested'),
    Mutation("eval_best_never_falls_back", "eval.py",
             'if restored is None and which == "best":', "if False:",
             ("tests/test_eval.py::test_eval_restores_last_and_best",),
             "eval.py's fallback from best to latest was untested"),
    Mutation("eval_accepts_any_split", "eval.py",
             "if split not in SPLITS:", "if False:",
             ("tests/test_eval.py::test_eval_names_a_bad_split_or_checkpoint",),
             "eval.py's bad-flag errors were untested"),
    Mutation("param_group_gets_the_default_learning_rate", "lra/optim.py",
             '_adamw(train, group["learning_rate"], group["weight_decay"])',
             '_adamw(train, train.learning_rate, group["weight_decay"])',
             ("tests/test_optim.py::test_param_groups_update_equals_adamw_written_out_per_group",)),
    Mutation("empty_settings_group_refuses_resume", "lra/run_log.py",
             "elif a != b and not (_absent_or_empty(a) and _absent_or_empty(b)):",
             "elif a != b:",
             ("tests/test_run_log.py::"
              "test_a_settings_group_added_later_with_an_empty_default_is_no_difference",)),
    # Attention: section 1's findings, then one key line per mixer.
    Mutation("bigbird_drops_right_window_block", "models/attention/bigbird.py",
             "  window_ok = (window >= 0) & (window < n)",
             "  window_ok = (window >= 0) & (window < n) & (window <= middle[:, None])",
             ("tests/test_attention_bigbird.py::test_sparse_path_matches_the_papers_pattern",),
             "the reference was built from bigbird_plan; this passed all 9 BigBird tests"),
    Mutation("bigbird_drops_last_globals", "models/attention/bigbird.py",
             "  first, last = g - g // 2, g // 2", "  first, last = g - g // 2, 0",
             ("tests/test_attention_bigbird.py::test_sparse_path_matches_the_papers_pattern",)),
    Mutation("bigbird_random_block_inside_the_window", "models/attention/bigbird.py",
             "candidates = np.flatnonzero(~is_global & (np.abs(np.arange(n) - m) > 1))",
             "candidates = np.flatnonzero(~is_global & (np.abs(np.arange(n) - m) > 0))",
             ("tests/test_attention_bigbird.py::test_sparse_path_matches_the_papers_pattern",)),
    Mutation("transformer_ignores_attention_dropout", "models/attention/transformer.py",
             "    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)",
             "    weights = weights",
             ("tests/test_attention.py::test_attention_dropout_in_training",),
             "only deterministic=True was checked registry-wide"),
    Mutation("blocked_ignores_attention_dropout", "models/attention/blocked_softmax.py",
             "p = p * _keep(rng, qi, ki, p.shape, dropout_rate, p.dtype)", "p = p",
             ("tests/test_attention.py::test_attention_dropout_in_training",)),
    Mutation("cross_attention_reads_keys_from_x", "models/attention/base.py",
             "kv_input = x if context is None else context", "kv_input = x",
             ("tests/test_attention_cross.py::"
              "test_base_projects_queries_from_x_and_keys_values_from_context_with_out_dim",),
             "cross attention was checked for shapes only"),
    Mutation("cross_attention_ignores_context_padding", "models/attention/base.py",
             "kv_mask = mask if context is None else context_mask",
             "kv_mask = mask if context is None else None",
             ("tests/test_attention_cross.py::test_base_context_padding_is_hidden",)),
    Mutation("out_dim_ignored", "models/attention/base.py",
             "out_dim = self.out_dim or x.shape[-1]", "out_dim = x.shape[-1]",
             ("tests/test_attention_cross.py::"
              "test_base_projects_queries_from_x_and_keys_values_from_context_with_out_dim",),
             "out_dim was untested"),
    Mutation("padding_zeroed_only_under_jit", "models/attention/masks.py",
             "  if q_mask is None:\n    return out",
             "  if q_mask is None or not isinstance(out, jax.core.Tracer):\n    return out",
             ("tests/test_attention.py::test_jit_matches_no_jit",),
             "test_jit_matches_no_jit compared jit with jit"),
    Mutation("transformer_unnormalised_softmax", "models/attention/transformer.py",
             "  weights = jax.nn.softmax(logits, axis=-1)", "  weights = jnp.exp(logits)",
             ("tests/test_attention_cross.py::test_transformer_cross_is_exact_softmax",)),
    Mutation("performer_wrong_feature_sign", "models/attention/favor_streamed.py",
             "- 0.5 * jnp.sum(x * x, axis=-1, keepdims=True))",
             "+ 0.5 * jnp.sum(x * x, axis=-1, keepdims=True))",
             ("tests/test_attention_cross.py::test_performer_cross_is_its_feature_formula",),
             "Performer's cross-attention values were never checked"),
    Mutation("linear_transformer_padded_keys_counted", "models/attention/feature_maps.py",
             "    phi_k = jnp.where(kv_mask[:, :, None, None], phi_k, 0.0)", "    phi_k = phi_k",
             ("tests/test_attention_cross.py::test_linear_transformer_cross_is_its_kernel_formula",)),
    Mutation("performer_features_unscaled", "models/attention/performer.py",
             "  x = x / jnp.sqrt(jnp.sqrt(float(x.shape[-1])))", "  x = x",
             ("tests/test_attention_performer.py::test_causal_favor_converges_to_causal_softmax",),
             "the causal reference imported softmax_log_features, the code under test"),
    Mutation("performer_relu_kernel_without_relu", "models/attention/performer.py",
             'phi_q = jax.nn.relu(jnp.einsum("blhd,md->blhm", q, projection)) + RELU_KERNEL_EPS',
             'phi_q = jnp.einsum("blhd,md->blhm", q, projection) + RELU_KERNEL_EPS',
             ("tests/test_attention_cross.py::test_performer_cross_is_its_feature_formula",)),
    Mutation("linformer_values_projected_by_e", "models/attention/linformer.py",
             "projected_v = _project_length(v, value_projection[:, :length])",
             "projected_v = _project_length(v, key_projection[:, :length])",
             ("tests/test_attention_cross.py::test_linformer_cross_is_its_projection_formula",),
             "Linformer's cross-attention values were never checked"),
    Mutation("synthesizer_mixture_unnormalised", "models/attention/synthesizer.py",
             "  alpha = jax.nn.softmax(weight_logits)", "  alpha = weight_logits",
             ("tests/test_attention_cross.py::test_synthesizer_cross_mixes_its_synthesised_logits",),
             "Synthesizer's cross-attention values were never checked"),
    Mutation("local_no_look_back", "models/attention/local.py",
             "  offsets = (-1, 0) if look_back else (0,)", "  offsets = (0,) if look_back else (0,)",
             ("tests/test_attention_local.py::test_matches_dense_block_pattern",)),
    Mutation("longformer_window_one_short", "models/attention/longformer.py",
             "(jnp.abs(delta) <= span)", "(jnp.abs(delta) < span)",
             ("tests/test_attention_longformer.py::test_matches_dense_window_and_global_pattern",)),
    Mutation("sparse_transformer_strided_overlaps_local", "models/attention/sparse_transformer.py",
             "      in_2 = in_2 & (jnp.abs(block_p - block_m) >= 2)",
             "      in_2 = in_2 & (jnp.abs(block_p - block_m) >= 1)",
             ("tests/test_attention_sparse_transformer.py::test_matches_dense_pattern",)),
    Mutation("nystromformer_pinv_coefficient", "models/attention/nystromformer.py",
             "(13 * eye - az @ (15 * eye - az @ (7 * eye - az)))",
             "(13 * eye - az @ (15 * eye - az @ (6 * eye - az)))",
             ("tests/test_attention_nystromformer.py::test_pinv_iteration_converges_to_numpy_pinv",)),
    Mutation("sinkhorn_local_block_masked", "models/attention/sinkhorn.py",
             "local_logits = jnp.where(local_allowed, local_logits, neg)",
             "local_logits = jnp.where(local_allowed, local_logits, neg) - 1e9",
             ("tests/test_attention_sinkhorn.py::test_one_block_is_exact_attention",)),
    Mutation("reformer_hash_not_angular", "models/attention/reformer.py",
             "jnp.argmax(jnp.concatenate([rotated, -rotated], axis=-1), axis=-1)",
             "jnp.argmax(jnp.concatenate([rotated, rotated], axis=-1), axis=-1)",
             ("tests/test_attention_reformer.py::test_hashing_is_deterministic_for_a_key_and_angular",)),
    Mutation("weightless_variant_accepts_a_dropout_rate", "models/attention/registry.py",
             'if context.get("dropout_rate") and "dropout_rate" not in fields:',
             "if False:",
             ("tests/test_attention.py::"
              "test_a_variant_without_attention_dropout_refuses_a_rate_and_its_configs_set_zero",),
             "a variant that ignores dropout_rate passed"),
    Mutation("linear_transformer_relu_features", "models/attention/linear_transformer.py",
             "return jax.nn.elu(x) + 1.0",
             "return jax.nn.relu(x) + 1.0",
             ("tests/test_attention_linear_transformer.py",),
             "the test imported the feature map it checked"),
    # Issue 11: the sequence mixers, the block options and the registry kinds.
    Mutation("s4d_zoh_without_1_over_A", "models/attention/s4d.py",
             "return dA, (dA - 1.0) / A * B", "return dA, (dA - 1.0) * B",
             ("tests/test_s4d.py::test_matches_sequential_reference",)),
    Mutation("s4d_inv_init_formula", "models/attention/s4d.py",
             "imag = state_size / math.pi * (state_size / (2 * n + 1) - 1)",
             "imag = state_size / math.pi * (state_size / (2 * n + 1))",
             ("tests/test_s4d.py::test_s4d_lin_and_inv_initialisation",)),
    Mutation("s4d_vandermonde_blocks_misaligned", "models/attention/s4d.py",
             "(step * jnp.arange(blocks, dtype=jnp.float32))",
             "((step - 1) * jnp.arange(blocks, dtype=jnp.float32))",
             ("tests/test_s4d.py::test_matches_sequential_reference",
              "tests/test_h3.py::test_matches_sequential_reference")),
    Mutation("fft_backward_kernel_not_reversed", "models/attention/s4d.py",
             "k = k + jnp.pad(backward_kernel[:, ::-1], ((0, 0), (length, 0)))",
             "k = k + jnp.pad(backward_kernel, ((0, 0), (length, 0)))",
             ("tests/test_s4d.py::test_matches_sequential_reference",
              "tests/test_long_conv.py::test_matches_direct_convolution_reference")),
    Mutation("long_conv_squash_without_threshold", "models/attention/long_conv.py",
             "jnp.maximum(jnp.abs(kernel) - lam, 0.0)", "jnp.maximum(jnp.abs(kernel), 0.0)",
             ("tests/test_long_conv.py::test_matches_direct_convolution_reference",)),
    Mutation("long_conv_padding_not_zeroed", "models/attention/long_conv.py",
             "u = jnp.where(mask[..., None], u, 0.0)", "u = u",
             ("tests/test_long_conv.py::test_padding_values_do_not_reach_real_outputs",
              "tests/test_sequence_mixers.py::test_padding_invariance")),
    Mutation("s5_zoh_input_matrix", "models/attention/s5.py",
             "return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b_tilde",
             "return lam_bar, (lam_bar / lam)[:, None] * b_tilde",
             ("tests/test_s5.py::test_matches_sequential_reference",)),
    Mutation("s5_hippo_n_not_legs", "models/attention/s5.py",
             "p = np.sqrt(np.arange(n) + 0.5)", "p = np.sqrt(np.arange(n) + 1.0)",
             ("tests/test_s5.py::"
              "test_hippo_n_is_the_normal_part_of_legs_and_its_eigendecomposition",)),
    Mutation("lru_without_gamma", "models/attention/lru.py",
             "b = (b_re + 1j * b_im) * jnp.exp(gamma_log)[:, None]", "b = (b_re + 1j * b_im)",
             ("tests/test_lru.py::test_matches_sequential_reference",)),
    Mutation("lru_ring_not_uniform_by_area", "models/attention/lru.py",
             "u * (r_max ** 2 - r_min ** 2) + r_min ** 2", "u * (r_max - r_min) + r_min",
             ("tests/test_lru.py::test_ring_is_uniform_by_area_and_phase_uniform",)),
    Mutation("lru_backward_scan_runs_forward", "models/attention/lru.py",
             "y = y + read(c_backward, diagonal_scan(lam, bu, reverse=True))",
             "y = y + read(c_backward, diagonal_scan(lam, bu, reverse=False))",
             ("tests/test_lru.py::test_matches_sequential_reference",
              "tests/test_sequence_mixers.py::test_causal_no_leak")),
    Mutation("diagonal_scan_padding_leaks_backwards", "models/attention/_diagonal_scan.py",
             "  return jnp.where(mask[..., None], x, 0.0)", "  return x",
             ("tests/test_s5.py::test_bidirectional_padding_invariance",
              "tests/test_lru.py::test_bidirectional_padding_invariance",
              "tests/test_sequence_mixers.py::test_padding_invariance")),
    Mutation("mega_ema_damping", "models/attention/mega.py",
             "return p, 1.0 - p * jax.nn.sigmoid(alpha)", "return p, 1.0 - jax.nn.sigmoid(alpha)",
             ("tests/test_mega.py::test_ema_matches_sequential_loop",)),
    Mutation("mega_chunk_attention_sees_the_future", "models/attention/mega.py",
             "valid = valid & jnp.tril(jnp.ones((chunk, chunk), bool))",
             "valid = valid & jnp.ones((chunk, chunk), bool)",
             ("tests/test_mega.py::test_causal_no_leak",
              "tests/test_sequence_mixers.py::test_causal_no_leak")),
    Mutation("mega_laplace_not_divided_by_keys", "models/attention/mega.py",
             "scores = scores / seen + bias", "scores = scores + bias",
             ("tests/test_mega.py::test_matches_numpy_reference",)),
    Mutation("h3_zoh_without_1_over_A", "models/attention/h3.py",
             "coef = c * b * (jnp.exp(dta) - 1.0) / a", "coef = c * b * (jnp.exp(dta) - 1.0)",
             ("tests/test_h3.py::test_matches_sequential_reference",)),
    Mutation("h3_shift_kernel_off_by_one", "models/attention/h3.py",
             "  idx = j + m\n", "  idx = j + m + 1\n",
             ("tests/test_h3.py::test_shift_kernel_is_a_fir_of_n_taps",)),
    Mutation("hyena_window_scaled_not_shifted", "models/attention/hyena.py",
             "return jnp.exp(-t * jnp.abs(deltas)) + shift",
             "return jnp.exp(-t * jnp.abs(deltas)) * (1.0 + shift)",
             ("tests/test_hyena.py::test_window_is_the_papers_exponential_decay",)),
    Mutation("hyena_filter_depends_on_the_input_length", "models/attention/hyena.py",
             "z0, t = positional_embedding(self.max_len, self.emb_dim)",
             "z0, t = positional_embedding(length, self.emb_dim)",
             ("tests/test_hyena.py::test_positional_embedding_and_length_independent_filters",
              "tests/test_sequence_mixers.py::test_padding_invariance")),
    Mutation("hyena_short_conv_sees_ahead", "models/attention/hyena.py",
             "padded = jnp.pad(u, ((0, 0), (taps - 1, 0), (0, 0)))",
             "padded = jnp.pad(u, ((0, 0), (taps - 2, 1), (0, 0)))",
             ("tests/test_hyena.py::test_causal_no_leak_gradient_and_forward",
              "tests/test_sequence_mixers.py::test_causal_no_leak")),
    Mutation("sgconv_scale_lengths", "models/attention/sgconv.py",
             "upsample(k, 2 ** max(0, i - 1), mode)", "upsample(k, 2 ** i, mode)",
             ("tests/test_sgconv.py::test_kernel_scales_decay_and_norm",)),
    Mutation("sgconv_decay_reversed", "models/attention/sgconv.py",
             "(multiplier[:, None] ** (count - i - 1))", "(multiplier[:, None] ** i)",
             ("tests/test_sgconv.py::test_matches_direct_convolution",)),
    Mutation("batch_norm_statistics_include_padding", "models/blocks.py",
             "dtype=dtype, name=name)(x, mask=mask[..., None])", "dtype=dtype, name=name)(x)",
             ("tests/test_blocks.py::test_batch_norm_uses_the_real_tokens_statistics_in_training",)),
    Mutation("half_glu2_gates_the_activation", "models/blocks.py",
             'return (h if self.kind == "half_glu1" else y) * gate', "return h * gate",
             ("tests/test_blocks.py::test_post_norm_with_an_output_stage_and_no_feed_forward",)),
    Mutation("post_norm_skipped", "models/blocks.py",
             '      x = norm("attention_norm")(x, mask, deterministic)\n', "      pass\n",
             ("tests/test_blocks.py::test_post_norm_with_an_output_stage_and_no_feed_forward",)),
    Mutation("batch_stats_not_updated_in_training", "train.py",
             '      batch_stats = updates["batch_stats"]', "      batch_stats = state.batch_stats",
             ("tests/test_blocks.py::test_batch_norm_trains_checkpoints_and_resumes",)),
    Mutation("sequence_mixer_gets_projections", "models/attention/base.py",
             '    if spec.kind == "sequence":', '    if False:',
             ("tests/test_sequence_mixers.py::"
              "test_the_shared_base_calls_a_sequence_mixer_without_projections",)),
    # Issue 12: scale-out and faults.
    Mutation("nonfinite_update_applied", "train.py",
             "keep = lambda new, old: jnp.where(finite, new, old)",
             "keep = lambda new, old: new",
             ("tests/test_train_faults.py::test_the_step_leaves_the_state_unchanged_on_a_nan_gradient",)),
    Mutation("accumulated_gradients_summed_not_averaged", "train.py",
             "grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grads)",
             "grads = grads",
             ("tests/test_parallel.py::test_gradient_accumulation_of_four_micro_batches_is_one_step_on_the_whole_batch",)),
    Mutation("micro_batches_contiguous", "train.py",
             "    return jnp.swapaxes(x, 0, 1)",
             "    return x.reshape(count, -1, *x.shape[2:])",
             ("tests/test_parallel.py::test_micro_batches_take_every_kth_row",)),
    Mutation("damaged_checkpoint_no_fallback", "lra/checkpoints.py",
             "    for candidate in steps:",
             "    for candidate in steps[:1]:",
             ("tests/test_checkpoints.py::test_a_damaged_newest_checkpoint_falls_back_to_the_previous",)),
    Mutation("disk_full_not_recognised", "lra/checkpoints.py",
             "    if isinstance(error, OSError) and error.errno == errno.ENOSPC:",
             "    if False:",
             ("tests/test_checkpoints.py::test_a_full_disk_keeps_the_previous_checkpoint",)),
    Mutation("nan_stop_after_saving", "train.py",
             "        if done % cfg.checkpoint_every == 0 or done == cfg.num_train_steps or stop:\n          check_window()",
             "        if done % cfg.checkpoint_every == 0 or done == cfg.num_train_steps or stop:\n          pass",
             ("tests/test_train_faults.py::test_a_nan_loss_stops_naming_its_step_and_keeps_the_last_good_checkpoint",)),
    Mutation("fsdp_switch_ignored", "lra/parallel.py",
             "    spec = fsdp_spec(tuple(shape), mesh.devices.size) if fsdp else PartitionSpec()",
             "    spec = PartitionSpec()",
             ("tests/test_parallel.py::test_four_devices_data_parallel_and_fsdp_give_the_one_device_loss_curve",)),
    Mutation("eval_rows_not_sharded_by_host", "lra/pipeline.py",
             "    batch = split.batch(global_rows[rows])",
             "    batch = split.batch(global_rows)",
             ("tests/test_pipeline.py",)),
    # Issue 13: the survey's other families, head/position and block options.
    Mutation("memory_compressed_slot_seen_from_its_first_position",
             "models/attention/memory_compressed.py",
             "slot_end = (jnp.arange(kc.shape[2]) + 1) * factor - 1",
             "slot_end = jnp.arange(kc.shape[2]) * factor",
             ("tests/test_attention_memory_compressed.py::test_causal_form_is_exactly_causal",)),
    Mutation("axial_causal_row_sees_the_next_column", "models/attention/axial.py",
             "tri = jnp.arange(cols)[None, :] <= jnp.arange(cols)[:, None]",
             "tri = jnp.arange(cols)[None, :] <= jnp.arange(cols)[:, None] + 1",
             ("tests/test_attention_axial.py::test_causal_form_reaches_exactly_the_raster_past",)),
    Mutation("routing_ema_without_the_half", "models/attention/routing.py",
             "decay * centroids + (1.0 - decay) / 2.0 * sums",
             "decay * centroids + (1.0 - decay) * sums",
             ("tests/test_attention_routing.py::test_ema_update_matches_a_hand_computation",)),
    Mutation("long_short_window_one_key_too_wide", "models/attention/long_short.py",
             "(k_pos < start + block + side)", "(k_pos <= start + block + side)",
             ("tests/test_attention_long_short.py::"
              "test_joint_softmax_equals_the_dense_reference",)),
    Mutation("skyformer_bandwidth_sqrt_p", "models/attention/skyformer.py",
             "scale = q.shape[-1] ** -0.25", "scale = q.shape[-1] ** -0.5",
             ("tests/test_attention_skyformer.py::"
              "test_all_rows_of_q_and_k_as_landmarks_is_exact_kernelized_attention",)),
    Mutation("h_transformer_correction_mask_wrong_quarter", "models/attention/h_transformer_1d.py",
             "      allowed[half:, :half] = False", "      allowed[:half, :half] = False",
             ("tests/test_attention_h_transformer_1d.py::"
              "test_levels_equal_the_dense_hierarchical_matrix",)),
    Mutation("rfa_gate_weights_the_new_key_by_g", "models/attention/rfa.py",
             "jax.nn.log_sigmoid(logits), jax.nn.sigmoid(-logits)",
             "jax.nn.log_sigmoid(logits), jax.nn.sigmoid(logits)",
             ("tests/test_attention_rfa.py::"
              "test_gated_causal_form_equals_the_recurrence_of_eq_7",)),
    Mutation("rfa_gaussian_features_without_sin", "models/attention/rfa.py",
             "[jnp.sin(logits), jnp.cos(logits)]", "[jnp.cos(logits), jnp.cos(logits)]",
             ("tests/test_attention_rfa.py::test_linear_forms_equal_the_dense_kernel_reference",)),
    Mutation("cosformer_angle_pi_not_half_pi", "models/attention/cosformer.py",
             "angle = (0.5 * math.pi) * positions / m[:, None]",
             "angle = math.pi * positions / m[:, None]",
             ("tests/test_attention_cosformer.py::"
              "test_linear_forms_equal_dense_eq_9_with_m_the_real_length",)),
    Mutation("luna_unpack_reads_p_not_y_p", "models/attention/luna.py",
             'heads(dense("k", y_p)), heads(dense("v", y_p))',
             'heads(dense("k", p)), heads(dense("v", p))',
             ("tests/test_attention_luna.py::"
              "test_matches_the_dense_reference_and_padding_moves_nothing",)),
    Mutation("isab_inner_rff_without_residual", "models/attention/isab.py",
             'return apply(norm("norm1"), h + ff)', 'return apply(norm("norm1"), ff)',
             ("tests/test_attention_isab.py::"
              "test_the_post_norm_block_is_eq_8_9_and_padding_never_enters",)),
    Mutation("fnet_bluestein_chirp_conjugated", "models/attention/fnet.py",
             "angle = -jnp.pi * phase.astype(jnp.float32)",
             "angle = jnp.pi * phase.astype(jnp.float32)",
             ("tests/test_fnet.py::test_bluestein_is_the_dft_of_each_real_length",)),
    Mutation("aft_local_band_exp_not_expm1", "models/attention/aft.py",
             "return jnp.where(inside, jnp.expm1(w), 0.0)",
             "return jnp.where(inside, jnp.exp(w), 0.0)",
             ("tests/test_attention_aft.py::test_local_matches_the_dense_reference",)),
    Mutation("rope_not_a_rotation", "models/attention/positions.py",
             "x2 * cos + x1 * sin", "x2 * cos - x1 * sin",
             ("tests/test_attention_options.py::"
              "test_rope_scores_depend_only_on_relative_position_and_keep_norms",)),
    Mutation("rope_frequencies_halved", "models/attention/positions.py",
             "theta = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)",
             "theta = base ** (-np.arange(0, d, 2, dtype=np.float64) / (2 * d))",
             ("tests/test_attention_options.py::"
              "test_rope_is_roformer_eq34_up_to_a_channel_permutation",)),
    Mutation("alibi_slopes_start_at_one", "models/attention/positions.py",
             "return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]",
             "return [2.0 ** (-8.0 * i / n) for i in range(n)]",
             ("tests/test_attention_options.py::test_alibi_slopes_follow_the_paper",)),
    Mutation("t5_bucket_direction_swapped", "models/attention/positions.py",
             "bucket = bucket + (distance < 0).astype(relative.dtype) * num_buckets",
             "bucket = bucket + (distance > 0).astype(relative.dtype) * num_buckets",
             ("tests/test_attention_options.py::test_t5_buckets_hand_checked",)),
    Mutation("grouped_query_head_reads_the_wrong_kv_head", "models/attention/base.py",
             "k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)",
             "k, v = jnp.tile(k, (1, 1, group, 1)), jnp.tile(v, (1, 1, group, 1))",
             ("tests/test_attention_options.py::test_shared_kv_heads_equal_mha_with_tied_heads",)),
    Mutation("gated_feed_forward_activates_the_wrong_branch", "models/blocks.py",
             'h = act(dense(self.mlp_dim, "gate")(x)) * dense(self.mlp_dim, "in")(x)',
             'h = dense(self.mlp_dim, "gate")(x) * act(dense(self.mlp_dim, "in")(x))',
             ("tests/test_blocks.py::test_gated_feed_forward_is_shazeers_glu_variant",)),
    Mutation("rezero_alpha_starts_at_one", "models/blocks.py",
             'scale = self.param("rezero_alpha", nn.initializers.zeros, ())',
             'scale = self.param("rezero_alpha", nn.initializers.ones, ())',
             ("tests/test_blocks.py::"
              "test_rezero_block_starts_as_the_identity_and_learns_its_alpha",)),
    # Decoder, encoder-decoder and incremental decoding (issue 14).
    Mutation("token_loss_counts_unweighted_tokens", "train.py",
             '"loss_sum": (loss * weights).sum(-1)', '"loss_sum": loss.sum(-1)',
             ("tests/test_train_tokens.py::"
              "test_row_metrics_count_only_the_weighted_target_tokens",)),
    Mutation("decoded_tokens_all_at_position_zero", "models/blocks.py",
             "        offset = index", "        offset = 0 * index",
             ("tests/test_decoding.py::test_step_by_step_decoding_equals_the_full_forward"
              "[transformer]",)),
    Mutation("decode_rope_and_bias_at_position_zero", "models/attention/base.py",
             "q_pos = k_pos = index[None]", "q_pos = k_pos = 0 * index[None]",
             ("tests/test_decoding.py::test_decoding_with_head_and_position_options",)),
    Mutation("window_cache_positions_off_by_one", "models/attention/kv_cache.py",
             "cached_pos.value = cached_pos.value.at[slot].set(index.astype(jnp.int32))",
             "cached_pos.value = cached_pos.value.at[slot].set(index.astype(jnp.int32) - 1)",
             ("tests/test_attention_local.py::"
              "test_decoding_step_by_step_matches_the_causal_forward",)),
    Mutation("linear_state_forgets_the_past", "models/attention/feature_maps.py",
             'state = state + jnp.einsum("bkm,bkd->bkmd", phi_k, v32)',
             'state = jnp.einsum("bkm,bkd->bkmd", phi_k, v32)',
             ("tests/test_attention_linear_transformer.py::"
              "test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_state",)),
    Mutation("xl_memory_keeps_its_gradient", "models/transformer_xl.py",
             "new_mems.append(jax.lax.stop_gradient(cat[", "new_mems.append((cat[",
             ("tests/test_transformer_xl.py::"
              "test_memory_carries_no_gradient_but_carries_information",)),
]


def by_name() -> dict[str, Mutation]:
  names = [m.name for m in MUTATIONS]
  duplicates = {n for n in names if names.count(n) > 1}
  if duplicates:
    raise ValueError(f"tests/mutation_check.py: mutation names used twice: {sorted(duplicates)}")
  return {m.name: m for m in MUTATIONS}


def apply(mutation: Mutation, root: Path) -> None:
  """Applies the mutation to `root`'s copy of its file; the fragment must occur exactly once."""
  target = root / mutation.path
  text = target.read_text()
  count = text.count(mutation.old)
  if count != 1:
    raise ValueError(f"mutation {mutation.name!r}: {mutation.path} contains {mutation.old!r} "
                     f"{count} times, expected exactly once")
  target.write_text(text.replace(mutation.old, mutation.new))


def repository_files(root: Path = ROOT) -> list[str]:
  """Tracked and untracked-but-not-ignored files: the working tree as a fresh clone sees it."""
  listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
  return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_repository(destination: Path, root: Path = ROOT) -> None:
  for name in repository_files(root):
    target = destination / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / name, target)


def run(mutation: Mutation, workspace: Path, timeout_s: float = 1200) -> tuple[str, str]:
  """('caught' | 'survived' | 'broken', pytest's output tail) for one mutation.

  'broken' means pytest could not run the named tests (exit status other than 0 or 1: a node
  id that no longer exists, an import error), so the entry itself needs fixing.
  """
  copy_repository(workspace)
  apply(mutation, workspace)
  env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
  command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             "-p", "no:xdist", *mutation.tests]
  done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                        timeout=timeout_s)
  tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
  verdict = {0: "survived", 1: "caught"}.get(done.returncode, "broken")
  return verdict, tail
