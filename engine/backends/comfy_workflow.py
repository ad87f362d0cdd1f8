"""A GenerationRequest as a ComfyUI API-format workflow (a dict of nodes), built only from ComfyUI's core nodes.

Pure data: no network here, so the translation is tested without a server. Images travel separately
(`/upload/image`); the workflow names them by the names the server gave back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noisebrush.engine.errors import UserError
from noisebrush.engine.request import GenerationRequest

# Our sampler names (A1111's) → ComfyUI's (sampler_name, scheduler).
SAMPLERS: dict[str, tuple[str, str]] = {
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "Euler": ("euler", "normal"),
    "Euler a": ("euler_ancestral", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
    "LCM": ("lcm", "sgm_uniform"),
}
OUTPUT_NODE = "save"


@dataclass(frozen=True)
class Uploads:
    """The server-side names of the images a request needs, as `/upload/image` returned them."""

    controls: tuple[str, ...] = ()  # one per active control, in order
    init_image: str | None = None
    mask: str | None = None
    regions: tuple[str, ...] = ()  # one mask per block of region_blocks(request), in order


def region_blocks(request: GenerationRequest) -> list:
    """The prompts a request's regions become, each with its weight map (engine/composition.py's rules): the
    background first where it keeps an area, then the regions. [] for a request without regions."""
    from noisebrush.engine.composition import has_background, prepare_regions

    prepared, background, _notes = prepare_regions(request.regions, request.prompt, request.negative_prompt)
    return ([background] if has_background(background) else []) + prepared if prepared else []


@dataclass(frozen=True)
class ServerModels:
    """What one server has, by ComfyUI's names (file names relative to its model folders)."""

    checkpoints: tuple[str, ...] = ()
    controlnets: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    samplers: tuple[str, ...] = field(default=tuple(s for s, _ in SAMPLERS.values()))
    schedulers: tuple[str, ...] = field(default=tuple(s for _, s in SAMPLERS.values()))


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _pick(name: str, available: tuple[str, ...], what: str, server: str) -> str:
    """The server's entry for `name`: exact, else the same file name in any subfolder (people keep folders)."""
    if name in available:
        return name
    matches = [a for a in available if _basename(a) == _basename(name)]
    if not matches:  # "ink" for ink.safetensors, as A1111's <lora:ink:0.8> names it
        matches = [a for a in available if _basename(a).rsplit(".", 1)[0] == _basename(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"{server} has no {what} named {_basename(name)!r}")
    raise UserError(f"{server} has several {what}s named {_basename(name)!r}: {', '.join(matches)}")


def checkpoint_for(request: GenerationRequest, models: ServerModels, server: str) -> str:
    """The checkpoint a request runs on: its model by name, or the server's first one for the default ("")."""
    if not request.model:
        if not models.checkpoints:
            raise UserError(f"{server} has no checkpoints in its models/checkpoints folder")
        return models.checkpoints[0]
    return _pick(request.model, models.checkpoints, "checkpoint", server)


def controlnet_for(kind: str, model: str | None, models: ServerModels, server: str) -> str:
    """A control's ControlNet: the one it names, else the only one on the server whose name says its kind."""
    from noisebrush.engine.controls import kind_from_name

    if model:
        return _pick(model, models.controlnets, "ControlNet", server)
    fitting = [c for c in models.controlnets if kind_from_name(_basename(c)) == kind]
    if not fitting:
        raise UserError(f"{server} has no {kind} ControlNet: pick one of its ControlNets for the {kind} layer")
    return fitting[0]


def sampler_for(name: str, models: ServerModels, server: str) -> tuple[str, str]:
    if name not in SAMPLERS:
        raise UserError(f"ComfyUI has no sampler matching {name!r}; choose one of: {', '.join(SAMPLERS)}")
    sampler, scheduler = SAMPLERS[name]
    if sampler not in models.samplers or scheduler not in models.schedulers:
        raise UserError(f"{server} does not offer {name} ({sampler} + {scheduler}); choose another sampler")
    return sampler, scheduler


def _masked_conditioning(node, clip: list, texts: list[str], masks: tuple[str, ...], prefix: str) -> list:
    """CLIPTextEncode → ConditioningSetMask per text, all joined by ConditioningCombine."""
    combined = None
    for i, (text, upload) in enumerate(zip(texts, masks, strict=True)):
        encoded = node(f"{prefix}_text{i}", "CLIPTextEncode", text=text, clip=clip)
        mask = node(f"{prefix}_mask{i}", "LoadImageMask", image=upload, channel="red")
        masked = node(f"{prefix}{i}", "ConditioningSetMask", conditioning=encoded, mask=mask, strength=1.0,
                      set_cond_area="default")  # fmt: skip
        combined = masked if combined is None else node(f"{prefix}_combine{i}", "ConditioningCombine",
                                                        conditioning_1=combined, conditioning_2=masked)  # fmt: skip
    return combined


def build_workflow(request: GenerationRequest, seed: int, uploads: Uploads, models: ServerModels,
                   server: str = "the server") -> dict[str, dict[str, Any]]:  # fmt: skip
    """The API-format graph for one request; UserError (one line) when the server lacks something it needs."""
    controls = request.active_controls()
    if len(uploads.controls) != len(controls):
        raise ValueError("one upload per active control")
    sampler, scheduler = sampler_for(request.scheduler, models, server)
    g: dict[str, dict[str, Any]] = {}

    def node(key: str, cls: str, **inputs: Any) -> list:
        g[key] = {"class_type": cls, "inputs": inputs}
        return [key, 0]

    ckpt = "ckpt"
    node(ckpt, "CheckpointLoaderSimple", ckpt_name=checkpoint_for(request, models, server))
    unet, clip, vae = [ckpt, 0], [ckpt, 1], [ckpt, 2]
    for i, lora in enumerate(request.loras):
        key = f"lora{i}"
        node(key, "LoraLoader", model=unet, clip=clip, lora_name=_pick(lora.path, models.loras, "LoRA", server),
             strength_model=lora.weight, strength_clip=lora.weight)  # fmt: skip
        unet, clip = [key, 0], [key, 1]
    positive = node("positive", "CLIPTextEncode", text=request.prompt, clip=clip)
    negative = node("negative", "CLIPTextEncode", text=request.negative_prompt, clip=clip)
    blocks = region_blocks(request)
    if len(uploads.regions) != len(blocks):
        raise ValueError("one uploaded mask per region block")
    if blocks:  # each prompt where its mask is: ComfyUI's core regional conditioning, one model pass per block
        positive = _masked_conditioning(node, clip, [b.prompt for b in blocks], uploads.regions, "region")
        if any(b.negative != request.negative_prompt for b in blocks):
            negative = _masked_conditioning(node, clip, [b.negative for b in blocks], uploads.regions, "region_negative")
    for i, (spec, upload) in enumerate(zip(controls, uploads.controls, strict=True)):
        image = node(f"control_image{i}", "LoadImage", image=upload)
        net = node(f"controlnet{i}", "ControlNetLoader", control_net_name=controlnet_for(spec.kind, spec.model, models, server))
        key = f"apply{i}"
        node(key, "ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=net, image=image,
             strength=spec.weight, start_percent=spec.start, end_percent=spec.end, vae=vae)  # fmt: skip
        positive, negative = [key, 0], [key, 1]
    denoise = 1.0
    if request.mode == "txt2img":
        latent = node("latent", "EmptyLatentImage", width=request.width, height=request.height, batch_size=1)
    else:
        if uploads.init_image is None:
            raise ValueError("img2img needs the uploaded init image")
        pixels = node("init_image", "LoadImage", image=uploads.init_image)
        latent = node("latent", "VAEEncode", pixels=pixels, vae=vae)
        denoise = request.strength
        if request.mode == "inpaint":
            if uploads.mask is None:
                raise ValueError("inpainting needs the uploaded mask")
            mask = node("mask", "LoadImageMask", image=uploads.mask, channel="red")
            latent = node("masked_latent", "SetLatentNoiseMask", samples=latent, mask=mask)
    sampled = node("sampler", "KSampler", model=unet, seed=seed, steps=request.steps, cfg=request.guidance,
                   sampler_name=sampler, scheduler=scheduler, positive=positive, negative=negative,
                   latent_image=latent, denoise=denoise)  # fmt: skip
    decoded = node("decode", "VAEDecode", samples=sampled, vae=vae)
    node(OUTPUT_NODE, "PreviewImage", images=decoded)  # the server's temp folder: nothing left in its outputs
    return g
