"""OpenPose skeletons: the map's exact colours and limbs, JSON round trip, and the pose editor on the canvas."""

from __future__ import annotations

import json

import numpy as np
import pytest
from controlnet_aux.open_pose.util import draw_bodypose
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from noisebrush.engine.pose import COLORS, LIMBS, Person, default_person, people_from_json, people_to_json, render_pose


class _KP:  # controlnet-aux's Keypoint shape: normalised x, y
    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


def test_rendering_matches_controlnet_aux_pixel_for_pixel():
    person = default_person(128, 120, 200)
    person = Person([(round(p[0]), round(p[1])) for p in person.keypoints])
    ours = render_pose([person], 256, 256)
    theirs = draw_bodypose(np.zeros((256, 256, 3), np.uint8), [_KP(p[0] / 256, p[1] / 256) for p in person.keypoints])
    assert np.array_equal(ours, theirs)


def test_limb_colours_and_pairs_are_openposes():
    assert LIMBS[:4] == ((1, 2), (1, 5), (2, 3), (3, 4))  # neck-right shoulder, neck-left shoulder, right upper/lower arm
    assert len(LIMBS) == 17 and len(COLORS) == 18
    kps = [None] * 18
    kps[1], kps[2] = (40.0, 50.0), (80.0, 50.0)  # neck → right shoulder: limb 0, colour 0 dimmed to 60 %
    img = render_pose([Person(kps)], 128, 128)
    assert tuple(img[50, 60]) == tuple(int(c * 0.6) for c in COLORS[0])
    assert tuple(img[50, 40]) == COLORS[1] and tuple(img[50, 80]) == COLORS[2]  # joints in full colour


def test_hidden_keypoints_are_absent_from_the_map():
    person = default_person(64, 64, 100)
    full = render_pose([person], 128, 128)
    wrist = person.keypoints[4]
    hidden = render_pose([person.with_hidden(4, True)], 128, 128)
    x, y = int(wrist[0]), int(wrist[1])
    assert tuple(full[y, x]) == COLORS[4]
    assert tuple(hidden[y, x]) != COLORS[4]
    assert (hidden != full).any() and hidden.sum() < full.sum()


def test_json_round_trip_keeps_positions_and_hidden_joints():
    people = [default_person(100, 100, 150).with_hidden(7, True), default_person(300, 120, 120).mirrored()]
    data = json.loads(json.dumps(people_to_json(people, 400, 300)))
    assert data["people"][0]["pose_keypoints_2d"][7 * 3 + 2] == 0.0
    back, w, h = people_from_json(data)
    assert (w, h) == (400, 300)
    for a, b in zip(people, back):
        assert a.hidden == b.hidden
        assert np.allclose(np.array(a.keypoints), np.array(b.keypoints))
    scaled, _, _ = people_from_json(data, 800, 600)
    assert np.allclose(np.array(scaled[0].keypoints), np.array(people[0].keypoints) * 2)


def test_normalised_json_and_bad_json():
    flat = [0.5, 0.2, 1.0] + [0.0, 0.0, 0.0] * 17
    people, _, _ = people_from_json({"people": [{"pose_keypoints_2d": flat}]}, 200, 100)
    assert people[0].keypoints[0] == (100.0, 20.0)
    with pytest.raises(ValueError, match="no 'people'"):
        people_from_json({"nothing": 1})
    with pytest.raises(ValueError, match="18"):
        people_from_json({"people": [{"pose_keypoints_2d": [1, 2, 3]}]})


def test_mirror_swaps_sides():
    p = default_person(100, 100, 160)
    m = p.mirrored()
    assert m.keypoints[2][0] == pytest.approx(2 * 100 - p.keypoints[5][0])  # new right shoulder is the old left one, flipped
    assert np.allclose(np.array(m.mirrored().keypoints), np.array(p.keypoints))


# --- the editor -------------------------------------------------------------------------------


def _screen(canvas, pt) -> QPoint:
    s = canvas.offset + QPointF(*pt) * canvas.scale
    return QPoint(round(s.x()), round(s.y()))


def drag(canvas, start: QPoint, end: QPoint, steps: int = 6) -> None:
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for i in range(1, steps + 1):
        QTest.mouseMove(canvas, start + (end - start) * (i / steps))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


@pytest.fixture
def window(qtbot, tiny_model, tmp_path):
    from helpers import open_window

    w = open_window(qtbot, tmp_path, model=tiny_model, preview_interval_s=0.0)
    yield w
    w.close()


