"""Chunked transfer on a real folder standing in for the device's disk (no broker; the MQTT path is
covered in test_mqtt_commands.py)."""
import base64
import hashlib
import os

import pytest

from edge.telemetry.errors import TransferError
from edge.telemetry.transfer import TransferReceiver


def chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def chunk_args(digest, index, piece):
    return {"transfer": digest, "index": index, "data": base64.b64encode(piece).decode(),
            "sha256": hashlib.sha256(piece).hexdigest()}


@pytest.fixture
def blob():
    data = os.urandom(10_000)
    return data, hashlib.sha256(data).hexdigest()


def test_transfer_resume_and_commit(tmp_path, blob):
    data, digest = blob
    rx = TransferReceiver(tmp_path / "rx", max_chunk=4096)
    seen = {}

    def on_complete(path, info, args):
        seen.update(data=path.read_bytes(), info=info, args=args)
        return {"installed": info["name"]}

    begin = rx.begin({"sha256": digest, "size": len(data), "chunk_size": 4096, "name": "m.gpk"})
    assert begin == {"transfer": digest, "chunks": 3, "have": []}
    pieces = chunks(data, 4096)
    rx.chunk(chunk_args(digest, 2, pieces[2]))
    rx.chunk(chunk_args(digest, 0, pieces[0]))
    # a sender that restarts learns what is already here
    again = TransferReceiver(tmp_path / "rx", max_chunk=4096)
    assert again.begin({"sha256": digest, "size": len(data), "chunk_size": 4096})["have"] == [0, 2]
    with pytest.raises(TransferError) as err:
        again.commit({"transfer": digest}, on_complete)
    assert err.value.code == "transfer.incomplete" and seen == {}
    again.chunk(chunk_args(digest, 1, pieces[1]))
    assert again.commit({"transfer": digest, "slot": "b"}, on_complete) == {"installed": "m.gpk"}
    assert seen["data"] == data and seen["args"]["slot"] == "b" and seen["info"]["sha256"] == digest
    assert list((tmp_path / "rx").iterdir()) == []       # chunks and the temp file are gone


@pytest.mark.parametrize("mutate, code", [
    (lambda a: {**a, "index": 3}, "transfer.invalid"),
    (lambda a: {**a, "index": -1}, "transfer.invalid"),
    (lambda a: {**a, "index": True}, "transfer.invalid"),
    (lambda a: {**a, "data": "not base64!"}, "transfer.invalid"),
    (lambda a: {**a, "data": base64.b64encode(b"short").decode()}, "transfer.chunk"),
    (lambda a: {**a, "sha256": "0" * 64}, "transfer.chunk"),
    (lambda a: {**a, "transfer": "../../etc"}, "transfer.invalid"),
    (lambda a: {**a, "transfer": "a" * 64}, "transfer.unknown"),
])
def test_bad_chunks_are_refused(tmp_path, blob, mutate, code):
    data, digest = blob
    rx = TransferReceiver(tmp_path / "rx", max_chunk=4096)
    rx.begin({"sha256": digest, "size": len(data), "chunk_size": 4096})
    with pytest.raises(TransferError) as err:
        rx.chunk(mutate(chunk_args(digest, 0, data[:4096])))
    assert err.value.code == code
    assert rx.status({"transfer": digest})["have"] == []


@pytest.mark.parametrize("args, code", [
    ({"size": 10**12, "chunk_size": 4096}, "transfer.too_large"),
    ({"size": 100, "chunk_size": 10**9}, "transfer.invalid"),
    ({"size": 0, "chunk_size": 4096}, "transfer.too_large"),
    ({"size": 100, "chunk_size": 4096, "sha256": "../x"}, "transfer.invalid"),
    ({"size": 100, "chunk_size": 4096, "meta": []}, "transfer.invalid"),
])
def test_bad_begin_is_refused(tmp_path, args, code):
    rx = TransferReceiver(tmp_path / "rx", max_bytes=1 << 20, max_chunk=4096)
    with pytest.raises(TransferError) as err:
        rx.begin({"sha256": "b" * 64, **args})
    assert err.value.code == code


def test_whole_file_hash_mismatch_never_reaches_the_handler(tmp_path):
    data = b"a" * 5000
    wrong = hashlib.sha256(b"something else").hexdigest()
    rx = TransferReceiver(tmp_path / "rx", max_chunk=4096)
    rx.begin({"sha256": wrong, "size": len(data), "chunk_size": 4096})
    for i, piece in enumerate(chunks(data, 4096)):
        rx.chunk(chunk_args(wrong, i, piece))
    called = []
    with pytest.raises(TransferError) as err:
        rx.commit({"transfer": wrong}, lambda p, i, a: called.append(p) or {})
    assert err.value.code == "transfer.hash" and called == []
    assert [p for p in (tmp_path / "rx").iterdir()] == []


def test_a_failing_handler_keeps_the_chunks_for_another_commit(tmp_path, blob):
    data, digest = blob
    rx = TransferReceiver(tmp_path / "rx", max_chunk=4096)
    rx.begin({"sha256": digest, "size": len(data), "chunk_size": 4096})
    for i, piece in enumerate(chunks(data, 4096)):
        rx.chunk(chunk_args(digest, i, piece))

    def broken(path, info, args):
        raise TransferError("slot busy", code="transfer.handler")
    with pytest.raises(TransferError):
        rx.commit({"transfer": digest}, broken)
    assert rx.commit({"transfer": digest}, lambda p, i, a: {"size": p.stat().st_size}) == {"size": len(data)}


def test_only_a_few_partial_transfers_are_kept(tmp_path):
    rx = TransferReceiver(tmp_path / "rx", max_transfers=2)
    digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(4)]
    for d in digests:
        rx.begin({"sha256": d, "size": 10, "chunk_size": 10})
    assert len(list((tmp_path / "rx").iterdir())) == 2
