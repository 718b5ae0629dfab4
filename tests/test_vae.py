"""Tests for engine.vae: scaling conventions, save/load round trips, offline resolution, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from engine.vae import (
    LATENT_SCALE,
    VAE,
    VAENotFoundError,
    compact_vae_config,
    create_vae,
    load_vae,
    resolve_vae_folder,
    save_vae,
)

TINY_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach the network or a real user cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def tiny_vae() -> VAE:
    torch.manual_seed(0)
    vae = create_vae(TINY_CONFIG)
    with torch.no_grad():
        for p in vae.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return vae


@pytest.fixture()
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1


def _same_outputs(a: VAE, b: VAE, x: torch.Tensor) -> None:
    with torch.no_grad():
        za, zb = a.encode(x), b.encode(x)
        assert torch.equal(za, zb)
        assert torch.equal(a.decode(za), b.decode(zb))


def test_encode_decode_match_diffusers_with_scale(tiny_vae, image):
    with torch.no_grad():
        z = tiny_vae.encode(image)
        assert z.shape == (1, 4, 8, 8)
        ref = tiny_vae.model.encode(image).latent_dist.mean * 0.18215
        torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)
        y = tiny_vae.decode(z)
        assert y.shape == (1, 3, 64, 64)
        torch.testing.assert_close(y, tiny_vae.model.decode(z / 0.18215).sample, rtol=1e-5, atol=1e-6)
    assert LATENT_SCALE == 0.18215
    assert z.is_contiguous() and y.is_contiguous()


def test_encode_sample_uses_generator(tiny_vae, image):
    with torch.no_grad():
        a = tiny_vae.encode_sample(image, torch.Generator().manual_seed(3))
        b = tiny_vae.encode_sample(image, torch.Generator().manual_seed(3))
        c = tiny_vae.encode_sample(image, torch.Generator().manual_seed(4))
    assert a.shape == (1, 4, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_channels_last_does_not_change_results(image):
    torch.manual_seed(0)
    cl = create_vae(TINY_CONFIG, channels_last=True)
    cf = create_vae(TINY_CONFIG, channels_last=False)
    cf.model.load_state_dict(cl.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(cl.encode(image), cf.encode(image), rtol=1e-4, atol=1e-5)


def test_properties(tiny_vae):
    assert tuple(tiny_vae.config["block_out_channels"]) == (8, 8, 8, 8)
    assert tiny_vae.num_parameters == sum(p.numel() for p in tiny_vae.model.parameters())
    assert tiny_vae.downsample_factor == 8 and tiny_vae.latent_channels == 4
    assert isinstance(tiny_vae.source, str)
    assert not tiny_vae.model.training


def test_bad_inputs_raise(tiny_vae):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_vae.encode(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="divisible by 8"):
        tiny_vae.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        tiny_vae.decode(torch.zeros(1, 3, 8, 8))


def test_save_load_roundtrip(tiny_vae, image, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "vae")
    assert (folder / "config.json").is_file()
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_vae(tmp_path / "vae")
    assert loaded.source == str((tmp_path / "vae").absolute())
    assert not loaded.model.training
    _same_outputs(tiny_vae, loaded, image)
    # diffusers itself reads what we wrote
    plain = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(image).latent_dist.mean * LATENT_SCALE, tiny_vae.encode(image))


def test_load_dtype(tiny_vae, tmp_path):
    save_vae(tiny_vae, tmp_path / "vae")
    loaded = load_vae(str(tmp_path / "vae"), dtype=torch.float64, device="cpu")
    assert loaded.dtype == torch.float64 and loaded.device.type == "cpu"


def _fake_hf_cache(vae: VAE, root, repo_id: str, commit: str = "abc123"):
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    save_vae(vae, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return repo_dir


def test_load_from_hf_cache_by_repo_id_and_short_name(tiny_vae, image, tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    _fake_hf_cache(tiny_vae, cache, "stabilityai/sd-vae-ft-mse")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for spec in ("stabilityai/sd-vae-ft-mse", "mse"):
        loaded = load_vae(spec)
        assert "abc123" in loaded.source
        _same_outputs(tiny_vae, loaded, image)
    with pytest.raises(VAENotFoundError, match="sd-vae-ft-ema"):
        load_vae("ema")


def test_hf_cache_refs_main_wins_and_hf_home_fallback(tiny_vae, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf_home"
    repo_dir = _fake_hf_cache(tiny_vae, hf_home / "hub", "stabilityai/sd-vae-ft-ema", commit="main111")
    shutil.copytree(repo_dir / "snapshots" / "main111", repo_dir / "snapshots" / "newer222")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    assert resolve_vae_folder("ema").name == "main111"
    (repo_dir / "refs" / "main").unlink()
    assert resolve_vae_folder("ema").name == "newer222"


def test_load_pipeline_folder_with_vae_subfolder(tiny_vae, image, tmp_path):
    pipe = tmp_path / "stable-diffusion"
    save_vae(tiny_vae, pipe / "vae")
    (pipe / "model_index.json").write_text("{}")
    loaded = load_vae(pipe)
    assert loaded.source == str((pipe / "vae").absolute())
    _same_outputs(tiny_vae, loaded, image)


def test_missing_vae_lists_every_place(tmp_path, monkeypatch):
    cache = tmp_path / "nowhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(VAENotFoundError) as info:
        load_vae("mse")
    msg = str(info.value)
    assert str(cache / "models--stabilityai--sd-vae-ft-mse") in msg
    assert "training.train_vae" in msg
    assert isinstance(info.value, FileNotFoundError)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VAENotFoundError) as info:
        load_vae(empty)
    msg = str(info.value)
    assert str(empty / "config.json") in msg and str(empty / "vae" / "config.json") in msg

    with pytest.raises(VAENotFoundError) as info:
        load_vae("someone/some-vae")
    msg = str(info.value)
    assert str((tmp_path / "someone" / "some-vae").absolute()) in msg
    assert str(cache / "models--someone--some-vae") in msg


def test_config_without_weights_is_not_found(tiny_vae, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "vae")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(VAENotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_vae(folder)


def test_corrupt_safetensors_raises_value_error_naming_file(tiny_vae, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "vae")
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors") as info:
        load_vae(folder)
    assert not isinstance(info.value, FileNotFoundError)


def test_broken_or_incompatible_config_raises_value_error(tiny_vae, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "vae")
    config_file = folder / "config.json"
    good = json.loads(config_file.read_text())

    config_file.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        load_vae(folder)

    config_file.write_text(json.dumps({**good, "block_out_channels": [16, 16, 16, 16]}))
    with pytest.raises(ValueError, match="do not fit") as info:
        load_vae(folder)
    assert "diffusion_pytorch_model.safetensors" in str(info.value) and "wrong shape" in str(info.value)

    config_file.write_text(json.dumps({**good, "norm_num_groups": 3}))
    with pytest.raises(ValueError, match="config.json.*cannot build"):
        load_vae(folder)

    config_file.write_text(json.dumps({**good, "_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_vae(folder)


def test_bin_weights_load_with_weights_only(tiny_vae, image, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "vae")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    state = {k: v.contiguous() for k, v in tiny_vae.model.state_dict().items()}
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    _same_outputs(tiny_vae, load_vae(folder), image)

    torch.save({"evil": object.__new__(_NotATensor)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.bin.*weights_only"):
        load_vae(folder)


class _NotATensor:
    pass


def test_legacy_attention_key_names_are_converted(tiny_vae, image, tmp_path):
    from safetensors.torch import save_file

    folder = save_vae(tiny_vae, tmp_path / "vae")
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in tiny_vae.model.state_dict().items():
        for new, old in renames.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                if value.ndim == 2:
                    value = value[:, :, None, None]
        legacy[key] = value.contiguous()
    assert any(".query." in k for k in legacy)
    save_file(legacy, str(folder / "diffusion_pytorch_model.safetensors"))
    _same_outputs(tiny_vae, load_vae(folder), image)


def test_compact_config_size_and_latent_shape():
    torch.manual_seed(0)
    vae = create_vae(compact_vae_config())
    assert 1_000_000 <= vae.num_parameters <= 4_000_000
    assert vae.patch_size == 4 and vae.downsample_factor == 8 and vae.latent_channels == 8
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 256, 256))
        assert z.shape == (1, 8, 32, 32)
        assert vae.decode(z).shape == (1, 3, 256, 256)


def test_small_config_is_the_compact_layout_at_a_quarter_of_the_width():
    torch.manual_seed(0)
    compact, small = create_vae(compact_vae_config("compact")), create_vae(compact_vae_config("small"))
    assert small.num_parameters < compact.num_parameters / 3
    assert list(small.model.config.block_out_channels) == [32, 64] and not small.model.config.mid_block_add_attention
    assert small.patch_size == 4 and small.downsample_factor == 8 and small.latent_channels == 8
    with torch.no_grad():
        assert small.decode(small.encode(torch.zeros(1, 3, 64, 64))).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="unknown VAE size 'huge'; choose one of compact, small"):
        compact_vae_config("huge")


def test_small_vae_round_trips_through_its_folder(tmp_path):
    torch.manual_seed(0)
    vae = create_vae(compact_vae_config("small"))
    save_vae(vae, tmp_path / "vae")
    image = torch.rand(1, 3, 64, 64)
    _same_outputs(vae, load_vae(tmp_path / "vae"), image)


PATCH_CONFIG = {**TINY_CONFIG, "deco_patch_size": 2, "in_channels": 12, "out_channels": 12,
                "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
                "block_out_channels": [8, 8, 8]}


def test_patch_vae_folds_pixels_around_the_autoencoder(image, tmp_path):
    import torch.nn.functional as F

    torch.manual_seed(0)
    vae = create_vae(PATCH_CONFIG)
    assert vae.patch_size == 2 and vae.downsample_factor == 8 and vae.config["deco_patch_size"] == 2
    with torch.no_grad():
        z = vae.encode(image)
        assert z.shape == (1, 4, 8, 8)
        ref = vae.model.encode(F.pixel_unshuffle(image, 2)).latent_dist.mean * LATENT_SCALE
        torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)
        y = vae.decode(z)
        assert y.shape == (1, 3, 64, 64)
        torch.testing.assert_close(y, F.pixel_shuffle(vae.model.decode(z / LATENT_SCALE).sample, 2),
                                   rtol=1e-5, atol=1e-6)
        assert vae.encode_sample(image, torch.Generator().manual_seed(0)).shape == (1, 4, 8, 8)
    folder = save_vae(vae, tmp_path / "patch_vae")
    assert json.loads((folder / "config.json").read_text())["deco_patch_size"] == 2
    loaded = load_vae(folder)
    assert loaded.patch_size == 2
    _same_outputs(vae, loaded, image)


def test_patch_size_that_does_not_fit_the_channels_names_the_file(tiny_vae, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "v")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "deco_patch_size": 2}))
    with pytest.raises(ValueError, match=r"config\.json.*patch size 2 needs an AutoencoderKL with 12"):
        load_vae(folder)
    (folder / "config.json").write_text(json.dumps({**config, "deco_patch_size": "4"}))
    with pytest.raises(ValueError, match="deco_patch_size must be a positive integer"):
        load_vae(folder)
