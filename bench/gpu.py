"""Speed on a GPU: SD1.5 + ControlNet at 512 px and SDXL + ControlNet at 1024 px, built from the configs bundled in
assets/configs with random weights in fp16 (speed does not depend on the weights' values), with one and two
ControlNets, then with each speed option the engine offers (noisebrush.engine.speed).

    python bench/gpu.py                      # the main matrix on CUDA (about 4 minutes on an H200)
    python bench/gpu.py --tiny               # tiny models on the CPU in seconds: a smoke test, no figures
    python bench/gpu.py --part compile       # the torch.compile rows (compile time reported apart; --compile-warm
                                             # also times a recompile with the disk cache warm)
    python bench/gpu.py --budget-s 200 --out gpu.md --json gpu.jsonl   # skip rows that would end after 200 s
    python bench/gpu.py --only sd15:1:base,sdxl:2:fuse_qkv             # chosen rows (family:ControlNets:option)
Figures of 2026-11-27 on an H200: bench/results/gpu-2026-11-27.md. bench/gpu_device.sh runs it on a lent GPU machine.

Columns (one row per model × ControlNets × option; printed as each row finishes, and appended to --out/--json):
  step ms      one denoising step inside the loop (bare pipeline; synchronised timestamps at its first and last step)
  gpu ms       the profiler's GPU kernel time in that step (far below step ms: the GPU waits for kernel launches)
  vs base      option rows: step-time speed-up against the family's model with no option, from paired alternating
               runs (> 1: faster)
  it/s bare    steps / wall time of a bare diffusers pipeline call over the same modules (VAE decode included)
  it/s engine  steps / time from Engine.submit to Finished on the same request, a linear preview at every step
  ratio        it/s engine / it/s bare (target ≥ 0.97)
  ratio np     the same for an engine with previews off (Engine(previews=False)): what the previews cost in all
  prev % lin   one linear-map preview decode / step time (target ≤ 2 %)
  prev % tiny  one decode by a TAESD-shaped tiny decoder (random weights, same compute) / step time
  stroke ms    live mode: a new request arrives mid-frame (latest wins) → the new frame's first preview
               (target: within one step time + 30 ms of the step it waits for)
  cancel ms    that same arrival → the running frame's Cancelled event
  fps          frames a second through the engine, one after another
  peak GiB     torch.cuda.max_memory_allocated during the row, less the other models kept resident: the row's model
               (weights of UNet, VAE, text encoders, both ControlNets, tiny decoder) and its activations
Compile rows add (JSON) the first call's extra time (compiling) and, with --compile-warm, the same after
torch._dynamo.reset() with the compile cache on disk warm, as the next start of the app would see it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a bare checkout (a lent GPU machine) has no installed noisebrush

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from noisebrush.engine.device import DeviceChoice, LoadOptions  # noqa: E402
from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview  # noqa: E402
from noisebrush.engine.models import CONTROLNETS_DIR, LoadedModel, ModelDefaults  # noqa: E402
from noisebrush.engine.previews import LinearPreview, TinyAutoencoderPreview  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest  # noqa: E402
from noisebrush.engine.schedulers import make_scheduler  # noqa: E402

CONFIGS = ROOT / "assets" / "configs"
KINDS = ("scribble", "depth")  # the first n of these drive a row with n ControlNets
PROMPT = "a lighthouse on a cliff at dusk, oil painting"

# option name → (LoadOptions fields, request changes). Request-only options reuse the loaded model.
OPTIONS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "lcm4": ({}, {"scheduler": "LCM", "steps": 4, "guidance": 1.0}),  # the few-step path live mode would use
    "channels_last": ({"channels_last": True}, {}),
    "fuse_qkv": ({"fuse_qkv": True}, {}),
    "sdpa_flash": ({"attention": "flash"}, {}),
    "sdpa_efficient": ({"attention": "efficient"}, {}),
    "sdpa_cudnn": ({"attention": "cudnn"}, {}),
    "sdpa_math": ({"attention": "math"}, {}),
    "cudnn_benchmark": ({"cudnn_benchmark": True}, {}),
    "cl+fuse": ({"channels_last": True, "fuse_qkv": True}, {}),
    "compile": ({"compile": True}, {}),
    "compile+lcm4": ({"compile": True}, {"scheduler": "LCM", "steps": 4, "guidance": 1.0}),
}

# (family, ControlNets, option), most wanted first: a time budget drops the tail.
PLAN_MAIN = [
    ("sd15", 1, "base"), ("sd15", 2, "base"), ("sd15", 1, "lcm4"),
    ("sdxl", 1, "base"), ("sdxl", 2, "base"), ("sdxl", 1, "lcm4"),
    ("sd15", 1, "channels_last"), ("sd15", 1, "fuse_qkv"), ("sd15", 1, "sdpa_flash"), ("sd15", 1, "sdpa_efficient"),
    ("sd15", 1, "sdpa_cudnn"), ("sd15", 1, "cudnn_benchmark"),
    ("sdxl", 1, "channels_last"), ("sdxl", 1, "fuse_qkv"), ("sdxl", 1, "sdpa_efficient"), ("sdxl", 1, "cudnn_benchmark"),
    ("sdxl", 1, "sdpa_flash"), ("sdxl", 1, "sdpa_cudnn"),
    ("sd15", 1, "cl+fuse"), ("sdxl", 1, "cl+fuse"), ("sd15", 1, "sdpa_math"),
]  # fmt: skip
PLAN_COMPILE = [("sd15", 1, "compile"), ("sd15", 1, "compile+lcm4"), ("sdxl", 1, "compile")]
PLAN_TINY = [
    ("sd15", 1, "base"), ("sd15", 2, "base"), ("sd15", 1, "lcm4"), ("sdxl", 1, "base"), ("sdxl", 1, "lcm4"),
    ("sd15", 1, "channels_last"), ("sd15", 1, "fuse_qkv"),
]  # fmt: skip

COLUMNS = ["card", "model", "size", "CNs", "option", "steps", "step ms", "gpu ms", "vs base", "it/s bare", "it/s engine",
           "ratio", "ratio np", "prev % lin", "prev % tiny", "stroke ms", "cancel ms", "fps", "peak GiB"]  # fmt: skip


# --- models with random weights -------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _tiny_unet(cfg: dict, family: str) -> dict:
    cfg = dict(cfg, block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8)
    if family == "sdxl":
        cfg.update(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], attention_head_dim=[2, 4],
                   transformer_layers_per_block=[1, 1], cross_attention_dim=64, addition_time_embed_dim=8,
                   projection_class_embeddings_input_dim=8 * 6 + 32)  # fmt: skip
        if "up_block_types" in cfg:
            cfg["up_block_types"] = ["CrossAttnUpBlock2D", "UpBlock2D"]
    else:
        cfg.update(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], attention_head_dim=4, cross_attention_dim=32)
        if "up_block_types" in cfg:
            cfg["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D"]
    if "conditioning_embedding_out_channels" in cfg:
        cfg["conditioning_embedding_out_channels"] = [8, 8, 8, 16]  # 4 levels: the VAE's factor 8
    return cfg


def _text_config(folder: Path, tiny: bool, cls_name: str):
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig.from_json_file(str(folder / "config.json"))
    if tiny:
        small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
        for k, v in small.items():
            setattr(cfg, k, v)
    return cfg


@dataclass
class Built:
    model: LoadedModel
    ref: str  # the request's model reference the engine is given this model under
    tiny_preview: TinyAutoencoderPreview
    tmp: tempfile.TemporaryDirectory = field(repr=False)


def build(family: str, tiny: bool, device: DeviceChoice, options: LoadOptions, seed: int = 0) -> Built:
    """A LoadedModel over random-weight modules shaped by assets/configs/<family> and controlnet-<family>, with the
    ControlNets of KINDS already in its cache (as if loaded from <tmp>/controlnets/<kind>)."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from noisebrush.engine.paths import clip_tokenizers

    torch.manual_seed(seed)
    src = CONFIGS / family
    tmp = tempfile.TemporaryDirectory(prefix=f"nb-gpu-{family}-")
    folder = Path(tmp.name)
    dev, dtype = torch.device(device.device), device.dtype

    def make(cls_name: str, cfg: dict):
        with torch.device(dev):
            module = getattr(diffusers, cls_name).from_config(cfg)
        return module.to(dtype=dtype).eval().requires_grad_(False)

    unet_cfg = _json(src / "unet" / "config.json")
    vae_cfg = _json(src / "vae" / "config.json")
    cn_cfg = _json(CONFIGS / f"controlnet-{family}" / "config.json")
    if tiny:
        unet_cfg, cn_cfg = _tiny_unet(unet_cfg, family), _tiny_unet(cn_cfg, family)
        vae_cfg = dict(vae_cfg, block_out_channels=[8, 8, 8, 16], layers_per_block=1, norm_num_groups=8)
    comps: dict = {"unet": make("UNet2DConditionModel", unet_cfg), "vae": make("AutoencoderKL", vae_cfg)}
    sched_cfg = _json(src / "scheduler" / "scheduler_config.json")
    comps["scheduler"] = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    encoders = [("text_encoder", "tokenizer", CLIPTextModel)]
    if family == "sdxl":
        encoders.append(("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection))
    for enc, tok, cls in encoders:
        with torch.device(dev):
            te = cls(_text_config(src / enc, tiny, cls.__name__))
        comps[enc] = te.to(dtype=dtype).eval().requires_grad_(False)
        comps[tok] = clip_tokenizers()[tok]
    model = LoadedModel(f"random-{family}{'-tiny' if tiny else ''}", folder, family, comps,
                        LinearPreview.for_model(None, family), ModelDefaults(), device, options)  # fmt: skip
    for kind in KINDS:
        path = folder / CONTROLNETS_DIR / kind
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(cn_cfg))
        model.controlnets[str(path.resolve())] = make("ControlNetModel", cn_cfg)
    small = {"encoder_block_out_channels": [8] * 4, "decoder_block_out_channels": [8] * 4}
    taesd = make("AutoencoderTiny", small if tiny else {})  # the TAESD shape; TAESDXL has the same one
    return Built(model, str(folder), TinyAutoencoderPreview(taesd), tmp)


# --- measuring ------------------------------------------------------------------------------------------------


def model_bytes(built: Built) -> int:
    """Bytes of the row's model on the device: its modules, both ControlNets and the tiny preview decoder."""
    modules = [m for m in built.model.components.values() if isinstance(m, torch.nn.Module)]
    modules += list(built.model.controlnets.values()) + [built.tiny_preview.model]
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def control_maps(size: int, n: int, stroke: int = 0) -> tuple[ControlSpec, ...]:
    """A scribble (a ring, plus `stroke` extra lines: a person drawing) and a depth ramp."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    ring = (np.abs(r - size / 3) < max(1, size / 128)).astype(np.uint8) * 255
    for k in range(stroke):
        row = (size // 5 + 7 * k) % size
        ring[row, size // 8 : size - size // 8] = 255
    depth = (255 * (1 - yy / size)).astype(np.uint8)
    maps = {"scribble": np.repeat(ring[..., None], 3, axis=2), "depth": np.repeat(depth[..., None], 3, axis=2)}
    return tuple(ControlSpec(kind, maps[kind]) for kind in KINDS[:n])


def pipe_kwargs(req: GenerationRequest) -> dict:
    """What the runner passes for the controls, with the prompt as text (the bare call encodes it every time)."""
    images = [Image.fromarray(c.image) for c in req.controls]
    single = len(images) == 1
    return dict(prompt=req.prompt, num_inference_steps=req.steps, guidance_scale=req.guidance, width=req.width,
                height=req.height, generator=torch.Generator("cpu").manual_seed(1), output_type="np",
                image=images[0] if single else images,
                controlnet_conditioning_scale=1.0 if single else [1.0] * len(images))  # fmt: skip


def cudnn_for(built: Built) -> None:
    """cudnn.benchmark is process-wide: on for the model whose option it is, off for the others."""
    torch.backends.cudnn.benchmark = built.model.device.device == "cuda" and built.model.options.cudnn_benchmark


def bare_pipe(built: Built, req: GenerationRequest):
    model = built.model
    cudnn_for(built)
    nets = [model.controlnet(c.kind) for c in req.controls]
    scheduler = make_scheduler(req.scheduler, model.components["scheduler"].config)
    return model.pipeline(nets, "txt2img", scheduler=scheduler)


def bare_call(built: Built, req: GenerationRequest) -> float:
    pipe = bare_pipe(built, req)
    dev = built.model.device.device
    sync(dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pipe(**pipe_kwargs(req))
    sync(dev)
    return time.perf_counter() - t0


def step_time(built: Built, req: GenerationRequest) -> float:
    """Seconds per denoising step inside the loop: synchronised timestamps at the end of the first and last steps."""
    pipe = bare_pipe(built, req)
    dev = built.model.device.device
    marks: list[float] = []

    def tick(pipe_, i, t, kwargs):
        if i in (0, req.steps - 1):
            sync(dev)
            marks.append(time.perf_counter())
        return {}

    with torch.inference_mode():
        pipe(**pipe_kwargs(req), callback_on_step_end=tick)
    return (marks[-1] - marks[0]) / max(1, req.steps - 1)


def gpu_step_ms(built: Built, req: GenerationRequest) -> float:
    """GPU kernel time per denoising step (the profiler's sum over steps 2..N): against step ms it says how much of a
    step the GPU computes and how much it waits for Python to launch kernels."""
    if built.model.device.device != "cuda" or req.steps < 2:
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    pipe = bare_pipe(built, req)
    prof = profile(activities=[ProfilerActivity.CUDA])

    def tick(pipe_, i, t, kwargs):
        if i == 0:
            torch.cuda.synchronize()
            prof.start()
        elif i == req.steps - 1:
            torch.cuda.synchronize()
            prof.stop()
        return {}

    try:
        with torch.inference_mode():
            pipe(**pipe_kwargs(req), callback_on_step_end=tick)
        events = prof.key_averages()
        us = sum(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) for e in events)
    except Exception:  # no CUPTI in this machine: the column stays empty
        return float("nan")
    return us / 1000 / (req.steps - 1)


def decode_ms(preview, latents: torch.Tensor, n: int) -> float:
    preview.decode(latents)
    sync(latents.device.type)
    t0 = time.perf_counter()
    for _ in range(n):
        preview.decode(latents)  # both end in .cpu(): they wait for the GPU
    return (time.perf_counter() - t0) / n * 1000


class EngineProbe:
    """An Engine on the local backend whose model manager already holds the random-weight model."""

    def __init__(self, built: Built, previews: bool = True) -> None:
        self.events: queue.Queue = queue.Queue()
        model = built.model
        self.engine = Engine(preview_interval_s=0.0, previews=previews, device=model.device, options=model.options)
        runner = self.engine.backend._get_runner()  # the LocalBackend's Runner; built here, before any job runs
        runner.models._current = (built.ref, model)  # as if ModelManager.get(built.ref) had loaded it
        self.engine.add_listener(lambda ev: self.events.put((time.perf_counter(), ev)))

    def wait(self, job: int, kinds: tuple, pred=lambda ev: True, timeout: float = 600) -> tuple[float, object]:
        deadline = time.perf_counter() + timeout
        while True:
            t, ev = self.events.get(timeout=max(0.1, deadline - time.perf_counter()))
            if isinstance(ev, Failed) and ev.job_id == job:
                raise RuntimeError(f"engine job failed: {ev.message}")
            if ev.job_id == job and isinstance(ev, kinds) and pred(ev):
                return t, ev

    def run(self, req: GenerationRequest, built: Built) -> float:
        cudnn_for(built)
        t0 = time.perf_counter()
        job = self.engine.submit(req)
        t, _ = self.wait(job, (Finished, Cancelled))
        return t - t0

    def stroke(self, req: GenerationRequest, stroke_req: GenerationRequest, wait_s: float) -> tuple[float, float]:
        """A frame runs; mid-step, a stroke submits a new frame (latest wins). → (stroke→first preview, cancel) in s."""
        a = self.engine.submit(req, latest_wins=True)
        self.wait(a, (Preview,), lambda ev: ev.step >= min(2, req.steps - 1))
        time.sleep(wait_s)
        t0 = time.perf_counter()
        b = self.engine.submit(stroke_req, latest_wins=True)
        t_cancel, ev = self.wait(a, (Cancelled, Finished))
        t_first, _ = self.wait(b, (Preview,))
        self.wait(b, (Finished,))
        return t_first - t0, (t_cancel - t0 if isinstance(ev, Cancelled) else float("nan"))

    def close(self) -> None:
        self.engine.shutdown()


@dataclass
class Ctx:
    args: argparse.Namespace
    device: DeviceChoice
    card: str
    t_start: float
    out: Path | None
    jsonl: Path | None
    rows: list = field(default_factory=list)


def measure(ctx: Ctx, built: Built, probe: EngineProbe, family: str, n_cn: int, option: str, base: Built | None,
            probe_np: EngineProbe | None = None) -> dict:  # fmt: skip
    """One row. With `base` (the same family, no load options), bare calls alternate between the two models, and
    "vs base" is the median of the paired step-time ratios (> 1: the option is faster): drift hits both alike."""
    args, dev = ctx.args, ctx.device.device
    size = args.size or (64 if args.tiny else {"sd15": 512, "sdxl": 1024}[family])
    req = GenerationRequest(PROMPT, controls=control_maps(size, n_cn), steps=args.steps, guidance=5.0, seed=1,
                            width=size, height=size, model=built.ref)  # fmt: skip
    req = req.replace(**OPTIONS[option][1])
    if dev == "cuda":  # other resident models (the base kept for pairing) count out of the row's peak
        others = torch.cuda.memory_allocated() - model_bytes(built)
        torch.cuda.reset_peak_memory_stats()
    row: dict = dict(card=ctx.card, model=family, size=size, CNs=n_cn, option=option, steps=req.steps)
    warm = req.replace(steps=min(req.steps, 2))
    t0 = time.perf_counter()
    bare_call(built, warm)  # compiles, with compile on; tunes, with cudnn_benchmark
    row["first call s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_call(built, warm)
    row["warm call s"] = time.perf_counter() - t0
    probe.run(warm, built)
    if probe_np is not None:
        probe_np.run(warm, built)
    runs = args.runs if family == "sd15" or args.tiny else max(2, args.runs - 2)  # SDXL rows are slow
    steps, pairs = [], []
    for _ in range(max(2, runs - 1)):
        steps.append(step_time(built, req))
        if base is not None:
            pairs.append(step_time(base, req) / steps[-1])
    step_s = statistics.median(steps)
    bare_t, eng_t, np_t = [], [], []
    for _ in range(runs):  # interleaved, so drift hits both alike
        bare_t.append(bare_call(built, req))
        eng_t.append(probe.run(req, built))
        if probe_np is not None:
            np_t.append(probe_np.run(req, built))
    b, e = statistics.median(bare_t), statistics.median(eng_t)
    lat = torch.randn(1, 4, size // 8, size // 8, device=dev, dtype=ctx.device.dtype)
    n_dec = 3 if args.tiny else 20
    lin_ms, tiny_ms = decode_ms(built.model.preview, lat, n_dec), decode_ms(built.tiny_preview, lat, n_dec)
    # stroke and cancel latency are the engine's, the same for every load option: measured on the other rows
    n_strokes = 0 if base is not None and "compile" not in option else min(runs, 3)
    strokes = [probe.stroke(req, req.replace(controls=control_maps(size, n_cn, k + 1)), step_s / 2) for k in range(n_strokes)]
    strokes = strokes or [(float("nan"), float("nan"))]
    gpu_ms = gpu_step_ms(built, req) if base is None or "compile" in option else float("nan")
    row.update({
        "step ms": step_s * 1000, "gpu ms": gpu_ms, "vs base": statistics.median(pairs) if pairs else float("nan"),
        "it/s loop": 1 / step_s, "it/s bare": req.steps / b, "it/s engine": req.steps / e,
        "ratio": b / e, "ratio np": b / statistics.median(np_t) if np_t else float("nan"),
        "prev % lin": 100 * lin_ms / 1000 / step_s, "prev % tiny": 100 * tiny_ms / 1000 / step_s,
        "lin ms": lin_ms, "tiny ms": tiny_ms,
        "stroke ms": statistics.median(s for s, _ in strokes) * 1000,
        "cancel ms": statistics.median(c for _, c in strokes) * 1000, "fps": 1 / e,
        "peak GiB": (torch.cuda.max_memory_allocated() - others) / 2**30 if dev == "cuda" else float("nan"),
        "bare s": b, "engine s": e,
    })  # fmt: skip
    if "compile" in option:
        row["compile s"] = row["first call s"] - row["warm call s"]
        if ctx.args.compile_warm:
            torch._dynamo.reset()  # as a new process would: trace again, with the kernels from the on-disk cache
            t0 = time.perf_counter()
            bare_call(built, warm)
            row["compile warm s"] = time.perf_counter() - t0 - row["warm call s"]
    torch.backends.cudnn.benchmark = False
    return row


def fmt(row: dict, key: str) -> str:
    v = row.get(key, "")
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.2f}" if key in ("ratio", "ratio np", "vs base", "peak GiB", "prev % lin", "prev % tiny") else f"{v:.1f}"
    return str(v)


def table_row(row: dict) -> str:
    if row.get("skipped"):
        cells = [fmt(row, c) for c in COLUMNS[:5]] + [f"skipped: {row['skipped']}"] + [""] * (len(COLUMNS) - 6)
    else:
        cells = [fmt(row, c) for c in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def header() -> str:
    return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def emit(ctx: Ctx, row: dict) -> None:
    ctx.rows.append(row)
    line = table_row(row)
    print(line, flush=True)
    if ctx.out:
        with ctx.out.open("a") as f:
            f.write(line + "\n")
    if ctx.jsonl:
        with ctx.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")


def run_plan(ctx: Ctx, plan: list[tuple[str, int, str]]) -> None:
    args = ctx.args
    current: tuple | None = None
    built = probe = None  # the model of the row's load options, when it has any
    bases: dict[str, tuple[Built, EngineProbe, EngineProbe]] = {}  # family → its model with no load options, kept
    # for pairing, with an engine over it and one with previews off
    last_s: dict[tuple, float] = {}  # (family, compiles) → seconds the last such row took: the next one's estimate
    guess = {("sd15", False): 10.0, ("sdxl", False): 30.0, ("sd15", True): 90.0, ("sdxl", True): 240.0}
    for family, n_cn, option in plan:
        load_kw = OPTIONS[option][0]
        left = args.budget_s - (time.perf_counter() - ctx.t_start) if args.budget_s else float("inf")
        key = (family, tuple(sorted(load_kw.items())))
        kind = (family, "compile" in option)
        need = last_s.get(kind, guess[kind]) + (0 if key == current or (not load_kw and family in bases) else 5)
        if ctx.device.device != "cuda" and any(k in load_kw for k in ("attention", "cudnn_benchmark")):
            emit(ctx, dict(card=ctx.card, model=family, size="", CNs=n_cn, option=option, skipped="CUDA only"))
            continue
        if need > left:
            emit(ctx, dict(card=ctx.card, model=family, size="", CNs=n_cn, option=option, skipped=f"time ({left:.0f} s left)"))
            continue
        t0 = time.perf_counter()
        try:
            if family not in bases and (not load_kw or not args.no_pairs):
                b = build(family, args.tiny, ctx.device, LoadOptions(preview_decoder="linear"))
                bases[family] = (b, EngineProbe(b), EngineProbe(b, previews=False))
            if not load_kw:
                b, p, p_np = bases[family]
                row = measure(ctx, b, p, family, n_cn, option, None, p_np)
            else:
                if key != current:
                    if probe is not None:
                        probe.close()
                    built = probe = None
                    gc.collect()
                    if ctx.device.device == "cuda":
                        torch.cuda.empty_cache()
                    built = build(family, args.tiny, ctx.device, LoadOptions(preview_decoder="linear", **load_kw))
                    probe = EngineProbe(built)
                    current = key
                base = None if args.no_pairs else bases[family][0]
                row = measure(ctx, built, probe, family, n_cn, option, base)
        except Exception as exc:  # one broken option must not cost the rest of the matrix
            if args.tiny:
                raise
            row = dict(card=ctx.card, model=family, size="", CNs=n_cn, option=option,
                       skipped=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")  # fmt: skip
            current = None
        row["row s"] = time.perf_counter() - t0
        last_s[kind] = row["row s"]
        emit(ctx, row)
    for p in [probe] + [p for _, *ps in bases.values() for p in ps]:
        if p is not None:
            p.close()


def card_name(device: str) -> str:
    if device != "cuda":
        return "CPU"
    name = torch.cuda.get_device_name()
    return name.replace("NVIDIA ", "").replace(" 80GB HBM3", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models, 64 px, on the CPU: a smoke test")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda when there is one; cpu with --tiny)")
    ap.add_argument("--part", choices=("main", "compile", "all"), default="main")
    ap.add_argument("--only", default="", help="comma-separated family:CNs:option entries instead of the plan")
    ap.add_argument("--steps", type=int, default=None, help="steps per frame (default 10; 3 with --tiny)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per row, medians reported (default 3; 1 tiny)")
    ap.add_argument("--size", type=int, default=0, help="override the image size (default 512 SD1.5, 1024 SDXL)")
    ap.add_argument("--no-pairs", action="store_true", help="option rows without a base model to pair them with")
    ap.add_argument("--compile-warm", action="store_true", help="compile rows: also time a recompile, cache warm")
    ap.add_argument("--budget-s", type=float, default=0, help="skip rows that would end after this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="append the table rows to this markdown file")
    ap.add_argument("--json", type=Path, default=None, help="append every row, all figures, to this JSON-lines file")
    args = ap.parse_args(argv)
    args.steps = args.steps or (3 if args.tiny else 10)
    args.runs = args.runs or (1 if args.tiny else 3)
    warnings.filterwarnings("ignore")  # random weights: NaN images warn on the uint8 cast, and so on
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dev = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    device = DeviceChoice(dev, "float16" if dev == "cuda" else "float32")
    if args.only:
        plan = [(f, int(n), o) for f, n, o in (e.split(":") for e in args.only.split(","))]
    elif args.tiny:
        plan = PLAN_TINY
    else:
        plan = {"main": PLAN_MAIN, "compile": PLAN_COMPILE, "all": PLAN_MAIN + PLAN_COMPILE}[args.part]
    for _, _, option in plan:
        if option not in OPTIONS:
            ap.error(f"unknown option {option!r}; known: {', '.join(OPTIONS)}")
    if args.tiny:
        torch.set_num_threads(1)
    ctx = Ctx(args, device, card_name(dev), time.perf_counter(), args.out, args.json)
    print(f"device: {dev} ({ctx.card})  torch {torch.__version__}  steps {args.steps}  runs {args.runs}  "
          f"dtype {device.dtype_name}", flush=True)  # fmt: skip
    print(header(), flush=True)
    run_plan(ctx, plan)
    print(f"done in {time.perf_counter() - ctx.t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
