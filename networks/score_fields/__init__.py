"""DPF score fields: eps_theta(context pairs, t, query pairs) -> noise at the query pairs."""
from networks.score_fields.mlp_mixer import MLPMixerField
from networks.score_fields.perceiver_io import PerceiverIO
from networks.score_fields.transformer import TransformerEncoderField

__all__ = ["PerceiverIO", "TransformerEncoderField", "MLPMixerField"]
