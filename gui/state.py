"""The state model under the GUI: settings, layers (the Document), the current job, history, models, the seed policy.

No widgets here. Widgets bind to it both ways: an edit calls `update`, and they redraw on `settings_changed`.
Every change says where it came from (`origin`): "user" edits may start a live frame; "restore" (a PNG, a history
item, an autosave) and "seed" (the seed policy showing a drawn seed) never do.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QSize, Signal
from PySide6.QtGui import QImage

from noisebrush.engine.accelerators import ACCELERATED_FAMILIES, MAX_STEPS, PREFERENCE, Accelerator, accelerator_of
from noisebrush.engine.backends.base import ModelInfo
from noisebrush.engine.edit import extend
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.engine.models import ModelDefaults, model_defaults
from noisebrush.engine.pose import people_from_json, people_to_json
from noisebrush.engine.prompt_loras import apply_tags
from noisebrush.engine.request import MAX_SEED, ControlSpec, GenerationRequest, LoraSpec
from noisebrush.engine.union import UNION_MODE, named_union
from noisebrush.gui.document import Document, qimage_to_rgba
from noisebrush.gui.references import reference_specs, replace_references
from noisebrush.gui.regions import region_specs, replace_regions

MIN_SKETCH_SIDE = 512  # px: a smaller output's document is an integer multiple of it, so strokes stay smooth
MAX_DOC_SIDE = 8192  # px: an upscaled picture's document; 8192² RGBA is 256 MB a layer
HISTORY_LIMIT = 200  # results kept in memory; live mode makes many


@dataclass(frozen=True)
class GenerationSettings:
    """Everything the Generate panel shows, as plain data (what QSettings and the autosave keep)."""

    prompt: str = "a red circle on a blue background"
    negative: str = ""
    model: str = ""
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0
    seed_locked: bool = False
    width: int = 128
    height: int = 128
    scheduler: str = "DPM++ 2M"
    live: bool = False
    mode: str = "generate"  # "generate" | "refine" (img2img) | "inpaint" (through the mask) | "extend" (outpaint)
    strength: float = 0.5  # refine and inpaint: how much of the picture is repainted
    feather: int = 8  # inpaint: px of soft edge around the mask
    extend_px: int = 64  # extend: px added on each chosen side
    extend_sides: str = "r"  # extend: which sides, letters of "ltrb"
    loras: tuple[tuple[str, float], ...] = ()  # (file, weight), in order

    @classmethod
    def from_dict(cls, data: dict) -> GenerationSettings:
        """Known keys only: files written by other versions may hold more or fewer."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "loras" in known:  # JSON gives lists
            known["loras"] = tuple((str(p), float(w)) for p, w in known["loras"])
        return cls(**known)


# Fields that do not change the request: toggling them never starts a live frame by itself.
NOT_IN_REQUEST = frozenset({"seed_locked", "live"})


