"""Flow-matching families, SD3/SD3.5 and Flux.1: telling them from their files, their pipelines and ControlNets,
their prompts, and the x0 estimate their previews show.

Flow matching samples x_t = (1 − σ)·x0 + σ·ε from σ = 1 (noise) to 0; the transformer predicts the velocity
v = ε − x0 and the Euler sampler steps x ← x + (σ_next − σ)·v. So x0 = x_t − σ·v at every step, for free.
No torch at import: the GUI reads families and defaults through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from noisebrush.engine.errors import UserError, first_line

FLOW_FAMILIES = ("sd3", "flux")
TRANSFORMER_FAMILY = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
TRANSFORMER_CLASS = {family: cls for cls, family in TRANSFORMER_FAMILY.items()}
CONTROLNET_FAMILY = {"SD3ControlNetModel": "sd3", "FluxControlNetModel": "flux"}
NET_CLASS = {"sd3": "SD3ControlNetModel", "flux": "FluxControlNetModel"}  # the rest: ControlNetModel
COMPONENTS = {
    "sd3": ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3",
            "transformer", "scheduler"),
    "flux": ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "scheduler"),
}  # fmt: skip
# (family, with ControlNets, mode) → diffusers pipeline; None where diffusers has none (refused with a reason).
# SD3's ControlNet inpainting pipeline serves inpainting ControlNets only (an extra mask channel), not ours.
PIPELINES = {
    ("sd3", False, "txt2img"): "StableDiffusion3Pipeline",
    ("sd3", True, "txt2img"): "StableDiffusion3ControlNetPipeline",
    ("sd3", False, "img2img"): "StableDiffusion3Img2ImgPipeline",
    ("sd3", True, "img2img"): None,
    ("sd3", False, "inpaint"): "StableDiffusion3InpaintPipeline",
    ("sd3", True, "inpaint"): None,
    ("flux", False, "txt2img"): "FluxPipeline",
    ("flux", True, "txt2img"): "FluxControlNetPipeline",
    ("flux", False, "img2img"): "FluxImg2ImgPipeline",
    ("flux", True, "img2img"): "FluxControlNetImg2ImgPipeline",
    ("flux", False, "inpaint"): "FluxInpaintPipeline",
    ("flux", True, "inpaint"): "FluxControlNetInpaintPipeline",
}
FLOW_SCHEDULER = "Euler"  # what the result's settings record: flow models sample with their own flow-matching Euler

# ComfyUI's fitted factors (comfy/latent_formats.py, SD3 and Flux): rgb = latentᵀ·M + bias in [-1, 1], applied, as
# ComfyUI applies them, to the sampler's latents, i.e. after the VAE's shift and scale: (z − shift)·scale.
SD3_LATENT_RGB = (
    (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
)  # fmt: skip
SD3_BIAS = (0.2394, 0.2135, 0.1925)
FLUX_LATENT_RGB = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
)  # fmt: skip
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)
LATENT_RGB = {"sd3": (SD3_LATENT_RGB, SD3_BIAS), "flux": (FLUX_LATENT_RGB, FLUX_BIAS)}


def json_object(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing, unreadable or not an object (configs that may be absent)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # ValueError: not UTF-8, not JSON, a 5,000-digit number
        return {}
    return data if isinstance(data, dict) else {}


def flow_family(folder: Path) -> str | None:
    """The family of a diffusers folder ("sd3" or "flux": a transformer, not a UNet), else None."""
    cls = json_object(folder / "transformer" / "config.json").get("_class_name")
    if isinstance(cls, str) and cls in TRANSFORMER_FAMILY:  # a list or an object is no class name (nor hashable)
        return TRANSFORMER_FAMILY[cls]
    index = str(json_object(folder / "model_index.json").get("_class_name", ""))
    if index.startswith("StableDiffusion3"):
        return "sd3"
    if index.startswith("Flux"):
        return "flux"
    return None


def config_family(cfg: dict, default: str = "?") -> str:
    """The family of a ControlNet's (or UNet's) config: SD3 and Flux by class, the UNet families by their widths;
    `default` for a config that names no width."""
    cls = cfg.get("_class_name")
    if isinstance(cls, str) and cls in CONTROLNET_FAMILY:  # a list or an object is no class name (nor hashable)
        return CONTROLNET_FAMILY[cls]
    if cfg.get("addition_embed_type") == "text_time" or cfg.get("cross_attention_dim") == 2048:
        return "sdxl"
    return "sd15" if cfg.get("cross_attention_dim") else default


def article(title: str) -> str:
    return ("an " if title[:1] in "AEIOUaeiou" or title.startswith("SD") else "a ") + title  # an SD3, a Flux


def check_family(cn_family: str, base_family: str, cn_name: str, base_name: str) -> None:
    """Refuse a ControlNet of another family before any of its weights are read."""
    from noisebrush.engine.models import FAMILY_NAMES

    if cn_family != base_family:
        cn_title = FAMILY_NAMES.get(cn_family, "unknown-family")
        raise UserError(
            f"ControlNet {cn_name} is {article(cn_title)} ControlNet, but {base_name} is "
            f"{article(FAMILY_NAMES[base_family])} model: choose a matching ControlNet"
        )


def check_flow_controlnet_fits(cfg: dict, transformer_config: Any, cn_name: str, base_name: str) -> None:
    """Same family already checked: the widths must match the base transformer's too."""
    keys = ("in_channels", "joint_attention_dim", "pooled_projection_dim", "attention_head_dim", "num_attention_heads")
    # a key the ControlNet leaves empty is not compared: SD3.5's ControlNets have no joint attention (null)
    if any(cfg.get(k) is not None and cfg.get(k) != transformer_config.get(k) for k in keys):
        raise UserError(
            f"ControlNet {cn_name} does not match {base_name}'s transformer (different widths): choose one made for it"
        )


