"""`noisebrush generate`: flags (or a saved PNG, --from) into a request, run it headless, write the result."""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import sys
import time
from pathlib import Path


def _path_weight(text: str, default: float = 1.0) -> tuple[str, float]:
    """PATH[@WEIGHT] → (path, weight); an @ that is not followed by a number belongs to the path."""
    head, at, tail = text.rpartition("@")
    if at:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, default


def _parse_control(spec: str) -> tuple[str, str, float]:
    from noisebrush.engine.errors import UserError

    kind, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise UserError(f"--control {spec!r}: expected KIND=PATH[@WEIGHT]")
    return (kind.strip(), *_path_weight(rest))


def _parse_region(spec: str, width: int, height: int, notes: list[str]):
    """--region MASK.png=PROMPT (split at the first "="; white = the region) as a Region at the output size."""
    from noisebrush.engine.composition import Region
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.images import fit_to, read_image

    path, sep, prompt = spec.partition("=")
    if not sep or not path or not prompt.strip():
        raise UserError(f"--region {spec!r}: expected MASK.png=PROMPT (white in the mask is the region)")
    loaded = read_image(path)
    notes.extend(loaded.notes)
    return Region(fit_to(loaded.image, width, height, Path(path).name, notes).max(axis=2), prompt.strip())


def _references(args: argparse.Namespace, base, notes: list[str]) -> tuple:
    """--reference IMAGE[@WEIGHT] (repeatable) with --reference-mode and --ip-adapter, or --from's references with
    those two flags over them."""
    from noisebrush.engine.composition import Reference, reference_picture
    from noisebrush.engine.images import read_image

    refs = [] if args.reference or not base else list(base.references)
    for spec in args.reference:
        path, weight = _path_weight(spec, default=0.8)
        loaded = read_image(path)
        notes.extend(loaded.notes)
        refs.append(Reference(reference_picture(loaded.image), weight))
    changes = {k: v for k, v in (("mode", args.reference_mode), ("adapter", args.ip_adapter)) if v}
    return tuple(dataclasses.replace(r, **changes) for r in refs)


