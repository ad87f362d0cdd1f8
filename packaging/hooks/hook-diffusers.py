# diffusers resolves pipelines and models lazily by name and reads its own version metadata.
from PyInstaller.utils.hooks import collect_submodules, copy_metadata

datas = copy_metadata("diffusers", recursive=True)
hiddenimports = collect_submodules("diffusers.pipelines.controlnet") + collect_submodules("diffusers.schedulers")
module_collection_mode = "pyz+py"
