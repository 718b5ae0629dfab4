"""DiAD's network: `DiADConfig` (JSON beside the weights), the size registry `DIAD_SIZES`,
`create_diad` and `DiADUNet` (eps prediction; sinusoidal time embedding + MLP plus a learned class
embedding added to it), in the VAE's latent space (default) or in pixel space."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import config_from_dict
from ..unet import timestep_embedding

__all__ = ["DIAD_SIZES", "DiADConfig", "DiADUNet", "create_diad"]


@dataclass(frozen=True)
class DiADConfig:
    """Everything needed to build a `DiADUNet`; saved as JSON ('unet' in model.json).

    space 'latent': inputs are VAE latents [B,4,S/8,S/8]; 'pixel': images [B,3,S,S] in [-1,1].
    sample_size: side of the model's input in its own space (latent or image pixels).
    attention_levels: indices into channel_mult that get self-attention after each ResBlock."""

    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 32
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    head_channels: int = 32
    norm_groups: int = 32
    dropout: float = 0.0
    ncls: int = 1
    space: str = "latent"
    size: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        problems = []
        if self.space not in ("latent", "pixel"):
            problems.append(f"space must be 'latent' or 'pixel', got {self.space!r}")
        if self.ncls < 1:
            problems.append(f"ncls must be at least 1, got {self.ncls}")
        if self.in_channels != self.out_channels:
            problems.append(f"a noise predictor has out_channels = in_channels, got {self.out_channels} "
                            f"and {self.in_channels}")
        if self.space == "pixel" and self.in_channels != 3:
            problems.append(f"a pixel-space model takes 3 (RGB) channels, got {self.in_channels}")
        if self.model_channels <= 0 or not self.channel_mult or self.num_res_blocks < 1:
            problems.append("model_channels, channel_mult and num_res_blocks must be positive")
        for m in self.channel_mult:
            if (self.model_channels * m) % self.norm_groups:
                problems.append(f"channels {self.model_channels * m} are not divisible by "
                                f"norm_groups {self.norm_groups}")
        for a in self.attention_levels:
            if not 0 <= a < len(self.channel_mult):
                problems.append(f"attention level {a} is outside 0..{len(self.channel_mult) - 1}")
            elif (self.model_channels * self.channel_mult[a]) % self.head_channels:
                problems.append(f"channels {self.model_channels * self.channel_mult[a]} at attention level {a} "
                                f"are not divisible by head_channels {self.head_channels}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.sample_size % factor:
            problems.append(f"sample_size {self.sample_size} must be divisible by {factor}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid DiADConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiADConfig":
        return config_from_dict(cls, d)


# name -> architecture; DiAD_T is sized for live CPU inspection.
_DIAD_SIZE_TABLE: dict[str, dict] = {
    "DiAD_T": dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,), dropout=0.0),
    "DiAD_S": dict(model_channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention_levels=(1, 2), dropout=0.1),
    "DiAD_M": dict(model_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2, attention_levels=(1, 2),
                   dropout=0.1),
}
DIAD_SIZES: tuple[str, ...] = tuple(_DIAD_SIZE_TABLE)


def create_diad(size: str = "DiAD_T", ncls: int = 1, sample_size: int = 32, space: str = "latent",
                **overrides) -> "DiADUNet":
    """Build a registered size (`DiAD_T`, `DiAD_S`, `DiAD_M`) with fresh weights. `sample_size` is
    the latent side (crop / 8) in latent space, the crop side in pixel space."""
    if size not in _DIAD_SIZE_TABLE:
        raise ValueError(f"unknown DiAD size {size!r}; choose one of {', '.join(DIAD_SIZES)}")
    channels = 4 if space == "latent" else 3
    spec = {**_DIAD_SIZE_TABLE[size], "in_channels": channels, "out_channels": channels, **overrides}
    return DiADUNet(DiADConfig(sample_size=sample_size, ncls=ncls, space=space, size=size, **spec))


def _zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between; channels cin -> cout."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zeroed(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the H x W positions, residual."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zeroed(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """Layers run in order; ResBlocks also get the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _ResBlock) else layer(x)
        return x


class DiADUNet(nn.Module):
    """eps-prediction UNet: (x_t [B,C,s,s], t [B] (timesteps 0..T-1), class_ids [B]) -> eps [B,C,s,s].

    Conditioning: emb = MLP(sinusoidal(t)) + class_embedding(class_id), added in every ResBlock."""

    def __init__(self, config: DiADConfig):
        super().__init__()
        self.config = config
        mc, groups = config.model_channels, config.norm_groups
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(config.ncls, emb_dim)
        self.conv_in = nn.Conv2d(config.in_channels, mc, 3, padding=1)

        def res(cin: int, cout: int) -> _ResBlock:
            return _ResBlock(cin, cout, emb_dim, groups, config.dropout)

        def attn(ch: int) -> _SelfAttention:
            return _SelfAttention(ch, config.head_channels, groups)

        last = len(config.channel_mult) - 1
        self.down = nn.ModuleList()
        skips, ch = [mc], mc
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                self.down.append(_Stage(layers))
                skips.append(ch)
            if level != last:
                self.down.append(_Stage([_Downsample(ch)]))
                skips.append(ch)
        self.mid = _Stage([res(ch, ch), attn(ch), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(attn(ch))
                if level != 0 and i == config.num_res_blocks:
                    layers.append(_Upsample(ch))
                self.up.append(_Stage(layers))
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = _zeroed(nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        ids = torch.as_tensor(class_ids, device=x.device).long().reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels)) + self.class_embed(ids)
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
