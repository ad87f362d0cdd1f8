"""Write the random, seeded models the ComfyUI tests serve: `python comfy_models.py MODELS_DIR`.

ComfyUI detects SD1.5 from the UNet's shapes (320 channels, 768-wide cross-attention, 8 heads) and loads CLIP-L
and the SD VAE at their real sizes, so those keep their shapes; the UNet has only two levels (about 0.5 GB in fp16).
The ControlNet and LoRA fit that UNet. Run as a script so the test process never holds these weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).parent))
from comfy_server import CHECKPOINT, CONTROLNET, LORA  # noqa: E402
from ldm_export import _unet_key, clip_to_ldm, controlnet_to_ldm, unet_to_ldm, vae_to_ldm  # noqa: E402


def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64,
        layers_per_block=1,
        block_out_channels=(320, 640),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
    )


def clip_l() -> CLIPTextModel:
    torch.manual_seed(2)
    return CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77,
                                        projection_dim=768))  # fmt: skip


def controlnet(base: UNet2DConditionModel) -> ControlNetModel:
    net = ControlNetModel.from_unet(base)
    # from_unet zeroes the output convs, and PyTorch's default init shrinks the sketch at each of the hint encoder's
    # 8 layers. He-initialised weights (biases 0) carry the sketch through, so the control steers the picture as a
    # trained one does.
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            hint = name.startswith("controlnet_cond_embedding.")
            if name.endswith("weight") and p.dim() == 4 and (hint or p.abs().sum() == 0):
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                gain = 1.0 if hint else 4.0  # the zero convs: residuals strong enough to show at 64 px
                p.copy_(torch.randn(p.shape, generator=gen) * gain * (2.0 / fan_in) ** 0.5)
            elif hint and name.endswith("bias"):
                p.zero_()
    return net


def lora(base: UNet2DConditionModel, rank: int = 4) -> dict[str, torch.Tensor]:
    """A kohya-layout LoRA on the UNet's attention projections (the layout A1111 and ComfyUI read)."""
    cfg = base.config
    up_attn = {i for i, t in enumerate(cfg.up_block_types) if "CrossAttn" in t}
    gen = torch.Generator().manual_seed(4)
    out: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            ldm = _unet_key(name + ".weight", cfg.layers_per_block, up_attn).removesuffix(".weight")
            key = "lora_unet_" + ldm.replace(".", "_")
            out[key + ".lora_down.weight"] = torch.randn(rank, mod.in_features, generator=gen) * 0.5
            out[key + ".lora_up.weight"] = torch.randn(mod.out_features, rank, generator=gen) * 0.5
            out[key + ".alpha"] = torch.tensor(float(rank))
    return out


def main(models: Path) -> None:
    u = unet()
    half = {}
    for part in (unet_to_ldm(u), vae_to_ldm(vae()), clip_to_ldm(clip_l())):
        half.update({k: v.to(torch.float16).contiguous() for k, v in part.items()})
    for sub, name, sd in (
        ("controlnet", CONTROLNET, {k: v.half().contiguous() for k, v in controlnet_to_ldm(controlnet(u)).items()}),
        ("loras", LORA, {k: v.half().contiguous() for k, v in lora(u).items()}),
        ("checkpoints", CHECKPOINT, half),
    ):
        folder = models / sub
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (name + ".partial")
        save_file(sd, str(tmp))
        tmp.rename(folder / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
