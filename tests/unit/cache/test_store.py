"""The cache file on its own: keys, occurrences, the size bound, maintenance, and threads writing at once."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest

from guidance_deepinfra import ConfigurationError
from guidance_deepinfra.cache.store import CacheRun, ResponseCache, request_key, resolve_path

URL = "https://api.deepinfra.com/v1/openai"
BODY = {"model": "m/a", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "temperature": 0.9}


def test_the_key_is_the_canonical_body_and_the_base_url() -> None:
    reordered = dict(reversed(list(BODY.items())))
    assert request_key(URL, BODY) == request_key(URL, reordered)  # key order does not matter
    assert request_key(URL, BODY) != request_key(URL + "/v2", BODY)
    assert request_key(URL, BODY) != request_key(URL, {**BODY, "temperature": 0.8})
    assert request_key(URL, BODY) != request_key(URL, {**BODY, "stream": False})


def test_the_k_th_occurrence_of_a_request_in_a_run_maps_to_the_k_th_answer(tmp_path) -> None:
    store = ResponseCache(tmp_path / "c.sqlite3")
    run = CacheRun(store)
    claims = [run.claim(URL, BODY) for _ in range(3)]
    assert [occurrence for _, occurrence in claims] == [0, 1, 2] and len({key for key, _ in claims}) == 1
    for key, occurrence in claims:
        assert store.lookup(key, occurrence) is None
        store.store(key, occurrence, {"answer": occurrence})
    again = run.fresh()
    replayed = [store.lookup(*again.claim(URL, BODY)) for _ in range(4)]
    assert replayed == [{"answer": 0}, {"answer": 1}, {"answer": 2}, None]
    # An occurrence whose request stored nothing is given back, so the request sent again takes its place.
    key, occurrence = again.claim(URL, {**BODY, "seed": 1})
    again.release(key, occurrence)
    assert again.claim(URL, {**BODY, "seed": 1}) == (key, occurrence)


def test_the_first_answer_stored_for_an_occurrence_is_kept(tmp_path) -> None:
    store = ResponseCache(tmp_path / "c.sqlite3")
    assert store.store("k", 0, {"a": 1}) and store.store("k", 0, {"a": 2})
    assert store.lookup("k", 0) == {"a": 1}


def test_past_the_bound_the_least_recently_used_answers_go(tmp_path) -> None:
    store = ResponseCache(tmp_path / "c.sqlite3", max_bytes=5_000)
    letters = random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=1_000)
    payload = {"text": "".join(letters)}  # random text: hardly compressible, about 700 bytes stored
    for n in range(4):
        store.store(f"k{n}", 0, payload)
        time.sleep(0.01)
    assert store.lookup("k0", 0) == payload  # k0 is now the most recently used
    for n in range(4, 8):
        store.store(f"k{n}", 0, payload)
    info = store.info()
    assert info.stored_bytes <= 5_000 and info.answers < 8
    assert store.lookup("k7", 0) == payload and store.lookup("k1", 0) is None


def test_clear_everything_or_what_is_older_than_a_bound(tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ResponseCache(path)
    store.store("old", 0, {"a": 1})
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE answers SET created = created - 3600")
    store.store("new", 0, {"a": 2})
    info = store.info()
    assert (info.answers, info.distinct_requests) == (2, 2) and info.oldest < info.newest
    assert store.clear(older_than=600) == 1
    assert store.lookup("old", 0) is None and store.lookup("new", 0) == {"a": 2}
    assert store.clear() == 1 and store.info().answers == 0


def test_threads_reading_and_writing_at_once_lose_nothing(tmp_path) -> None:
    store = ResponseCache(tmp_path / "c.sqlite3")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                store.store(f"t{n}-{i}", 0, {"n": n, "i": i})
                assert store.lookup(f"t{n}-{i}", 0) == {"n": n, "i": i}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and store.info().answers == 400


def test_a_file_that_is_not_a_database_disables_the_cache_with_one_warning(tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    store = ResponseCache(path)
    with pytest.warns(RuntimeWarning, match="cannot be read") as caught:
        assert store.lookup("k", 0) is None
        assert store.lookup("k", 1) is None and not store.store("k", 0, {"a": 1})
    assert len(caught) == 1 and store.disabled
    assert path.read_bytes() == b"garbage" * 1000  # left as it was, for the user to look at


def test_bad_cache_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigurationError):
        resolve_path("")
    with pytest.raises(ConfigurationError):
        resolve_path(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ResponseCache(tmp_path / "c.sqlite3", max_bytes=0)
    assert resolve_path(False) is None and resolve_path(tmp_path / "x") == tmp_path / "x"


def test_answers_stored_later_are_in_the_file_after_flush_and_a_preloaded_run_knows_them(tmp_path) -> None:
    store = ResponseCache(tmp_path / "c.sqlite3")
    run = CacheRun(store)
    claims = [run.claim(URL, {**BODY, "seed": n}) for n in range(50)]
    for key, occurrence in claims:
        store.store_later(key, occurrence, {"key": key})
    assert store.flush(timeout=30)
    assert all(store.lookup(key, 0) == {"key": key} for key, _ in claims)
    preloaded = run.fresh()
    preloaded.preload()
    assert all(preloaded.may_hold(key) for key, _ in claims)
    assert not preloaded.may_hold(request_key(URL, {**BODY, "seed": 999}))
    assert run.may_hold(request_key(URL, {**BODY, "seed": 999}))  # without a preload, every key may be held


def test_a_write_that_fails_on_the_writer_thread_warns_once(tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ResponseCache(path)
    store.store("first", 0, {"a": 1})
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TRIGGER full BEFORE INSERT ON answers BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.warns(RuntimeWarning, match="could not be written") as caught:
        for n in range(5):
            store.store_later(f"k{n}", 0, {"n": n})
            assert store.flush(timeout=30)
    assert len(caught) == 1 and not store.disabled and store.lookup("first", 0) == {"a": 1}
