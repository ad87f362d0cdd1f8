"""Fuzzing the parsers of untrusted input (issue 31, part 5): PNG settings (A1111 text and Noisebrush JSON), pose JSON
(COCO-18 and BODY_25), OpenRaster stack.xml (and the settings packed in its hidden layer), safetensors and GGUF
headers, the model catalog's classification, and ComfyUI's answers (models, system stats, queue, history, error
answers, preview frames, a job's websocket messages).

The property for each: any input gives a result or UserError (ServerError is one) whose message is one line naming
no exception class; never KeyError, TypeError, RecursionError, struct.error, OverflowError, a plain ValueError… and
each example (every parser the test calls on that input) within DEADLINE_MS, 2 s. The inputs are mostly near-valid:
a real record with one or two faults at any depth (a field of the wrong type, NaN, Infinity, 10**400, a 5,000-digit
number, a line break in a server's words, a negative or 2**64 length, deep nesting, a name twice), some damaged bytes
and some noise. Near-valid inputs reach much further into a parser than noise does.

Runs derandomized (the same examples on every run, no example database), so CI is reproducible: 3,900 examples in
all, 150 to 400 per case (each test's @settings says how many); about 30 s on two cores, plus pytest's start.
`pytest --hypothesis-show-statistics` shows how many inputs each parser read and how many it refused.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from noisebrush.engine.backends.comfy import ComfyBackend, preview_frame
from noisebrush.engine.backends.comfy_client import ComfyClient, ServerConfig, ServerModels, _describe_error
from noisebrush.engine.catalog import classify_file, scan
from noisebrush.engine.errors import UserError
from noisebrush.engine.flow_single import single_file_defaults, single_file_family
from noisebrush.engine.gguf_files import gguf_header
from noisebrush.engine.memory import footprint
from noisebrush.engine.metadata import parse_a1111, read_saved, request_from_json
from noisebrush.engine.ora import DATA_LAYER, DATA_MAGIC, pack_settings, read_ora
from noisebrush.engine.pose import load_pose_json, render_pose
from noisebrush.engine.request import GenerationRequest
from noisebrush.engine.sources import check_safetensors

DEADLINE_MS = 2000
# derandomized: CI runs the same examples every time; no example database (Hypothesis keeps only a self-ignored cache)
CI = settings(derandomize=True, database=None, deadline=DEADLINE_MS,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

CLASS_NAME = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b|struct\.error|Traceback")


def _plain(exc: UserError) -> None:
    """A refusal is one sentence for a person: one line, no exception class names."""
    msg = str(exc)
    assert msg.strip(), "an empty message"
    assert len(msg.splitlines()) == 1, f"not one line: {msg!r}"
    assert not CLASS_NAME.search(msg), f"names an exception class: {msg!r}"


def outcome(call, *args, **kwargs):
    """The call's result, or the UserError it raised (checked for plainness); anything else fails the test.
    pytest --hypothesis-show-statistics shows how many of each (inputs that are all refused test little)."""
    try:
        result = call(*args, **kwargs)
    except UserError as exc:
        _plain(exc)
        event(f"{call.__name__}: refused")
        return exc
    event(f"{call.__name__}: read")
    return result


# --- building blocks ------------------------------------------------------------------------------------------


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 90).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w×h (up to 2³²-1) with almost no pixel data: a decompression bomb's opening."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b""))  # fmt: skip


PNG_64 = _png(64, 64)
PNG_8 = _png(8, 8)
PNG_8_RGBA = _png(8, 8, "RGBA")
JPEG_8 = _jpeg(8, 8)


@st.composite
def mutated(draw, data: bytes, flips: int = 6) -> bytes:
    """`data` with a few bytes changed and maybe cut short: a damaged file rather than noise."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, flips))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


def images() -> st.SearchStrategy[bytes]:
    """Picture files: small good ones, damaged ones, bomb headers and noise."""
    return st.one_of(
        st.sampled_from([PNG_64, PNG_8, PNG_8_RGBA, JPEG_8]),
        st.sampled_from([PNG_8, JPEG_8, PNG_8_RGBA]).flatmap(mutated),
        st.builds(
            png_header,
            st.sampled_from([0, 1, 64, 8193, 20_000, 70_000, 2**31 - 1, 2**32 - 1]),
            st.sampled_from([0, 1, 64, 8193, 20_000, 70_000, 2**31 - 1, 2**32 - 1]),
        ),  # fmt: skip
        st.binary(max_size=64),
    )


HUGE = st.sampled_from([10**400, -(10**400), 10**309, 2**63, 2**64 + 1, -(2**63) - 1, 1e308, 1e-320])
NONFINITE = st.sampled_from([float("inf"), float("-inf"), float("nan")])
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), HUGE, NONFINITE)
NUMBER_TEXT = st.sampled_from(["1e400", "-1e400", "nan", "inf", "-0", "0x10", "1_000", "٣", "9" * 5000, "", " ", "1.5"])
LEAF = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=12), NUMBER_TEXT)
JSON = st.recursive(LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)  # fmt: skip


