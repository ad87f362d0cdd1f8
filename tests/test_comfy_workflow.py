"""The ComfyUI translation and the client's distrust of answers, without a server (test_comfy.py runs a real one)."""

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from noisebrush.engine.backends.comfy import preview_frame
from noisebrush.engine.backends.comfy_client import ServerConfig, _describe_error
from noisebrush.engine.backends.comfy_workflow import SAMPLERS, ServerModels, Uploads, build_workflow
from noisebrush.engine.errors import UserError
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

MODELS = ServerModels(
    checkpoints=("sd15/dreamshaper.safetensors", "v1-5.safetensors"),
    controlnets=("control_v11p_sd15_scribble.safetensors", "control_v11f1p_sd15_depth.pth"),
    loras=("styles/ink.safetensors",),
)
MAP = np.zeros((64, 64, 3), np.uint8)


def req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a cat", "width": 64, "height": 64, "model": "v1-5.safetensors", **kw})


def by_class(g: dict, cls: str) -> list[dict]:
    return [n["inputs"] for n in g.values() if n["class_type"] == cls]


def test_a_scribble_request_becomes_a_controlnet_graph_with_our_numbers():
    r = req(controls=(ControlSpec("scribble", MAP, weight=0.8, start=0.1, end=0.9),), steps=12, guidance=6.5,
            scheduler="DPM++ 2M Karras", negative_prompt="blurry")  # fmt: skip
    g = build_workflow(r, 42, Uploads(controls=("nb-control0.png",)), MODELS)
    (apply,) = by_class(g, "ControlNetApplyAdvanced")
    assert (apply["strength"], apply["start_percent"], apply["end_percent"]) == (0.8, 0.1, 0.9)
    assert by_class(g, "ControlNetLoader")[0]["control_net_name"] == "control_v11p_sd15_scribble.safetensors"
    assert by_class(g, "LoadImage")[0]["image"] == "nb-control0.png"
    (k,) = by_class(g, "KSampler")
    assert (k["seed"], k["steps"], k["cfg"], k["sampler_name"], k["scheduler"], k["denoise"]) == (
        42, 12, 6.5, "dpmpp_2m", "karras", 1.0)  # fmt: skip
    assert k["positive"] == ["apply0", 0] and k["negative"] == ["apply0", 1]  # the control conditions both
    texts = {n["text"] for n in by_class(g, "CLIPTextEncode")}
    assert texts == {"a cat", "blurry"}
    assert by_class(g, "EmptyLatentImage")[0] == {"width": 64, "height": 64, "batch_size": 1}
    json.dumps(g)  # what goes over the wire


def test_every_sampler_we_offer_has_a_comfyui_pair_and_an_unknown_one_is_refused():
    for name in SAMPLERS:
        build_workflow(req(scheduler=name), 1, Uploads(), MODELS)
    with pytest.raises(UserError, match="does not offer"):
        build_workflow(req(scheduler="Euler"), 1, Uploads(), ServerModels(("v1-5.safetensors",), samplers=("ddim",)))


def test_loras_chain_and_a_missing_model_names_the_server():
    g = build_workflow(req(loras=(LoraSpec("ink.safetensors", 0.6),)), 1, Uploads(), MODELS, "gpu-box:8188")
    (lora,) = by_class(g, "LoraLoader")
    assert (lora["lora_name"], lora["strength_model"]) == ("styles/ink.safetensors", 0.6)  # found in its subfolder
    assert by_class(g, "KSampler")[0]["model"] == ["lora0", 0]
    with pytest.raises(UserError, match="gpu-box:8188 has no checkpoint named 'nope.safetensors'"):
        build_workflow(req(model="nope.safetensors"), 1, Uploads(), MODELS, "gpu-box:8188")
    with pytest.raises(UserError, match="no pose ControlNet"):
        build_workflow(req(controls=(ControlSpec("pose", MAP),)), 1, Uploads(controls=("x.png",)), MODELS)


def test_the_default_model_is_the_servers_first_checkpoint():
    g = build_workflow(req(model=""), 1, Uploads(), MODELS)
    assert by_class(g, "CheckpointLoaderSimple")[0]["ckpt_name"] == "sd15/dreamshaper.safetensors"


def test_inpainting_encodes_the_picture_and_masks_the_latent():
    r = req(init_image=MAP, mask=np.full((64, 64), 255, np.uint8), strength=0.9)
    g = build_workflow(r, 1, Uploads(init_image="init.png", mask="mask.png"), MODELS)
    assert by_class(g, "SetLatentNoiseMask") and by_class(g, "VAEEncode")
    assert by_class(g, "LoadImageMask")[0] == {"image": "mask.png", "channel": "red"}
    assert by_class(g, "KSampler")[0]["denoise"] == 0.9