def test_dragging_a_joint_changes_the_map_and_undo_restores_it(window):
    window.add_person_action.trigger()
    canvas, layer = window.canvas, window.doc.layers["pose"]
    before = layer.control_image(64, 64)
    wrist = layer.people[0].keypoints[4]
    drag(canvas, _screen(canvas, wrist), _screen(canvas, (wrist[0] - 120, wrist[1] - 150)))
    moved = layer.people[0].keypoints[4]
    assert moved[0] < wrist[0] - 100 and moved[1] < wrist[1] - 130
    assert not np.array_equal(layer.control_image(64, 64), before)
    window.undo_action.trigger()
    assert layer.people[0].keypoints[4] == wrist
    assert np.array_equal(layer.control_image(64, 64), before)


def test_dragging_inside_a_person_moves_all_of_them(window):
    window.add_person_action.trigger()
    canvas, layer = window.canvas, window.doc.layers["pose"]
    start = layer.people[0].keypoints
    hip = layer.people[0].keypoints[8]
    inside = (hip[0] + 20, hip[1] - 40)  # on the torso, away from any joint
    drag(canvas, _screen(canvas, inside), _screen(canvas, (inside[0] + 60, inside[1])))
    dx = [b[0] - a[0] for a, b in zip(start, layer.people[0].keypoints)]
    assert min(dx) > 50 and max(dx) - min(dx) < 2


def test_right_click_hides_a_joint_and_edits_are_undoable(window):
    window.add_person_action.trigger()
    canvas, layer = window.canvas, window.doc.layers["pose"]
    knee = layer.people[0].keypoints[9]
    QTest.mouseClick(canvas, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, _screen(canvas, knee))
    assert 9 in layer.people[0].hidden
    window.undo_action.trigger()
    assert 9 not in layer.people[0].hidden
    layer.people = [layer.people[0].with_point(7, (400.0, 60.0))]  # raise the left hand
    cx = layer.people[0].center()[0]
    window.mirror_action.trigger()
    assert layer.people[0].keypoints[4] == pytest.approx((2 * cx - 400.0, 60.0))  # now the right hand is up
    window.add_person_action.trigger()
    assert len(layer.people) == 2
    window.remove_person_action.trigger()
    assert len(layer.people) == 1


def test_export_then_import_pose_json(window, tmp_path):
    window.add_person_action.trigger()
    people = [p.copy() for p in window.doc.layers["pose"].people]
    window.files.export_pose(str(tmp_path / "pose.json"))
    window.doc.layers["pose"].people = []
    assert window.load_layer_file("pose", str(tmp_path / "pose.json"))
    assert np.allclose(np.array(window.doc.layers["pose"].people[0].keypoints), np.array(people[0].keypoints))


def test_live_mode_joint_drag_gives_one_result_from_the_last_position(window, qtbot):
    window.add_person_action.trigger()
    window.panel.steps.setValue(40)
    window.panel.live.setChecked(True)
    qtbot.waitUntil(lambda: window.job is None, timeout=60000)  # the frame that toggling live started
    finished = []
    window.bridge.finished.connect(lambda job, ev: finished.append(ev))
    canvas, layer = window.canvas, window.doc.layers["pose"]
    wrist = layer.people[0].keypoints[7]
    drag(canvas, _screen(canvas, wrist), _screen(canvas, (wrist[0] + 80, wrist[1] - 160)), steps=12)
    expected = layer.control_image(64, 64)
    qtbot.waitUntil(lambda: len(finished) >= 1 and window.job is None, timeout=60000)
    qtbot.wait(300)
    assert len(finished) == 1
    pose = next(c for c in finished[0].params.controls if c.kind == "pose")
    assert np.array_equal(pose.image, expected)


def test_openpose_body25_is_converted_by_index_and_fitted_when_it_names_no_canvas(tmp_path):
    import json

    from noisebrush.engine.pose import BODY25_TO_COCO18, load_pose_json

    # a BODY_25 person in the pixels of a 1920×1080 photo, as OpenPose writes it (no canvas size)
    body25 = [(960 + 10 * (i % 5), 300 + 30 * i) for i in range(25)]
    flat = [v for x, y in body25 for v in (x, y, 0.9)]
    path = tmp_path / "openpose.json"
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": flat}]}))
    notes = []
    (person,) = load_pose_json(path, 512, 512, notes)
    assert "fitted to the canvas" in notes[0]
    assert all(0 <= x <= 512 and 0 <= y <= 512 for x, y in person.keypoints)
    # by index: COCO's right hip (8) is BODY_25's 9, not its mid-hip (8)
    ys = [y for _, y in person.keypoints]
    assert BODY25_TO_COCO18[8] == 9 and ys[8] > ys[7] and ys == sorted(ys)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), 1e12, "12", True])
def test_pose_json_with_values_that_are_not_coordinates_is_refused(tmp_path, bad):
    import json

    from noisebrush.engine.pose import load_pose_json

    flat = [100.0, 100.0, 1.0] * 18
    flat[4] = bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": flat}]}))
    with pytest.raises(ValueError):
        load_pose_json(path, 512, 512)
