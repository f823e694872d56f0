import json
import warnings
import re
import threading

import numpy as np
import pytest

from hrvlm.cli import main
from hrvlm.evaluation.records import (ENVIRONMENT_FIELDS, KEY_FIELDS, SCHEMA, CorruptRecord, RecordStore, StaleRecord,
                           decode_bits, encode_bits, load_table, read_records, record_checksum, record_key,
                           records_to_frame, verify)


def make_record(eps=1 / 255, level=0, attack=True, **extra):
    record = {f: None for f in KEY_FIELDS}
    record.update(schema=SCHEMA, dataset="d", split="test", n=10, level=level, seed=0,
                  attack={"name": "pgd", "eps": eps, "steps": 3} if attack else None,
                  code={"hrvlm": "0", "git": None}, libraries={"torch": "x"}, device="cpu", wall_time_s=1.0,
                  created="now", clean_acc=0.5, robust_acc=0.3 if attack else None,
                  clean_correct=encode_bits([1, 0] * 5), robust_correct=encode_bits([1, 1, 1] + [0] * 7) if attack else None)
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


def test_a_complete_last_line_without_newline_is_stored_not_recomputed(tmp_path):
    path = tmp_path / "r.jsonl"
    RecordStore(path).append(make_record())
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # e.g. saved by an editor that drops the final newline
    store = RecordStore(path)
    assert store.get(record_key(make_record())) is not None  # counts as stored: evaluate will not recompute
    assert store.append(make_record()) is False
    assert store.append(make_record(eps=2 / 255)) is True
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and len({json.loads(line)["key"] for line in lines}) == 2
    assert path.read_bytes().endswith(b"\n")