def test_server_addresses_are_checked_and_named():
    assert ServerConfig("http://gpu:8188/").ws_base == "ws://gpu:8188"
    assert ServerConfig("wss://pod.example/comfy").http_base == "https://pod.example/comfy"
    assert ServerConfig("https://pod.example/comfy").name == "pod.example/comfy"
    for bad in ("ftp://gpu:8188", "gpu:8188", "http://", "http://gpu/?x=1"):
        with pytest.raises(UserError):
            ServerConfig(bad)


def test_comfyui_errors_become_one_line():
    detail = json.dumps({"error": {"message": "Prompt outputs failed validation", "details": ""},
                         "node_errors": {"3": {"errors": [{"message": "Value not in list",
                                                            "details": "ckpt_name: 'x' not in []"}]}}})  # fmt: skip
    line = _describe_error(detail)
    assert "\n" not in line and "Value not in list" in line and "ckpt_name" in line
    assert _describe_error("<html>" + "x" * 5000).startswith("<html>")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_preview_frames_in_both_formats_and_only_ours():
    legacy = struct.pack(">II", 1, 1) + _jpeg()
    assert preview_frame(legacy, "p1", "s").shape == (8, 8, 3)
    meta = json.dumps({"prompt_id": "p1", "node_id": "sampler"}).encode()
    tagged = struct.pack(">II", 4, len(meta)) + meta + _jpeg()
    assert preview_frame(tagged, "p1", "s")[0, 0, 0] > 150
    assert preview_frame(tagged, "another", "s") is None
    assert preview_frame(struct.pack(">I", 3) + b"text", "p1", "s") is None
    with pytest.raises(UserError, match="broken preview"):
        preview_frame(struct.pack(">II", 1, 1) + b"not a jpeg", "p1", "s")


class _Answers:
    """What a server says about itself, for the choice policy alone (test_comfy.py runs real servers)."""

    def __init__(self, name: str, models: ServerModels, queue: int = 0) -> None:
        self.name, self._models, self.queue = name, models, queue

    def models(self) -> ServerModels:
        return self._models

    def queue_remaining(self) -> int:
        return self.queue


def _backend(*answers: _Answers):
    from noisebrush.engine.backends.comfy import ComfyBackend, _Server

    backend = ComfyBackend([f"http://{a.name}" for a in answers])
    backend._servers = [_Server(a) for a in answers]
    return backend


def test_a_job_goes_to_a_server_that_has_what_it_needs_then_the_idle_then_the_fast_one():
    no_scribble = ServerModels(("v1-5.safetensors",), ("control_v11f1p_sd15_depth.pth",))
    scribble = ControlSpec("scribble", MAP)
    backend = _backend(_Answers("a", no_scribble), _Answers("b", MODELS, queue=3))
    assert backend._choose(req(controls=(scribble,)), set()).name == "b"  # busy, but the only one that can
    busy, idle = _Answers("busy", MODELS, queue=1), _Answers("idle", MODELS)
    backend = _backend(busy, idle)
    assert backend._choose(req(), set()).name == "idle"
    fast, slow = _Answers("fast", MODELS, queue=2), _Answers("slow", MODELS, queue=1)
    backend = _backend(fast, slow)
    backend._servers[0].seconds_per_step, backend._servers[1].seconds_per_step = 0.1, 1.0
    assert backend._choose(req(), set()).name == "fast"  # 3 × 0.1 s beats 2 × 1 s
    with pytest.raises(UserError, match="a has no scribble ControlNet"):
        _backend(_Answers("a", no_scribble))._choose(req(controls=(scribble,)), set())


def test_regions_become_one_masked_conditioning_each_combined_before_the_controls():
    from noisebrush.engine.backends.comfy_workflow import region_blocks
    from noisebrush.engine.composition import Region

    left = np.zeros((64, 64), np.uint8)
    left[:, :24] = 255
    right = np.zeros((64, 64), np.uint8)
    right[:, 40:] = 255
    r = req(
        prompt="snow",
        controls=(ControlSpec("scribble", MAP),),
        regions=(Region(left, "a red fox"), Region(right, "a pine", negative="blurry")),
    )
    blocks = region_blocks(r)
    assert [b.prompt for b in blocks] == ["snow", "a red fox, snow", "a pine, snow"]  # the background keeps 25 %
    g = build_workflow(r, 1, Uploads(("c",), regions=("m0", "m1", "m2")), ServerModels(("v1-5.safetensors",), ("scribble.pth",)))
    masked = by_class(g, "ConditioningSetMask")
    assert len(masked) == 6  # three positives and, since one region has its own negative, three negatives
    texts = {g[n["conditioning"][0]]["inputs"]["text"] for n in masked}
    assert texts >= {"snow", "a red fox, snow", "a pine, snow", "blurry"}
    assert all(n["strength"] == 1.0 and n["set_cond_area"] == "default" for n in masked)
    apply = by_class(g, "ControlNetApplyAdvanced")[0]
    assert g[apply["positive"][0]]["class_type"] == "ConditioningCombine"  # the controls apply to the regions
    with pytest.raises(ValueError):
        build_workflow(r, 1, Uploads(("c",), regions=("m0",)), ServerModels(("v1-5.safetensors",), ("scribble.pth",)))


