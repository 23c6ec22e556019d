"""core/artifact.py: the .gpk zip is verified before anything in it is used.

Real zips on disk, real ed25519 keys; each attack is built by rewriting a good artifact's zip
the way an attacker or a bad disk would.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from core import artifact, keys
from core.errors import ArtifactError, SignatureError

MODEL = b"TFL3" + bytes(range(256)) * 8
MANIFEST = {"name": "digits", "version": "1.0.0", "models": [{"format": "tflite", "file": "model.tflite"}],
            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 1, 8, 8]}]}


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    priv, pub = keys.generate(folder / "signer.key")
    return keys.load_private(priv), keys.load_public(pub)


@pytest.fixture(scope="module")
def other_public(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other")
    _, pub = keys.generate(folder / "other.key")
    return keys.load_public(pub)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def test_round_trip_unsigned(tmp_path):
    path = tmp_path / "m.gpk"
    artifact.write(path, MANIFEST, {"model.tflite": MODEL})
    got = artifact.read(path)
    assert got.signed is False
    assert got.files == {"model.tflite": MODEL}
    assert got.manifest["name"] == "digits"
    assert got.manifest["files"] == {"model.tflite": artifact.sha256(MODEL)}
    assert got.manifest["format_version"] == artifact.FORMAT_VERSION
    assert got.model_bytes("tflite") == MODEL


def test_round_trip_signed_with_trusted_key(tmp_path, keypair):
    private, public = keypair
    data = artifact.pack(MANIFEST, {"model.tflite": MODEL, "model.qdq.onnx": b"onnx"}, private)
    got = artifact.read(data, trusted_keys=[public])
    assert got.signed is True
    assert got.model_bytes("tflite") == MODEL
    assert set(members(data)) == {"manifest.json", "signature", "model.tflite", "model.qdq.onnx"}


def test_signed_by_untrusted_key_is_refused(keypair, other_public):
    data = artifact.pack(MANIFEST, {"model.tflite": MODEL}, keypair[0])
    with pytest.raises(ArtifactError) as err:
        artifact.read(data, trusted_keys=[other_public])
    assert err.value.code == "artifact.signature_invalid"
    assert err.value.exit_code == 3           # bad input, not a firmware error (exit 5)


def test_unsigned_is_refused_when_a_key_is_trusted(keypair):
    data = artifact.pack(MANIFEST, {"model.tflite": MODEL})
    with pytest.raises(ArtifactError) as err:
        artifact.read(data, trusted_keys=[keypair[1]])
    assert err.value.code == "artifact.signature_missing"


def test_tampered_member_fails_its_hash():
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}))
    entries["model.tflite"] = MODEL[:-1] + b"\x00"
    with pytest.raises(ArtifactError) as err:
        artifact.read(rezip(entries))
    assert err.value.code == "artifact.hash"


def test_flipped_manifest_byte_fails_the_signature(keypair):
    private, public = keypair
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}, private))
    # Still valid JSON and the hashes still match: only the signature can catch this.
    entries["manifest.json"] = entries["manifest.json"].replace(b'"digits"', b'"digitz"')
    tampered = rezip(entries)
    assert artifact.read(tampered).manifest["name"] == "digitz"      # unverified read sees the change
    with pytest.raises(ArtifactError) as err:
        artifact.read(tampered, trusted_keys=[public])
    assert err.value.code == "artifact.signature_invalid" and err.value.exit_code == 3
    assert not isinstance(err.value, SignatureError)


def test_manifest_rewritten_to_match_a_swapped_model_fails_the_signature(keypair):
    private, public = keypair
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}, private))
    evil = b"TFL3 evil"
    manifest = json.loads(entries["manifest.json"])
    manifest["files"]["model.tflite"] = artifact.sha256(evil)
    entries["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    entries["model.tflite"] = evil
    with pytest.raises(ArtifactError):
        artifact.read(rezip(entries), trusted_keys=[public])


def test_extra_member_is_refused():
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}))
    entries["payload.sh"] = b"rm -rf /"
    with pytest.raises(ArtifactError) as err:
        artifact.read(rezip(entries))
    assert err.value.code == "artifact.members"
    assert "payload.sh" in err.value.message


def test_missing_member_is_refused():
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}))
    del entries["model.tflite"]
    with pytest.raises(ArtifactError) as err:
        artifact.read(rezip(entries))
    assert err.value.code == "artifact.members"


@pytest.mark.parametrize("name", ["../x", "/abs", "dir/model.tflite", "..\\x", "C:evil", ""])
def test_unsafe_member_names_are_refused_on_read(name):
    entries = members(artifact.pack(MANIFEST, {"model.tflite": MODEL}))
    entries[name or "\x00"] = b"x"
    with pytest.raises(ArtifactError) as err:
        artifact.read(rezip(entries))
    assert err.value.code in ("artifact.unsafe_path", "artifact.members")


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b"])
def test_unsafe_member_names_are_refused_on_pack(name, tmp_path):
    out = tmp_path / "bad.gpk"
    with pytest.raises(ArtifactError) as err:
        artifact.write(out, MANIFEST, {name: b"x"})
    assert err.value.code == "artifact.unsafe_path"
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_truncated_zip_is_refused(tmp_path):
    data = artifact.pack(MANIFEST, {"model.tflite": MODEL})
    for cut in (len(data) // 2, len(data) - 10, 3):
        path = tmp_path / f"cut{cut}.gpk"
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactError):
            artifact.read(path)


def test_not_a_zip_and_missing_manifest_and_bad_json():
    with pytest.raises(ArtifactError):
        artifact.read(b"definitely not a zip")
    with pytest.raises(ArtifactError, match="no manifest"):
        artifact.read(rezip({"model.tflite": MODEL}))
    with pytest.raises(ArtifactError, match="not JSON"):
        artifact.read(rezip({"manifest.json": b"{broken"}))
    with pytest.raises(ArtifactError, match="files"):
        artifact.read(rezip({"manifest.json": b"{}"}))


def test_oversized_member_is_refused(monkeypatch):
    data = artifact.pack(MANIFEST, {"model.tflite": MODEL})
    monkeypatch.setattr(artifact, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(ArtifactError, match="too large"):
        artifact.read(data)


def test_model_bytes_names_the_formats_it_has():
    got = artifact.read(artifact.pack(MANIFEST, {"model.tflite": MODEL}))
    with pytest.raises(ArtifactError) as err:
        got.model_bytes("onnx")
    assert err.value.code == "artifact.no_format"
    assert "tflite" in err.value.message


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "out.bin"
    artifact.atomic_write(path, b"first")
    artifact.atomic_write(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.gpk"
    artifact.atomic_write(path, b"good old artifact")

    def crash(src, dst):          # a power cut between writing the temp file and the rename
        raise OSError("disk vanished")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        artifact.atomic_write(path, b"new")
    assert path.read_bytes() == b"good old artifact"
    assert os.listdir(tmp_path) == ["out.gpk"]


def test_atomic_write_failure_without_old_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("I/O error")))
    with pytest.raises(OSError):
        artifact.atomic_write(tmp_path / "new.gpk", b"data")
    assert os.listdir(tmp_path) == []


def test_damaged_compressed_member_is_a_typed_error():
    # Flip a byte inside the deflate stream of the model member: zipfile raises BadZipFile (bad CRC)
    # or zlib.error from read(); both must surface as ArtifactError, not escape untyped.
    model = bytes(range(256)) * 64
    data = bytearray(artifact.pack({"name": "m"}, {"model.tflite": model}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("model.tflite")
    name_len = len(info.filename.encode())
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    payload = info.header_offset + 30 + name_len + extra_len
    data[payload + info.compress_size // 2] ^= 0xFF
    with pytest.raises(ArtifactError) as err:
        artifact.read(bytes(data))
    assert err.value.code in {"artifact.damaged", "artifact.hash"}



def test_every_flipped_bit_is_caught_or_harmless(keypair):
    """Flip bits at every byte of a signed artifact: reading with the trusted key either fails with a
    typed error, or (the bit sat in zip bookkeeping such as a timestamp) returns exactly the original."""
    from core.errors import GanglionError
    private, public = keypair
    good = artifact.pack(MANIFEST, {"model.tflite": MODEL}, private)
    original = artifact.read(good, trusted_keys=[public])
    harmless = 0
    for index in range(len(good)):
        for bit in (0, 3, 7):
            data = bytearray(good)
            data[index] ^= 1 << bit
            try:
                got = artifact.read(bytes(data), trusted_keys=[public])
            except GanglionError:
                continue
            harmless += 1
            assert (got.files, got.manifest) == (original.files, original.manifest), (index, bit)
    assert harmless < len(good)          # most flips must be caught, not shrugged off


def test_a_zip_bomb_member_is_refused_from_the_directory_before_it_is_inflated(monkeypatch):
    """Issue 9: a 0.5 MB .gpk holding 496 MiB of zeros cost 1.05 GB before it was refused. Its
    directory already says so (~1000:1), so nothing is decompressed."""
    from tests.edge.daemon.hostile import zeros_zip
    manifest = json.dumps({"format_version": 1, "files": {"model.tflite": "0" * 64}}).encode()
    data = zeros_zip({"manifest.json": manifest, "model.tflite": 64})
    assert len(data) < 200_000
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    with pytest.raises(ArtifactError) as info:
        artifact.read(data, where="bomb.gpk")
    assert info.value.code == "artifact.too_large" and "zip bomb" in info.value.message
    assert info.value.where == "bomb.gpk" and opened == []


def test_members_are_hashed_as_streams_and_a_wrong_hash_is_refused():
    """A member under the ratio bound is read in chunks with its sha256 updated as it streams."""
    data = b"\x01\x02" * (3 * 2**20)
    manifest = json.dumps({"format_version": 1, "files": {"model.tflite": "0" * 64}}).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", manifest)
        zf.writestr("model.tflite", data)
    with pytest.raises(ArtifactError) as info:
        artifact.read(buf.getvalue())
    assert info.value.code == "artifact.hash"
