"""The shared chunk-submit-progress loop of the mapped stages (flows/fanout.py)."""

import time

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

    with prefect_test_harness():
        yield


@task(cache_policy=NO_CACHE)
def _square_slowly(values: list[int], first: int) -> list[int]:
    if -1 in values:
        raise RuntimeError("chunk with -1")
    time.sleep(0.3 if values[0] == first else 0)  # the first chunk finishes last
    return [value * value for value in values]


SQUARE = Fanout(_square_slowly, "squares", "number", ChunkRule(per_worker=2, min_size=1))


def test_results_come_back_in_chunk_order_with_progress(prefect_server, tiny_params, capsys):
    @flow
    def squares(values):
        return SQUARE.run(tiny_params, 2, values, lambda chunk: {"values": chunk, "first": values[0]})

    parts = squares(list(range(1, 9)))
    assert parts == [[1, 4], [9, 16], [25, 36], [49, 64]]
    progress = capsys.readouterr().err
    assert "squares: 100%" in progress and "8/8" in progress


def test_a_failed_chunk_fails_the_run(prefect_server, tiny_params):
    @flow
    def squares(values):
        return SQUARE.run(tiny_params, 2, values, lambda chunk: {"values": chunk, "first": values[0]})

    with pytest.raises(RuntimeError, match="chunk with -1"):
        squares([1, 2, -1, 4])