# --- reference pictures (issue 27): the IPAdapter node pack ---------------------------------------------------
# The pack's node signatures as recorded from cubiq/ComfyUI_IPAdapter_plus 2.0.0 (commit 9d076a3, IPAdapterPlus.py):
# the required and optional inputs a graph may give each node, and IPAdapterAdvanced's combo lists.
PACK_SIGNATURES = {
    "IPAdapterModelLoader": ({"ipadapter_file"}, set()),
    "CLIPVisionLoader": ({"clip_name"}, set()),  # core ComfyUI
    "IPAdapterAdvanced": ({"model", "ipadapter", "image", "weight", "weight_type", "combine_embeds", "start_at", "end_at",
                           "embeds_scaling"}, {"image_negative", "attn_mask", "clip_vision"}),
    "LoadImage": ({"image"}, set()),
    "LoadImageMask": ({"image", "channel"}, set()),
}  # fmt: skip
PACK_WEIGHT_TYPES = ("linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                     "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
                     "style and composition", "style transfer precise", "composition precise")  # fmt: skip
PACK = ServerModels(
    ("v1-5.safetensors", "juggernautXL.safetensors"),
    ipadapters=(
        "ip-adapter_sd15.safetensors",
        "ip-adapter-plus_sd15.safetensors",
        "ip-adapter_sdxl_vit-h.safetensors",
        "ip-adapter_sdxl.safetensors",
    ),
    clip_vision=("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"),
)


def _reference(**kw):
    from noisebrush.engine.composition import Reference

    return Reference(np.full((64, 64, 3), 200, np.uint8), **kw)


def test_references_become_ipadapter_nodes_that_match_the_packs_signatures():
    half = np.zeros((64, 64), np.uint8)
    half[:, :32] = 255
    r = req(references=(_reference(weight=0.6, mode="style", start=0.1, end=0.8), _reference(mode="composition", mask=half),
                        _reference(weight=0.0)))  # weight 0: left out like a control at 0  # fmt: skip
    g = build_workflow(r, 1, Uploads(references=("ref0.png", "ref1.png"), reference_masks=(None, "refmask1.png")), PACK)
    for node in g.values():
        if node["class_type"] in PACK_SIGNATURES:
            required, optional = PACK_SIGNATURES[node["class_type"]]
            assert required <= set(node["inputs"]) <= required | optional, node
    first, second = by_class(g, "IPAdapterAdvanced")
    assert (first["weight"], first["weight_type"], first["start_at"], first["end_at"]) == (0.6, "style transfer", 0.1, 0.8)
    assert second["weight_type"] == "composition" and "attn_mask" in second and "attn_mask" not in first
    assert {first["weight_type"], second["weight_type"], "linear"} <= set(PACK_WEIGHT_TYPES)
    assert first["combine_embeds"] == "concat" and first["embeds_scaling"] == "V only"
    assert by_class(g, "IPAdapterModelLoader")[0]["ipadapter_file"] == "ip-adapter_sd15.safetensors"
    assert by_class(g, "CLIPVisionLoader")[0]["clip_name"].startswith("CLIP-ViT-H-14")
    assert second["model"] == ["reference0", 0]  # chained: both act on the model the sampler gets
    assert by_class(g, "KSampler")[0]["model"] == ["reference1", 0]
    xl = build_workflow(req(model="juggernautXL.safetensors", references=(_reference(adapter="ip-adapter_sdxl.safetensors"),)),
                        1, Uploads(references=("r.png",), reference_masks=(None,)), PACK)  # fmt: skip
    assert by_class(xl, "CLIPVisionLoader")[0]["clip_name"].startswith("CLIP-ViT-bigG")  # ip-adapter_sdxl reads bigG
    json.dumps(g)


def test_a_server_without_the_pack_or_its_files_refuses_references_in_one_line():
    r = req(references=(_reference(),))
    uploads = Uploads(references=("r.png",), reference_masks=(None,))
    with pytest.raises(UserError, match="lacks the ComfyUI IPAdapter node pack .*cubiq/ComfyUI_IPAdapter_plus"):
        build_workflow(r, 1, uploads, MODELS)
    assert "no reference pictures" in MODELS.reference_note and "4 IP-Adapters" in PACK.reference_note
    no_vision = ServerModels(("v1-5.safetensors",), ipadapters=("ip-adapter_sd15.safetensors",))
    with pytest.raises(UserError, match="no CLIP vision model .*CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"):
        build_workflow(r, 1, uploads, no_vision)
    build_workflow(req(references=(_reference(weight=0.0),)), 1, Uploads(), MODELS)  # weight 0 needs nothing
