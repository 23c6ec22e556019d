"""The ``.gpk`` artifact: one zip with model file(s), ``manifest.json`` and ``signature``.

    manifest.json   name, version, source model hash, converter version, inputs/outputs
                    (dtype, shape, layout, quant params), preprocessing, labels, calibration
                    method, fidelity report, and ``files``: {member name: sha256}
    signature       hex ed25519 signature over the exact bytes of manifest.json (optional)
    <models>        e.g. model.tflite, model.qdq.onnx

Reading verifies before anything is used: member names are plain (no '/', '..', absolute
paths), the member set equals the manifest's ``files`` plus the two fixed members, every hash
matches, and when trusted keys are given the signature must verify. Writing goes to a temp file
and is renamed into place, so a failure never leaves a half-written artifact.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from core import keys
from core.errors import ArtifactError, InputError, SignatureError

MANIFEST = "manifest.json"
SIGNATURE = "signature"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_SMALL_BYTES = 16 * 1024 * 1024      # manifest.json and signature
# Deflate reaches ~1030:1 on zeros; real model files compress a few times at most. Past this
# ratio (on a member large enough to matter) the zip is a bomb, refused from its directory.
MAX_RATIO, RATIO_FLOOR = 100, 16 * 1024 * 1024
CHUNK = 1024 * 1024


@dataclass
class Artifact:
    manifest: dict
    files: dict[str, bytes]     # model files by member name
    signed: bool

    def model_bytes(self, fmt: str) -> bytes:
        """The model for a format: 'tflite' or 'onnx' (QDQ)."""
        for entry in self.manifest.get("models", []):
            if entry.get("format") == fmt:
                return self.files[entry["file"]]
        have = sorted({e.get("format") for e in self.manifest.get("models", [])})
        raise ArtifactError(f"artifact holds no {fmt} model (it has: {', '.join(have) or 'none'})",
                            code="artifact.no_format",
                            hint="re-convert with the target this board needs (--target tflite|qdq|both)")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def pack(manifest: dict, files: dict[str, bytes], private_key=None) -> bytes:
    """Build the artifact bytes. ``private_key`` is an ed25519 key from core.keys."""
    for name in files:
        _check_member_name(name)
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {name: sha256(data) for name, data in sorted(files.items())}
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest_bytes)
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
        if private_key is not None:
            zf.writestr(SIGNATURE, keys.sign(private_key, manifest_bytes))
    return buf.getvalue()


def write(path: str | Path, manifest: dict, files: dict[str, bytes], private_key=None) -> None:
    atomic_write(path, pack(manifest, files, private_key))


def read(source: str | Path | bytes, trusted_keys: list | None = None, *, where: str | None = None) -> Artifact:
    """Open and fully verify an artifact. Raises ArtifactError (a bad signature too: exit 3).

    Sizes come from the zip directory and are checked before anything is decompressed; each
    member is then hashed as a stream that cannot yield more than its declared size. ``where``
    names the source in errors (default: the path; pass the file name when giving bytes)."""
    where = where or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as exc:
        # A damaged central directory can also claim an unknown zip version or a bad offset.
        raise ArtifactError(f"not a readable .gpk artifact: {exc}", where=where,
                            hint="the file is truncated or not an artifact; convert it again")
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        _check_members(infos, where)
        manifest_bytes = _read_member(zf, MANIFEST, where)[0]
        manifest, expected = _parse_manifest(manifest_bytes, set(infos), where)
        signature = None
        if SIGNATURE in infos:
            signature = _read_member(zf, SIGNATURE, where)[0].decode("ascii", errors="replace")
        if trusted_keys:
            _check_signature(trusted_keys, manifest_bytes, signature, where)
        files = {}
        for name, digest in expected.items():
            data, got = _read_member(zf, name, where, hashed=True)
            if got != digest:
                raise ArtifactError(f"member {name} does not match its sha256", where=where,
                                    code="artifact.hash", hint="the artifact was altered or corrupted")
            files[name] = data
    return Artifact(manifest=manifest, files=files, signed=signature is not None)


def _check_signature(trusted_keys: list, manifest_bytes: bytes, signature: str | None, where: str) -> None:
    """The keys' ``SignatureError`` (a firmware-family error, exit 5) becomes this format's own
    error: a tampered or unsigned .gpk is bad input (exit 3, ``artifact.signature_*``)."""
    try:
        keys.verify(trusted_keys, manifest_bytes, signature, where=where)
    except SignatureError as exc:
        reason = exc.code.rpartition(".")[2]                    # missing | malformed | invalid
        raise ArtifactError(exc.message, where=where, hint=exc.hint,
                            code=f"artifact.signature_{reason}") from None


def refuse_unsigned(path: Path, trusted_keys) -> None:
    """A trusted key means nothing unsigned runs: a bare .tflite/.onnx carries no signature."""
    if trusted_keys:
        raise InputError(f"{path.name} is a bare {path.suffix} file, but trusted keys are configured and "
                         "only a signed .gpk can prove where a model came from", where=str(path),
                         code="artifact.unsigned",
                         hint="convert and sign it: ganglion convert model.onnx -o model.gpk --signing-key signer.key"
                              " (or remove the trusted keys to run unsigned models)")


def _check_members(infos: dict[str, zipfile.ZipInfo], where: str) -> None:
    """Names and sizes, from the zip directory alone: nothing is decompressed yet."""
    for name, info in infos.items():
        _check_member_name(name, where)
        limit = MAX_SMALL_BYTES if name in (MANIFEST, SIGNATURE) else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise ArtifactError(f"member {name} is too large ({info.file_size} bytes, limit {limit})",
                                where=where, code="artifact.too_large")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArtifactError(f"member {name} would inflate {info.compress_size} bytes to {info.file_size} "
                                f"(more than {MAX_RATIO}:1): a zip bomb, not a model", where=where,
                                code="artifact.too_large", hint="the file was not made by ganglion convert")
    total = sum(i.file_size for i in infos.values())
    if total > MAX_TOTAL_BYTES:
        raise ArtifactError(f"members add up to {total} bytes (limit {MAX_TOTAL_BYTES})", where=where,
                            code="artifact.too_large")
    if MANIFEST not in infos:
        raise ArtifactError("artifact has no manifest.json", where=where)


def _parse_manifest(manifest_bytes: bytes, members: set[str], where: str) -> tuple[dict, dict]:
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise ArtifactError(f"manifest.json is not JSON: {exc}", where=where)
    expected = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(expected, dict):
        raise ArtifactError("manifest has no 'files' table", where=where)
    extra = members - set(expected) - {MANIFEST, SIGNATURE}
    missing = set(expected) - members
    if extra or missing:
        raise ArtifactError(f"members do not match the manifest (extra: {sorted(extra)}, "
                            f"missing: {sorted(missing)})", where=where, code="artifact.members")
    return manifest, expected


def _read_member(zf: zipfile.ZipFile, name: str, where: str, hashed: bool = False) -> tuple[bytes, str | None]:
    """Read one member in chunks (sha256 as it streams when ``hashed``); the stream stops at the
    size the directory declared and checks the CRC. A damaged entry is an ArtifactError."""
    digest = hashlib.sha256() if hashed else None
    parts = []
    try:
        with zf.open(name) as fh:
            while chunk := fh.read(CHUNK):
                if digest is not None:
                    digest.update(chunk)
                parts.append(chunk)
        return b"".join(parts), digest.hexdigest() if digest is not None else None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError,
            RuntimeError) as exc:      # ValueError: bad offsets; RuntimeError: a flipped "encrypted" flag
        raise ArtifactError(f"member {name} is damaged: {exc}", where=where, code="artifact.damaged",
                            hint="the file was corrupted in transit; copy or convert it again")


def _check_member_name(name: str, where: str | None = None) -> None:
    if (not name or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")
            or "/" in name or "\\" in name or ":" in name):
        raise ArtifactError(f"unsafe member name {name!r} (paths are not allowed in an artifact)",
                            where=where, code="artifact.unsafe_path")
