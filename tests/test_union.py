"""SDXL ControlNet Union: recognised in the models folder, one network serving several layers with a type each."""

from __future__ import annotations

import numpy as np
import torch
from helpers import circle_sketch, logged_engine
from tiny_flow import randomise_zeros
from tiny_model import write_sdxl_folder

from noisebrush.engine.catalog import scan
from noisebrush.engine.events import Failed, Finished
from noisebrush.engine.request import ControlSpec, GenerationRequest


def test_a_union_controlnet_serves_several_layers_at_once(tmp_path):
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    xl = write_sdxl_folder(tmp_path / "models" / "tiny-xl")
    unet = UNet2DConditionModel.from_pretrained(xl / "unet")
    cfg = dict(ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 16)).config)
    torch.manual_seed(0)  # a transformer over the control features as wide as the UNet's first block
    wide = {"num_trans_channel": 32, "num_trans_head": 4, "num_proj_channel": 32}
    net = ControlNetUnionModel(**{**{k: v for k, v in cfg.items() if not k.startswith("_")}, **wide})
    union = tmp_path / "models" / "controlnet-union-sdxl"
    randomise_zeros(net, 3).save_pretrained(union)
    e = {e.name: e for e in scan(tmp_path / "models")}["controlnet-union-sdxl"]
    assert (e.role, e.family, e.control_kind, e.usable) == ("controlnet", "sdxl", None, True)  # offered to every layer

    sketch = circle_sketch()
    scribble = ControlSpec("scribble", sketch, model=str(union))
    depth = ControlSpec("depth", 255 - sketch, weight=0.8, model=str(union))
    req = GenerationRequest("x", controls=(scribble, depth), steps=2, seed=1, width=64, height=64, model=str(xl))
    with logged_engine() as eng:
        both = eng.log.wait_end(eng.submit(req))
        one = eng.log.wait_end(eng.submit(req.replace(controls=(scribble,))))
        mixed = eng.log.wait_end(eng.submit(req.replace(controls=(ControlSpec("scribble", sketch), depth))))
    assert isinstance(both, Finished) and isinstance(one, Finished), (both, one)
    assert not np.array_equal(both.image, one.image)
    assert isinstance(mixed, Failed) and "serves every control layer" in mixed.message
