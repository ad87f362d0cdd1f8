"""Menus, the toolbar and keyboard shortcuts, and the small dialogs they open (a mixin of MainWindow)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMessageBox, QSpinBox, QToolBar

LOAD_OPTION_TITLES = {
    "fp16": "Half precision on the GPU",
    "attention_slicing": "Attention slicing (less GPU memory)",
    "cpu_offload": "Model CPU offload (less GPU memory, slower)",
    "sequential_offload": "Sequential CPU offload (least GPU memory: Flux in a few GB; much slower)",
    "vae_tiling": "VAE tiling (large images)",
    "taesd": "Sharper previews with a tiny autoencoder, when found",
}


class ActionsMixin:
    """Needs from the window: doc, canvas, layers_panel, files, jobs, settings, and Qt's QMainWindow methods."""

    def _action(self, text: str, shortcut, slot, checkable: bool = False) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def build_actions(self) -> None:
        stack = self.doc.undo_stack
        self.undo_action = stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        # fixed labels, so toolbar buttons keep their width; what would be undone goes into the tooltip
        stack.undoTextChanged.connect(self._fixed_undo_labels)
        stack.redoTextChanged.connect(self._fixed_undo_labels)
        self._fixed_undo_labels()
        self.generate_action = self._action("Generate", [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")], self.generate)
        self.cancel_action = self._action("Cancel", "Esc", self.cancel)
        self.brush_action = self._action("Brush", "B", lambda: self._set_tool("brush"), checkable=True)
        self.eraser_action = self._action("Eraser", "E", lambda: self._set_tool("eraser"), checkable=True)
        self.brush_action.setChecked(True)
        fit = self._action("Fit", "Ctrl+0", self.canvas.fit)
        zoom_in = self._action("Zoom in", QKeySequence.StandardKey.ZoomIn, lambda: self.canvas.zoom(1.25))
        zoom_out = self._action("Zoom out", QKeySequence.StandardKey.ZoomOut, lambda: self.canvas.zoom(0.8))
        clear = self._action("Clear layer", "Ctrl+Backspace", lambda: self.doc.clear_layer(self.canvas.active_layer))
        self._action("Smaller brush", "[", lambda: self._set_brush(self.canvas.brush_size / 1.25))
        self._action("Bigger brush", "]", lambda: self._set_brush(self.canvas.brush_size * 1.25))
        open_act = self._action("Open image or settings…", QKeySequence.StandardKey.Open,
                                self.files.open_dialog)  # fmt: skip
        save_act = self._action("Save image…", QKeySequence.StandardKey.Save, self.files.save_dialog)
        quit_act = self._action("Quit", QKeySequence.StandardKey.Quit, self.close)
        self.brush_size_box = QSpinBox()
        self.brush_size_box.setRange(1, 200)
        self.brush_size_box.setValue(int(self.canvas.brush_size))
        self.brush_size_box.setSuffix(" px")
        self.brush_size_box.setToolTip("Brush size ([ and ])")
        self.brush_size_box.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", float(v)))

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(open_act)
        load_menu = file_menu.addMenu("Load control map")
        for kind, layer in self.doc.layers.items():
            load = self._action(f"{layer.info.title} map…", None, lambda _=False, k=kind: self.files.load_layer_dialog(k))
            load_menu.addAction(load)
        file_menu.addAction(self._action("Make control from image…", "Ctrl+Shift+I", self.make_control_dialog))
        file_menu.addSeparator()
        file_menu.addAction(self._action("Get models…", None, lambda: self.files.packs_dialog()))
        file_menu.addAction(self._action("Download model from Hugging Face…", None, lambda: self.files.download_model_dialog()))
        file_menu.addAction(self._action("Choose models folder…", None, self.files.choose_models_folder))
        file_menu.addAction(save_act)
        file_menu.addAction(self._action("Save project…", "Ctrl+Shift+S", self.projects.save_dialog))
        file_menu.addAction(self._action("Open project…", "Ctrl+Shift+O", self.projects.open_dialog))
        file_menu.addSeparator()
        file_menu.addAction(quit_act)
        edit = self.menuBar().addMenu("&Edit")
        for a in (self.undo_action, self.redo_action, clear):
            edit.addAction(a)
        edit.addSeparator()
        edit.addAction(self._action("Paste into the Image layer", QKeySequence.StandardKey.Paste, self.paste_picture))
        self.colour_action = self._action("Brush colour…", "C", self.choose_colour)
        edit.addAction(self.colour_action)
        view = self.menuBar().addMenu("&View")
        for a in (fit, zoom_in, zoom_out):
            view.addAction(a)
        view.addSeparator()
        only = {"result": ("Result only", "H"), "sketch": ("Sketch only", "Shift+H")}
        self.result_only_action, self.sketch_only_action = (
            self._action(title, key, lambda on, v=v: self.set_view(v if on else "both"), True) for v, (title, key) in only.items()
        )
        flip = lambda: self.set_view("sketch" if self.canvas.view == "result" else "result")  # noqa: E731 - A/B
        self.flip_view_action = self._action("Flip sketch / result", "X", flip)
        for a in (self.result_only_action, self.sketch_only_action, self.flip_view_action):
            view.addAction(a)
        layers_menu = self.menuBar().addMenu("&Layers")
        layers_menu.addAction(self._action("Add region", "Ctrl+Shift+R", lambda: self.layers_panel.regions.add()))
        layers_menu.addAction(self._action("Add region from the mask", None, self.region_from_mask))
        layers_menu.addSeparator()
        refs = self.layers_panel.references
        layers_menu.addAction(self._action("Add reference…", "Ctrl+Shift+F", lambda: refs.load_dialog()))
        layers_menu.addAction(self._action("Paste as reference", None, refs.paste))
        layers_menu.addAction(self._action("Use this result as a reference", None, refs.use_result))
        pose = self.menuBar().addMenu("&Pose")
        self.add_person_action = self._action("Add person", "Ctrl+Shift+A", lambda: self._pose_do(self.canvas.add_person))
        pose.addAction(self.add_person_action)
        self.remove_person_action = self._action("Remove person", "Delete", lambda: self._pose_do(self.canvas.remove_person))
        self.mirror_action = self._action("Mirror left/right", "M", lambda: self._pose_do(self.canvas.mirror_person))
        pose.addAction(self.remove_person_action)
        pose.addAction(self.mirror_action)
        pose.addAction(self._action("Bigger", "Shift+Up", lambda: self._pose_do(lambda: self.canvas.scale_person(1.1))))
        pose.addAction(self._action("Smaller", "Shift+Down", lambda: self._pose_do(lambda: self.canvas.scale_person(1 / 1.1))))
        show_joints = self._action("Show hidden joints", None, lambda: self._pose_do(self.canvas.show_all_joints))
        pose.addAction(show_joints)
        pose.addSeparator()
        pose_kind = self.doc.pose_layer().kind
        import_pose = self._action("Import OpenPose JSON…", None, lambda: self.files.load_layer_dialog(pose_kind))
        pose.addAction(import_pose)
        pose.addAction(self._action("Export OpenPose JSON…", None, self.files.export_pose_dialog))
        tip = QAction(
            "Drag a joint to move it, drag inside a person (or Shift+drag) to move them, right-click a joint to hide it", self
        )
        tip.setEnabled(False)
        pose.addSeparator()
        pose.addAction(tip)
        settings_menu = self.menuBar().addMenu("&Settings")
        settings_menu.addAction(self._action("Engine: this computer or ComfyUI servers…", None, self.engine_dialog))
        settings_menu.addSeparator()
        for key, title in LOAD_OPTION_TITLES.items():
            act = QAction(title, self, checkable=True)
            act.setChecked(self.settings.value(f"load/{key}", False, type=bool))
            act.toggled.connect(lambda on, k=key: self._set_load_option(k, on))
            settings_menu.addAction(act)
        settings_menu.addSeparator()
        settings_menu.addAction(self._action("Live mode delay…", None, self.ask_live_delay))
        self.dark_action = self._action("Dark theme", None, self.set_dark, checkable=True)
        self.dark_action.setChecked(self.settings.value("dark_theme", False, type=bool))
        settings_menu.addAction(self.dark_action)
        gen = self.menuBar().addMenu("&Generate")
        gen.addAction(self.generate_action)
        gen.addAction(self.cancel_action)
        four = lambda: self.jobs.generate_variations(4)  # noqa: E731
        self.variations_action = self._action("Generate 4 variations", "Ctrl+Shift+Return", four)
        gen.addAction(self.variations_action)
        gen.addSeparator()
        self.edit_result_action = self._action("Edit this result", "Ctrl+E", self.edit_this)
        gen.addAction(self.edit_result_action)
        self.upscale_action = self._action("Upscale && refine…", "Ctrl+Shift+U", self.upscale_dialog)
        gen.addAction(self.upscale_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("Keyboard shortcuts", "F1", self.show_shortcuts))
        help_menu.addAction(self._action("About Noisebrush", None, self.show_about))

        tb = QToolBar("Tools")
        tb.setObjectName("tools")
        tb.setMovable(False)
        for a in (self.brush_action, self.eraser_action):
            tb.addAction(a)
        tb.addWidget(QLabel(" Size "))
        tb.addWidget(self.brush_size_box)
        tb.addAction(self.colour_action)
        self._show_colour()
        tb.addSeparator()
        for a in (self.undo_action, self.redo_action, clear):
            tb.addAction(a)
        tb.addSeparator()
        for a in (fit, zoom_in, zoom_out):
            tb.addAction(a)
        self.addToolBar(tb)

    def show_shortcuts(self) -> None:
        rows = [
            (a.text(), a.shortcut().toString(QKeySequence.SequenceFormat.NativeText))
            for a in self.actions()
            if not a.shortcut().isEmpty()
        ]
        rows += [(self.undo_action.text() or "Undo", "Ctrl+Z"), ("Redo", "Ctrl+Shift+Z"), ("Pan", "Middle drag or Alt+drag"),
                 ("Zoom", "Mouse wheel")]  # fmt: skip
        text = "".join(f"<tr><td>{name}</td><td><b>{keys}</b></td></tr>" for name, keys in sorted(set(rows)))
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard shortcuts", f"<table cellspacing=6>{text}</table>", parent=self)
        box.setModal(False)
        box.show()

    def show_about(self) -> None:
        from noisebrush import __version__
        from noisebrush.gui.app import log_file

        QMessageBox.about(self, "About Noisebrush", f"<b>Noisebrush {__version__}</b><br>Draw with a diffusion model. "
                          "The embedded model was trained by Noisebrush on a procedural world; it runs offline."
                          f"<br><br>Log: {log_file()}")  # fmt: skip

    def ask_live_delay(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        ms, ok = QInputDialog.getInt(self, "Live mode delay", "Wait this long after a stroke or change (ms):",
                                     self.jobs.live.timer.interval(), 0, 2000, 10)  # fmt: skip
        if ok:
            self.set_live_delay(ms)

    def set_live_delay(self, ms: int) -> None:
        self.jobs.live.timer.setInterval(ms)
        self.settings.setValue("live_delay_ms", ms)

    def choose_colour(self) -> None:
        """The Image layer's brush paints plain colours (to guide a Refine)."""
        from PySide6.QtWidgets import QColorDialog

        colour = QColorDialog.getColor(self.canvas.paint_color, self, "Brush colour for the Image layer")
        if colour.isValid():
            self.canvas.paint_color = colour
            self._show_colour()

    def _show_colour(self) -> None:
        from PySide6.QtGui import QIcon, QPixmap

        swatch = QPixmap(16, 16)
        swatch.fill(self.canvas.paint_color)
        self.colour_action.setIcon(QIcon(swatch))
        self.colour_action.setToolTip("Brush colour for the Image layer (C)")

    def paste_picture(self) -> None:
        """A picture from the clipboard becomes the Image layer (undoable), ready to refine, inpaint or extend."""
        from PySide6.QtWidgets import QApplication

        image = QApplication.clipboard().image()
        if image.isNull():
            self.show_error("The clipboard holds no picture.")
            return
        self.doc.set_layer_image("image", image, "Paste picture")
        self.layers_panel.set_active("image")

    def upscale_dialog(self) -> None:
        """Upscale the picture and refine it in tiles; the tiles appear on the canvas one by one."""
        from noisebrush.engine.tiled_run import native_tile
        from noisebrush.gui.upscale_dialog import UpscaleDialog

        dialog = UpscaleDialog(self.state, native_tile(self.state.settings.model), self)
        if dialog.exec() == UpscaleDialog.DialogCode.Accepted:
            self.jobs.upscale(*dialog.choice())

    def edit_this(self) -> None:
        """The shown result becomes the Image layer (undoable): refine it, inpaint a region, or extend it."""
        ev = self.state.last_result
        if ev is None:
            self.show_error("Nothing to edit yet: generate a picture, or pick one in the history.")
            return
        self.state.edit_result(ev)
        if self.state.settings.mode == "generate":
            self.state.update(mode="refine")
        self.layers_panel.set_active("image")
        self.statusBar().showMessage("The result is now the Image layer: Refine it, paint a Mask to Inpaint, or Extend it", 8000)

    def _fixed_undo_labels(self, _text: str = "") -> None:
        stack = self.doc.undo_stack
        self.undo_action.setText("Undo")
        self.undo_action.setToolTip(f"Undo {stack.undoText()}".strip())
        self.redo_action.setText("Redo")
        self.redo_action.setToolTip(f"Redo {stack.redoText()}".strip())

    def set_view(self, view: str) -> None:
        """ "both", "result" or "sketch": what the canvas shows (H, Shift+H, X)."""
        self.canvas.set_view(view)
        self.result_only_action.setChecked(view == "result")
        self.sketch_only_action.setChecked(view == "sketch")

    def set_dark(self, on: bool) -> None:
        from noisebrush.gui.theme import apply_theme

        apply_theme(on)
        self.settings.setValue("dark_theme", on)

    def _set_load_option(self, key: str, on: bool) -> None:
        self.settings.setValue(f"load/{key}", on)
        self.statusBar().showMessage("Model loading options apply from the next start of Noisebrush", 8000)

    def _set_tool(self, tool: str) -> None:
        self.canvas.tool = tool
        self.brush_action.setChecked(tool == "brush")
        self.eraser_action.setChecked(tool == "eraser")

    def _set_brush(self, size: float) -> None:
        self.brush_size_box.setValue(int(max(1, min(200, round(size)))))

    def region_from_mask(self) -> None:
        """A new region painted where the Mask layer is (the mask stays)."""
        from noisebrush.gui.document import qimage_to_rgba

        alpha = qimage_to_rgba(self.doc.edit_layers["mask"].image)[..., 3]
        if not alpha.any():
            self.show_error("The Mask layer is empty: paint where the region goes on it first, or use Add region")
            return
        self.layers_panel.regions.add(alpha)

    def _set_active_layer(self, kind: str) -> None:
        self.canvas.active_layer = kind
        self.canvas.update()

    def _pose_do(self, fn) -> None:
        """Run a pose-editor action on the pose layer (selecting it first)."""
        pose = self.doc.pose_layer()
        self.layers_panel.set_active(pose.kind)
        if self.canvas.selected_person is None and pose.people:
            self.canvas.selected_person = 0
        fn()
        self.canvas.update()
