"""One thread that runs every MLX evaluation of the server (routing and generation), one job at a time.

The HTTP server answers each connection in a thread of its own; generating there runs each request on a new
thread (and mlx-lm's generation stream is thread-local: a new MLX stream per request). Handing the work to one
long-lived thread, as mlx_lm.server does, measured 946 vs 748 and 902 vs 580 generated tokens/s in two runs
(tools/RESULTS.md, "Latency against mlx_lm.server").
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


class Worker:
    def __init__(self, name: str = "mlx-pn-serve"):
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            make, out, cancel = self._jobs.get()
            try:
                gen = make()
                for item in gen:
                    if cancel.is_set():  # the client is gone or has what it wanted: stop generating
                        gen.close()
                        break
                    out.put(("item", item))
            except BaseException as e:  # noqa: BLE001 - handed to the request's thread, which reports it
                out.put(("error", e))
            out.put(("done", _DONE))

    def stream(self, make):
        """Yield the items of make() (a generator function), run on the worker thread; its exception is raised
        here. Closing this generator early stops make()'s after its current item."""
        out, cancel = queue.Queue(), threading.Event()
        self._jobs.put((make, out, cancel))
        try:
            while True:
                kind, value = out.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            cancel.set()

    def call(self, fn):
        """fn() run on the worker thread (after the jobs before it); its result, or its exception raised here."""
        def one():
            yield fn()

        return next(self.stream(one))