def test_a_folder_is_not_a_store(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; give a file such as"):
        RecordStore(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        RecordStore(tmp_path / "file" / "r.jsonl")


def test_a_record_edited_by_hand_fails_its_checksum(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    store = RecordStore(path)
    store.append(make_record())
    store.append(make_record(eps=2 / 255))
    assert all(r["checksum"] == record_checksum(r) for r in read_records(path))
    assert main(["records", "verify", str(path)]) == 0
    assert "2 records verified" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"clean_acc":0.5', '"clean_acc":0.9')  # a "better" number typed in
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert [r["attack"]["eps"] for r in read_records(path)] == [2 / 255]
    with pytest.raises(CorruptRecord, match="r.jsonl:1: .*checksum mismatch"):
        read_records(path, strict=True)
    assert main(["records", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "r.jsonl:1: torn or corrupt line (checksum mismatch" in out and "1 problems" in out


def test_records_verify_reports_torn_lines_repeats_and_old_records(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    RecordStore(path).append(make_record())
    good = path.read_text()
    old = {**make_record(eps=3 / 255), "key": record_key(make_record(eps=3 / 255))}  # written before checksums
    path.write_text(good + json.dumps(old) + "\n" + good + '{"key": "half')
    report = verify(path, allow_unsigned=True)
    assert report["records"] == 1 and report["unverified"] == 1
    assert [line for line, _ in report["problems"]] == [3, 4]
    assert "repeats line 1" in report["problems"][0][1] and "torn" in report["problems"][1][1]
    report = verify(path)  # without --allow-unsigned a record without checksum is a problem, not a result
    assert report["records"] == 1 and report["unverified"] == 0 and [line for line, _ in report["problems"]] == [2, 3, 4]
    assert "has no checksum" in report["problems"][0][1] and "--allow-unsigned" in report["problems"][0][1]
    assert main(["records", "verify", str(path)]) == 1 and "3 problems" in capsys.readouterr().out
    assert main(["records", "verify", "--allow-unsigned", str(path)]) == 1
    assert "1 records verified, 1 without checksum (accepted by --allow-unsigned), 2 problems" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="has no checksum"):
        assert len(read_records(path)) == 1
    assert len(read_records(path, allow_unsigned=True)) == 2
    assert main(["records", "verify", str(tmp_path / "nothing.jsonl")]) == 2
    assert "no records store at" in capsys.readouterr().err


def _signed(record: dict) -> dict:
    """``record`` as the store writes it (key and checksum recomputed): only the checks below can fail."""
    record = {**record, "key": record_key(record)}
    return {**record, "checksum": record_checksum(record)}


@pytest.mark.parametrize("edit, message", [
    (lambda r: {"key": "x"}, "record x has no checksum"),
    (lambda r: {"key": "x", "checksum": record_checksum({"key": "x"})}, "lacks provenance fields"),
    (lambda r: {**r, "key": "0" * 20, "checksum": None}, "its key is not the hash of its provenance"),
    (lambda r: {**r, "clean_acc": 0.9}, "checksum mismatch"),
    (lambda r: {k: v for k, v in r.items() if k != "checksum"}, "has no checksum"),
    (lambda r: _signed({**r, "clean_acc": 0.9}), r"clean_acc = 0.9 but its bitmap clean_correct gives 0.5"),
    (lambda r: _signed({**r, "robust_correct": encode_bits([1] * 10)}), "robust_acc = 0.3 but its bitmap"),
    (lambda r: _signed({**r, "robust_correct": None}), "robust_acc and robust_correct must both be given"),
    (lambda r: _signed({**r, "clean_correct": encode_bits([1] * 30)}), "bitmap holds 32 bits, expected 10"),
    (lambda r: _signed({**r, "n": 0}), "n must be a positive integer"),
    (lambda r: _signed({**r, "transfer_success_rate": 0.5}), "transfer_success_rate = 0.5 disagrees"),
])
def test_a_forged_record_is_not_a_result(tmp_path, edit, message, capsys):
    """A record is a result only when its key is its provenance's hash, its checksum matches and each
    accuracy is the mean of its per-image bitmap: a forged line is a problem for ``records verify`` and
    skipped (never returned, so evaluate recomputes it) by readers."""
    path = tmp_path / "r.jsonl"
    RecordStore(path).append(make_record())
    good = json.loads(path.read_text())
    forged = edit(good)
    if forged.get("checksum", "") is None:  # a checksum recomputed after the key was changed by hand
        forged["checksum"] = record_checksum(forged)
    path.write_text(json.dumps(forged) + "\n")
    assert main(["records", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(message, out) and "0 records verified" in out, out
    with pytest.warns(UserWarning, match=message):
        assert read_records(path) == []


def test_allow_unsigned_still_checks_the_rest():
    from hrvlm.evaluation.records import check_record

    record = {k: v for k, v in _signed(make_record()).items() if k != "checksum"}
    check_record(record, allow_unsigned=True)
    with pytest.raises(ValueError, match="lacks provenance fields"):
        check_record({"key": "x"}, allow_unsigned=True)
    with pytest.raises(ValueError, match="clean_acc = 0.9"):
        check_record({**record, "clean_acc": 0.9, "key": record_key(record)}, allow_unsigned=True)


def test_records_of_an_older_schema_are_refused_in_one_line_and_recomputed(tmp_path):
    store = tmp_path / "r.jsonl"
    RecordStore(store).append(make_record())
    old = {k: v for k, v in make_record(eps=2 / 255, schema=1).items() if k != "weights_digest"}
    old["checkpoint"] = None  # schema 1 named the weights digest so
    old["key"] = "0" * 20
    old["checksum"] = record_checksum(old)
    with open(store, "a") as f:
        f.write(json.dumps(old) + "\n" + json.dumps({**old, "key": "1" * 20, "checksum": None}) + "\n")
    problems = verify(store)["problems"]
    assert problems[0][0] == 2 and problems[0][1].startswith("another schema (record 0")
    assert "has schema 1, not this hrvlm's 2" in problems[0][1]
    with pytest.warns(UserWarning) as caught:
        assert len(read_records(store)) == 1
    messages = [str(w.message) for w in caught]
    assert any("skipping 1 record(s) of another schema than 2" in m for m in messages)  # once, not per line
    assert any("r.jsonl:3: skipping an incomplete or corrupt record (checksum mismatch" in m for m in messages)
    with warnings.catch_warnings(record=True) as again:  # every evaluation reads the store: said once per process
        warnings.simplefilter("always")
        read_records(store)
    assert not any("another schema" in str(w.message) for w in again)
    with pytest.raises(StaleRecord, match=r"r.jsonl:2: record 0{20} has schema 1"):
        read_records(store, strict=True)
    with pytest.warns(UserWarning):  # the stale and the corrupt line again
        assert RecordStore(store).append(make_record(eps=2 / 255))  # its chunk is computed and stored again


def test_the_shared_store_reads_each_line_once_and_sees_other_writers_and_a_replaced_file(tmp_path):
    path = tmp_path / "r.jsonl"
    shared = RecordStore.shared(path)
    assert RecordStore.shared(str(path)) is shared and RecordStore.shared(tmp_path / "other.jsonl") is not shared
    RecordStore(path).append(make_record())  # another writer
    key = record_key(make_record())
    got = shared.get(key)
    assert got["attack"]["eps"] == 1 / 255
    got["attack"]["eps"] = 9.0  # a caller's edit stays the caller's
    assert shared.get(key)["attack"]["eps"] == 1 / 255 and shared.records()[0]["attack"]["eps"] == 1 / 255
    RecordStore(path).append(make_record(eps=2 / 255))
    assert len(shared) == 2
    replacement = tmp_path / "new.jsonl"
    RecordStore(replacement).append(make_record(eps=3 / 255))
    RecordStore(replacement).append(make_record(eps=4 / 255))
    RecordStore(replacement).append(make_record(eps=5 / 255))
    replacement.replace(path)  # longer than what was read: only the file's identity shows it is another
    assert [r["attack"]["eps"] for r in shared.records()] == [3 / 255, 4 / 255, 5 / 255]


def test_the_shared_store_sees_a_file_rewritten_in_place(tmp_path):
    path = tmp_path / "r.jsonl"
    shared = RecordStore.shared(path)
    RecordStore(path).append(make_record())
    assert len(shared) == 1
    # the same file (same inode), rewritten longer: not an append to what was read
    edited = {**json.loads(path.read_text()), "clean_acc": 0.25}
    path.write_text(json.dumps(edited, indent=1).replace("\n", " ") + "\n" + json.dumps(make_record(eps=2 / 255)) + "\n")
    with pytest.warns(UserWarning, match="skipping an incomplete or corrupt record"):
        assert shared.records() == []  # both lines fail their checksums, read from the start