def _build_request(args: argparse.Namespace, notes: list[str], local: bool = True):
    """The request the flags describe: a saved PNG's (--from) with the given flags over it, else the model's
    defaults with the flags over them. local=False: the model lives on a server, which checks it itself."""
    from noisebrush.engine.controls import kind_names
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.images import fit_to, load_control_image, read_image, round_size
    from noisebrush.engine.metadata import read_request
    from noisebrush.engine.models import ModelDefaults, model_defaults, resolve_model_dir
    from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

    base = read_request(args.from_png) if args.from_png else None
    if base is None and not args.prompt:
        raise UserError("--prompt is needed (or --from SAVED.png, whose prompt is used)")
    model = args.model if args.model is not None else (base.model if base else "")
    if local:
        resolve_model_dir(model)  # a bad --model fails before any image work
    d = model_defaults(model) if local else ModelDefaults()
    pick = lambda flag, saved, default: flag if flag is not None else (saved if base else default)  # noqa: E731
    steps = pick(args.steps, base and base.steps, d.steps)
    guidance = pick(args.guidance, base and base.guidance, d.guidance)
    width = round_size(pick(args.width, base and base.width, d.width), notes, "width")
    height = round_size(pick(args.height, base and base.height, d.height), notes, "height")
    overrides: dict[str, str] = {}
    for spec in args.controlnet:
        kind, sep, folder = spec.partition("=")
        if not sep or kind not in kind_names():
            raise UserError(f"--controlnet {spec!r}: expected KIND=FOLDER with KIND one of {', '.join(kind_names())}")
        overrides[kind] = folder
    controls = [] if args.control or not base else list(base.controls)
    for spec in args.control:
        kind, path, weight = _parse_control(spec)
        if kind not in kind_names():
            raise UserError(f"--control {spec!r}: unknown kind {kind!r}; use one of {', '.join(kind_names())}")
        loaded = load_control_image(kind, path, width, height)
        notes.extend(loaded.notes)
        controls.append(ControlSpec(kind, loaded.image, weight=weight, model=overrides.get(kind)))
    controls = [dataclasses.replace(c, model=overrides[c.kind]) if c.kind in overrides else c for c in controls]
    init = base.init_image if base else None
    if args.init:
        loaded = read_image(args.init)
        notes.extend(loaded.notes)
        init = fit_to(loaded.image, width, height, Path(args.init).name, notes)
    mask = base.mask if base else None
    if args.mask:
        loaded = read_image(args.mask)
        notes.extend(loaded.notes)
        mask = fit_to(loaded.image, width, height, Path(args.mask).name, notes).max(axis=2)
    regions = tuple(base.regions) if base and not args.region else ()
    for spec in args.region:
        regions += (_parse_region(spec, width, height, notes),)
    if regions:
        from noisebrush.engine.composition import prepare_regions

        notes.extend(prepare_regions(regions, "")[2])  # an empty or buried region: said, then left out
    loras = tuple(base.loras) if base and not args.lora else ()
    for spec in args.lora:
        loras += (LoraSpec(*_path_weight(spec)),)
    prompt = pick(args.prompt, base and base.prompt, "")
    if "<lora:" in prompt.lower():  # A1111's tags: the models folder's LoRAs by file name (a server finds its own)
        from noisebrush.engine.catalog import models_dir, scan
        from noisebrush.engine.prompt_loras import apply_tags

        found = [str(e.path) for e in scan(models_dir()) if e.role == "lora"] if local else None
        prompt, loras = apply_tags(prompt, loras, found, str(models_dir()) if local else "the server")
    default_strength = 1.0 if mask is not None else 0.75
    seed = pick(args.seed, base and base.seed, None)
    req = GenerationRequest(
        prompt=prompt,
        negative_prompt=pick(args.negative, base and base.negative_prompt, ""),
        controls=tuple(controls), steps=steps, guidance=guidance, seed=None if seed == -1 else seed, width=width,
        height=height, scheduler=args.scheduler or (base.scheduler if base else d.scheduler), init_image=init,
        strength=pick(args.strength, base and base.strength, default_strength), model=model, mask=mask,
        feather=pick(args.feather, base and base.feather, 0), loras=loras, regions=regions,
        references=_references(args, base, notes),
    )  # fmt: skip
    if args.extend:
        from noisebrush.engine.edit import extend

        try:
            sides = [int(v) for v in args.extend.split(",")]
            if len(sides) != 4:
                raise ValueError
        except ValueError:
            raise UserError(f"--extend {args.extend!r}: expected LEFT,TOP,RIGHT,BOTTOM in px, e.g. 64,0,64,0") from None
        req = extend(req, *sides)
    req.validate()
    return req


def check_destination(out: Path) -> None:
    """Before any work: --out must be a .png that can be written, so a computed picture is never lost to it."""
    import tempfile

    from noisebrush.engine.errors import UserError

    if out.suffix.lower() not in (".png", ".ora"):
        raise UserError(f"--out {out}: the output must be a .png file (it carries the settings) or an .ora project")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name a .png file in it")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"--out {out}: the folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nb-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write in {folder} ({exc.strerror or exc})") from None


def _save_or_rescue(ev, out: Path, save_png) -> None:
    """Write the result; if that fails now (a full disk), keep it somewhere and say where."""
    import tempfile

    from noisebrush.engine.errors import UserError

    try:
        if out.suffix.lower() == ".ora":
            from noisebrush.engine.ora import result_project, write_ora

            write_ora(out, result_project(ev.image, ev.params, ev.model_name))
        else:
            save_png(ev.image, ev.params, out, ev.model_name)
    except (OSError, UserError) as exc:
        rescue = Path(tempfile.gettempdir()) / f"noisebrush-rescued-{ev.params.seed}-{int(time.time())}.png"
        try:
            save_png(ev.image, ev.params, rescue, ev.model_name)
        except (OSError, UserError):
            raise UserError(f"could not write {out} ({exc}), nor a copy in {rescue.parent}") from None
        raise UserError(f"could not write {out} ({exc}); the picture was saved to {rescue} instead") from None


def run_headless(req, out: Path | None, previews_dir: Path | None, threads: int | None, log=print, memory=None,
                 backend=None):  # fmt: skip
    """Generate one image; returns the Finished event. Raises UserError on failure."""
    return run_jobs([(req, out)], previews_dir, threads, log, memory, backend)[0]


