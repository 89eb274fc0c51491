"""The models: the llama trunk (transformer.py), the byte-level model (byte_lm.py), the projected network and
its hypernetwork (projected.py, hypernet.py; slm-mix's experts are plain trunks); presets, building, saving and
loading in build.py. Nothing here imports mlx_pn.train, mlx_pn.data or mlx_pn.methods."""
