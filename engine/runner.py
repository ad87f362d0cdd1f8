"""Runs one request through a diffusers pipeline, streaming x0 previews and honouring cancel."""

from __future__ import annotations

import contextlib
import inspect
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from PIL import Image

from noisebrush.engine.backends.base import Stopped  # raised from the step callback: it also skips the VAE decode
from noisebrush.engine.composition import prepare_regions
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Event, Finished, Preview, Progress
from noisebrush.engine.flow import FLOW_FAMILIES, FLOW_SCHEDULER, flow_scheduler, flux_unpacker, prompt_embeds
from noisebrush.engine.loras import apply_loras
from noisebrush.engine.masks import feathered, paste_back
from noisebrush.engine.models import ModelManager
from noisebrush.engine.previews import X0Tap
from noisebrush.engine.reference_attention import installed as references_installed
from noisebrush.engine.region_attention import RegionMasks, installed
from noisebrush.engine.request import MAX_SEED, GenerationRequest, LoraSpec
from noisebrush.engine.schedulers import make_scheduler
from noisebrush.engine.union import union_kwargs


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def encode_prompt(pipe, model, prompt: str, negative_prompt: str = "") -> dict:
    """A prompt's text embeddings as pipeline kwargs, as every job and bench of this model gets them."""
    negative = negative_prompt or None
    if model.family in FLOW_FAMILIES:
        return prompt_embeds(pipe, model.family, prompt, negative)
    if model.family == "sdxl":
        pe, ne, pooled, neg_pooled = pipe.encode_prompt(prompt, device=pipe.device, negative_prompt=negative)
        return dict(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=neg_pooled)  # fmt: skip
    pe, ne = pipe.encode_prompt(prompt, pipe.device, 1, True, negative_prompt=negative)
    if model.colours is not None:  # the embedded model reads colour words as CIELAB too (engine/colour_words.py)
        pe, ne = model.colours.add(pe, prompt), model.colours.add(ne, negative_prompt)
    return dict(prompt_embeds=pe, negative_prompt_embeds=ne)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: str):
    """The global generators seeded for one call, and put back after. SD3's ControlNet pipeline samples the control
    image's latents without the request's generator: without this, one seed gives two pictures."""
    import torch

    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if device == "cuda" else device):
        torch.manual_seed(seed)
        yield


REGION_FAMILIES = ("sd15", "sdxl")  # masked cross-attention (engine/region_attention.py)
REFERENCE_FAMILIES = ("sd15", "sdxl")  # IP-Adapter (engine/reference_attention.py)


