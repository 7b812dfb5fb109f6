"""WXBizMsgCrypt-compatible message encryption for WeChat third-party platforms (docs/wechat-protocol.md §2).

Scheme (https://developers.weixin.qq.com/doc/oplatform/Third-party_Platforms/2.0/Before_Develop/message_push.md,
https://developers.weixin.qq.com/doc/oplatform/en/Third-party_Platforms/Message_Encryption/Technical_Plan.html):

* AESKey = base64(EncodingAESKey + "="), 32 bytes; IV = AESKey[:16]; AES-256-CBC with *no* cipher padding.
* plaintext = random(16) || msg_len (4 bytes, big-endian) || msg (UTF-8) || appid, then PKCS#7 with K=32.
  The standard 16-byte PKCS#7 unpadder would reject valid messages (pad values 17..32), so we pad by hand.
* msg_signature = sha1("".join(sorted([token, timestamp, nonce, Encrypt]))) in lowercase hex.

Deliberate differences from the official (Python 2) sample: the envelope does not need ``ToUserName``
(component pushes carry ``AppId`` instead), padding and lengths are range-checked, the appid and the
signature are compared in constant time, and XML is parsed with defusedxml.

Every failure caused by untrusted input raises a ``CryptoError`` subclass carrying the sample's error code
(docs/wechat-protocol.md §2.5): callers need just one ``except``. This module imports only the stdlib, cryptography
and defusedxml, so it can be used and tested without Django.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException

__all__ = [
    "CryptoError",
    "DecryptError",
    "InvalidAesKey",
    "InvalidAppId",
    "InvalidBase64",
    "InvalidLength",
    "InvalidPadding",
    "InvalidSignature",
    "InvalidXml",
    "WXBizMsgCrypt",
    "compute_signature",
    "parse_encrypted_envelope",
    "parse_xml_fields",
]

#: PKCS#7 block size of the scheme: the key length (32), not the AES block size (16).
PAD_BLOCK = 32
RANDOM_LEN = 16
_HEADER_LEN = RANDOM_LEN + 4  # random prefix + msg_len
DEFAULT_MAX_XML_BYTES = 64 * 1024

_AES_KEY_RE = re.compile(r"[A-Za-z0-9]{43}")
# Our own TimeStamp/Nonce go into the reply XML unescaped; keep them to characters that cannot break it.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class CryptoError(Exception):
    """Base class; ``code`` is the official sample's error code (ierror.py)."""

    code: int = -40000


class InvalidSignature(CryptoError):
    code = -40001


class InvalidXml(CryptoError):
    code = -40002


class InvalidAesKey(CryptoError):
    code = -40004


class InvalidAppId(CryptoError):
    code = -40005


class DecryptError(CryptoError):
    """Ciphertext cannot be AES-CBC decrypted (empty, or not a multiple of 16 bytes)."""

    code = -40007


class InvalidPadding(CryptoError):
    """Pad byte outside 1..32, longer than the buffer, or pad bytes not all equal (IllegalBuffer)."""

    code = -40008


class InvalidLength(CryptoError):
    """Buffer shorter than random+msg_len, or msg_len larger than what remains (IllegalBuffer)."""

    code = -40008


class InvalidBase64(CryptoError):
    code = -40010


def compute_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """Hex SHA-1 of the four strings sorted lexicographically and joined with no separator (§2.4)."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    # SHA-1 is fixed by the protocol; we cannot choose a different hash.
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # noqa: S324


def _parse_xml_root(xml: bytes | str, max_bytes: int) -> dict[str, str]:
    """Safely parse ``<xml>...</xml>`` and return ``{tag: text}`` of its direct children (first wins)."""
    if not isinstance(xml, bytes | str):
        raise InvalidXml(f"expected bytes or str, got {type(xml).__name__}")
    size = len(xml.encode("utf-8", "surrogatepass")) if isinstance(xml, str) else len(xml)
    if size > max_bytes:
        raise InvalidXml(f"XML body is {size} bytes, limit is {max_bytes}")
    try:
        # WeChat never sends a DTD, so any DTD, entity declaration or external reference is hostile
        # (billion laughs, XXE) and is rejected outright.
        root = SafeET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError) as exc:
        raise InvalidXml(f"unparseable XML: {exc}") from exc
    if root.tag != "xml":
        raise InvalidXml(f"root element is <{root.tag}>, expected <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if isinstance(child.tag, str):
            fields.setdefault(child.tag, child.text or "")
    return fields


def parse_xml_fields(xml: str | bytes, *, max_bytes: int = DEFAULT_MAX_XML_BYTES) -> dict[str, str]:
    """Parse a decrypted message into ``{tag: text}`` of ``<xml>``'s direct children."""
    return _parse_xml_root(xml, max_bytes)


def parse_encrypted_envelope(body: bytes | str, *, max_bytes: int = DEFAULT_MAX_XML_BYTES) -> dict[str, str]:
    """Parse the pushed envelope; only a non-empty ``Encrypt`` is required.

    Component pushes (ticket, authorization events) carry ``AppId`` and no ``ToUserName``; pushes on
    behalf of an authorizer carry ``ToUserName``. The official sample requires ``ToUserName`` and so
    fails on component pushes (docs/wechat-protocol.md §1, §2.5), hence we do not.
    """
    fields = _parse_xml_root(body, max_bytes)
    if not fields.get("Encrypt"):
        raise InvalidXml("envelope has no non-empty <Encrypt>")
    return fields


