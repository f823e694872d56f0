import json
import threading

import numpy as np
import pytest

from hrvlm.records import (ENVIRONMENT_FIELDS, KEY_FIELDS, CorruptRecord, RecordStore, decode_bits, encode_bits,
                           load_table, read_records, record_key, records_to_frame)


def make_record(eps=1 / 255, level=0, attack=True, **extra):
    record = {f: None for f in KEY_FIELDS}
    record.update(schema=1, dataset="d", split="test", n=10, level=level, seed=0,
                  attack={"name": "pgd", "eps": eps, "steps": 3} if attack else None,
                  code={"hrvlm": "0", "git": None}, libraries={"torch": "x"}, device="cpu", wall_time_s=1.0,
                  created="now", clean_acc=0.5, robust_acc=0.3 if attack else None,
                  clean_correct=encode_bits([1, 0] * 5), robust_correct=encode_bits([1, 0, 0] + [0] * 7) if attack else None)
    record.update(extra)
    return record


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_bitmaps_round_trip(n):
    values = np.random.default_rng(n).random(n) < 0.5
    text = encode_bits(values)
    assert np.array_equal(decode_bits(text, n), values)
    assert len(text) <= 4 * ((n + 7) // 8 + 2) // 3 + 4
    with pytest.raises(ValueError, match="bits"):
        decode_bits(text, n + 8)


def test_key_is_the_configuration_not_the_environment():
    a = make_record()
    b = make_record(device="cuda", wall_time_s=99.0, created="later", code={"hrvlm": "0", "git": "abc"})
    assert set(ENVIRONMENT_FIELDS).isdisjoint(KEY_FIELDS)
    assert record_key(a) == record_key(b)
    assert record_key(a) != record_key(make_record(eps=2 / 255))
    assert record_key(a) != record_key(make_record(level=1))
    with pytest.raises(KeyError, match="provenance"):
        record_key({"dataset": "d"})


def test_append_is_unique_by_key(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    assert store.append(make_record()) is True
    assert store.append(make_record(wall_time_s=5.0)) is False  # same configuration
    assert store.append(make_record(eps=2 / 255)) is True
    assert len(store) == 2
    # a fresh reader sees the same, and every line is one complete JSON record
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["key"] for line in lines)
    assert [r["attack"]["eps"] for r in read_records(tmp_path / "r.jsonl")] == [1 / 255, 2 / 255]


def test_torn_line_is_reported_and_skipped_not_fatal(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RecordStore(path)
    store.append(make_record())
    full = json.dumps(make_record(eps=3 / 255))
    with open(path, "a") as f:  # what a crash mid-write leaves: half a line, no newline
        f.write(full[: len(full) // 2])
    with pytest.warns(UserWarning, match=r"r\.jsonl:2: skipping an incomplete"):
        assert RecordStore(path).append(make_record(eps=2 / 255)) is True
    with pytest.warns(UserWarning, match="incomplete or corrupt"):
        records = read_records(path)
    assert [r["attack"]["eps"] for r in records] == [1 / 255, 2 / 255]
    with pytest.raises(CorruptRecord, match=":2:"):
        read_records(path, strict=True)


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path):
    path = tmp_path / "r.jsonl"

    def writer(offset):
        store = RecordStore(path)  # its own file descriptor, as another process would have
        for i in range(15):
            store.append(make_record(eps=(i + offset) / 255))  # overlapping keys between writers

    threads = [threading.Thread(target=writer, args=(k * 5,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    eps = sorted(json.loads(line)["attack"]["eps"] for line in lines)
    assert eps == sorted({i / 255 for i in range(0, 30)})


def test_frame_one_row_per_record_with_flattened_provenance(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RecordStore(path)
    store.append(make_record())
    store.append(make_record(attack=False))
    table = load_table(path)
    assert len(table) == 2
    assert list(table["attack_name"]) == ["pgd", "none"]
    assert table["attack_eps"].iloc[0] == 1 / 255 and np.isnan(table["attack_eps"].iloc[1])
    assert "libraries_torch" in table and "clean_correct" not in table
    decoded = records_to_frame(store.records(), samples=True)
    assert decoded["clean_correct"].iloc[0].tolist() == [True, False] * 5
    assert not isinstance(decoded["robust_correct"].iloc[1], np.ndarray)  # clean-only: no bitmap
    assert records_to_frame([]).empty
