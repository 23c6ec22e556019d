"""Chunked transfers over commands: a large file (an artifact, a firmware bundle) in pieces.

One logical verb, e.g. ``deploy``, becomes four commands (each idempotent by its command id):

    deploy.begin   {"sha256", "size", "chunk_size", ["name"], ["meta"]} -> {"transfer", "chunks", "have"}
    deploy.chunk   {"transfer", "index", "data" (base64), "sha256" (of the chunk)} -> {"index", "have_count"}
    deploy.status  {"transfer"} -> {"chunks", "have"}
    deploy.commit  {"transfer", ...} -> whatever ``on_complete`` returns

A transfer is named by the sha256 of the whole file, so a sender that restarts simply begins again
and learns from ``have`` which chunks the device already holds (resume). Every chunk is checked
(index in range, exact length, its own sha256) and written atomically; ``commit`` assembles the
chunks into a temp file while hashing it, and ``on_complete(path, info, args)`` only ever sees a
file whose size and sha256 match what ``begin`` announced. Sizes are bounded (whole file, chunk)
and names never become paths, so nothing a sender writes can escape ``root``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from core.artifact import atomic_write
from edge.telemetry.errors import TransferError

HEX64 = re.compile(r"^[0-9a-f]{64}$")
OnComplete = Callable[[Path, dict, dict], dict]


class TransferReceiver:
    def __init__(self, root: str | Path, *, max_bytes: int = 512 << 20, max_chunk: int = 1 << 20,
                 max_transfers: int = 4):
        self.root = Path(root)
        self.max_bytes, self.max_chunk, self.max_transfers = max_bytes, max_chunk, max_transfers

    def install(self, register: Callable[[str, Callable[[dict], dict]], None], verb: str,
                on_complete: OnComplete) -> None:
        """Register ``<verb>.begin/.chunk/.status/.commit`` through ``register(verb, handler)``."""
        register(f"{verb}.begin", self.begin)
        register(f"{verb}.chunk", self.chunk)
        register(f"{verb}.status", self.status)
        register(f"{verb}.commit", lambda args: self.commit(args, on_complete))

    # -- verbs -------------------------------------------------------------------------------
    def begin(self, args: dict) -> dict:
        digest = _hex64(args.get("sha256"), "sha256")
        size = _int(args.get("size"), "size", 1, self.max_bytes)
        chunk_size = _int(args.get("chunk_size"), "chunk_size", 1, self.max_chunk)
        name = args.get("name", "")
        meta = args.get("meta", {})
        if not isinstance(name, str) or len(name) > 200 or not isinstance(meta, dict):
            raise TransferError("'name' must be a short string and 'meta' an object", code="transfer.invalid")
        info = {"sha256": digest, "size": size, "chunk_size": chunk_size, "chunks": -(-size // chunk_size),
                "name": name, "meta": meta}
        folder = self.root / digest
        manifest = folder / "transfer.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if (old["size"], old["chunk_size"]) != (size, chunk_size):
                raise TransferError("a transfer of this file is under way with another size/chunk size",
                                    code="transfer.mismatch", hint="resume with the same chunk size")
        else:
            self._make_room()
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(manifest, json.dumps(info).encode())
        return {"transfer": digest, "chunks": info["chunks"], "have": self._have(folder)}

    def chunk(self, args: dict) -> dict:
        info, folder = self._open(args)
        index = _int(args.get("index"), "index", 0, info["chunks"] - 1)
        try:
            data = base64.b64decode(args.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise TransferError("'data' is not base64", code="transfer.invalid") from None
        expected = min(info["chunk_size"], info["size"] - index * info["chunk_size"])
        if len(data) != expected:
            raise TransferError(f"chunk {index} has {len(data)} bytes, expected {expected}", code="transfer.chunk")
        if hashlib.sha256(data).hexdigest() != _hex64(args.get("sha256"), "sha256"):
            raise TransferError(f"chunk {index} does not match its sha256", code="transfer.chunk",
                                hint="the chunk was corrupted in transit; send it again")
        atomic_write(folder / f"{index}.chunk", data)
        return {"index": index, "have_count": len(self._have(folder))}

    def status(self, args: dict) -> dict:
        info, folder = self._open(args)
        return {"transfer": info["sha256"], "chunks": info["chunks"], "have": self._have(folder)}

    def commit(self, args: dict, on_complete: OnComplete) -> dict:
        info, folder = self._open(args)
        missing = sorted(set(range(info["chunks"])) - set(self._have(folder)))
        if missing:
            raise TransferError(f"{len(missing)} chunk(s) missing, first: {missing[:10]}",
                                code="transfer.incomplete", hint="send them (status lists what is here)")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".assembled.", suffix=".tmp")
        path = Path(tmp)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                for index in range(info["chunks"]):
                    data = (folder / f"{index}.chunk").read_bytes()
                    digest.update(data)
                    size += len(data)
                    out.write(data)
            if size != info["size"] or digest.hexdigest() != info["sha256"]:
                shutil.rmtree(folder, ignore_errors=True)
                raise TransferError("the assembled file does not match the announced sha256/size",
                                    code="transfer.hash", hint="begin the transfer again")
            result = on_complete(path, dict(info), args)
            shutil.rmtree(folder, ignore_errors=True)   # done: chunks go only after the handler succeeded
            return result
        finally:
            path.unlink(missing_ok=True)

    # -- helpers -------------------------------------------------------------------------------
    def _open(self, args: dict) -> tuple[dict, Path]:
        digest = _hex64(args.get("transfer"), "transfer")
        folder = self.root / digest
        try:
            info = json.loads((folder / "transfer.json").read_text())
        except (OSError, ValueError):
            raise TransferError(f"no transfer {digest[:12]}... on this device", code="transfer.unknown",
                                hint="send <verb>.begin first") from None
        return info, folder

    @staticmethod
    def _have(folder: Path) -> list[int]:
        return sorted(int(p.stem) for p in folder.glob("*.chunk") if p.stem.isdigit())

    def _make_room(self) -> None:
        """At most ``max_transfers`` partial transfers on disk: drop the least recently touched."""
        if not self.root.exists():
            return
        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and HEX64.match(p.name)),
                         key=lambda p: p.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.max_transfers + 1)]:
            shutil.rmtree(old, ignore_errors=True)


def _hex64(value, field: str) -> str:
    if not isinstance(value, str) or not HEX64.match(value):
        raise TransferError(f"'{field}' must be 64 lowercase hex characters (a sha256)", code="transfer.invalid")
    return value


def _int(value, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TransferError(f"'{field}' must be an integer in {low}..{high}, got {value!r}",
                            code="transfer.invalid" if field != "size" else "transfer.too_large")
    return value
