"""The `noisebrush` command: headless generation, previews, and a clear one-line error for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import circle_sketch
from PIL import Image
from tiny_model import tiny_controlnet, tiny_unet

from noisebrush.cli import main
from noisebrush.engine.metadata import read_request

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sketch(tmp_path) -> Path:
    path = tmp_path / "sketch.png"
    Image.fromarray(circle_sketch(64)).save(path)
    return path


def generate(tiny_model, out: Path, *extra: str) -> int:
    return main(["generate", "--prompt", "a red circle", "--model", tiny_model, "--steps", "2", "--seed", "3",
                 "--out", str(out), *extra])  # fmt: skip


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_generate_writes_png_with_settings_and_previews(tiny_model, sketch, tmp_path, capsys):
    out = tmp_path / "out.png"
    previews = tmp_path / "previews"
    assert generate(tiny_model, out, "--control", f"scribble={sketch}@0.8", "--previews", str(previews)) == 0
    assert Image.open(out).size == (64, 64)
    req = read_request(out)
    assert req.prompt == "a red circle" and req.seed == 3 and req.steps == 2
    assert req.controls[0].kind == "scribble" and req.controls[0].weight == 0.8
    assert sorted(p.name for p in previews.iterdir()) == ["step_001.png", "step_002.png"]
    assert "wrote" in capsys.readouterr().out


def test_pose_control_from_openpose_json(tiny_model, tmp_path):
    pose = {"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [32, 10, 1, 32, 20, 1] + [0, 0, 0] * 16}]}
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(pose))
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, "--control", f"pose={path}") == 0
    control = read_request(out).controls[0]
    assert control.kind == "pose" and control.image.max() > 0


def _bad_images(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    (tmp_path / "notes.txt").write_text("not an image")
    paths["non-image"] = tmp_path / "notes.txt"
    full = tmp_path / "full.png"
    Image.fromarray(circle_sketch(64)).save(full)
    data = full.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    paths["truncated"] = tmp_path / "truncated.png"
    paths["missing"] = tmp_path / "nope.png"
    return paths


@pytest.mark.parametrize(
    "case,expected", [("non-image", "not an image"), ("truncated", "truncated"), ("missing", "no such file")]
)
def test_unreadable_control_files(tiny_model, tmp_path, capsys, case, expected):
    bad = _bad_images(tmp_path)[case]
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, "--control", f"scribble={bad}") == 2
    assert expected in error_of(capsys)
    assert not out.exists()


def test_odd_image_modes_are_converted_and_resized_with_a_note(tiny_model, tmp_path, capsys):
    depth16 = (np.linspace(0, 65535, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(depth16).save(tmp_path / "depth16.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[20:40, 20:40] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(circle_sketch(64)).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(circle_sketch(64)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cases = {"depth16.png": ("depth", ["16 ", "resized from 96×96 to 64×64"]), "rgba.png": ("scribble", ["transparency"]),
             "pal.png": ("scribble", []), "cmyk.jpg": ("scribble", ["CMYK"])}  # fmt: skip
    for name, (kind, notes) in cases.items():
        out = tmp_path / f"out-{name}.png"
        assert generate(tiny_model, out, "--control", f"{kind}={tmp_path / name}") == 0, name
        err = capsys.readouterr().err
        for n in notes:
            assert n in err, (name, err)
        control = read_request(out).controls[0].image
        assert control.shape == (64, 64, 3)
    # the 16-bit depth keeps its full gradient after scaling to 8 bits
    depth = read_request(tmp_path / "out-depth16.png.png").controls[0].image
    assert depth.min() <= 5 and depth.max() >= 250


def test_size_is_rounded_to_a_multiple_of_8(tiny_model, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, "--width", "70", "--height", "61") == 0
    assert "width 70 rounded to 72" in capsys.readouterr().err
    assert Image.open(out).size == (72, 64)


@pytest.mark.parametrize(
    "args,expected",
    [(["--steps", "0"], "steps must be between 1 and 200"), (["--guidance", "-1"], "guidance must be between 0 and 30")],
)
def test_bad_settings(tiny_model, tmp_path, capsys, args, expected):
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, *args) == 2
    assert expected in error_of(capsys)
    assert not out.exists()


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    out = tmp_path / "out.png"
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "junk"), "--out", str(out)]) == 2
    assert "is not a diffusers model folder" in error_of(capsys)


def test_controlnet_of_another_family_is_refused(tiny_model, sketch, tmp_path, capsys):
    sdxl_like = tmp_path / "sdxl-controlnet"
    tiny_controlnet(tiny_unet(cross_attention_dim=2048), seed=1).save_pretrained(sdxl_like)
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, "--control", f"scribble={sketch}", "--controlnet", f"scribble={sdxl_like}") == 2
    assert "SDXL ControlNet" in error_of(capsys)
    assert not out.exists()


def test_output_folder_must_exist(tiny_model, tmp_path, capsys):
    assert generate(tiny_model, tmp_path / "missing" / "out.png") == 2
    assert "does not exist" in error_of(capsys)


def test_version_is_fast_and_imports_no_torch():
    code = (
        "import sys; from noisebrush.cli import main\ntry: main(['--version'])\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules, 'PySide6' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split()[:2] == ["noisebrush", "0.1.0"]
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_no_display_gives_a_clear_message(monkeypatch, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main([]) == 2
    assert "no display found" in capsys.readouterr().err


def test_models_on_a_fresh_machine_lists_the_embedded_model_and_says_where_models_go(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NOISEBRUSH_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "noisebrush-default" in out and str(tmp_path / "data" / "Noisebrush" / "models") in out


def test_files_on_the_command_line_open_in_the_gui(tmp_path, monkeypatch, capsys):
    import noisebrush.cli as cli

    opened = []
    monkeypatch.setattr(cli, "_run_gui", lambda files=None: opened.append(files) or 0)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"x")
    assert main([str(picture)]) == 0 and opened == [[str(picture)]]
    assert main([str(tmp_path / "nope.png")]) == 2 and "no such file" in error_of(capsys)


def test_missing_xcb_libraries_are_named_with_the_command_that_installs_them(monkeypatch, capsys):
    import noisebrush.cli as cli

    monkeypatch.setattr(cli, "missing_xcb_libraries", lambda: ["libxcb-icccm4", "libxcb-keysyms1"])
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert cli._run_gui() == 2
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in error_of(capsys)


def test_a_generation_prints_our_progress_and_none_of_the_libraries_noise(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "noisebrush", "generate", "--prompt", "a red circle", "--steps", "2", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "NOISEBRUSH_VERBOSE"} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    noise = ("Loading pipeline components", "Expected types", "FutureWarning", "Loading weights")
    assert not [n for n in noise if n in run.stderr + run.stdout], run.stderr
    assert out.is_file()


@pytest.mark.parametrize("args, says", [
    (["--guidance", "nan"], "guidance must be a finite number"),
    (["--guidance", "inf"], "guidance must be a finite number"),
    (["--width", "0"], "width must be a multiple of 8 from 64 to 2048"),
    (["--width", "100001"], "width must be a multiple of 8 from 64 to 2048"),
    (["--steps", "100000"], "steps must be between 1 and 200"),
    (["--seed", str(2**64)], "the seed must be a whole number from 0 to 4294967295"),
    (["--prompt", "caf\udce9"], "prompt is not valid text"),
])  # fmt: skip
def test_values_out_of_range_are_refused_before_any_work(tiny_model, tmp_path, capsys, args, says):
    out = tmp_path / "out.png"
    assert generate(tiny_model, out, *args) == 2
    assert says in error_of(capsys) and not out.exists()


def test_seed_minus_one_draws_a_seed_and_writes_the_one_drawn(tiny_model, tmp_path):
    from noisebrush.engine.metadata import read_request

    out = tmp_path / "out.png"
    assert generate(tiny_model, out, "--seed", "-1") == 0
    seed = read_request(out).seed
    assert seed is not None and 0 <= seed <= 2**32 - 1


def test_a_destination_that_cannot_be_written_is_refused_before_any_work(tiny_model, tmp_path, capsys):
    folder = tmp_path / "out.png"
    folder.mkdir()
    assert generate(tiny_model, folder) == 2 and "is a folder" in error_of(capsys)


def test_a_read_only_folder_is_refused_before_any_work(tiny_model, tmp_path, capsys, monkeypatch):
    import tempfile

    def read_only(*a, **k):  # as a read-only mount answers (root ignores mode bits, so they cannot stand in)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert generate(tiny_model, tmp_path / "out.png") == 2
    assert "cannot write" in error_of(capsys) and not (tmp_path / "out.png").exists()


def test_previews_pointing_at_a_file_is_refused(tiny_model, tmp_path, capsys):
    (tmp_path / "p").write_text("x")
    assert generate(tiny_model, tmp_path / "o.png", "--previews", str(tmp_path / "p")) == 2
    assert "is a file" in error_of(capsys)


def test_a_write_that_fails_after_the_work_rescues_the_picture(tiny_model, tmp_path, capsys, monkeypatch):
    from noisebrush.engine import metadata

    real = metadata.save_png
    out = tmp_path / "out.png"

    def full_disk(image, req, path, model_name=""):
        if path == out:
            raise OSError(28, "No space left on device")
        return real(image, req, path, model_name)

    monkeypatch.setattr(metadata, "save_png", full_disk)
    assert generate(tiny_model, out) == 2
    err = error_of(capsys)
    assert "No space left" in err and "saved to" in err
    rescued = err.split("saved to ")[1].split(" instead")[0]
    assert Path(rescued).is_file() and not out.exists()
    Path(rescued).unlink()
