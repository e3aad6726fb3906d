"""The shared chunk-submit-progress loop of the mapped stages (flows/fanout.py)."""

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from cxrsynth.flows.fanout import ChunkRule, Fanout, chunks

INGEST = ChunkRule()  # 4 per worker, 16..256 items
ONE_PER_WORKER = ChunkRule(per_worker=1, min_size=1, max_size=None)


def _sizes(rule: ChunkRule, items: int, workers: int) -> list[int]:
    return [stop - start for start, stop in rule.bounds(items, workers)]


def test_chunks_grow_with_the_collection_within_bounds():
    assert _sizes(INGEST, 10, 2) == [10]  # fewer than min_size: one chunk
    assert _sizes(INGEST, 40, 2) == [20, 20]  # min_size wins over four per worker
    assert _sizes(INGEST, 1800, 2) == [225] * 8  # four per worker
    big = _sizes(INGEST, 10**6, 2)
    assert len(big) == 3907 and max(big) == 256 and min(big) == 255 and sum(big) == 10**6
    assert INGEST.bounds(0, 2) == [] and chunks([], 2, INGEST) == []


def test_bounds_are_contiguous_balanced_and_in_order():
    for items in range(1, 300, 7):
        for workers in (1, 2, 3, 8):
            for rule in (INGEST, ONE_PER_WORKER, ChunkRule(min_size=8, max_size=50)):
                bounds = rule.bounds(items, workers)
                assert bounds[0][0] == 0 and bounds[-1][1] == items
                assert all(stop == start for (_, stop), (start, _) in zip(bounds[:-1], bounds[1:]))
                sizes = [stop - start for start, stop in bounds]
                assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
                if rule.max_size is not None:
                    assert max(sizes) <= rule.max_size


def test_one_part_per_worker_as_generate_always_cut_its_plan():
    # generate's former generation.parts: np.linspace edges, truncated
    assert _sizes(ONE_PER_WORKER, 10, 4) == [2, 3, 2, 3]
    assert _sizes(ONE_PER_WORKER, 9, 6) == [1, 2, 1, 2, 1, 2]
    assert _sizes(ONE_PER_WORKER, 3, 8) == [1, 1, 1]
    assert _sizes(ONE_PER_WORKER, 7, 1) == [7]


def test_chunks_slice_lists_ranges_and_frames():
    assert chunks(list("abcdefgh"), 2, ChunkRule(per_worker=1, min_size=1)) == [list("abcd"), list("efgh")]
    assert chunks(range(3, 9), 3, ChunkRule(per_worker=1, min_size=1)) == [range(3, 5), range(5, 7), range(7, 9)]
    frame = pd.DataFrame({"image_id": [f"img-{n}" for n in range(5)]}, index=[9, 7, 5, 3, 1])
    parts = chunks(frame, 2, ONE_PER_WORKER)
    assert [part.index.tolist() for part in parts] == [[9, 7], [5, 3, 1]]


@pytest.mark.parametrize("fields", [{"per_worker": 0}, {"min_size": 0}, {"min_size": 8, "max_size": 4}])
def test_a_bad_rule_is_refused(fields):
    with pytest.raises(ValueError, match="bad chunk rule"):
        ChunkRule(**fields)


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded machine needs more than the default 30 s
        yield


def square_slowly(values: list[int], first: int) -> list[tuple[int, int, str | None]]:
    """Each value squared, with the process and OpenMP thread setting that squared it."""
    if -1 in values:
        raise RuntimeError("chunk with -1")
    time.sleep(0.3 if values[0] == first else 0)  # the first chunk finishes last
    return [(value * value, os.getpid(), os.environ.get("OMP_NUM_THREADS")) for value in values]


SQUARE = Fanout(task(square_slowly, cache_policy=NO_CACHE), "squares", "number", ChunkRule(per_worker=2, min_size=1))


def _with_runtime(params, **runtime):
    return params.model_copy(update={"runtime": params.runtime.model_copy(update=runtime)})


def _squares_over(params, values, fanout=SQUARE):
    @flow
    def squares():
        return fanout.run(params, 2, values, lambda chunk: {"values": chunk, "first": values[0]})

    return squares()


