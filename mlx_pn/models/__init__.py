"""The models: the llama trunk (transformer.py), the byte-level model (byte_lm.py), the projected network and
its hypernetwork (projected.py, hypernet.py), the hard mixture (mixture.py); presets, building, saving and
loading in build.py. Nothing here imports mlx_pn.train, mlx_pn.data or mlx_pn.methods."""
