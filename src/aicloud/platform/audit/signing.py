"""The Ed25519 key that signs audit checkpoints, and the public keys that verify them."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aicloud.shared.config import ConfigError, Settings

# HKDF "info": binds the derived key to this one purpose, so the same secret_key can feed
# other derivations without ever producing this key.
DEV_KEY_INFO = b"aicloud/audit/checkpoint-signing-key/v1"


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, stored with each checkpoint it signs."""
    return "ed25519:" + hashlib.sha256(_raw_public(public)).hexdigest()[:32]


def public_key_from_b64(value: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(value.strip(), validate=True))


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    # True when derived from secret_key because no audit_signing_key was configured.
    derived: bool = False

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_for(self.public_key)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(_raw_public(self.public_key)).decode()

    @classmethod
    def from_b64(cls, private_b64: str) -> SigningKey:
        raw = base64.b64decode(private_b64.strip(), validate=True)
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message)).decode()


def generate_key_b64() -> str:
    """A new private key in the form audit_signing_key expects."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def signing_key(settings: Settings) -> SigningKey:
    """The configured key; a development key derived from secret_key on non-strict profiles
    (``derived`` is then true, and the caller says so)."""
    if settings.audit_signing_key is not None:
        return SigningKey.from_b64(settings.audit_signing_key.get_secret_value())
    if settings.strict:
        raise ConfigError(["audit_signing_key is not set; set AICLOUD_AUDIT_SIGNING_KEY"],
                          settings.profile)
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=DEV_KEY_INFO).derive(
        settings.secret_key.get_secret_value().encode())
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed), derived=True)


def trusted_public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every key whose checkpoints are accepted: the signing key and earlier ones."""
    current = signing_key(settings).public_key
    keys = {key_id_for(current): current}
    for b64 in settings.audit_trusted_public_keys:
        public = public_key_from_b64(b64)
        keys[key_id_for(public)] = public
    return keys


def signature_is_valid(public: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False
