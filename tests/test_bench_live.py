"""How benchmarks/bench_live.py names a failed run (the crash signal or exit status, with the
Python exception rather than a Qt warning printed before it) and splits its CPU time by thread."""

from __future__ import annotations

from benchmarks.bench_live import run_failure

QT_NOISE = "This plugin does not support propagateSizeHints()"


def test_a_crash_is_named_by_its_signal_not_by_a_qt_warning():
    assert run_failure(-11, QT_NOISE + "\nFatal Python error: Segmentation fault\n") == \
        "crashed (SIGSEGV): Fatal Python error: Segmentation fault"
    assert run_failure(-6, "double free or corruption (out)\n") == "crashed (SIGABRT): double free or corruption (out)"


def test_an_exception_is_its_last_traceback_line():
    stderr = "\n".join([QT_NOISE, "Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                        "    run()", "ValueError: lanes must be >= 1", QT_NOISE])
    assert run_failure(1, stderr) == "exit status 1: ValueError: lanes must be >= 1"
    assert run_failure(2, QT_NOISE) == "exit status 2"


def test_thread_cpu_time_is_split_by_thread_name():
    import threading

    from benchmarks.bench_live import _thread_cpu_seconds

    def spin(stop):
        n = 0
        while not stop.is_set():
            n += 1

    stop = threading.Event()
    worker = threading.Thread(target=spin, args=(stop,), name="busy-spinner")
    before = _thread_cpu_seconds()
    worker.start()
    threading.Event().wait(0.3)
    during = _thread_cpu_seconds()
    stop.set()
    worker.join()
    assert "MainThread" in during
    assert during.get("busy-spinner", 0.0) - before.get("busy-spinner", 0.0) > 0.05
