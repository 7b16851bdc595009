"""Starting a run from another run's export (`init_from`, or a DAG's `init` input): CodeGen's Multi -> Mono.

The driver checks the export against the run before any worker starts (the same model shape, the same
tokenizer as the shards); each worker then loads the weights into its model before DeepSpeed wraps it, so
the optimizer's copies of the weights start from them too.
"""

from __future__ import annotations

import hashlib

from codemill import storage
from codemill.config import ConfigError
from codemill.stages import TOKENIZE_TOKENIZER
from codemill.train.export import TOKENIZER_FILE, export_metadata
from codemill.train.model_config import PRESETS, ModelConfig

# What the weights' tensors depend on; dropout, masking and checkpointing may differ between the runs.
SHAPE_FIELDS = ("num_layers", "hidden_size", "num_heads", "ffn_hidden_size", "vocab_size", "max_seq_length")


def shape(config: ModelConfig) -> dict[str, int]:
    return {name: getattr(config, name) for name in SHAPE_FIELDS}


def check_shape(uri: str, exported: ModelConfig, preset: str) -> None:
    """Refuse an export whose weights do not fit the model `preset` builds, naming both shapes."""
    theirs, ours = shape(exported), shape(PRESETS[preset])
    if theirs == ours:
        return
    match = next((name for name, p in PRESETS.items() if shape(p) == theirs), None)
    hint = f"set model.preset={match}" if match else "no preset has the export's shape"
    raise ConfigError(f"init_from {uri}: the export's model has shape {theirs}, but model.preset={preset} builds "
                      f"{ours}: {hint}, or start from an export of a {preset} model")


def check_tokenizer(uri: str, data_uri: str) -> None:
    """The export's token ids must mean what the shards' ids mean."""
    theirs = _digest(storage.join(uri, TOKENIZER_FILE))
    ours = _digest(storage.join(data_uri, TOKENIZE_TOKENIZER))
    if theirs != ours:
        raise ConfigError(f"init_from {uri}: its tokenizer.json (sha256 {theirs[:12]}) differs from the one the "
                          f"shards of {data_uri} were made with ({ours[:12]}): the embeddings would be read for "
                          f"other tokens; tokenize with the export's tokenizer")


def _digest(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def check_export(uri: str, data_uri: str, preset: str) -> dict:
    """All the driver's checks; returns the export's metadata (its config and the step it ended at)."""
    if not storage.exists(storage.join(uri, TOKENIZER_FILE)):
        raise ConfigError(f"init_from {uri}: not a train stage's export/ (no {TOKENIZER_FILE}); point it at "
                          f"<train output>/export")
    metadata = export_metadata(uri)
    check_shape(uri, ModelConfig.from_dict(metadata), preset)
    check_tokenizer(uri, data_uri)
    return metadata


def load_weights(model, uri: str) -> None:
    """The export's weights into `model` (any dtype: they are converted to the model's)."""
    from safetensors.torch import load

    from codemill.train.export import WEIGHTS_FILE

    state = load(storage.read_bytes(storage.join(uri, WEIGHTS_FILE)))
    model.load_state_dict(state, strict=True)
