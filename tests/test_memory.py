"""The model picker says how much GPU memory a model needs: counted from safetensors headers (the published parameter
counts written as shapes here, no weights), at 16 bits, plus a working margin per family."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from noisebrush.engine.memory import footprint


def header_only(path: Path, tensors: dict[str, tuple[str, int]]) -> Path:
    """A safetensors header naming tensors (dtype, parameters) with no data: enough for counting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {k: {"dtype": d, "shape": [n], "data_offsets": [0, 0]} for k, (d, n) in tensors.items()}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_an_all_in_one_flux_file_needs_its_weights_at_16_bits_plus_a_margin(tmp_path):
    f = header_only(tmp_path / "flux1-dev-fp8.safetensors", {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": ("F8_E4M3", 11_900_000_000),  # fp8 runs at bf16
        "text_encoders.t5xxl.transformer.shared.weight": ("F8_E4M3", 4_760_000_000),
        "text_encoders.clip_l.transformer.text_model.x": ("F16", 123_000_000),
        "vae.decoder.conv_in.weight": ("F32", 84_000_000),
        "model.diffusion_model.pe_index": ("I64", 10**9),  # integer buffers are not weights
    })  # fmt: skip
    need = footprint(f, "flux")
    assert round(need.weights / 1e9, 1) == 33.7  # bench/results/flow-memory.md: 33.7 GB all on the GPU
    assert need.describe() == "needs 37 GB (27 GB with CPU offload)"  # the transformer alone: 23.8 + 3


def test_a_diffusers_folder_counts_the_components_from_pretrained_reads(tmp_path):
    m = tmp_path / "sd15"
    (m / "model_index.json").parent.mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "text_encoder": ["transformers", "CLIPTextModel"], "vae": ["diffusers", "AutoencoderKL"],
             "safety_checker": [None, None]}  # fmt: skip
    (m / "model_index.json").write_text(json.dumps(index))
    header_only(m / "unet" / "diffusion_pytorch_model.safetensors", {"w": ("F32", 860_000_000)})
    header_only(m / "unet" / "diffusion_pytorch_model.fp16.safetensors", {"w": ("F16", 860_000_000)})  # not read
    header_only(m / "text_encoder" / "model.safetensors", {"w": ("F32", 123_000_000)})
    header_only(m / "vae" / "diffusion_pytorch_model.safetensors", {"w": ("F32", 84_000_000)})
    header_only(m / "controlnets" / "scribble" / "diffusion_pytorch_model.safetensors", {"w": ("F32", 10**9)})
    need = footprint(m, "sd15")
    assert need.weights == 2 * (860 + 123 + 84) * 10**6
    assert need.describe() == "needs 4 GB (3 GB with CPU offload)"
    assert footprint(tmp_path / "missing", "sd15") is None and footprint(m, "?") is None


def test_the_local_model_list_shows_the_need_in_each_base_title(tmp_path, tiny_model):
    import shutil

    from noisebrush.engine.backends.local import LocalBackend

    shutil.copytree(tiny_model, tmp_path / "tiny")
    titles = {m.ref: m.title for m in LocalBackend().list_models(str(tmp_path))}
    assert titles[str(tmp_path / "tiny")].endswith("· needs 2 GB")  # a few MB of weights + 1 GB at 512 px
