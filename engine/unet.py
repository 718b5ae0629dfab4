"""Gated DeCo-Diff UNet: a latent-diffusion UNet with spatial transformers, class conditioning
through a one-token cross-attention context, a DoD gate head on the output and a gate on every
skip connection.

The module tree and parameter names follow the DeCo-Diff reference layout exactly, so a
reference state dict loads unchanged (see ../shared/reference/spec.md, section 1).
Sizes live in one registry (`UNET_SIZES`) and every model is built by `create_unet` from one
`UNetConfig`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .configs import config_from_dict

__all__ = [
    "UNET_SIZES",
    "UNetConfig",
    "GatedUNet",
    "UNetOutput",
    "create_unet",
    "timestep_embedding",
]


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to build a `GatedUNet`; saved as JSON beside the weights."""

    model_channels: int
    num_head_channels: int
    context_dim: int
    ncls: int = 15
    latent_size: int = 32
    in_channels: int = 4
    out_channels: int = 4
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.4
    use_gating: bool = True
    size: str = ""
    # levels of channel_mult (0 = full latent resolution) whose blocks carry a spatial transformer;
    # None = every level, the reference layout. The middle block always has one.
    attention_levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        problems = []
        if self.attention_levels is not None:
            object.__setattr__(self, "attention_levels", tuple(int(v) for v in self.attention_levels))
            outside = [v for v in self.attention_levels if not 0 <= v < len(self.channel_mult)]
            if outside:
                problems.append(f"attention_levels {outside} are not levels of channel_mult "
                                f"(0..{len(self.channel_mult) - 1})")
        if self.model_channels <= 0 or self.model_channels % 32:
            problems.append(f"model_channels must be a positive multiple of 32 (GroupNorm 32), got {self.model_channels}")
        if self.num_head_channels <= 0:
            problems.append(f"num_head_channels must be positive, got {self.num_head_channels}")
        if self.ncls < 1:
            problems.append(f"ncls must be at least 1, got {self.ncls}")
        if self.latent_size % (2 ** (len(self.channel_mult) - 1)):
            problems.append(
                f"latent_size {self.latent_size} must be divisible by {2 ** (len(self.channel_mult) - 1)}"
            )
        if problems:
            raise ValueError("invalid UNetConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        if self.attention_levels is None:
            del d["attention_levels"]   # the reference layout: model.json files stay as they were
        else:
            d["attention_levels"] = list(self.attention_levels)
        return d

    def has_attention(self, level: int) -> bool:
        return self.attention_levels is None or level in self.attention_levels

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class UNetSize:
    """A registered size: width, heads at the first level (context_dim = 2 * model_channels) and
    the levels with spatial transformers (None: every level, as in the reference sizes)."""

    model_channels: int
    heads: int
    attention_levels: tuple[int, ...] | None = None


# UNet_T and UNet_live are ours, CPU-sized for live inspection (see README for their speed).
# UNet_live is UNet_T without self-attention over the full 32x32 latent grid (1,024 tokens, five
# transformers): the attention that cost most per step. benchmarks/bench_networks.py, OpenVINO bf16,
# batch 1, 2-core AMD EPYC: 12.0 ms a step (demo-v6) against 25.7 for UNet_T (demo-v5).
_SIZE_TABLE: dict[str, UNetSize] = {
    "UNet_T": UNetSize(32, 2),
    "UNet_live": UNetSize(32, 2, attention_levels=(1, 2)),
    "UNet_XS": UNetSize(64, 4),
    "UNet_S": UNetSize(128, 4),
    "UNet_M": UNetSize(192, 6),
    "UNet_L": UNetSize(256, 8),
    "UNet_XL": UNetSize(320, 12),
}


def _size_config(size: str, **overrides) -> UNetConfig:
    spec = _SIZE_TABLE[size]
    mc = spec.model_channels
    return UNetConfig(model_channels=mc, num_head_channels=mc // spec.heads, context_dim=2 * mc, size=size,
                      attention_levels=spec.attention_levels, **overrides)


UNET_SIZES: tuple[str, ...] = tuple(_SIZE_TABLE)


def create_unet(size: str = "UNet_XS", ncls: int = 15, latent_size: int = 32, use_gating: bool = True,
                **overrides) -> "GatedUNet":
    """Build a registered size (`UNet_T`, `UNet_XS` ... `UNet_XL`) with fresh weights."""
    if size not in _SIZE_TABLE:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(UNET_SIZES)}")
    return GatedUNet(_size_config(size, ncls=ncls, latent_size=latent_size, use_gating=use_gating, **overrides))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of timesteps [B]: cos half first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _norm(channels: int, eps: float = 1e-5) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=eps)