def deep(depth: int, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return opener * depth + closer * depth


DEEP_JSON = st.builds(deep, st.integers(500, 200_000), st.sampled_from(["[", "{"]))


def weighted(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """one_of with weights: mostly near-valid, sometimes wild. (st.one_of(a, a, b) is no weighting: Hypothesis treats
    the same strategy twice as one branch.)"""
    return st.sampled_from([s for n, s in options for _ in range(n)]).flatmap(lambda s: s)


def _long_number(text: str, i: int) -> str:
    """The i-th number of `text` made 5,000 digits long: valid JSON that Python refuses to read as an int (past its
    4,300-digit limit), and that json.dumps cannot write."""
    numbers = list(re.finditer(r"(?<=[\[ ])-?\d[\d.e+-]*", text))
    if not numbers:
        return text
    m = numbers[i % len(numbers)]
    return text[: m.start()] + "9" * 5000 + text[m.end() :]


def json_text(structured: st.SearchStrategy) -> st.SearchStrategy[str]:
    """JSON text: mostly a near-valid structure (NaN and Infinity included, as Python writes them), else the same with
    a number too long for Python or bytes changed, deep nesting, or noise."""
    return weighted(
        (8, structured.map(json.dumps)),
        (1, st.builds(_long_number, structured.map(json.dumps), st.integers(0, 50))),
        (1, structured.map(json.dumps).flatmap(lambda s: mutated(s.encode(), 3)).map(lambda b: b.decode("utf-8", "replace"))),
        (1, DEEP_JSON),
        (1, st.text(max_size=40)),
    )


def json_bytes(structured: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return weighted((8, json_text(structured).map(lambda s: s.encode("utf-8", "surrogatepass"))), (1, st.binary(max_size=40)))


WILD = st.one_of(JSON, NONFINITE, HUGE, NUMBER_TEXT, st.just({}), st.just([]))
PLAIN_NUMBERS = st.one_of(st.integers(-5000, 5000), st.floats(-5000, 5000), st.floats(0, 1))
NUMBERISH = weighted((2, NONFINITE), (2, HUGE), (1, st.integers()), (1, st.floats()), (1, NUMBER_TEXT))  # mostly nasty


def _spots(value: object, path: tuple = ()) -> list[tuple]:
    """Every place inside a JSON value (keys of objects, indexes of lists), the value itself first."""
    spots = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            spots += _spots(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            spots += _spots(item, (*path, i))
    return spots


@st.composite
def faulty(draw, base: object, fields: dict[str, st.SearchStrategy] | None = None) -> object:
    """`base` (a valid record) with one or two faults at any depth: a value replaced by a fuzzed one of its field
    (`fields`, by key) or by any JSON value, a value dropped, or an unknown entry added. Near-valid records reach
    much further into a parser than noise does."""
    out = copy.deepcopy(base)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        spot = draw(st.sampled_from(_spots(out)[1:] or [()]))
        if not spot:
            return draw(WILD)
        parent, key = out, spot[-1]
        for step in spot[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["field", "field", "wild", "drop", "add"]))
        if how == "drop":
            del parent[key]
        elif how == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(WILD)
        elif how == "field" and fields and key in fields:
            parent[key] = draw(fields[key])
        elif how == "field" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = draw(weighted((2, PLAIN_NUMBERS), (1, NUMBERISH)))  # another number, plain or nasty
        else:
            parent[key] = draw(WILD)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- 1. PNG settings: A1111 parameters and the Noisebrush JSON ----------------------------------------------------

A1111_KEYS = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength", "ControlNet 0", "Clip skip"]
A1111_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.floats().map(str), NUMBER_TEXT, st.text(max_size=12),
    st.sampled_from(["512x512", "512x", "x512", "x", "64x64x64", "-64x-64", "1e3x1e3", "99999999999x1"]),
)  # fmt: skip


@st.composite
def a1111_texts(draw) -> str:
    prompt = draw(st.text(max_size=40))
    lines = [prompt]
    if draw(st.booleans()):
        lines.append("Negative prompt: " + draw(st.text(max_size=20)))
    fields = draw(st.lists(st.tuples(st.sampled_from(A1111_KEYS) | st.text(max_size=8), A1111_VALUES), max_size=8))
    if draw(st.booleans()):
        fields.append(("Steps", draw(A1111_VALUES)))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    text = draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)
    if draw(st.integers(0, 9)) == 0:  # past the length limit
        text = text + "Steps: 1, " * draw(st.integers(6_000, 20_000))
    return text


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(text=st.one_of(a1111_texts(), st.text(max_size=200)))
def test_a1111_parameters(text):
    result = outcome(parse_a1111, text)
    if isinstance(result, GenerationRequest):
        outcome(result.validate)


CONTROL = {"kind": "scribble", "weight": 1.0, "start": 0.0, "end": 1.0, "model": None,
           "image": base64.b64encode(PNG_64).decode()}  # fmt: skip
SETTINGS = {
    "version": 1, "prompt": "a fox", "negative_prompt": "", "steps": 20, "guidance": 7.0, "seed": 1, "width": 64,
    "height": 64, "scheduler": "Euler", "strength": 0.75, "model": "", "init_image": None, "mask": None,
    "loras": [{"path": "a.safetensors", "weight": 0.8}], "feather": 0, "controls": [CONTROL], "editor": {},
    "regions": [{"mask": CONTROL["image"], "prompt": "a cat", "negative": ""}],
}  # fmt: skip
B64_IMAGES = st.one_of(
    images().map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["", "AAAA", "not base64!", "iVBORw0KGgo=", "=" * 5]),
    st.text(max_size=12),
)
SETTINGS_FIELDS = {
    **dict.fromkeys(["steps", "guidance", "seed", "width", "height", "strength", "feather", "weight", "start", "end"],
                    NUMBERISH),
    **dict.fromkeys(["init_image", "mask", "image"], B64_IMAGES),
    "kind": st.sampled_from(["scribble", "pose", "depth", "canny", "", "nope"]),
    "prompt": st.text(max_size=20), "path": st.text(max_size=8),
}  # fmt: skip
# besides the whole record: a txt2img one, an img2img one with an init image and mask
SETTINGS_RECORDS = st.one_of(
    faulty(SETTINGS, SETTINGS_FIELDS),
    faulty({**SETTINGS, "controls": [], "loras": [], "regions": []}, SETTINGS_FIELDS),
    faulty({**SETTINGS, "init_image": CONTROL["image"], "mask": CONTROL["image"]}, SETTINGS_FIELDS),
)


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(data=weighted((6, SETTINGS_RECORDS), (1, JSON)))
def test_noisebrush_settings_json(data):
    result = outcome(request_from_json, data)
    if isinstance(result, GenerationRequest):
        outcome(result.validate)