def run_jobs(jobs, previews_dir: Path | None, threads: int | None, log=print, memory=None, backend=None):
    """Run (request, out) jobs on one engine, all queued at once so that several servers share them; the
    Finished events in job order. The first failure cancels the rest and raises UserError."""
    from PIL import Image

    from noisebrush.engine.device import default_threads
    from noisebrush.engine.engine import Engine
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.events import Cancelled, Failed, Finished, Preview, Progress
    from noisebrush.engine.metadata import save_png

    events: queue.Queue = queue.Queue()
    engine = Engine(backend, preview_interval_s=0.0, previews=previews_dir is not None,
                    threads=threads or default_threads(), options=memory)  # fmt: skip
    engine.add_listener(events.put)
    try:
        ids = [engine.submit(req) for req, _ in jobs]
        index = {job: i for i, job in enumerate(ids)}
        done: dict[int, Finished] = {}
        shown = 0.0
        while len(done) < len(ids):
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                continue
            i = index.get(getattr(ev, "job_id", None))
            if i is None:
                continue
            if isinstance(ev, Progress):
                log(ev.message)
            elif isinstance(ev, Preview) and ev.box is not None and time.monotonic() - shown > 1.0:
                shown = time.monotonic()  # a tiled job: one line a second, with how long is left
                left = ev.elapsed_s * (ev.total - ev.step) / max(1, ev.step)
                log(f"refining in tiles: {ev.step}/{ev.total} steps, about {left:.0f} s left")
            elif isinstance(ev, Preview) and previews_dir is not None:
                name = f"step_{ev.step:03d}.png" if len(jobs) == 1 else f"{i + 1}-step_{ev.step:03d}.png"
                try:
                    Image.fromarray(ev.image).save(previews_dir / name)
                except OSError as exc:
                    log(f"note: previews are no longer written ({exc.strerror or exc})")
                    previews_dir = None
            elif isinstance(ev, Finished):
                out = jobs[i][1]
                if out is not None:
                    _save_or_rescue(ev, out, save_png)
                done[i] = ev
            elif isinstance(ev, Failed):
                raise UserError(ev.message)
            elif isinstance(ev, Cancelled):
                raise UserError("cancelled")
        return [done[i] for i in range(len(ids))]
    except KeyboardInterrupt:
        engine.cancel_all()
        raise
    finally:
        engine.shutdown()


def cmd_generate(args: argparse.Namespace) -> int:
    from noisebrush.engine.errors import UserError

    notes: list[str] = []
    out = Path(args.out)
    check_destination(out)
    from noisebrush.engine.device import LoadOptions
    from noisebrush.engine.sources import is_hub_id

    if args.download and args.model and is_hub_id(args.model):
        from noisebrush.engine.sources import hub_snapshot

        hub_snapshot(args.model, allow_download=True)  # huggingface_hub shows a tqdm bar; resumes if interrupted
    backend = None
    if args.server:
        from noisebrush.engine.backends.comfy import ComfyBackend
        from noisebrush.engine.backends.comfy_client import ServerConfig

        token = args.server_token or os.environ.get("NOISEBRUSH_SERVER_TOKEN", "")
        backend = ComfyBackend([ServerConfig(url, token) for url in args.server])
    req = _build_request(args, notes, local=backend is None)
    memory = LoadOptions(args.fp16, args.attention_slicing, args.cpu_offload, args.vae_tiling, args.preview_decoder,
                         sequential_offload=args.sequential_offload)  # fmt: skip
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    previews = Path(args.previews) if args.previews else None
    if previews is not None:
        if previews.exists() and not previews.is_dir():
            raise UserError(f"--previews {previews}: is a file; name a folder")
        try:
            previews.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--previews {previews}: cannot make the folder ({exc.strerror or exc})") from None
    if args.batch == 1:
        jobs = [(req, out)]
    else:
        import random

        from noisebrush.engine.edit import variations
        from noisebrush.engine.request import MAX_SEED

        first = req.seed if req.seed is not None else random.randint(0, MAX_SEED)
        jobs = [(r, out.with_name(f"{out.stem}-{i + 1}{out.suffix}")) for i, r in enumerate(variations(req, args.batch, first))]
    t0 = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if backend is None:  # one at a time, each reported as it is written
        for r, path in jobs:
            done = run_headless(r, path, previews, args.threads, log=log, memory=memory)
            print(f"wrote {path} (seed {done.params.seed}, {time.perf_counter() - t0:.1f} s)")
    else:  # all queued at once: the servers share them
        for (_, path), done in zip(jobs, run_jobs(jobs, previews, args.threads, log, memory, backend), strict=True):
            print(f"wrote {path} (seed {done.params.seed}, {done.model_name}, {time.perf_counter() - t0:.1f} s)")
    return 0
