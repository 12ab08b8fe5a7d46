"""A host served from a thread while the test drives a guest in the main one."""
from __future__ import annotations

import threading

import hgsmi


class Pump:
    """``host.poll(slice_s)`` in a daemon thread until :meth:`stop`.

    Its own stop flag, not ``host.serve()``/``host.stop()``: a stop that comes
    before the thread runs still stops it, it stops within ``slice_s``, and
    whatever the poll loop raised is raised again by :meth:`stop`.  As a
    context manager (``with Pump(host):``) it stops at the end of the block,
    unless the block stopped it first.
    """

    def __init__(self, host: hgsmi.Host, slice_s: float = 0.02) -> None:
        self.host = host
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, args=(slice_s,), daemon=True)
        self.t.start()

    def __enter__(self) -> Pump:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.halt.is_set():  # not stopped in the block already (that raised its error)
            self.stop()

    def _run(self, slice_s: float) -> None:
        try:
            while not self.halt.is_set():
                self.host.poll(slice_s)
        except BaseException as e:  # noqa: B036 - surfaced by stop()
            self.error = e

    def stop(self) -> None:
        """Stop serving; fail if the loop hangs, raise what it raised."""
        self.halt.set()
        self.t.join(10)
        assert not self.t.is_alive(), "the host's poll loop hangs"
        if self.error:
            raise self.error