@settings(CI, max_examples=150, deadline=DEADLINE_MS)
@given(chunks=st.dictionaries(st.sampled_from(["noisebrush", "parameters", "Comment"]),
                              st.one_of(json_text(SETTINGS_RECORDS), a1111_texts()), max_size=2),
       compressed=st.booleans())  # fmt: skip
def test_png_settings_chunks(work, chunks, compressed):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text.encode("utf-8", "replace").decode("utf-8"), zip=compressed)
    path = work / "settings.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    result = outcome(read_saved, path)
    if not isinstance(result, UserError):
        req, editor = result
        assert isinstance(req, GenerationRequest) and isinstance(editor, dict)


# --- 2. pose JSON: COCO-18 and BODY_25 -----------------------------------------------------------------------------

COORD = st.one_of(st.floats(-2.0, 2.0), st.floats(-1e6, 1e6), st.integers(-(10**6), 10**6), LEAF)


@st.composite
def keypoints(draw) -> list:
    n = draw(st.sampled_from([18, 25, 18, 25, 0, 17, 19, 24, 26, 100]))
    good = draw(st.lists(st.floats(0, 1000, allow_nan=False), min_size=n * 3, max_size=n * 3))
    for _ in range(draw(st.integers(0, 3))):  # a few wild values among good ones
        if good:
            good[draw(st.integers(0, len(good) - 1))] = draw(COORD)
    return good


COCO = [v for i in range(18) for v in (100.0 + 10 * i, 50.0 + 20 * i, 1.0)]
BODY25 = [v for i in range(25) for v in (960.0 + 10 * i, 300.0 + 30 * i, 0.9)]
POSE_FIELDS = {"canvas_width": COORD, "canvas_height": COORD, "pose_keypoints_2d": keypoints(),
               "people": st.lists(st.builds(lambda k: {"pose_keypoints_2d": k}, keypoints()) | JSON, max_size=3)}  # fmt: skip
POSE = st.one_of(
    faulty({"version": 1.3, "canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": COCO}]},
           POSE_FIELDS),
    faulty({"version": 1.3, "people": [{"pose_keypoints_2d": BODY25}, {"pose_keypoints_2d": COCO}]}, POSE_FIELDS),
    faulty({"people": [{"pose_keypoints_2d": [v / 1000 if i % 3 != 2 else v for i, v in enumerate(COCO)]}]},
           POSE_FIELDS),  # normalised
)  # fmt: skip


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(text=weighted((6, json_bytes(POSE)), (1, st.binary(max_size=60))),
       size=st.sampled_from([(None, None), (512, 512), (64, 48)]))  # fmt: skip
def test_pose_json(work, text, size):
    path = work / "pose.json"
    path.write_bytes(text)
    notes: list[str] = []
    result = outcome(load_pose_json, path, *size, notes)
    if not isinstance(result, UserError):
        render_pose(result, 64, 64)  # what a loaded pose is for
        assert all(isinstance(n, str) for n in notes)


# --- 3. OpenRaster: a zip with stack.xml --------------------------------------------------------------------------

XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)  # what XML can hold
ATTR = st.one_of(st.integers(-(2**40), 2**40).map(str), st.floats().map(str), NUMBER_TEXT, XML_TEXT)
LAYER_SRC = weighted((8, st.sampled_from(["data/a.png", "data/b.png", "data/settings.png"])),
                     (2, st.sampled_from(["data/bomb.png", "data/noise.png", "missing.png", "", "mimetype", "stack.xml",
                                          "data/"])))  # fmt: skip
LAYER_NAMES = st.sampled_from([DATA_LAYER, DATA_LAYER, "Image"]) | XML_TEXT


def attr(good: str) -> st.SearchStrategy[str | None]:
    """An attribute as apps write it, mostly; else absent or any text (inf, 1e400, 0x10, words…)."""
    return weighted((6, st.just(good)), (1, st.none()), (1, ATTR))


