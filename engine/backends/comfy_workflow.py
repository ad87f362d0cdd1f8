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
    "Euler trailing": ("euler", "sgm_uniform"),
    "DDIM": ("ddim", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
    "LCM": ("lcm", "sgm_uniform"),
}
OUTPUT_NODE = "save"
# The ComfyUI IPAdapter node pack (cubiq/ComfyUI_IPAdapter_plus; signatures recorded from 2.0.0, commit 9d076a3):
# core ComfyUI has no IP-Adapter nodes, so a server without it cannot run reference pictures.
IPADAPTER_PACK = "the ComfyUI IPAdapter node pack (ComfyUI_IPAdapter_plus, github.com/cubiq/ComfyUI_IPAdapter_plus)"
IPADAPTER_NODES = ("IPAdapterModelLoader", "IPAdapterAdvanced")
# our modes → the pack's weight_type (the same layers as engine/reference_attention.py's)
WEIGHT_TYPES = {"style": "style transfer", "composition": "composition", "both": "linear"}


@dataclass(frozen=True)
class Uploads:
    """The server-side names of the images a request needs, as `/upload/image` returned them."""

    controls: tuple[str, ...] = ()  # one per active control, in order
    init_image: str | None = None
    mask: str | None = None
    regions: tuple[str, ...] = ()  # one mask per block of region_blocks(request), in order
    references: tuple[str, ...] = ()  # one picture per active reference, in order
    reference_masks: tuple[str | None, ...] = ()  # its mask, or None where it applies everywhere


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
    ipadapters: tuple[str, ...] | None = None  # the IPAdapter pack's adapter files; None: the server lacks the pack
    clip_vision: tuple[str, ...] = ()

    @property
    def reference_note(self) -> str:
        """What Settings → Test says about reference pictures on this server."""
        if self.ipadapters is None:
            return "no reference pictures (it lacks the IPAdapter node pack)"
        return f"reference pictures: {len(self.ipadapters)} IP-Adapter{'' if len(self.ipadapters) == 1 else 's'}"


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


def _family_guess(checkpoint: str) -> str:
    """SDXL or SD1.5 from a checkpoint's name ("…XL…"): a server does not say what a checkpoint is."""
    return "sdxl" if "xl" in _basename(checkpoint).lower() else "sd15"


def ipadapter_for(adapter: str, checkpoint: str, models: ServerModels, server: str) -> str:
    """The pack's adapter file for a reference: the one it names, else h94's plain one for the checkpoint's family."""
    from noisebrush.engine.ip_adapters import PREFERRED

    if models.ipadapters is None:
        raise UserError(f"{server} cannot run reference pictures: it lacks {IPADAPTER_PACK}; install it there, restart "
                        "the server, or remove the reference layers")  # fmt: skip
    if adapter:
        return _pick(adapter, models.ipadapters, "IP-Adapter", server)
    family = _family_guess(checkpoint)
    for name in PREFERRED[family]:
        found = [a for a in models.ipadapters if _basename(a) == name]
        if found:
            return found[0]
    if not models.ipadapters:
        raise UserError(f"{server} has no IP-Adapter files (its models/ipadapter folder is empty)")
    return models.ipadapters[0]


def clip_vision_for(ipadapter: str, models: ServerModels, server: str) -> str:
    """The image encoder an adapter was trained with: ViT-bigG for ip-adapter_sdxl and the -vit-G ones, else ViT-H."""
    name = _basename(ipadapter).lower()
    big = name.startswith("ip-adapter_sdxl.") or "vit-g" in name
    words = ("bigg", "vit-g") if big else ("vit-h", "h-14")
    found = [c for c in models.clip_vision if any(w in _basename(c).lower() for w in words)]
    if not found:
        want = "CLIP-ViT-bigG-14-laion2B-39B-b160k" if big else "CLIP-ViT-H-14-laion2B-s32B-b79K"
        raise UserError(f"{server} has no CLIP vision model for {_basename(ipadapter)}: put h94's image encoder in "
                        f"its models/clip_vision folder as {want}.safetensors")  # fmt: skip
    return found[0]


def _references(node, request: GenerationRequest, unet: list, uploads: Uploads, checkpoint: str, models: ServerModels,
                server: str) -> list:  # fmt: skip
    """The model with every active reference applied by the IPAdapter pack, one IPAdapterAdvanced each."""
    refs = request.active_references()
    if len(uploads.references) != len(refs) or len(uploads.reference_masks) != len(refs):
        raise ValueError("one uploaded picture (and mask or None) per active reference")
    for i, (ref, picture, mask) in enumerate(zip(refs, uploads.references, uploads.reference_masks)):
        adapter = ipadapter_for(ref.adapter, checkpoint, models, server)
        extra = {}
        if mask is not None:
            extra["attn_mask"] = node(f"reference_mask{i}", "LoadImageMask", image=mask, channel="red")
        key = f"reference{i}"
        node(key, "IPAdapterAdvanced", model=unet,
             ipadapter=node(f"ipadapter{i}", "IPAdapterModelLoader", ipadapter_file=adapter),
             clip_vision=node(f"clip_vision{i}", "CLIPVisionLoader", clip_name=clip_vision_for(adapter, models, server)),
             image=node(f"reference_image{i}", "LoadImage", image=picture), weight=ref.weight,
             weight_type=WEIGHT_TYPES[ref.mode], combine_embeds="concat", start_at=ref.start, end_at=ref.end,
             embeds_scaling="V only", **extra)  # fmt: skip
        unet = [key, 0]
    return unet


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
    checkpoint = checkpoint_for(request, models, server)
    node(ckpt, "CheckpointLoaderSimple", ckpt_name=checkpoint)
    unet, clip, vae = [ckpt, 0], [ckpt, 1], [ckpt, 2]
    for i, lora in enumerate(request.loras):
        key = f"lora{i}"
        node(key, "LoraLoader", model=unet, clip=clip, lora_name=_pick(lora.path, models.loras, "LoRA", server),
             strength_model=lora.weight, strength_clip=lora.weight)  # fmt: skip
        unet, clip = [key, 0], [key, 1]
    if request.active_references():
        unet = _references(node, request, unet, uploads, checkpoint, models, server)
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