def flow_device(family: str | None, device: Any) -> Any:
    """Flux overflows in fp16 (black or NaN pictures): where fp16 was chosen it runs in bf16, as it was trained."""
    if family == "flux" and device.dtype_name == "float16":
        from noisebrush.engine.device import DeviceChoice

        return DeviceChoice(device.device, "bfloat16")
    return device


def pipeline_name(family: str, with_controls: bool, mode: str) -> str:
    name = PIPELINES[(family, with_controls, mode)]
    if name is None:
        from noisebrush.engine.models import FAMILY_NAMES

        what = {"img2img": "refining a picture", "inpaint": "inpainting"}[mode]
        raise UserError(f"diffusers has no {FAMILY_NAMES[family]} pipeline for {what} with ControlNets: "
                        "switch the control layers off, or generate from the controls alone")  # fmt: skip
    return name


def empty_parts(folder: Path, *keep: str) -> dict[str, None]:
    """The parts a folder's model_index.json leaves empty, as None keyword arguments (but those in `keep`)."""
    index = json_object(folder / "model_index.json")
    return {k: None for k, v in index.items() if isinstance(v, list) and v in ([None, None], []) and k not in keep}


def open_flow_pipeline(path: Path, family: str, dtype: Any):
    """from_pretrained, with the parts model_index.json leaves empty passed as None (SD3 without T5 is a real
    setup; diffusers refuses to load it unless told)."""
    import diffusers

    if path.is_file():  # a checkpoint file: the bundled configs of its variant (flow_single.py)
        from noisebrush.engine.flow_single import open_single_file

        return open_single_file(path, family, dtype)
    cls = getattr(diffusers, PIPELINES[(family, False, "txt2img")])
    try:
        return cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True, **empty_parts(path))
    except Exception as exc:  # diffusers raises many kinds for a bad folder
        raise UserError(f"cannot load model {path}: {first_line(exc)}") from None


def guidance_kind(folder: Path, family: str) -> str:
    """What the guidance slider does: "cfg" (classifier-free guidance), "distilled" (Flux dev: a guidance
    embedding, no CFG) or "none" (Flux schnell ignores it)."""
    if family != "flux":
        return "cfg"
    embeds = json_object(folder / "transformer" / "config.json").get("guidance_embeds", True)
    return "distilled" if embeds else "none"


def flow_defaults(folder: Path, family: str):
    """Slider defaults for a flow model folder."""
    return family_defaults(family, guidance_kind(folder, family))


def family_defaults(family: str, kind: str):
    """Slider defaults by family and kind of guidance: 1024 px, 28 steps; SD3 CFG 7, Flux dev 3.5 distilled,
    schnell (guidance unused) 4 steps."""
    from noisebrush.engine.models import ModelDefaults

    if kind == "none":
        return ModelDefaults(1024, 1024, 4, 0.0, FLOW_SCHEDULER, kind)
    return ModelDefaults(1024, 1024, 28, 3.5 if family == "flux" else 7.0, FLOW_SCHEDULER, kind)


def flow_scheduler(model: Any):
    """A fresh copy of the model's own flow-matching scheduler (they hold per-run state). A DDPM-style sampler
    (DPM++, DDIM…) would read the velocity as noise: the request's sampler name is not used for these families."""
    sched = model.components["scheduler"]
    return type(sched).from_config(sched.config)


def prompt_embeds(pipe: Any, family: str, prompt: str, negative: str | None) -> dict:
    """Text embeddings as pipeline keyword arguments. Flux dev's guidance is distilled: it has no negative prompt."""
    if family == "sd3":
        pe, ne, pooled, neg_pooled = pipe.encode_prompt(prompt, None, None, device=pipe.device, negative_prompt=negative)
        return dict(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=neg_pooled)  # fmt: skip
    pe, pooled, _ids = pipe.encode_prompt(prompt, None, device=pipe.device)
    return dict(prompt_embeds=pe, pooled_prompt_embeds=pooled)


def flow_x0(scheduler: Any, model_output: Any, sample: Any) -> Any:
    """x0 = x_t − σ·v for the step the scheduler has just taken (its step index has moved on by one)."""
    # indexed and moved as a tensor: no .item(), so a GPU is not made to wait each step
    import torch

    sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device, torch.float32)
    return sample.float() - sigma * model_output.float()


def flux_unpacker(height: int, width: int, vae_factor: int):
    """Flux's latents are 2×2 patches, 64 values per token: back to (1, 16, H/8, W/8) for a preview
    (FluxPipeline._unpack_latents)."""

    def unpack(latents: Any) -> Any:
        if latents.dim() != 3:
            return latents
        b, _tokens, c = latents.shape
        h, w = 2 * (height // (vae_factor * 2)), 2 * (width // (vae_factor * 2))
        x = latents.view(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c // 4, h, w)

    return unpack
