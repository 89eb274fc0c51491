"""The one training loop (loop.py) and what it needs: the compiled step, callbacks, losses, optimizer, checkpoints."""
