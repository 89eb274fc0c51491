"""The one training loop (loop.py) and what it needs: losses, optimizer, checkpoints."""