@pytest.mark.parametrize("fanout", ["threads", "processes"])
def test_results_come_back_in_chunk_order_with_progress(prefect_server, tiny_params, capsys, fanout):
    parts = _squares_over(_with_runtime(tiny_params, fanout=fanout), list(range(1, 9)))
    assert [[square for square, _, _ in part] for part in parts] == [[1, 4], [9, 16], [25, 36], [49, 64]]
    output = capsys.readouterr()
    assert "squares: 100%" in output.err and "8/8" in output.err
    workers = {pid for part in parts for _, pid, _ in part}
    if fanout == "threads":
        assert workers == {os.getpid()} and "worker processes" not in output.out
    else:
        assert os.getpid() not in workers and 1 <= len(workers) <= 2
        assert "squares: 4 chunks on 2 worker processes" in output.out
        assert {threads for part in parts for _, _, threads in part} == {"1"}  # one thread each


@pytest.mark.parametrize("fanout", ["threads", "processes"])
def test_a_failed_chunk_fails_the_run(prefect_server, tiny_params, fanout):
    with pytest.raises(RuntimeError, match="chunk with -1"):  # a worker's error surfaces as it is
        _squares_over(_with_runtime(tiny_params, fanout=fanout), [1, 2, -1, 4])


def test_a_chunk_that_fails_once_is_retried_in_a_worker_process(prefect_server, tiny_params, tmp_path):
    retried = Fanout(task(fail_first_time, cache_policy=NO_CACHE, retries=1), "flaky", "number",
                     ChunkRule(per_worker=1, min_size=1))

    @flow
    def flaky():
        return retried.run(_with_runtime(tiny_params, fanout="processes"), 2, [1, 2],
                           lambda chunk: {"values": chunk, "marks": str(tmp_path)})

    assert flaky() == [[1], [2]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1", "2"]


def fail_first_time(values: list[int], marks: str) -> list[int]:
    mark = Path(marks) / str(values[0])
    if not mark.exists():
        mark.touch()
        raise OSError("transient")
    return values


@pytest.mark.parametrize("runtime, workers, parts, holds_gil, expected", [
    ({"fanout": "processes"}, 2, 8, True, 2),
    ({"fanout": "processes"}, 4, 3, True, 3),  # no idle workers
    ({"fanout": "processes"}, 1, 8, True, 0),  # one worker gains nothing from a process but its start-up
    ({"fanout": "processes"}, 2, 1, True, 0),  # nor does one chunk
    ({"fanout": "processes"}, 2, 8, False, 0),  # torch work releases the GIL
    ({"fanout": "threads"}, 4, 8, True, 0),
    ({"fanout": "processes", "dask_address": "tcp://127.0.0.1:8786"}, 2, 8, True, 0),
])
def test_worker_processes_follow_runtime_fanout_workers_and_dask(runtime, workers, parts, holds_gil, expected):
    from cxrsynth.tasks.params import parse_params

    fanout = Fanout(SQUARE.task, "squares", "number", holds_gil=holds_gil)
    assert fanout.processes(parse_params({"runtime": runtime}), workers, parts) == expected


def test_runtime_fanout_is_processes_or_threads():
    from cxrsynth.tasks.params import Params, ParamsError, parse_params

    assert Params().runtime.fanout == "processes"
    with pytest.raises(ParamsError, match=r"runtime\.fanout"):
        parse_params({"runtime": {"fanout": "forks"}})


def test_generate_s_torch_sampling_stays_on_threads():
    from cxrsynth.flows.generate import SAMPLE

    assert not SAMPLE.holds_gil


def test_a_worker_process_starts_with_one_thread(monkeypatch):
    import torch

    from cxrsynth.tasks import threads

    for name in threads.WORKER_THREAD_ENV:
        monkeypatch.setenv(name, "4")
    before = torch.get_num_threads()
    try:
        threads.one_thread_worker()
        assert all(os.environ[name] == "1" for name in threads.WORKER_THREAD_ENV)
        assert torch.get_num_threads() == 1  # torch already loaded here: set as well
    finally:
        torch.set_num_threads(before)


def test_the_one_thread_environment_is_restored_after(monkeypatch):
    from cxrsynth.tasks import threads

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with threads.one_thread_environment():
        assert all(os.environ[name] == "1" for name in threads.WORKER_THREAD_ENV)
    assert os.environ["OMP_NUM_THREADS"] == "4" and "OPENBLAS_NUM_THREADS" not in os.environ


def threads_of_numpy_s_blas() -> int:
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)


def test_worker_processes_load_their_libraries_with_one_thread():
    from cxrsynth.flows.fanout import worker_processes

    with worker_processes(2, "numpy") as pool:  # numpy loaded in the forkserver, before any worker's set-up
        assert pool.submit(threads_of_numpy_s_blas).result() == 1
