"""UNet building blocks and registry, on tiny configs."""

import pytest
import torch

from engine import UNET_SIZES, UNetConfig, create_unet
from engine.unet import GatedUNet

TINY = dict(model_channels=32, num_head_channels=16, context_dim=16, ncls=3, latent_size=8)


def tiny(**kw):
    torch.manual_seed(0)
    return GatedUNet(UNetConfig(**{**TINY, **kw})).eval()


def test_registry_has_all_sizes_and_a_cpu_size():
    assert UNET_SIZES == ("UNet_T", "UNet_live", "UNet_XS", "UNet_S", "UNet_M", "UNet_L", "UNet_XL")
    with torch.device("meta"):
        t = create_unet("UNet_T")
        xs = create_unet("UNet_XS")
    assert t.num_parameters < xs.num_parameters / 3
    assert t.config.context_dim == 64 and t.config.size == "UNet_T"


def _transformer_levels(unet: GatedUNet) -> set[int]:
    """Channel widths (= levels for channel_mult 1, 2, 4) at which input/output blocks hold a transformer."""
    from engine.unet import SpatialTransformer
    return {layer.proj_in.in_channels for block in [*unet.input_blocks, *unet.output_blocks]
            for layer in block if isinstance(layer, SpatialTransformer)}


def test_live_size_has_no_attention_at_full_latent_resolution():
    with torch.device("meta"):
        t = create_unet("UNet_T", ncls=3)
        live = create_unet("UNet_live", ncls=3)
    assert _transformer_levels(t) == {32, 64, 128}
    assert _transformer_levels(live) == {64, 128}       # 16x16 and 8x8 for 32x32 latents; the middle keeps its own
    assert live.config.attention_levels == (1, 2) and t.config.attention_levels is None
    assert live.num_parameters < t.num_parameters
    assert "attention_levels" not in t.config.to_dict()   # reference-layout model.json files are unchanged
    assert UNetConfig.from_dict(live.config.to_dict()) == live.config


def test_attention_levels_change_the_computation_and_are_validated():
    torch.manual_seed(0)
    unet = tiny(attention_levels=[1])
    assert _transformer_levels(unet) == {64}
    x = torch.randn(1, 4, 8, 8)
    assert unet(x, torch.tensor([3]), torch.tensor([1])).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"attention_levels \[3\] are not levels of channel_mult \(0..2\)"):
        UNetConfig(**{**TINY, "attention_levels": [1, 3]})


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="UNet_Q.*UNet_T, UNet_live, UNet_XS"):
        create_unet("UNet_Q")


def test_fresh_model_outputs_exactly_zero():
    unet = tiny()
    x = torch.randn(2, 4, 8, 8)
    out = unet(x, torch.tensor([0, 9]), torch.tensor([0, 2]))
    assert out.shape == (2, 4, 8, 8)
    assert torch.count_nonzero(out) == 0


def test_any_class_count_and_class_changes_output():
    unet = tiny(ncls=7)
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 4, 8, 8)
    a = unet(x, torch.tensor([3]), torch.tensor([1]))
    b = unet(x, torch.tensor([3]), torch.tensor([6]))
    assert not torch.allclose(a, b)
    assert unet.cond_stage_model.embedding.num_embeddings == 7


def test_single_token_cross_attention_equals_full_attention():
    from engine.unet import Attention

    torch.manual_seed(1)
    attn = Attention(32, 16, heads=2, dim_head=16)
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 1, 16)
    with torch.no_grad():
        fast = attn(x, ctx)
    q = attn.to_q(x).view(2, 10, 2, 16).transpose(1, 2)
    k = attn.to_k(ctx).view(2, 1, 2, 16).transpose(1, 2)
    v = attn.to_v(ctx).view(2, 1, 2, 16).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) * 16 ** -0.5, dim=-1)
    slow = attn.to_out((w @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(attn(x, ctx), slow)
    attn.impl = "naive"
    with torch.no_grad():
        torch.testing.assert_close(attn(x, ctx), slow)
        self_attn = Attention(32, 32, heads=2, dim_head=16)
        naive = self_attn(x)
        self_attn.impl = "fast"
        torch.testing.assert_close(self_attn(x), naive, atol=1e-5, rtol=1e-5)


def test_gating_switch_and_outputs():
    unet = tiny()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1])
    r = unet.run(x, t, c)
    assert len(r.skip_alphas) == 9 and r.dod_gate.shape == x.shape
    assert ((r.dod_gate > 0) & (r.dod_gate < 1)).all()
    torch.testing.assert_close(r.out, r.dod_gate * r.dod_raw)
    unet.use_gating = False
    off = unet.run(x, t, c)
    assert off.dod_gate is None and off.skip_alphas == []
    assert not torch.allclose(off.out, r.out)


def test_config_round_trip_and_validation():
    cfg = UNetConfig(**TINY)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiple of 32"):
        UNetConfig(**{**TINY, "model_channels": 40})
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_backward_reaches_every_parameter():
    unet = tiny()
    unet.train()
    out = unet(torch.randn(2, 4, 8, 8), torch.tensor([0, 5]), torch.tensor([0, 1]))
    (out - 1).pow(2).mean().backward()
    # every parameter gets a gradient (DDP needs it), even attn2's dead query/key (spec 1.3)
    assert [n for n, p in unet.named_parameters() if p.grad is None] == []
