"""Misuse from threads: calls that change a model, run at once with others
on the same model, are serialised by the binding's per-model lock.

The scenario runs in a child interpreter, so that a crash (the library's
use of a freed training workspace, before the lock) fails this test rather
than ending the test session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import glow

SCENARIO = textwrap.dedent(
    """
    import threading
    import numpy as np
    import glow

    m = glow.Model(height=8, width=8, channels=3, levels=2, depth=2, hidden=16, seed=3)
    x = (np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32) - 0.5)
    m.data_init(x)
    errors = []

    def train():
        try:
            for _ in range(150):
                m.backward(x)
        except Exception as e:  # a failure is reported, not swallowed
            errors.append(repr(e))

    def options():
        try:
            for i in range(300):
                m.set_option(glow.Option.KEEP_WORKSPACE, i % 2)
                m.set_option(glow.Option.BACKWARD_MODE, (i // 2) % 2)
                m.set_option(glow.Option.THREADS, 1 + i % 3)
                m.log_prob(x)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=train) for _ in range(2)]
    threads.append(threading.Thread(target=options))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert np.isfinite(m.grads).all()
    print("ok")
    """
)


def test_training_threads_and_options_are_serialised():
    """Two threads training one model while a third changes its options
    and evaluates it: every call completes, nothing crashes."""
    env = dict(os.environ)
    # The child imports the package this session tests: the source tree's
    # or an installed one.
    here = os.path.dirname(os.path.dirname(os.path.abspath(glow.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [here, env.get("PYTHONPATH")] if p)
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.stdout.strip() == "ok"
