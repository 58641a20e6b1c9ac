"""Peer networks from the field's libraries, swapped into a module in place of its own so that they are timed on
the same batches and sampling inputs: diffusers' UNet2DModel for a U-Net, transformers' Perceiver for a
PerceiverIO score field. A peer applies to a module whose network it can mirror; its settings are the module's."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Callable, Optional

from torch import Tensor, nn

from lightning_modules.base import FieldGenerativeModule
from networks.score_fields import PerceiverIO
from networks.score_fields.tokens import FieldTokenizer
from networks.unet import GROUPNORM_EPS, UNet


def network_options(module: FieldGenerativeModule, network_class: type) -> dict:
    """The module's `net` settings over the network class's defaults (what it was built with)."""
    defaults = {name: p.default for name, p in inspect.signature(network_class).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in module.hparams["net"].items() if not k.startswith("_")}}


class SampleOutput(nn.Module):
    """diffusers' models return an output object; the diffusion wants its tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t).sample


def diffusers_unet(module: FieldGenerativeModule) -> dict[str, nn.Module]:
    """UNet2DModel with the U-Net's widths, depth, attention resolutions, GroupNorm and dropout."""
    from diffusers import UNet2DModel

    net, size = network_options(module, UNet), module.domain.shape[0]
    resolutions = [size // 2**level for level in range(len(net["channel_mults"]))]
    attends = [r in net["attention_resolutions"] for r in resolutions]
    widths = [net["base_channels"] * m for m in net["channel_mults"]]
    model = UNet2DModel(
        sample_size=size, in_channels=module.signal_dim, out_channels=module.out_channels,
        block_out_channels=widths, layers_per_block=net["num_res_blocks"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        norm_num_groups=net["num_groups"], norm_eps=GROUPNORM_EPS, dropout=net["dropout"],
        # None: one head as wide as each block; diffusers takes a single head width, so h heads fit the middle block
        attention_head_dim=None if net["num_heads"] == 1 else widths[-1] // net["num_heads"],
    )
    return {"net": SampleOutput(model)}


class PeerPerceiverField(nn.Module):
    """transformers' Perceiver as a DPF score field on the module's tokens: its encoder reads the context tokens
    and a basic decoder cross-attends from the query tokens (one query per query point) to the latents."""

    def __init__(self, tokenizer: FieldTokenizer, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.tokenizer, self.encoder, self.decoder = tokenizer, encoder, decoder

    def forward(self, context_coords: Tensor, context_values: Tensor, query_coords: Tensor, query_values: Tensor,
                t: Tensor) -> Tensor:
        latents = self.encoder(inputs=self.tokenizer(context_coords, context_values, t)).last_hidden_state
        return self.decoder(self.tokenizer(query_coords, query_values, t), z=latents).logits


def transformers_perceiver(module: FieldGenerativeModule) -> dict[str, nn.Module]:
    """PerceiverModel with the PerceiverIO's latents, widths, depth and heads (it shares the self-attention block
    across num_blocks and cross-attends to the inputs once), and a PerceiverBasicDecoder (one cross-attention)."""
    from transformers import PerceiverConfig, PerceiverModel
    from transformers.models.perceiver.modeling_perceiver import PerceiverBasicDecoder

    net, tokenizer = network_options(module, PerceiverIO), module.net.tokenizer
    width, widening = net["latent_dim"], net["widening_factor"]
    config = PerceiverConfig(
        num_latents=net["num_latents"], d_latents=width, d_model=tokenizer.out_dim, num_blocks=net["num_blocks"],
        num_self_attends_per_block=net["self_attends_per_block"], num_self_attention_heads=net["num_self_heads"],
        num_cross_attention_heads=net["num_cross_heads"], qk_channels=net["qk_channels"],
        v_channels=net["v_channels"], cross_attention_shape_for_attention="q",  # qk width = latent width, as ours
        self_attention_widening_factor=widening, cross_attention_widening_factor=widening,
        attention_probs_dropout_prob=net["dropout"], hidden_act="gelu")
    decoder = PerceiverBasicDecoder(
        config, output_num_channels=module.out_channels, position_encoding_type="none",
        num_channels=tokenizer.out_dim, qk_channels=width, v_channels=width, num_heads=net["num_cross_heads"],
        widening_factor=widening, use_query_residual=True)
    return {"net": PeerPerceiverField(tokenizer, PerceiverModel(config), decoder)}


@dataclasses.dataclass(frozen=True)
class Peer:
    """package: what it needs; network: the network class of ours it mirrors (in `module.net`); build: the
    replacement networks by attribute name."""

    package: str
    network: type
    build: Callable[[FieldGenerativeModule], dict[str, nn.Module]]

    def applies_to(self, module: FieldGenerativeModule) -> bool:
        return isinstance(getattr(module, "net", None), self.network)

    def version(self) -> Optional[str]:
        """The package's version, or None when it does not import."""
        try:
            return importlib.import_module(self.package).__version__
        except ImportError:
            return None


PEERS = {"diffusers UNet2DModel": Peer("diffusers", UNet, diffusers_unet),
         "transformers Perceiver": Peer("transformers", PerceiverIO, transformers_perceiver)}
