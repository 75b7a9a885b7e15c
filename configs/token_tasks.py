"""Model fields of the token-level tasks (configs/base_copy.py, base_associative_recall.py,
base_byte_lm.py): the decoder and encoder-decoder modes. The LRA fields (sizes, dropout,
positions, ...) keep their meaning; these are added on top."""
import ml_collections


def add_model_fields(config: ml_collections.ConfigDict, *, encoder_decoder: bool) -> None:
  """Adds the decoder fields to `config.model` (before the config is locked)."""
  model = config.model
  model.tie_embeddings = False  # share the token embedding with the output projection
  if encoder_decoder:
    # The encoder is not causal (config.model.causal stays False); the model makes the
    # decoder causal. Decoder depth follows num_layers (also after a preset or an override of
    # num_layers) until it is set itself.
    model.num_decoder_layers = model.get_ref("num_layers") + 0
    model.cross_attention = "transformer"  # the decoder's attention over the encoder output
    model.cross_attention_kwargs = ml_collections.ConfigDict()
  else:
    model.causal = True
    # Transformer-XL segment-level recurrence (Dai et al. 2019); 0 = off.
    model.xl_memory_length = 0
    model.xl_segment_length = 0
