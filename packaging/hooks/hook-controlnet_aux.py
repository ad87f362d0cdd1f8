# controlnet-aux ships model code loaded by submodule name; its weights come from the HF cache, never the bundle.
from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

datas = collect_data_files("controlnet_aux") + copy_metadata("controlnet_aux")
hiddenimports = collect_submodules("controlnet_aux.open_pose") + collect_submodules("controlnet_aux.lineart_standard")
