"""PNG metadata: an A1111-compatible `parameters` chunk and a JSON chunk that restores the whole request."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from noisebrush.engine.atomic import atomic_file
from noisebrush.engine.composition import Reference, Region, Tiling
from noisebrush.engine.errors import UserError
from noisebrush.engine.images import regular_file
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

JSON_KEY = "noisebrush"
A1111_KEY = "parameters"
FORMAT_VERSION = 1


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


MAX_PARAMETERS_CHARS = 64_000  # an A1111 parameters text longer than this is not a real one
MAX_EMBEDDED_PIXELS = 4096 * 4096


def from_b64(data: str) -> np.ndarray:
    if not isinstance(data, str):
        raise ValueError("an image entry is not text")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as img:
            if img.width * img.height > MAX_EMBEDDED_PIXELS:
                raise ValueError(f"an embedded image of {img.width}×{img.height} is too large")
            return np.asarray(img.convert("RGB")).copy()
    except Image.DecompressionBombError:  # not a ValueError: Pillow refuses a huge header before its size is seen here
        raise ValueError("an embedded image is too large to open safely") from None


def a1111_parameters(req: GenerationRequest, model_name: str) -> str:
    """The text A1111 writes, so other tools (and sites) can read our settings."""
    # A1111 names LoRAs in the prompt: <lora:file stem:weight>
    lines = [req.prompt + "".join(f" <lora:{Path(lo.path).stem}:{lo.weight:g}>" for lo in req.loras)]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    fields = [
        f"Steps: {req.steps}",
        f"Sampler: {req.scheduler}",
        f"CFG scale: {req.guidance:g}",
        f"Seed: {req.seed if req.seed is not None else -1}",
        f"Size: {req.width}x{req.height}",
        f"Model: {model_name}",
    ]
    if req.init_image is not None:
        fields.append(f"Denoising strength: {req.strength:g}")
    for i, c in enumerate(req.controls):
        fields.append(
            f'ControlNet {i}: "Module: {c.kind}, Weight: {c.weight:g}, Guidance Start: {c.start:g}, Guidance End: {c.end:g}"'
        )
    lines.append(", ".join(fields))
    return "\n".join(lines)


def request_to_json(req: GenerationRequest) -> dict:
    return {
        "version": FORMAT_VERSION,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "steps": req.steps,
        "guidance": req.guidance,
        "seed": req.seed,
        "width": req.width,
        "height": req.height,
        "scheduler": req.scheduler,
        "strength": req.strength,
        "model": req.model,
        "init_image": None if req.init_image is None else png_b64(req.init_image),
        "mask": None if req.mask is None else png_b64(np.repeat(req.mask[..., None], 3, axis=2)),
        "loras": [{"path": lo.path, "weight": lo.weight} for lo in req.loras],
        "feather": req.feather,
        "controls": [
            {"kind": c.kind, "weight": c.weight, "start": c.start, "end": c.end, "model": c.model, "image": png_b64(c.image)}
            for c in req.controls
        ],
        "regions": [
            {"prompt": r.prompt, "negative": r.negative, "mask": png_b64(np.repeat(r.mask[..., None], 3, axis=2))}
            for r in req.regions
        ],
        "references": [  # the picture itself, not a path that may vanish
            {
                "image": png_b64(r.image),
                "weight": r.weight,
                "mode": r.mode,
                "start": r.start,
                "end": r.end,
                "mask": None if r.mask is None else png_b64(np.repeat(r.mask[..., None], 3, axis=2)),
                "adapter": r.adapter,
            }
            for r in req.references
        ],
        "tiling": None if req.tiling is None else dataclasses.asdict(req.tiling),  # an upscale and its tiled refine
    }


TILING_FIELDS = frozenset(f.name for f in dataclasses.fields(Tiling))


class NoSettings(UserError):
    """A readable picture with no settings in it: a plain image, not a damaged settings file."""


def request_from_json(data: object) -> GenerationRequest:
    """The whole record, validated, or UserError: nothing is applied from a half-good file."""
    if not isinstance(data, dict):
        raise UserError("the Noisebrush settings in this PNG are damaged (not a settings record)")
    try:
        controls = tuple(
            ControlSpec(
                kind=c["kind"],
                image=from_b64(c["image"]),
                weight=float(c["weight"]),
                start=float(c["start"]),
                end=float(c["end"]),
                model=c.get("model"),
            )  # fmt: skip
            for c in data.get("controls", [])
        )
        return GenerationRequest(
            prompt=data["prompt"],
            negative_prompt=data.get("negative_prompt", ""),
            controls=controls,
            steps=int(data["steps"]),
            guidance=float(data["guidance"]),
            seed=None if data.get("seed") is None else int(data["seed"]),
            width=int(data["width"]),
            height=int(data["height"]),
            scheduler=data.get("scheduler", "DPM++ 2M"),
            init_image=None if not data.get("init_image") else from_b64(data["init_image"]),
            strength=float(data.get("strength", 0.75)),
            model=data.get("model", ""),
            mask=None if not data.get("mask") else from_b64(data["mask"])[..., 0],
            feather=int(data.get("feather", 0)),
            loras=tuple(LoraSpec(str(lo["path"]), float(lo["weight"])) for lo in data.get("loras", [])),
            regions=tuple(
                Region(from_b64(r["mask"])[..., 0], r["prompt"], r.get("negative", "")) for r in data.get("regions") or []
            ),  # fmt: skip
            references=tuple(
                Reference(
                    from_b64(r["image"]),
                    float(r["weight"]),
                    str(r["mode"]),
                    float(r.get("start", 0.0)),
                    float(r.get("end", 1.0)),
                    None if not r.get("mask") else from_b64(r["mask"])[..., 0],
                    str(r.get("adapter") or ""),
                )
                for r in data.get("references") or []
            ),  # fmt: skip
            tiling=None if not data.get("tiling") else Tiling(**{k: v for k, v in data["tiling"].items() if k in TILING_FIELDS}),
        )
    except UserError as exc:
        raise UserError(f"the settings in this PNG cannot be used: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OSError, OverflowError, RecursionError) as exc:  # int(inf)
        what = (f"{exc} is missing" if isinstance(exc, KeyError) else "a picture inside is not an image"
                if isinstance(exc, OSError) else "a value has the wrong type or form")  # fmt: skip
        raise UserError(f"the Noisebrush settings in this PNG are damaged ({what})") from None


def _settings_fields(line: str) -> dict[str, str]:
    """ "Steps: 20, Sampler: Euler a, CFG scale: 7" → fields, in linear time (a regex here backtracked
    quadratically on long lines)."""
    fields = {}
    for part in line.split(", "):
        key, sep, value = part.partition(": ")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields


def parse_a1111(text: str) -> GenerationRequest:
    """Best effort for PNGs from A1111-style tools: prompt, negative, steps, sampler, CFG, seed, size."""
    if len(text) > MAX_PARAMETERS_CHARS:
        raise UserError(f"the A1111 settings text is {len(text):,} characters long: not a real one, not read")
    try:
        return _parse_a1111(text)
    except (ValueError, IndexError) as exc:
        raise UserError(f"the A1111 settings in this PNG cannot be read ({exc})") from None


def _parse_a1111(text: str) -> GenerationRequest:
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and "Steps:" in lines[-1] else ""
    body = lines[:-1] if settings_line else lines
    negative = ""
    prompt_lines = []
    for line in body:
        if line.startswith("Negative prompt:"):
            negative = line[len("Negative prompt:") :].strip()
        else:
            prompt_lines.append(line)
    fields = _settings_fields(settings_line)
    size = fields.get("Size", "512x512").split("x")
    seed = int(fields.get("Seed", "-1"))
    return GenerationRequest(
        prompt="\n".join(prompt_lines),
        negative_prompt=negative,
        steps=int(fields.get("Steps", 20)),
        guidance=float(fields.get("CFG scale", 7)),
        seed=None if seed < 0 else seed,
        width=int(size[0]),
        height=int(size[1]),
        scheduler=fields.get("Sampler", "DPM++ 2M").strip(),
    )


def save_png(image: np.ndarray, req: GenerationRequest, path: str | Path, model_name: str = "",
             editor: dict | None = None) -> Path:  # fmt: skip
    """Write atomically (temp file + rename): a failure never leaves half a PNG at `path`.

    `editor`: what the GUI needs beyond the request to restore its layers (the pose as OpenPose JSON, so the
    skeleton stays editable); plain JSON data.
    """
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(req, model_name or req.model or "noisebrush-default"))
    data = request_to_json(req)
    if editor:
        data["editor"] = editor
    info.add_text(JSON_KEY, json.dumps(data), zip=True)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UserError(f"cannot write {path}: the folder {directory} does not exist")
    with atomic_file(path) as f:
        Image.fromarray(image).save(f, format="PNG", pnginfo=info)
    return path


def read_request(path: str | Path) -> GenerationRequest:
    """The request stored in a PNG: our JSON chunk, else A1111's parameters. UserError if neither."""
    return read_saved(path)[0]


def read_saved(path: str | Path) -> tuple[GenerationRequest, dict]:
    """The request stored in a PNG and the editor's extra state (an empty dict where there is none)."""
    path = Path(path)
    regular_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", {}) or {})
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # ValueError: a text bomb
        raise UserError(f"{path.name}: cannot read the image ({exc})") from None
    if JSON_KEY in text:
        try:
            data = json.loads(text[JSON_KEY])
        except (ValueError, RecursionError):  # ValueError: not JSON, or a number past Python's 4,300 digits
            raise UserError(f"{path.name}: the Noisebrush settings chunk is not valid JSON") from None
        req = request_from_json(data)
        editor = data.get("editor") if isinstance(data.get("editor"), dict) else {}
    elif A1111_KEY in text:
        req, editor = parse_a1111(str(text[A1111_KEY])), {}
    else:
        raise NoSettings(f"{path.name}: holds no generation settings (not made by Noisebrush or an A1111-style tool)")
    try:
        req.validate()
    except UserError as exc:
        raise UserError(f"{path.name}: its settings cannot be used: {exc}") from None
    return req, editor