class Runner:
    PROMPT_CACHE_SIZE = 32

    def __init__(self, models: ModelManager, preview_interval_s: float = 1 / 30, previews: bool = True) -> None:
        self.models = models
        self.preview_interval_s = preview_interval_s
        self.previews = previews
        self._prompt_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._embeds_for: weakref.ref | None = None  # the model the cached embeddings belong to

    def _prompt_embeds(self, pipe, model, req: GenerationRequest) -> dict:
        """Text embeddings as pipeline kwargs, cached: live mode repeats the same prompt frame after frame."""
        if self._embeds_for is None or self._embeds_for() is not model:
            # another model: its text encoder differs. (An id() in the key could be reused by a new model.)
            self._prompt_cache.clear()
            self._embeds_for = weakref.ref(model)
        key = (req.prompt, req.negative_prompt, req.loras)  # a LoRA may change the text encoder too
        if key in self._prompt_cache:
            self._prompt_cache.move_to_end(key)
            return self._prompt_cache[key]
        embeds = encode_prompt(pipe, model, req.prompt, req.negative_prompt)
        self._prompt_cache[key] = embeds
        if len(self._prompt_cache) > self.PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return embeds

    def _family(self, ref: str) -> str:
        """A model's family from its configs or file header, without loading it (the loaded one's if it is)."""
        if self.models.is_loaded(ref):
            return self.models.get(ref).family
        from pathlib import Path

        from noisebrush.engine.catalog import classify_file
        from noisebrush.engine.flow import flow_family
        from noisebrush.engine.models import resolve_model_dir

        folder = resolve_model_dir(ref)
        if Path(folder).is_file():
            entry = classify_file(Path(folder))
            return entry.family if entry is not None else "?"
        return flow_family(Path(folder)) or "sd15"  # SDXL and SD1.5 both take regions; only the flow families differ

    def _cross_dim(self, ref: str, family: str, folder) -> int:
        """The width of a model's cross-attention, from its UNet config (or its family, for a single file), unloaded.
        `folder`: resolve_model_dir(ref)."""
        if self.models.is_loaded(ref):
            return int(self.models.get(ref).components["unet"].config.cross_attention_dim)
        from noisebrush.engine.models import read_json_object

        if folder.is_dir() and (folder / "unet" / "config.json").is_file():
            width = read_json_object(folder / "unet" / "config.json").get("cross_attention_dim")
            if isinstance(width, int):
                return width
        return {"sd15": 768, "sdxl": 2048}.get(family, 0)

    def _reference_files(self, req: GenerationRequest) -> list:
        """The IP-Adapter files of each active reference, found (or refused with what to get) before any load."""
        from noisebrush.engine.ip_adapters import find_adapter

        family = self._family(req.model)
        if family not in REFERENCE_FAMILIES:
            raise UserError(f"reference pictures run on SD1.5 and SDXL models on this computer (IP-Adapter), not on "
                            f"{family.upper()} models")  # fmt: skip
        from noisebrush.engine.models import resolve_model_dir

        folder = resolve_model_dir(req.model)
        width = self._cross_dim(req.model, family, folder)
        name = req.model or "the embedded model"
        own = folder if folder.is_dir() else folder.parent
        return [find_adapter(width, name, r.adapter, own=own) for r in req.active_references()]

    def _reference_job(self, model, files: list, req: GenerationRequest, cfg: bool):
        """The job's references with their adapters loaded (once per model and file) and their pictures encoded."""
        from noisebrush.engine.reference_attention import ReferenceJob, cross_attention_names, load_adapter

        unet = model.components["unet"]
        adapters = []
        for f in files:
            key = str(f.path.resolve())
            if key not in model.ip_adapters:
                model.ip_adapters[key] = load_adapter(f, unet, model.device.device, model.device.dtype)
            adapters.append(model.ip_adapters[key])
        hw = (req.height // model.vae_factor, req.width // model.vae_factor)
        return ReferenceJob(adapters, req.active_references(), cross_attention_names(unet), hw, cfg)

    def _region_embeds(self, pipe, model, req: GenerationRequest, embeds: dict, nets: list):
        """(the text embeddings of every block end to end, their masks) for a request with regions; None without.
        Each block's words are encoded (and cached) like a plain prompt; SDXL keeps the whole prompt's pooled one."""
        import torch

        prepared, background, _notes = prepare_regions(req.regions, req.prompt, req.negative_prompt)
        if not prepared:
            return None
        blocks = [background, *prepared]
        encoded = [self._prompt_embeds(pipe, model, req.replace(prompt=b.prompt, negative_prompt=b.negative, regions=()))
                   for b in blocks]  # fmt: skip
        joined = dict(embeds)
        for key in ("prompt_embeds", "negative_prompt_embeds"):
            joined[key] = torch.cat([e[key] for e in encoded], dim=1)
        h, w = req.height // model.vae_factor, req.width // model.vae_factor
        masks = RegionMasks([(e["prompt_embeds"].shape[1], b.weight) for e, b in zip(encoded, blocks)], (h, w))
        self.region_masks = masks  # the last job's, for tests that look at the attention
        return joined, masks

    def run(self, job_id: int, req: GenerationRequest, emit: Callable[[Event], None], cancelled: threading.Event) -> None:
        """Emit Preview events, then Finished. Raises Stopped when cancelled, UserError on bad input."""
        import torch

        req.validate()
        t0 = time.perf_counter()
        if not self.models.is_loaded(req.model):
            emit(Progress(job_id, f"loading model {req.model or 'noisebrush-default'}…"))
        if req.regions:  # refused before anything loads
            family = self._family(req.model)
            if family not in REGION_FAMILIES:
                raise UserError(f"regions run on SD1.5, SDXL and the embedded model on this computer, not on "
                                f"{family.upper()} models; a ComfyUI server runs them for every family")  # fmt: skip
        reference_files = self._reference_files(req) if req.active_references() else []
        model = self.models.get(req.model)
        controls = req.active_controls()
        nets = [model.controlnet(c.kind, c.model) for c in controls]
        if cancelled.is_set():
            raise Stopped(0)
        flow = model.family in FLOW_FAMILIES
        few_step = model.defaults.few_step
        guidance, loras = req.guidance, req.loras
        if flow:  # their own flow-matching sampler, whatever the request names; the result says which ran
            scheduler, req = flow_scheduler(model), req.replace(scheduler=FLOW_SCHEDULER)
        elif few_step is not None and req.steps <= few_step.steps:  # the few-step path (engine/few_step.py)
            scheduler = make_scheduler(few_step.scheduler, model.components["scheduler"].config)
            guidance = few_step.guidance
            if few_step.lora:
                loras = (*loras, LoraSpec(few_step.lora, 1.0))
        else:
            scheduler = make_scheduler(req.scheduler, model.components["scheduler"].config)
        unpack = flux_unpacker(req.height, req.width, model.vae_factor) if model.family == "flux" else None
        tap = X0Tap(scheduler, unpack)
        pipe = model.pipeline(nets, req.mode, scheduler=scheduler)
        apply_loras(pipe, model, loras)
        seed = req.seed if req.seed is not None else random.randint(0, MAX_SEED)
        generator = torch.Generator("cpu").manual_seed(seed)
        last_emit = [float("-inf")]

        def on_step_end(pipe_, i: int, t, kwargs: dict) -> dict:
            done = i + 1
            if cancelled.is_set():
                raise Stopped(done)
            total = getattr(pipe_, "num_timesteps", req.steps)
            if references is not None:
                references.fraction = done / max(total, 1)  # the next step's place, for each reference's start/end
            now = time.perf_counter()
            if self.previews and tap.x0 is not None and (done == total or now - last_emit[0] >= self.preview_interval_s):
                last_emit[0] = now
                emit(Preview(job_id, done, total, model.preview.decode(tap.x0), now - t0))
            return {}

        with torch.inference_mode():
            embeds = self._prompt_embeds(pipe, model, req)
            regions = self._region_embeds(pipe, model, req, embeds, nets)
            if regions is not None:
                embeds, masks = regions
            references = None
            if reference_files:  # (SD1.5 and SDXL only: flow models were refused before loading)
                cfg = guidance > 1 and model.components["unet"].config.time_cond_proj_dim is None
                references = self._reference_job(model, reference_files, req, cfg)
        kwargs: dict = dict(
            **embeds,
            num_inference_steps=req.steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        if req.mode == "img2img":
            kwargs.update(strength=req.strength)
        if req.mode != "img2img" or (flow and "height" in inspect.signature(pipe.__call__).parameters):
            kwargs.update(width=req.width, height=req.height)  # Flux's img2img would otherwise default to 1024 px
        mask = feathered(req.mask, req.feather) if req.mode == "inpaint" else None
        if mask is not None:
            kwargs.update(strength=req.strength, mask_image=Image.fromarray(mask))
        images = [Image.fromarray(c.image) for c in controls]  # diffusers reads a bare HxWx3 array as a batch
        union = union_kwargs(nets, controls, images)
        if union:
            kwargs.update(union)
        elif controls:
            single = len(controls) == 1
            key = "control_image" if req.init_image is not None or flow else "image"
            kwargs[key] = images[0] if single else images
            kwargs["controlnet_conditioning_scale"] = controls[0].weight if single else [c.weight for c in controls]
            kwargs["control_guidance_start"] = controls[0].start if single else [c.start for c in controls]
            kwargs["control_guidance_end"] = controls[0].end if single else [c.end for c in controls]
        if req.init_image is not None:
            kwargs["image"] = Image.fromarray(req.init_image)
        region_attention = installed([pipe.unet, *nets], masks) if regions is not None else contextlib.nullcontext()
        # references over regions: their processor runs the region one and adds the picture's part
        reference_attention = references_installed(pipe.unet, references) if references else contextlib.nullcontext()
        try:
            with (torch.inference_mode(), seeded_global_rng(seed, model.device.device), region_attention,
                  reference_attention):  # fmt: skip
                result = pipe(**kwargs).images[0]
        except Stopped:
            pipe.maybe_free_model_hooks()  # skipped by the raise; matters with CPU offload
            raise
        if cancelled.is_set():  # superseded during the final decode: a stale frame must not land
            raise Stopped(req.steps)
        image = _to_uint8(result)
        if mask is not None:
            image = paste_back(image, req.init_image, mask)
        emit(Finished(job_id, image, req.replace(seed=seed), time.perf_counter() - t0, model.name))