@st.composite
def packed_settings(draw) -> bytes:
    """The hidden layer that carries Noisebrush's settings through Krita (engine/ora.py pack_settings), damaged."""
    rgba = pack_settings(draw(st.dictionaries(st.text(max_size=6), JSON, max_size=4)), 64, 64)
    if rgba is None:
        return PNG_8
    raw = draw(mutated(rgba.tobytes(), 4).filter(lambda b: len(b) == rgba.size) | st.just(rgba.tobytes()))
    if draw(st.booleans()):  # the header's width and length, fuzzed
        head = DATA_MAGIC + struct.pack(">HI", draw(st.integers(0, 2**16 - 1)), draw(st.integers(0, 2**32 - 1)))
        raw = (head[:3] + b"\xff" + head[3:6] + b"\xff" + head[6:9] + b"\xff" + head[9:] + raw[13:])[: len(raw)]
    buf = io.BytesIO()
    Image.fromarray(np.frombuffer(raw, np.uint8).reshape(rgba.shape)).save(buf, format="PNG")
    return buf.getvalue()


def _attrs(d: dict) -> str:
    from xml.sax.saxutils import quoteattr

    return "".join(f" {k}={quoteattr(v)}" for k, v in d.items() if v is not None)


@st.composite
def stack_element(draw, depth: int = 0) -> str:
    children = []
    for _ in range(draw(st.sampled_from([1, 1, 2, 3, 0]))):
        if depth < 3 and draw(st.sampled_from([False] * 5 + [True])):
            children.append(draw(stack_element(depth + 1)))
        else:
            attrs = {"name": draw(st.none() | LAYER_NAMES), "src": draw(weighted((6, LAYER_SRC), (1, st.none()))),
                     "x": draw(attr("0")), "y": draw(attr("2")), "opacity": draw(attr("0.5")),
                     "visibility": draw(st.none() | st.sampled_from(["visible", "hidden", ""]))}  # fmt: skip
            children.append(f"<{draw(st.sampled_from(['layer', 'layer', 'layer', 'stack', 'text']))}{_attrs(attrs)}/>")
    attrs = {"opacity": draw(attr("1")), "visibility": draw(st.none() | st.sampled_from(["visible", "hidden"]))}
    return f"<stack{_attrs(attrs)}>{''.join(children)}</stack>"