def doc_size(width: int, height: int) -> QSize:
    """The document is the output at full size: every pixel a person paints reaches the request unresampled. Only
    an output under 512 px (the embedded model's 128) is sketched at a whole multiple of its size."""
    k = max(1, -(-MIN_SKETCH_SIDE // max(width, height)))
    return QSize(width * k, height * k)


class AppState(QObject):
    settings_changed = Signal(object, str)  # frozenset of changed field names, origin
    result_changed = Signal(object, bool)  # QImage | None, is a step preview
    history_added = Signal(object, bool)  # Finished, whether it replaces the live slot at the front
    result_kept = Signal(object)  # Finished: a result to keep on disk
    models_changed = Signal()

    def __init__(self, settings: GenerationSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or GenerationSettings()
        self.doc = Document(doc_size(self.settings.width, self.settings.height))
        self.doc.setParent(self)  # the document (and its undo stack) lives as long as the state
        self.job: int | None = None
        self.last_result: Finished | None = None
        self.history: list[Finished] = []
        self._defaults: tuple[str, ModelDefaults] | None = None  # (model, its defaults): model_defaults()
        self.live_slot: Finished | None = None  # the front history item while live mode makes frames
        self.editor_of: dict[int, dict] = {}  # job id → what a saved PNG needs beyond the request (the skeleton)
        self.models: list[ModelInfo] = []

    # --- settings --------------------------------------------------------------------------
    def update(self, origin: str = "user", **changes: object) -> frozenset[str]:
        """Change settings; emits settings_changed with the fields that really changed (so echoes stop here)."""
        if "width" in changes or "height" in changes:  # the engine takes multiples of 8
            changes.update({k: min(MAX_DOC_SIDE, max(8, int(changes[k]) // 8 * 8)) for k in ("width", "height")
                            if k in changes})  # fmt: skip
        before = self.settings
        self.settings = dataclasses.replace(before, **changes)
        names = frozenset(f for f in changes if getattr(before, f) != getattr(self.settings, f))
        if "live" in names and not self.settings.live and self.live_slot is not None:
            self.result_kept.emit(self.live_slot)  # live mode stopped: its last frame is kept
            self.live_slot = None
        if names & {"width", "height"}:
            self.doc.resize(doc_size(self.settings.width, self.settings.height))
            self.set_result(None)
        if names:
            self.settings_changed.emit(names, origin)
        return names

    def new_seed(self, origin: str = "user") -> None:
        self.update(origin, seed=random.randint(0, MAX_SEED))

    # --- requests --------------------------------------------------------------------------
    def capture_request(self, live_frame: bool = False) -> GenerationRequest:
        """Freeze the sketch and settings into one request (GUI thread).

        The seed policy: an unlocked seed is drawn anew for each Generate, but kept while live mode runs, so the
        picture does not jump with every stroke (New seed is the explicit action). A live frame on a model with a
        few-step path (engine/few_step.py) takes that many steps; Generate keeps the Steps slider's.
        """
        s = self.settings
        if not s.seed_locked and not s.live:
            self.new_seed(origin="seed")
            s = self.settings
        missing = self.kinds_without_controlnet()
        controls = self.controls(s.width, s.height, missing)
        # A1111's <lora:name:w> tags in the prompt join the LoRA list's (by file name, among the LoRAs found)
        prompt, loras = apply_tags(s.prompt, tuple(LoraSpec(p, w) for p, w in s.loras),
                                   [m.ref for m in self.models if m.role == "lora"], "the LoRA list")  # fmt: skip
        steps, guidance, scheduler = self._steps(live_frame), s.guidance, s.scheduler
        accel = self.live_accelerator() if live_frame else None
        if accel is not None:  # live frames only: Generate keeps the person's steps, guidance and sampler
            lora, how = accel
            steps, guidance, scheduler = min(s.steps, how.steps), how.guidance, how.scheduler
            loras = (*[x for x in loras if x.path != lora], LoraSpec(lora, 1.0))
        req = GenerationRequest(
            prompt=prompt, negative_prompt=s.negative, controls=controls, steps=steps, guidance=guidance,
            seed=s.seed, width=s.width, height=s.height, scheduler=scheduler, model=s.model, loras=loras,
            regions=region_specs(self.doc, s.width, s.height), references=reference_specs(self.doc, s.width, s.height),
        )  # fmt: skip
        return req if s.mode == "generate" else self._edit_request(req)

    def upscale_source(self) -> np.ndarray | None:
        """What Upscale works on: the Image layer's picture (a small model's at output size), else the shown result."""
        picture = self.doc.edit_image(self.settings.width, self.settings.height)
        if picture is None and self.last_result is not None:
            picture = self.last_result.image
        return picture

    def capture_upscale(self, scale: float, upscaler: str, strength: float, controlnet: str = "") -> GenerationRequest:
        """An upscale request (engine/composition.py Tiling): the Image layer's picture at the document's full size
        (else the shown result), `scale` times larger, refined in tiles at `strength` (0: upscale only) with the
        prompt, the control layers, the regions and the references at the new size, cropped per tile."""
        from noisebrush.engine.composition import Tiling
        from noisebrush.engine.upscale import check_scale

        if not self.settings.seed_locked:
            self.new_seed(origin="seed")
        s, doc = self.settings, self.doc
        picture = self.upscale_source()
        if picture is None:
            raise UserError("nothing to upscale yet: generate a picture, or load one into the Image layer")
        width, height = check_scale(scale, picture.shape[1], picture.shape[0])
        prompt, loras = apply_tags(s.prompt, tuple(LoraSpec(p, wt) for p, wt in s.loras),
                                   [m.ref for m in self.models if m.role == "lora"], "the LoRA list")  # fmt: skip
        missing = self.kinds_without_controlnet()
        return GenerationRequest(
            prompt=prompt, negative_prompt=s.negative, steps=s.steps, guidance=s.guidance, seed=s.seed, width=width,
            height=height, scheduler=s.scheduler, model=s.model, loras=loras, init_image=picture, strength=strength,
            controls=self.controls(width, height, missing),
            regions=region_specs(doc, width, height), references=reference_specs(doc, width, height),
            tiling=Tiling(upscaler=upscaler, controlnet=controlnet),
        )  # fmt: skip

    def model_defaults(self) -> ModelDefaults:
        """The current model's defaults (few-step path, LCM training, kind of guidance): read once per model."""
        model = self.settings.model
        if self._defaults is None or self._defaults[0] != model:  # a small JSON read, not on every keystroke
            self._defaults = (model, model_defaults(model))
        return self._defaults[1]

    def accelerable_model(self) -> ModelInfo | None:
        """The current model, when an accelerator LoRA would speed its live frames: an SD1.5 or SDXL model of the
        person's with no few-step path of its own (the embedded model and distilled checkpoints keep theirs)."""
        info, d = self.model_info(self.settings.model), self.model_defaults()
        if info is None or not info.ref or info.family not in ACCELERATED_FAMILIES or d.few_step or d.steps <= MAX_STEPS:
            return None
        return info

    def live_accelerator(self) -> tuple[str, Accelerator] | None:
        """The accelerator LoRA live frames use on this model (engine/accelerators.py): one of its family in the
        models folder, the best kind first; None where there is none, or the model needs none."""
        info = self.accelerable_model()
        if info is None:
            return None
        found = [(m.ref, a) for m in self.models if m.role == "lora" and m.family == info.family
                 and (a := accelerator_of(m.ref)) is not None]  # fmt: skip
        found.sort(key=lambda f: PREFERENCE.index(f[1].name))
        return found[0] if found else None

    def _steps(self, live_frame: bool) -> int:
        steps, few = self.settings.steps, self.model_defaults().few_step
        return min(steps, few.steps) if live_frame and few else steps

    def _edit_request(self, req: GenerationRequest) -> GenerationRequest:
        """Refine, inpaint or extend the Image layer's picture."""
        s = self.settings
        init = self.doc.edit_image(s.width, s.height)
        if init is None:
            raise UserError("the Image layer is empty: use Edit this on a result (Ctrl+E), or load a picture into it")
        if s.mode == "refine":
            return req.replace(init_image=init, strength=s.strength)
        if s.mode == "inpaint":
            mask = self.doc.edit_mask(s.width, s.height)
            if mask is None:
                raise UserError("the Mask layer is empty: paint where to repaint first")
            return req.replace(init_image=init, mask=mask, feather=s.feather, strength=s.strength)
        sides = [s.extend_px if side in s.extend_sides else 0 for side in "ltrb"]
        return extend(req.replace(init_image=init, mask=self.doc.edit_mask(s.width, s.height)), *sides)

    def edit_result(self, ev: Finished) -> None:
        """A result becomes the picture being edited (undoable); an extended one widens the canvas first."""
        h, w = ev.image.shape[:2]
        if (w, h) != (self.settings.width, self.settings.height):
            self.update("restore", width=w, height=h)
        self.doc.set_layer_from_map("image", ev.image, None, "Edit this result")
        self.doc.clear_layer("mask")

    def restore_request(self, req: GenerationRequest, trusted: bool = True) -> list[str]:
        """A PNG's or a history item's settings into the model, as a restore: no live frame starts from it.

        A file is not trusted (trusted=False): a model it names is used only if the person already has it in the
        model list; otherwise the current one stays, and the returned notes say so.
        """
        notes = []
        model = req.model
        if not trusted and not self.known_model(model, "base"):
            notes.append(f"the picture was made with {model!r}, which is not among your models: the current one stays")
            model = self.settings.model
        loras = tuple((lo.path, lo.weight) for lo in req.loras if trusted or self.known_model(lo.path, "lora"))
        if len(loras) < len(req.loras):
            notes.append("LoRAs that are not among your models were left out")
        self.update("restore", loras=loras, prompt=req.prompt, negative=req.negative_prompt, model=model, steps=req.steps,
                    guidance=req.guidance, seed=req.seed if req.seed is not None else self.settings.seed,
                    seed_locked=req.seed is not None, width=req.width, height=req.height, scheduler=req.scheduler)  # fmt: skip
        for c in req.controls:
            if c.kind not in self.doc.layers:
                continue
            net = c.model or ""
            if not trusted and net and not self.known_model(net, "controlnet"):
                notes.append(f"its {c.kind} ControlNet {net!r} is not among your models: the layer uses the model's own")
                net = ""
            self.doc.set_layer_settings(c.kind, "restore", weight=c.weight, start=c.start, end=c.end, controlnet=net)
        return notes

    def capture_editor(self) -> dict:
        """The editor's state that a request does not hold: the pose skeleton, as OpenPose JSON."""
        pose = self.doc.pose_layer()
        if not pose.people:
            return {}
        return {"pose": people_to_json(pose.people, self.doc.size.width(), self.doc.size.height())}

    def restore_saved(self, req: GenerationRequest, editor: dict) -> list[str]:
        """A saved picture's whole state, as one undo step: settings, each control map into its layer (the pose as
        an editable skeleton), the picture it edited into the Image layer, its mask into the Mask layer and its
        regions as region layers."""
        notes = self.restore_request(req, trusted=False)
        doc = self.doc
        doc.undo_stack.beginMacro("Restore from file")
        try:
            specs = {c.kind: c for c in req.controls}
            for kind, layer in doc.layers.items():
                spec = specs.get(kind)
                if spec is None:
                    if layer.people or qimage_to_rgba(layer.image)[..., 3].any():
                        doc.clear_layer(kind)
                    continue
                people = self.skeleton_from(editor, notes) if layer.info.editor == "pose" else None
                doc.set_layer_from_map(kind, spec.image, people, "Restore from file")
                doc.set_layer_settings(kind, "restore", enabled=True)
            for kind, image in (("image", req.init_image), ("mask", req.mask)):
                if image is None:
                    doc.clear_layer(kind)
                else:
                    doc.set_layer_from_map(kind, image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2), None,
                                           "Restore from file")  # fmt: skip
            replace_regions(doc, req.regions, "Restore from file")
            replace_references(doc, req.references, "Restore from file")
        finally:
            doc.undo_stack.endMacro()
        mode = {"txt2img": "generate", "img2img": "refine", "inpaint": "inpaint"}[req.mode]
        self.update("restore", mode=mode, strength=req.strength, feather=req.feather)
        return notes

    def skeleton_from(self, saved: dict, notes: list[str] | None = None) -> list | None:
        """The pose skeleton a saved file keeps as OpenPose JSON (its "pose" entry), at the document's size."""
        if not isinstance(saved.get("pose"), dict):
            return None
        try:
            return people_from_json(saved["pose"], self.doc.size.width(), self.doc.size.height())[0]
        except (ValueError, TypeError):
            if notes is not None:
                notes.append("its pose skeleton could not be read: the pose map is kept as a picture")
            return None

    def known_model(self, ref: str, role: str) -> bool:
        """The embedded model, the current one, or one the models list (the person's folder, the server) holds."""
        if ref == "" or (role == "base" and ref == self.settings.model):
            return True
        if role == "controlnet" and any(layer.settings.controlnet == ref for layer in self.doc.layers.values()):
            return True
        return any(m.ref == ref and m.role == role for m in self.models)

    # --- models ----------------------------------------------------------------------------
    def set_models(self, models: list[ModelInfo]) -> None:
        self.models = list(models)
        self.models_changed.emit()

    def model_info(self, ref: str) -> ModelInfo | None:
        return next((m for m in self.models if m.role == "base" and m.ref == ref), None)

    def kinds_without_controlnet(self) -> set[str]:
        """Layers that cannot be used as they are: the base model ships no ControlNet for them, none is picked and
        the models folder has none of the model's family for them."""
        info = self.model_info(self.settings.model)
        if info is None or info.control_kinds is None:
            return set()  # not known (yet): let the engine say
        return {k for k, layer in self.doc.layers.items()
                if not layer.settings.controlnet and k not in info.control_kinds and not self.folder_controlnet(k)}  # fmt: skip

    def folder_controlnet(self, kind: str) -> str:
        """The models folder's ControlNet for a layer of `kind` whose model ships none (a model pack puts them
        there): one whose name says the kind, of the model's family, else the family's ControlNet Union. "" for
        none, and always for the embedded model, which no full-size ControlNet fits."""
        info = self.model_info(self.settings.model)
        if info is None or not info.ref or (info.control_kinds is not None and kind in info.control_kinds):
            return ""
        nets = [m for m in self.models if m.role == "controlnet" and m.family == info.family]
        named = [m for m in nets if m.control_kind == kind]
        unions = [m for m in nets if m.control_kind is None and named_union(m.ref) and kind in UNION_MODE]
        return (named or unions or [ModelInfo("", "", "", "")])[0].ref

    def controls(self, width: int, height: int, missing: set[str]) -> tuple[ControlSpec, ...]:
        """The enabled layers' specs at this size, each with the ControlNet it will use written in (the layer's
        pick, else the models folder's for its kind), so the request and its PNG say which one ran."""
        specs = [c for c in self.doc.active_specs(width, height) if c.kind not in missing]
        return tuple(c if c.model else dataclasses.replace(c, model=self.folder_controlnet(c.kind) or None) for c in specs)

    # --- job, results, history -------------------------------------------------------------
    def set_job(self, job: int | None) -> None:
        self.job = job

    def set_result(self, image: QImage | None, preview: bool = False) -> None:
        self.result_changed.emit(image, preview)

    def add_result(self, ev: Finished, kept: bool = True, live: bool = False) -> None:
        """A result into the history. Live frames share one slot at the front (not kept on disk) until live mode
        stops, which keeps the last one; other results are kept as they come (kept=False: already on disk)."""
        replaces = live and self.live_slot is not None and bool(self.history) and self.history[0] is self.live_slot
        if replaces:
            self.history[0] = ev
        else:
            self.history.insert(0, ev)
        del self.history[HISTORY_LIMIT:]
        self.live_slot = ev if live else None
        if kept and not live:
            self.result_kept.emit(ev)
        kept = {e.job_id for e in self.history} | ({self.job} if self.job is not None else set())
        self.editor_of = {job: extra for job, extra in self.editor_of.items() if job in kept or job > ev.job_id}
        self.history_added.emit(ev, replaces)

    def restore_result(self, ev: Finished, image: QImage) -> None:
        """A history item: its picture and settings come back; nothing is generated."""
        self.last_result = ev
        self.set_result(image)
        self.restore_request(ev.params)
        replace_references(self.doc, ev.params.references, "Restore references")  # they are settings, with pictures
