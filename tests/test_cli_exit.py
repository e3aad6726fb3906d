"""A finished command-line run leaves without the interpreter's teardown, after every exit hook and thread."""

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# A program shaped like a stage run: the hook is registered first, then "the stage" starts a thread
# that writes late, registers its own exit hook and logs; an object whose finaliser runs only in the
# interpreter's teardown tells whether that teardown happened.
PROGRAM = textwrap.dedent("""
    import atexit, logging, sys, threading, time
    from pathlib import Path
    from cxrsynth.flows.cli import FinishedRun

    out = Path(sys.argv[1])
    finished = FinishedRun()
    threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("joined"))).start()
    atexit.register(lambda: (out / "hook").write_text("ran"))
    handler = logging.FileHandler(out / "log.txt", delay=False)
    logging.getLogger("stage").addHandler(handler)
    logging.getLogger("stage").warning("last line")

    class Teardown:
        def __del__(self):
            (out / "teardown").write_text("ran")

    keep = Teardown()
    print("stdout, unflushed", end="")
    if sys.argv[2] == "fail":
        raise RuntimeError("stage failed")
    finished.succeeded = True
""")


def _run(tmp_path, outcome: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path), outcome], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_finished_run_skips_the_teardown_but_not_the_exit_hooks(tmp_path):
    done = _run(tmp_path, "ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stdout, unflushed"
    assert (tmp_path / "thread").read_text() == "joined" and (tmp_path / "hook").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "last line\n"
    assert not (tmp_path / "teardown").exists(), "the interpreter was torn down after all"


def test_a_failed_run_leaves_the_normal_way(tmp_path):
    failed = _run(tmp_path, "fail")
    assert failed.returncode == 1 and "RuntimeError: stage failed" in failed.stderr
    assert (tmp_path / "hook").read_text() == "ran" and (tmp_path / "teardown").read_text() == "ran"
