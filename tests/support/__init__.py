"""Helpers the tests share: one module per job.

    pump             Pump: a host served from a thread while the test drives a guest
    processes        readline, reap, stop_host: child processes that never hang a test
    footprint        fd_count, mem_kib: what a process holds (also used by tests/peers)
    leaks            shm_entries, memfds: what an instance left in /dev/shm or mapped
    waiting          wait_for, serve_until: wait for a condition, fail at a deadline
    native_examples  libhgsmi installed into a prefix, the C examples built against it

Tests import them as ``from support.pump import Pump`` (pytest puts tests/ on
sys.path); peers in tests/peers put tests/ there themselves.
"""