def _zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Conv residual block with an additive timestep embedding; channels cin -> cout."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(
            _norm(cout), nn.SiLU(), nn.Dropout(dropout), _zeroed(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class Attention(nn.Module):
    """Multi-head attention; `context=None` is self-attention. Tokens [B, N, query_dim].

    `impl` picks the computation: "fast" (scaled_dot_product_attention, and for a one-token
    context the exact shortcut softmax = 1) or "naive" (explicit softmax(q k^T / sqrt(d)) v, the
    reference's formulation, kept as the benchmark baseline). Both give the same result."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.impl = "fast"
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        fast = self.impl == "fast"
        if fast and context is not None and context.shape[1] == 1 and not torch.is_grad_enabled():
            # One context token: the softmax weight is exactly 1, so every query receives v.
            # (Training keeps the full path so every parameter gets a gradient, as DDP expects.)
            return self.to_out(self.to_v(context)).expand(-1, x.shape[1], -1)
        src = x if context is None else context
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(src).view(b, src.shape[1], self.heads, self.dim_head).transpose(1, 2)
        v = self.to_v(src).view(b, src.shape[1], self.heads, self.dim_head).transpose(1, 2)
        if fast:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax((q @ k.transpose(-1, -2)) * self.dim_head ** -0.5, dim=-1)
            out = weights @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention on the class context, GEGLU feed-forward (pre-norm)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        # Registration order fixes the state-dict order: attn1, ff, attn2, norm1, norm2, norm3.
        self.attn1 = Attention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Feature map [B, ch, H, W] -> tokens of width heads*dim_head -> back, plus the input."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = _norm(channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = _zeroed(nn.Conv2d(inner, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.proj_in(self.norm(x))
        inner = y.shape[1]
        y = y.flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            y = block(y, context)
        y = y.transpose(1, 2).reshape(b, inner, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Block(nn.Sequential):
    """A sequence of layers, each given what it needs (timestep embedding or class context)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class ClassEmbedder(nn.Module):
    """Class ids [B] or [B,1] -> context tokens [B, 1, context_dim]."""

    def __init__(self, ncls: int, context_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(ncls, context_dim)

    def forward(self, class_ids: torch.Tensor) -> torch.Tensor:
        ids = class_ids.long().reshape(class_ids.shape[0], -1)[:, :1]
        return self.embedding(ids)


class SkipGate(nn.Module):
    """alpha = sigmoid(conv1x1(skip)); the decoder receives (1 - alpha) * skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.sigmoid(self.gate_conv(skip))
        return (1 - alpha) * skip, alpha


@dataclass
class UNetOutput:
    """Everything one forward computes. Shapes for latents [B,4,L,L]."""

    out: torch.Tensor
    dod_gate: torch.Tensor | None
    skip_alphas: list[torch.Tensor] = field(default_factory=list)
    dod_raw: torch.Tensor | None = None


class GatedUNet(nn.Module):
    """Predicts the deviation D [B,4,L,L] of latents x [B,4,L,L] at timesteps t [B] (0..T-1,
    never rescaled) for class ids [B] or [B,1]. With gating on, output = DoD gate * raw head and
    every skip is scaled by (1 - alpha)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.use_gating = config.use_gating
        mc, nhc = config.model_channels, config.num_head_channels
        emb_dim = 4 * mc

        def transformer(ch: int) -> SpatialTransformer:
            heads = max(ch // nhc, 1)
            return SpatialTransformer(ch, heads, ch // heads, config.context_dim)

        self.cond_stage_model = ClassEmbedder(config.ncls, config.context_dim)
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([Block(nn.Conv2d(config.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(ch, mult * mc, emb_dim, config.dropout)]
                if config.has_attention(level):
                    layers.append(transformer(mult * mc))
                self.input_blocks.append(Block(*layers))
                ch = mult * mc
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(Block(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = Block(
            ResBlock(ch, ch, emb_dim, config.dropout), transformer(ch), ResBlock(ch, ch, emb_dim, config.dropout)
        )

        self.output_blocks = nn.ModuleList()
        popped = list(skip_channels)
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + popped.pop(), mult * mc, emb_dim, config.dropout)]
                ch = mult * mc
                if config.has_attention(level):
                    layers.append(transformer(ch))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Block(*layers))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zeroed(nn.Conv2d(ch, config.out_channels, 3, padding=1)))
        self.gate_head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, padding=1), nn.Sigmoid())
        self.skip_gates = nn.ModuleList([SkipGate(c) for c in skip_channels])

    def run(self, x: torch.Tensor, t: torch.Tensor, class_ids: torch.Tensor) -> UNetOutput:
        """Full forward returning the output, the DoD gate and the skip alphas (decoder order:
        index i is used by output block i and comes from skip gate N-1-i)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.time_embed(timestep_embedding(t.to(x.device), self.config.model_channels).to(x.dtype))
        context = self.cond_stage_model(class_ids.to(x.device)).to(x.dtype)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        alphas = []
        n = len(self.output_blocks)
        for i, block in enumerate(self.output_blocks):
            s = skips.pop()
            if self.use_gating:
                s, alpha = self.skip_gates[n - 1 - i](s)
                alphas.append(alpha)
            h = block(torch.cat([h, s], dim=1), emb, context)
        raw = self.out(h)
        if not self.use_gating:
            return UNetOutput(out=raw, dod_gate=None, skip_alphas=[], dod_raw=raw)
        gate = self.gate_head(h)
        return UNetOutput(out=gate * raw, dod_gate=gate, skip_alphas=alphas, dod_raw=raw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_ids: torch.Tensor, return_gate: bool = False):
        """Deviation prediction [B,4,L,L]; with `return_gate` also (DoD gate, skip alphas)."""
        r = self.run(x, t, class_ids)
        if return_gate:
            return r.out, r.dod_gate, r.skip_alphas
        return r.out

    def set_attention_impl(self, impl: str) -> "GatedUNet":
        """'fast' (default) or 'naive' (the reference's explicit attention) for every attention."""
        if impl not in ("fast", "naive"):
            raise ValueError(f"attention impl must be 'fast' or 'naive', got {impl!r}")
        for m in self.modules():
            if isinstance(m, Attention):
                m.impl = impl
        return self

    @property
    def channels_last(self) -> bool:
        """True when the convolution weights are stored channels-last (see
        `engine.acceleration.set_memory_format`); inputs are then converted to match, which also
        makes the token reshapes of the spatial transformers free views instead of copies."""
        return self.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
