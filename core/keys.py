"""ed25519 keys: generate, load, sign, verify. The one module that touches ``cryptography``.

Keys are stored as PEM (PKCS#8 private, SubjectPublicKeyInfo public). A signature is the
raw 64-byte ed25519 signature over exact bytes (a manifest), stored hex-encoded beside them.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from core.errors import SignatureError

if TYPE_CHECKING:     # names for the annotations only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_CRYPTO = None


def _crypto():
    """The cryptography names, imported on first use: reading an unsigned artifact needs none (a
    slot's self-test has the board's wheels only; a model worker starts without them)."""
    global _CRYPTO
    if _CRYPTO is None:
        try:
            from cryptography.exceptions import InvalidSignature  # optional until a key is used (docstring)
            from cryptography.hazmat.primitives import serialization  # optional until a key is used
            from cryptography.hazmat.primitives.asymmetric import ed25519  # optional until a key is used
        except ImportError as exc:
            raise SignatureError(f"keys and signatures need the cryptography package: {exc}",
                                 code="keys.unavailable",
                                 hint="pip install cryptography (a dependency of ganglion-edge)") from None
        _CRYPTO = SimpleNamespace(InvalidSignature=InvalidSignature, serialization=serialization,
                                  Private=ed25519.Ed25519PrivateKey, Public=ed25519.Ed25519PublicKey)
    return _CRYPTO


def generate(private_path: str | Path, public_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write a new key pair; the private key file is created 0600 and never overwritten."""
    c = _crypto()
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_suffix(".pub")
    key = c.Private.generate()
    pem = key.private_bytes(c.serialization.Encoding.PEM, c.serialization.PrivateFormat.PKCS8,
                            c.serialization.NoEncryption())
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SignatureError(f"refusing to overwrite an existing key: {private_path}",
                             code="keys.exists", hint="choose another path or delete the old key")
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(public_bytes_pem(key.public_key()))
    return private_path, public_path


def public_bytes_pem(key: Ed25519PublicKey) -> bytes:
    c = _crypto()
    return key.public_bytes(c.serialization.Encoding.PEM, c.serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: str | Path) -> Ed25519PrivateKey:
    c = _crypto()
    return _load(path, lambda data: c.serialization.load_pem_private_key(data, password=None), c.Private,
                 "private", "create one with 'ganglion keys generate'")


def load_public(path: str | Path) -> Ed25519PublicKey:
    c = _crypto()
    return _load(path, c.serialization.load_pem_public_key, c.Public, "public",
                 "pass the .pub file made by 'ganglion keys generate'")


def _load(path, parse, cls, kind: str, hint: str):
    """A PEM key file as an ed25519 key of class ``cls``; SignatureError naming the file otherwise."""
    try:
        key = parse(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read {kind} key: {exc}", where=str(path), code="keys.unreadable", hint=hint)
    if not isinstance(key, cls):
        raise SignatureError(f"not an ed25519 {kind} key", where=str(path), code="keys.wrong_type")
    return key


def load_publics(items) -> list[Ed25519PublicKey]:
    """Trusted keys as configs and callers give them: .pub paths (loaded) or key objects (kept)."""
    return [load_public(k) if isinstance(k, (str, Path)) else k for k in items or ()]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Hex signature over ``data``."""
    return key.sign(data).hex()


def verify(keys: Ed25519PublicKey | list[Ed25519PublicKey], data: bytes, signature_hex: str | None,
           *, where: str | None = None) -> None:
    """Raise SignatureError unless one of the trusted ``keys`` signed ``data``."""
    c = _crypto()
    if not signature_hex:
        raise SignatureError("not signed, but a trusted key is configured", where=where,
                             code="signature.missing", hint="sign it with --key when building")
    try:
        raw = bytes.fromhex(signature_hex.strip())
    except ValueError:
        raise SignatureError("signature is not hex", where=where, code="signature.malformed")
    for key in keys if isinstance(keys, list) else [keys]:
        try:
            key.verify(raw, data)
            return
        except c.InvalidSignature:
            continue
    raise SignatureError("signature does not match any trusted key", where=where,
                         code="signature.invalid",
                         hint="the file was altered, or signed with a key you do not trust")