@st.composite
def stack_xml(draw) -> bytes:
    w, h = draw(attr("64")), draw(attr("8"))
    body = draw(stack_element())
    nest = draw(st.sampled_from([0, 0, 0, 34, 2000]))  # groups nested past the limit
    body = "<stack>" * nest + body + "</stack>" * nest
    xml = f"<?xml version='1.0' encoding='UTF-8'?><image{_attrs({'w': w, 'h': h})}>{body}</image>"
    return draw(weighted((8, st.just(xml.encode())), (1, mutated(xml.encode(), 3)), (1, st.binary(max_size=30)),
                         (1, st.just(b'<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                                     b'<image w="8" h="8" name="&b;"><stack/></image>'))))  # fmt: skip


@st.composite
def ora_files(draw) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        first = draw(st.sampled_from(["mimetype"] * 9 + ["stack.xml"]))
        mime = draw(st.sampled_from([b"image/openraster"] * 9 + [b"image/png", b"\xff\xfe"]))
        if first == "mimetype":
            z.writestr("mimetype", mime, zipfile.ZIP_STORED)
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        if draw(st.sampled_from([True] * 9 + [False])):
            z.writestr("stack.xml", draw(stack_xml()), method)
        for name, data in (("data/a.png", PNG_8), ("data/b.png", PNG_8_RGBA)):
            z.writestr(name, data, method)
        z.writestr("data/bomb.png", draw(st.sampled_from([png_header(9000, 9000), png_header(2**32 - 1, 1)])), method)
        z.writestr("data/noise.png", draw(images()), method)
        z.writestr("data/settings.png", draw(packed_settings()), method)
        if draw(st.booleans()):
            z.writestr("noisebrush/project.json", draw(json_bytes(JSON)), method)
        if first != "mimetype":
            z.writestr("mimetype", mime, zipfile.ZIP_STORED)
    data = buf.getvalue()
    # a damaged zip: changed bytes anywhere, or in the header fields (flags, method, sizes) of its first entries
    patches = st.lists(st.tuples(st.integers(0, 3), st.integers(4, 29), st.integers(0, 255)), min_size=1, max_size=3)
    return draw(weighted((6, st.just(data)), (1, mutated(data, 4)), (1, st.builds(_patched_headers, st.just(data), patches))))


def _patched_headers(data: bytes, patches: list[tuple[int, int, int]]) -> bytes:
    """Set byte `at` of the n-th local and central zip headers: the encryption flag, the method, the sizes…"""
    out = bytearray(data)
    for signature, shift in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
        starts = [m.start() for m in re.finditer(re.escape(signature), data)]
        for n, at, value in patches:
            if n < len(starts) and starts[n] + at + shift < len(out):
                out[starts[n] + at + shift] = value
    return bytes(out)


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(data=weighted((6, ora_files()), (1, st.binary(max_size=60))))
def test_openraster_stack_xml(work, data):
    path = work / "project.ora"
    path.write_bytes(data)
    result = outcome(read_ora, path)
    if not isinstance(result, UserError):
        assert all(layer.rgba.shape == (result.height, result.width, 4) for layer in result.layers)
        assert isinstance(result.data, dict)


# --- 4. safetensors and GGUF headers, and 6. the catalog's classification -------------------------------------------

TENSOR_NAMES = [
    "model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
    "double_blocks.0.img_attn.qkv.weight", "joint_blocks.0.x_block.attn.qkv.weight", "joint_blocks.37.x.weight",
    "joint_blocks.0.x_block.attn2.qkv.weight", "img_in.weight", "model.diffusion_model.img_in.weight",
    "guidance_in.in_layer.weight", "control_model.input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight",
    "control_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight", "add_embedding.linear_1.weight",
    "conditioner.embedders.0.transformer.x", "conditioner.embedders.1.model.x", "first_stage_model.decoder.x",
    "vae.decoder.x", "text_encoders.clip_l.x", "text_encoders.clip_g.x", "text_encoders.t5xxl.x",
    "cond_stage_model.transformer.x", "pos_embed_input.proj.weight", "controlnet_x_embedder.weight",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
    "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
    "transformer.transformer_blocks.0.attn.to_k.lora_A.weight", "lora_transformer_single_blocks_0.lora_down.weight",
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight", "__metadata__",
]  # fmt: skip
DTYPES = st.sampled_from(["F16", "F32", "BF16", "F64", "F8_E4M3", "I8", "U8", "Q4_K", ""]) | LEAF
SHAPES = weighted((2, st.just([])), (2, st.lists(st.integers(-4, 4096), max_size=4)),
                  (2, st.lists(NUMBERS | NUMBER_TEXT | st.none(), max_size=3)), (1, JSON))  # fmt: skip
OFFSETS = weighted((3, st.tuples(st.integers(-64, 64), NUMBERS | NUMBER_TEXT | st.none()).map(list)),
                   (1, st.lists(NUMBERS | NUMBER_TEXT, max_size=3)), (1, JSON))  # fmt: skip
GOOD_ENTRY = st.builds(lambda dtype, shape: {"dtype": dtype, "shape": shape, "data_offsets": [0, 32]},
                       st.sampled_from(["F16", "F32", "BF16"]),
                       st.sampled_from([[4, 4], [3072, 64], [2048, 2048], [1, 384], [320, 2048], [16], []]))  # fmt: skip
ENTRY_FIELDS = {"dtype": DTYPES, "shape": SHAPES, "data_offsets": OFFSETS}


@st.composite
def headers(draw) -> dict:
    """A tensor table of real-looking names and entries with one or two fuzzed spots: the classification's paths."""
    names = draw(st.lists(weighted((6, st.sampled_from(TENSOR_NAMES)), (1, st.text(max_size=10))), min_size=1,
                          max_size=4, unique=True))  # fmt: skip
    header = {name: draw(GOOD_ENTRY) for name in names}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        name, what = draw(st.sampled_from(names)), draw(st.sampled_from([*ENTRY_FIELDS, "shape", "entry"]))
        if what == "entry" or not isinstance(header[name], dict):
            header[name] = draw(JSON)
        else:
            header[name][what] = draw(ENTRY_FIELDS[what])
    return header


HEADERS = headers()


@st.composite
def safetensors_files(draw) -> bytes:
    header = draw(weighted((6, HEADERS.map(lambda h: json.dumps(h).encode())), (1, json_bytes(HEADERS))))
    n = draw(st.sampled_from(["true"] * 12 + ["more", "less", "huge", "zero"]))
    length = {"true": len(header), "more": len(header) + 8, "less": max(0, len(header) - 3), "zero": 0,
              "huge": draw(st.sampled_from([2**63, 2**64 - 1, 2**64 - 8, 100_000_001]))}[n]  # fmt: skip
    return struct.pack("<Q", length) + header + b"\0" * draw(st.sampled_from([32, 32, 32, 32, 0, 31]))


GGUF_MAGIC = b"GGUF"


def _gstr(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


GGUF_VALUE = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@st.composite
def gguf_value(draw, kind: int, depth: int = 0) -> bytes:
    """A GGUF field value of type `kind`; arrays may nest, and hold a wrong count."""
    if kind in GGUF_VALUE:
        fmt = GGUF_VALUE[kind]
        size = struct.calcsize(fmt)
        return draw(st.binary(min_size=size, max_size=size))
    if kind == 8:  # string
        return draw(st.one_of(st.text(max_size=10).map(_gstr), st.binary(max_size=8).map(_gstr),
                              st.builds(lambda n, b: struct.pack("<Q", n) + b, st.sampled_from([2**63, 2**64 - 1, 99]),
                                        st.binary(max_size=4))))  # fmt: skip
    if kind == 9:  # array: item type, count, items
        item = draw(st.sampled_from([4, 8, 9, 0]) if depth < 3 else st.sampled_from([4, 8]))
        items = [draw(gguf_value(item, depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        count = draw(st.sampled_from([len(items), len(items), 2**64 - 1, 2**40]))
        return struct.pack("<IQ", item, count) + b"".join(items)
    return draw(st.binary(max_size=8))


# (dims in ggml's order, ggml type, bytes): F32, F16, Q8_0 (blocks of 32), Q4_K (blocks of 256)
GOOD_TENSORS = [((32,), 0, 128), ((32, 2), 1, 128), ((64, 4), 8, 8 * 34), ((256,), 12, 144)]
GGUF_FAULTS = ["none"] * 5 + ["version", "counts", "field", "field", "deep", "dims", "type", "offset", "twice", "bytes"]


@st.composite
def gguf_files(draw) -> bytes:
    """A small GGUF file as city96's are laid out (an architecture, a few fields, tensors with real names), most often
    with one fault: a version, a count, a field's type or length, nesting, a tensor's dims, type or offset, a name
    twice, or changed bytes."""
    fault = draw(st.sampled_from(GGUF_FAULTS))
    version = draw(st.sampled_from([2, 0, 1, 2**32 - 1, 0x03000000])) if fault == "version" else 3
    kvs = [_gstr("general.architecture") + struct.pack("<I", 8) + _gstr(draw(st.sampled_from(["flux", "sd3", "llama"]))),
           _gstr("general.quantization_version") + struct.pack("<II", 4, 2)]  # fmt: skip
    if fault == "field":
        kind = draw(st.sampled_from([4, 8, 9, 9, 6, 13, 2**32 - 1]))
        key = draw(st.sampled_from(["general.alignment", "general.name", "general.architecture"]) | st.text(max_size=6))
        kvs.append(_gstr(key) + struct.pack("<I", kind) + draw(gguf_value(kind)))
    if fault == "deep":  # an array nested far deeper than any real file's, or a long one
        kvs.append(_gstr("deep") + struct.pack("<I", 9) + draw(st.sampled_from([
            struct.pack("<IQ", 9, 1) * 60_000 + struct.pack("<IQ", 4, 0),
            struct.pack("<IQ", 0, 2**64 - 1) + b"\0" * 500_000])))  # fmt: skip
    names = draw(st.lists(weighted((6, st.sampled_from(TENSOR_NAMES)), (1, st.text(max_size=8))), max_size=4, unique=True))
    if fault == "twice" and names:
        names.append(names[0])
    tensors, offset = [], 0
    for i, name in enumerate(names):
        dims, kind, size = draw(st.sampled_from(GOOD_TENSORS))
        n_dims, at = len(dims), offset
        if i == 0 and fault == "dims":
            dims = draw(st.lists(st.sampled_from([0, 1, 3, 2**31, 2**63, 2**64 - 1]), max_size=4))
            n_dims = draw(st.sampled_from([len(dims), len(dims), 2**32 - 1, 9]))
        if i == 0 and fault == "type":  # other block sizes, and types that do not exist
            kind = draw(st.sampled_from([2, 3, 10, 30, 39, 2**31]))
        if i == 0 and fault == "offset":
            at = draw(st.sampled_from([2**64 - 32, 7, offset + 10**9, 2**63]))
        tensors.append(_gstr(name) + struct.pack("<I", n_dims) + b"".join(struct.pack("<Q", d) for d in dims)
                       + struct.pack("<IQ", kind, at))  # fmt: skip
        offset += size + (-size % 32)
    n_tensors, n_kv = len(tensors), len(kvs)
    if fault == "counts":
        n_tensors = draw(st.sampled_from([n_tensors, n_tensors + 1, 2**64 - 1, 2**63]))
        n_kv = draw(st.sampled_from([n_kv, n_kv + 1, max(0, n_kv - 1), 2**64 - 1]))
    head = GGUF_MAGIC + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(tensors)
    data = head + b"\0" * (-len(head) % 32) + b"\1" * offset
    return draw(mutated(data, 4)) if fault == "bytes" else data


MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.32.0",
               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
               "text_encoder": ["transformers", "CLIPTextModel"]}  # fmt: skip
UNET_CONFIG = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768, "in_channels": 4}
CONTROLNET_CONFIG = {"_class_name": "ControlNetModel", "cross_attention_dim": 2048, "addition_embed_type": "text_time"}
CLASS_NAMES = st.sampled_from(["StableDiffusion3Pipeline", "FluxPipeline", "ControlNetUnionModel", "SD3ControlNetModel",
                               "FluxTransformer2DModel", "SD3Transformer2DModel", ""])  # fmt: skip
CONFIG_FIELDS = {"_class_name": weighted((2, CLASS_NAMES), (1, WILD)), "cross_attention_dim": NUMBERISH | WILD}


@pytest.fixture(scope="module")
def lonely(tmp_path_factory):
    """No diffusers folder anywhere a transformer-only file looks for a companion (as tests/conftest.py's
    lonely_folder, for a whole module): the classification stays about the file."""
    import huggingface_hub.constants

    from noisebrush.engine import companions

    root = tmp_path_factory.mktemp("lonely")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEBRUSH_MODELS", str(root / "no-models"))
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "no-hub"))
        mp.setattr(companions, "_scanned_roots", [])
        folder = root / "models"
        folder.mkdir()
        yield folder


def _classified(path: Path) -> None:
    """Everything that reads a model file's header answers with a result or UserError."""
    entry = outcome(classify_file, path)
    assert entry is None or isinstance(entry, UserError) or (entry.name == path.name and len(entry.note.splitlines()) <= 1)
    outcome(single_file_family, path)
    outcome(single_file_defaults, path)  # reads the header as read_header does
    outcome(footprint, path, "flux")


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(data=safetensors_files())
def test_safetensors_headers(lonely, data):
    path = lonely / "model.safetensors"
    path.write_bytes(data)
    result = outcome(check_safetensors, path)
    assert isinstance(result, (dict, UserError))
    _classified(path)


@settings(CI, max_examples=200, deadline=DEADLINE_MS)
@given(data=gguf_files())
def test_gguf_headers(lonely, data):
    path = lonely / "model.gguf"
    path.write_bytes(data)
    result = outcome(gguf_header, path)
    assert isinstance(result, (dict, UserError))
    _classified(path)


@settings(CI, max_examples=150, deadline=DEADLINE_MS)
@given(files=st.lists(st.tuples(st.sampled_from(["a.safetensors", "b.gguf", "c.ckpt", "d.pt", "e.SAFETENSORS", "f.bin",
                                                 "g.GGUF", "h.pth"]),
                                st.one_of(st.binary(max_size=64), safetensors_files(), gguf_files())),
                      min_size=1, max_size=3, unique_by=lambda f: f[0]),
       configs=st.fixed_dictionaries({}, optional={
           "model/model_index.json": json_bytes(faulty(MODEL_INDEX, CONFIG_FIELDS)),
           "model/unet/config.json": json_bytes(faulty(UNET_CONFIG, CONFIG_FIELDS)),
           "model/transformer/config.json": json_bytes(faulty({"_class_name": "FluxTransformer2DModel"}, CONFIG_FIELDS)),
           "cn_scribble/config.json": json_bytes(faulty(CONTROLNET_CONFIG, CONFIG_FIELDS))}))  # fmt: skip
def test_catalog_classification(lonely, files, configs):
    import shutil

    folder = lonely / "scan"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, data in files:
        (folder / name).write_bytes(data)
        _classified(folder / name)
    for name, data in configs.items():  # a diffusers folder and a ControlNet folder, their configs fuzzed
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    entries = outcome(scan, folder)
    assert isinstance(entries, list) and len(entries) <= len(files) + 2
    for entry in entries if isinstance(entries, list) else []:
        if entry.path.is_dir():
            outcome(footprint, entry.path, "sd15")


# --- 5. ComfyUI's answers ---------------------------------------------------------------------------------------

PROMPT_ID = "5e1f0e3c-prompt"
OBJECT_INFO = {"KSampler": {"input": {"required": {"sampler_name": [["euler", "dpmpp_2m"]], "scheduler": [["normal"]]}}}}
# a server's words: line breaks, control characters, a page of text, a name made to look like a path or a tag
SERVER_TEXT = weighted((1, st.text(max_size=20)), (2, st.sampled_from(["0.3\nEvil", "a\rb", "a\u2028b", "\x00", "x" * 5000,
                                                                      "../../etc/passwd", "<lora:x:1>", "💥"])))  # fmt: skip
COMFY_FIELDS = {"sampler_name": st.lists(st.lists(SERVER_TEXT | JSON, max_size=3) | JSON, max_size=2),
                "vram_free": NUMBERISH, "queue_remaining": NUMBERISH, "name": SERVER_TEXT,
                "comfyui_version": SERVER_TEXT, "filename": SERVER_TEXT, "images": st.lists(JSON)}  # fmt: skip
OBJECT_INFOS = faulty(OBJECT_INFO, COMFY_FIELDS)
# the IPAdapter pack's loader, as a server with the pack describes it (issue 27)
IPADAPTER_INFO = {"IPAdapterModelLoader": {"input": {"required": {"ipadapter_file": [["ip-adapter_sd15.safetensors"]]}}}}
IPADAPTER_INFOS = weighted((3, faulty(IPADAPTER_INFO, COMFY_FIELDS)), (1, st.just({})))
MODEL_LISTS = weighted((3, faulty(["a.safetensors", "sub/b.ckpt"], COMFY_FIELDS)), (1, st.lists(SERVER_TEXT, max_size=4)))
STATS = {"system": {"os": "posix", "comfyui_version": "0.3.40", "python_version": "3.12"},
         "devices": [{"name": "cuda:0 NVIDIA", "type": "cuda", "vram_total": 2**34, "vram_free": 2**33}]}  # fmt: skip
STATS_ANSWERS = faulty(STATS, COMFY_FIELDS)


def _client(answers: dict[str, bytes]) -> ComfyClient:
    """A client whose server answers from `answers` (by path, without the query): no sockets."""
    client = ComfyClient(ServerConfig("http://127.0.0.1:9"), timeout_s=1.0)

    def call(path: str, **_kw) -> bytes:
        return answers.get(path.split("?")[0], b"{}")

    client._call = call  # type: ignore[method-assign]
    return client


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(object_info=json_bytes(OBJECT_INFOS), lists=st.lists(json_bytes(MODEL_LISTS), min_size=4, max_size=4),
       ipadapter=json_bytes(IPADAPTER_INFOS))  # fmt: skip
def test_comfy_models(object_info, lists, ipadapter):
    answers = {"/object_info/KSampler": object_info, "/models/checkpoints": lists[0], "/models/controlnet": lists[1],
               "/models/loras": lists[2], "/models/clip_vision": lists[3], "/object_info/IPAdapterModelLoader": ipadapter,
               "/object_info/IPAdapterAdvanced": b'{"IPAdapterAdvanced": {}}'}  # fmt: skip
    result = outcome(_client(answers).models)
    if not isinstance(result, UserError):
        assert isinstance(result, ServerModels)
        names = (result.checkpoints, result.samplers, result.ipadapters or (), result.clip_vision)
        assert all(isinstance(n, str) for group in names for n in group)
        assert isinstance(result.reference_note, str) and "\n" not in result.reference_note


QUEUES = faulty({"exec_info": {"queue_remaining": 0}}, COMFY_FIELDS)


@settings(CI, max_examples=400, deadline=DEADLINE_MS)
@given(stats=json_bytes(STATS_ANSWERS), object_info=st.just(json.dumps(OBJECT_INFO).encode()) | json_bytes(OBJECT_INFOS),
       queue=json_bytes(QUEUES), checkpoints=json_bytes(MODEL_LISTS))  # fmt: skip
def test_comfy_system_stats_and_queue(stats, object_info, queue, checkpoints):
    answers = {"/system_stats": stats, "/object_info/KSampler": object_info, "/models/checkpoints": checkpoints,
               "/models/controlnet": b"[]", "/models/loras": b"[]", "/prompt": queue}  # fmt: skip
    client = _client(answers)
    assert isinstance(outcome(client.system_stats), (dict, UserError))
    remaining = outcome(client.queue_remaining)
    assert isinstance(remaining, UserError) or (isinstance(remaining, int) and remaining >= 0)
    backend = ComfyBackend([client.config])
    backend._servers[0].client = client
    (line,) = backend.server_info()  # Settings → Test: one line per server, whatever it sent
    assert isinstance(line, str) and len(line.splitlines()) == 1 and len(line) < 1000, line[:200]


IMAGE_REF = {"filename": "Noisebrush_00001_.png", "subfolder": "", "type": "output"}
HISTORY = {PROMPT_ID: {"outputs": {"9": {"images": [IMAGE_REF]}}}}
HISTORIES = faulty(HISTORY, COMFY_FIELDS)


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(history=json_bytes(HISTORIES))
def test_comfy_history(history):
    result = outcome(_client({f"/history/{PROMPT_ID}": history, "/view": PNG_8}).output_image, PROMPT_ID, "9")
    assert isinstance(result, (bytes, UserError))


ERROR_ANSWER = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed", "details": ""},
                "node_errors": {"4": {"errors": [{"message": "Value not in list", "details": "ckpt_name: x"}],
                                      "class_type": "CheckpointLoaderSimple"}}}  # fmt: skip
ERROR_ANSWERS = faulty(ERROR_ANSWER, {"errors": st.lists(JSON, max_size=2) | JSON, "message": JSON, "details": JSON})


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(detail=json_text(ERROR_ANSWERS))
def test_comfy_error_answers(detail):
    text = _describe_error(detail)
    assert isinstance(text, str) and len(text.splitlines()) <= 1 and len(text) <= 300


@st.composite
def preview_frames(draw) -> bytes:
    event = draw(st.sampled_from([1, 1, 4, 4, 2, 0, 2**32 - 1]))
    image = draw(images())
    if event != 4:
        return struct.pack(">II", event, draw(st.sampled_from([1, 2, 0, 7]))) + image
    meta = draw(json_bytes(faulty({"prompt_id": PROMPT_ID, "node_id": "9", "display_node": "9"},
                                  {"prompt_id": st.sampled_from([PROMPT_ID, "other"])})))  # fmt: skip
    n = draw(st.sampled_from([len(meta), len(meta), 0, 2**32 - 1, len(meta) + 4]))
    return struct.pack(">II", event, n) + meta + image


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(data=weighted((6, preview_frames()), (1, st.binary(max_size=40))))
def test_comfy_preview_frames(data):
    result = outcome(preview_frame, data, PROMPT_ID, "127.0.0.1:8188")
    assert result is None or isinstance(result, UserError) or (result.ndim == 3 and result.shape[2] == 3)


JOB_MESSAGES = [
    {"type": "progress", "data": {"prompt_id": PROMPT_ID, "value": 1, "max": 2, "node": "3"}},
    {"type": "executing", "data": {"prompt_id": PROMPT_ID, "node": "9"}},
    {"type": "execution_error", "data": {"prompt_id": PROMPT_ID, "node_type": "KSampler",
                                         "exception_message": "CUDA out of memory"}},
    {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}},
    {"type": "execution_interrupted", "data": {"prompt_id": PROMPT_ID}},
]  # fmt: skip
JOB_FIELDS = {
    "value": NUMBERISH,
    "exception_message": SERVER_TEXT,
    "node_type": SERVER_TEXT,
    "prompt_id": st.sampled_from([PROMPT_ID, "another job"]),
    "type": st.sampled_from(["progress", "executing"]),
}
JOB_FRAMES = weighted((4, st.sampled_from([*JOB_MESSAGES, JOB_MESSAGES[2]]).flatmap(lambda m: json_bytes(faulty(m, JOB_FIELDS)))
                          .map(lambda b: (1, b))),  # a text frame
                      (1, preview_frames().map(lambda b: (2, b))))  # a binary one  # fmt: skip


class _Frames:
    """A websocket that hands out `frames` (opcode, data), then is reset, as a server that vanished."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self.frames = list(frames)

    def settimeout(self, _s: float) -> None:
        pass

    def recv_data(self) -> tuple[int, bytes]:
        if not self.frames:
            raise ConnectionResetError("reset")
        return self.frames.pop(0)


@settings(CI, max_examples=300, deadline=DEADLINE_MS)
@given(frames=st.lists(JOB_FRAMES, max_size=6), ends=st.booleans())
def test_comfy_job_messages(frames, ends):
    """What a job's websocket says, read as the backend follows a job: the steps done, or one sentence."""
    import threading
    import time

    end = (1, json.dumps({"type": "executing", "data": {"node": None, "prompt_id": PROMPT_ID}}).encode())
    backend = ComfyBackend(["http://127.0.0.1:9"])
    events: list = []
    steps = outcome(backend._follow, _Frames(frames + [end] * ends), backend._servers[0], PROMPT_ID, 1, 2,
                    time.monotonic(), events.append, threading.Event())  # fmt: skip
    assert isinstance(steps, UserError) or 0 <= steps <= 2