def _aes_cipher(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def _pkcs7_pad(data: bytes) -> bytes:
    # Always pad, adding a full 32-byte block when len(data) is already a multiple of 32 (§2.3).
    pad = PAD_BLOCK - len(data) % PAD_BLOCK
    return data + bytes([pad]) * pad


def _pkcs7_unpad(data: bytes) -> bytes:
    # The official sample and wechatpy trust the last byte blindly; we range-check it (§2.3).
    # Not a padding oracle in practice: decrypt_message verifies the signature before decrypting.
    pad = data[-1]
    if not 1 <= pad <= PAD_BLOCK or pad > len(data):
        raise InvalidPadding(f"pad byte {pad} outside 1..{PAD_BLOCK}")
    if not hmac.compare_digest(data[-pad:], bytes([pad]) * pad):
        raise InvalidPadding("pad bytes are not all equal")
    return data[:-pad]


class WXBizMsgCrypt:
    """Encrypts, decrypts and signs messages for one (token, EncodingAESKey, appid) triple."""

    def __init__(self, token: str, encoding_aes_key: str, appid: str) -> None:
        if not isinstance(encoding_aes_key, str) or not _AES_KEY_RE.fullmatch(encoding_aes_key):
            raise InvalidAesKey("EncodingAESKey must be 43 characters of [A-Za-z0-9]")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as exc:  # unreachable after the regex, kept as a guard
            raise InvalidAesKey(str(exc)) from exc
        if len(key) != 32:
            raise InvalidAesKey(f"EncodingAESKey decodes to {len(key)} bytes, expected 32")
        self.token = token
        self.appid = appid
        self._key = key
        self._appid_bytes = appid.encode("utf-8")

    def __repr__(self) -> str:  # never show the token or key
        return f"{type(self).__name__}(appid={self.appid!r})"

    # -- signatures ---------------------------------------------------------------------------------------

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return compute_signature(self.token, timestamp, nonce, encrypt)

    def verify_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise InvalidSignature unless ``msg_signature`` matches; constant-time compare."""
        # Query parameters may be missing (None) or odd; any of that is just a bad signature.
        if not all(isinstance(v, str) for v in (msg_signature, timestamp, nonce, encrypt)):
            raise InvalidSignature("missing signature parameter")
        try:
            expected = self.sign(timestamp, nonce, encrypt).encode("ascii")
            given = msg_signature.encode("utf-8")
        except UnicodeError as exc:
            raise InvalidSignature("undecodable signature parameter") from exc
        if not hmac.compare_digest(expected, given):
            raise InvalidSignature("msg_signature mismatch")

    # -- encryption ---------------------------------------------------------------------------------------

    def encrypt(self, plaintext: str, *, random_prefix: bytes | None = None) -> str:
        """Return the base64 ``Encrypt`` value for ``plaintext``.

        ``random_prefix`` exists for deterministic tests (vector A); the receiver ignores those bytes.
        """
        if random_prefix is None:
            random_prefix = os.urandom(RANDOM_LEN)
        if len(random_prefix) != RANDOM_LEN:
            raise ValueError(f"random_prefix must be {RANDOM_LEN} bytes")
        msg = plaintext.encode("utf-8")
        # msg_len is the UTF-8 byte length, not the character count (§2.2).
        full = random_prefix + struct.pack(">I", len(msg)) + msg + self._appid_bytes
        encryptor = _aes_cipher(self._key).encryptor()
        ciphertext = encryptor.update(_pkcs7_pad(full)) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        """Decrypt an ``Encrypt`` value strictly and return the message (normally XML)."""
        try:
            # validate=True: no silently skipped characters, truncated input is an error.
            ciphertext = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidBase64(f"Encrypt is not valid base64: {exc}") from exc
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptError(f"ciphertext length {len(ciphertext)} is not a positive multiple of 16")
        decryptor = _aes_cipher(self._key).decryptor()
        try:
            padded = decryptor.update(ciphertext) + decryptor.finalize()
        except ValueError as exc:  # defensive; lengths were checked above
            raise DecryptError(str(exc)) from exc

        content = _pkcs7_unpad(padded)
        if len(content) < _HEADER_LEN:
            raise InvalidLength(f"decrypted buffer is {len(content)} bytes, shorter than {_HEADER_LEN}")
        (msg_len,) = struct.unpack(">I", content[RANDOM_LEN:_HEADER_LEN])
        if msg_len > len(content) - _HEADER_LEN:
            raise InvalidLength(f"msg_len {msg_len} exceeds the {len(content) - _HEADER_LEN} bytes left")
        msg = content[_HEADER_LEN : _HEADER_LEN + msg_len]
        from_appid = content[_HEADER_LEN + msg_len :]
        # WxJava skips this check; without it any app sharing the key could feed us messages (§2.2).
        if not hmac.compare_digest(from_appid, self._appid_bytes):
            raise InvalidAppId("trailing appid does not match")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidXml("decrypted message is not UTF-8") from exc

    # -- whole messages -----------------------------------------------------------------------------------

    def decrypt_message(self, body: bytes | str, *, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Parse the pushed envelope, verify ``msg_signature`` over its Encrypt, return the plaintext XML."""
        encrypt = parse_encrypted_envelope(body)["Encrypt"]
        # Verify before decrypting so unauthenticated input never reaches the padding/length checks.
        self.verify_signature(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)

    def encrypt_message(
        self, reply_xml: str, *, timestamp: str, nonce: str, random_prefix: bytes | None = None
    ) -> str:
        """Encrypt and sign ``reply_xml`` and wrap it in the reply envelope (§2.4)."""
        # These are interpolated into XML, so restrict them rather than escape (WeChat's are digits).
        if not _TIMESTAMP_RE.fullmatch(timestamp):
            raise ValueError("timestamp must be 1-20 ASCII digits")
        if not _NONCE_RE.fullmatch(nonce):
            raise ValueError("nonce must be 1-64 characters of [A-Za-z0-9_-]")
        encrypt = self.encrypt(reply_xml, random_prefix=random_prefix)
        signature = self.sign(timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
