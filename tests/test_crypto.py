"""Tests for openplatform.wechat.crypto (docs/wechat-protocol.md §2): official vector A, round trips, strict failures."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import example, given
from hypothesis import strategies as st

from openplatform.wechat.crypto import (
    CryptoError,
    DecryptError,
    InvalidAesKey,
    InvalidAppId,
    InvalidBase64,
    InvalidLength,
    InvalidPadding,
    InvalidSignature,
    InvalidXml,
    WXBizMsgCrypt,
    compute_signature,
    parse_encrypted_envelope,
    parse_xml_fields,
)

# --- Vector A (docs/wechat-protocol.md §2.6, official message_push.md "debug_demo") ------------------------

TOKEN = "AAAAA"
AES_KEY = "A" * 43
RAW_KEY = bytes(32)  # base64("A"*43 + "=") is 32 zero bytes
APPID = "wx134c8103faa5a59e"

A_TIMESTAMP = "1715943329"
A_NONCE = "1590219412"
A_SIGNATURE = "cc0c594499c1634947d5b502f158ee518947db27"
A_MSG_SIGNATURE = "6c12a4205838198b8fa631b3220723bb07f1015c"
A_ENCRYPT = (
    "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8Ke"
    "nVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+"
    "RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n"
    "/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wL"
    "ef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg=="
)
A_MSG = (
    "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n"
    "<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n"
    "<CreateTime>1715943329</CreateTime>\n"
    "<MsgType><![CDATA[event]]></MsgType>\n"
    "<Event><![CDATA[debug_demo]]></Event>\n"
    "<debug_str><![CDATA[hello world]]></debug_str>\n"
    "</xml>"
)

A_REPLY = "<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>"
A_REPLY_RANDOM = b"999951349e8ee746"
A_REPLY_TIMESTAMP = "1713424427"
A_REPLY_NONCE = "415670741"
A_REPLY_ENCRYPT = (
    "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3HAZbSvPT9t/o11MI7d"
    "6WELwqrGd7jMnV0zv3Zc9Nq7"
)
A_REPLY_SIGNATURE = "03e0812039325c2712ef5f0f980fd14c70d6e307"


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def make_crypt(appid: str = APPID, key: str = AES_KEY) -> WXBizMsgCrypt:
    return WXBizMsgCrypt(TOKEN, key, appid)


def raw_decrypt(encrypt: str, key: bytes = RAW_KEY) -> bytes:
    """Independent AES-256-CBC decryption (IV = key[:16]), padding left in place."""
    d = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return d.update(base64.b64decode(encrypt)) + d.finalize()


def raw_encrypt(padded: bytes, key: bytes = RAW_KEY) -> str:
    """Encrypt already-"padded" bytes directly, to craft buffers the real encryptor would never produce."""
    assert len(padded) % 16 == 0
    e = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(e.update(padded) + e.finalize()).decode("ascii")


def full_str(msg: bytes, appid: bytes = APPID.encode(), *, msg_len: int | None = None) -> bytes:
    """random(16) || msg_len || msg || appid, without padding."""
    n = len(msg) if msg_len is None else msg_len
    return b"r" * 16 + struct.pack(">I", n) + msg + appid


def pkcs7_32(data: bytes) -> bytes:
    pad = 32 - len(data) % 32
    return data + bytes([pad]) * pad


def envelope(encrypt: str, **extra: str) -> str:
    parts = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in extra.items())
    return f"<xml>{parts}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"


# --- Official vector A, both directions ----------------------------------------------------------------


def test_vector_a_decrypt() -> None:
    crypt = make_crypt()
    assert crypt.decrypt(A_ENCRYPT) == A_MSG
    crypt.verify_signature(A_MSG_SIGNATURE, A_TIMESTAMP, A_NONCE, A_ENCRYPT)


def test_vector_a_layout_checked_independently() -> None:
    padded = raw_decrypt(A_ENCRYPT)
    assert len(padded) == 352
    assert padded[-22:] == bytes([22]) * 22  # FullStr 330 bytes, pad value 22
    full = padded[:-22]
    assert full[:16] == b"1205899eaf019bbd"
    (msg_len,) = struct.unpack(">I", full[16:20])
    assert msg_len == 292
    assert full[20 : 20 + msg_len].decode() == A_MSG
    assert full[20 + msg_len :] == APPID.encode()


def test_vector_a_decrypt_message() -> None:
    body = envelope(A_ENCRYPT, ToUserName="gh_97417a04a28d")
    plain = make_crypt().decrypt_message(
        body.encode(), msg_signature=A_MSG_SIGNATURE, timestamp=A_TIMESTAMP, nonce=A_NONCE
    )
    assert plain == A_MSG
    fields = parse_xml_fields(plain)
    assert fields["ToUserName"] == "gh_97417a04a28d"
    assert fields["Event"] == "debug_demo"
    assert fields["debug_str"] == "hello world"
    assert fields["CreateTime"] == "1715943329"


def test_vector_a_plain_signature_formula() -> None:
    # `signature` is sha1 over the three values; "" sorts first, so the 4-arg formula reproduces it.
    assert compute_signature(TOKEN, A_TIMESTAMP, A_NONCE, "") == A_SIGNATURE
    expected = hashlib.sha1("".join(sorted([TOKEN, A_TIMESTAMP, A_NONCE, A_ENCRYPT])).encode()).hexdigest()
    assert compute_signature(TOKEN, A_TIMESTAMP, A_NONCE, A_ENCRYPT) == expected == A_MSG_SIGNATURE


def test_vector_a_encrypt() -> None:
    crypt = make_crypt()
    encrypt = crypt.encrypt(A_REPLY, random_prefix=A_REPLY_RANDOM)
    assert encrypt == A_REPLY_ENCRYPT
    assert len(base64.b64decode(encrypt)) == 96
    assert crypt.sign(A_REPLY_TIMESTAMP, A_REPLY_NONCE, encrypt) == A_REPLY_SIGNATURE


def test_vector_a_encrypt_message() -> None:
    crypt = make_crypt()
    xml = crypt.encrypt_message(
        A_REPLY, timestamp=A_REPLY_TIMESTAMP, nonce=A_REPLY_NONCE, random_prefix=A_REPLY_RANDOM
    )
    assert xml == (
        f"<xml><Encrypt><![CDATA[{A_REPLY_ENCRYPT}]]></Encrypt>"
        f"<MsgSignature><![CDATA[{A_REPLY_SIGNATURE}]]></MsgSignature>"
        f"<TimeStamp>{A_REPLY_TIMESTAMP}</TimeStamp>"
        f"<Nonce><![CDATA[{A_REPLY_NONCE}]]></Nonce></xml>"
    )
    fields = parse_xml_fields(xml)
    assert fields == {
        "Encrypt": A_REPLY_ENCRYPT,
        "MsgSignature": A_REPLY_SIGNATURE,
        "TimeStamp": A_REPLY_TIMESTAMP,
        "Nonce": A_REPLY_NONCE,
    }
    # The reply envelope is itself a valid pushed envelope.
    assert (
        crypt.decrypt_message(
            xml, msg_signature=A_REPLY_SIGNATURE, timestamp=A_REPLY_TIMESTAMP, nonce=A_REPLY_NONCE
        )
        == A_REPLY
    )


def test_error_codes() -> None:
    assert InvalidSignature.code == -40001
    assert InvalidXml.code == -40002
    assert InvalidAesKey.code == -40004
    assert InvalidAppId.code == -40005
    assert DecryptError.code == -40007
    assert InvalidPadding.code == InvalidLength.code == -40008
    assert InvalidBase64.code == -40010
    for cls in (InvalidSignature, InvalidXml, InvalidAesKey, InvalidAppId, DecryptError, InvalidPadding):
        assert issubclass(cls, CryptoError)
    assert issubclass(InvalidLength, CryptoError) and issubclass(InvalidBase64, CryptoError)


# --- Round trips ---------------------------------------------------------------------------------------

MULTIBYTE = st.text(alphabet=st.sampled_from("a<>&中文字😀🎉é\n"), max_size=80)


@given(text=st.text(max_size=300) | MULTIBYTE)
@example(text="")
@example(text="中文消息 😀 emoji")
def test_roundtrip_text(text: str) -> None:
    crypt = make_crypt()
    encrypt = crypt.encrypt(text)
    assert crypt.decrypt(encrypt) == text
    # FullStr is 20 + UTF-8 length + appid, always padded up to the next multiple of 32 (never 0 padding).
    full_len = 20 + len(text.encode()) + len(APPID)
    assert len(base64.b64decode(encrypt)) == (full_len // 32 + 1) * 32


@given(blocks=st.integers(min_value=2, max_value=40), offset=st.integers(min_value=-2, max_value=2))
def test_roundtrip_lengths_around_multiples_of_32(blocks: int, offset: int) -> None:
    # Choose the message so that FullStr (20 + msg + 18-byte appid) is 32*blocks + offset bytes long.
    msg_len = 32 * blocks + offset - 20 - len(APPID)
    text = "中" * (msg_len // 3) + "a" * (msg_len % 3)  # 3-byte chars: bytes != characters
    assert len(text.encode()) == msg_len
    crypt = make_crypt()
    encrypt = crypt.encrypt(text)
    padded = raw_decrypt(encrypt)
    pad = padded[-1]
    assert pad == 32 - (32 * blocks + offset) % 32  # offset 0 -> a full block of 32
    assert crypt.decrypt(encrypt) == text


@given(
    key=st.text(alphabet=ALNUM, min_size=43, max_size=43),
    appid=st.text(min_size=1, max_size=40),
    token=st.text(max_size=40),
    text=st.text(max_size=200),
    timestamp=st.integers(min_value=0, max_value=2**40).map(str),
    nonce=st.text(alphabet="0123456789abcXYZ_-", min_size=1, max_size=20),
)
def test_roundtrip_messages_any_key(
    key: str, appid: str, token: str, text: str, timestamp: str, nonce: str
) -> None:
    crypt = WXBizMsgCrypt(token, key, appid)
    xml = crypt.encrypt_message(text, timestamp=timestamp, nonce=nonce)
    fields = parse_xml_fields(xml)
    assert (
        crypt.decrypt_message(xml, msg_signature=fields["MsgSignature"], timestamp=timestamp, nonce=nonce)
        == text
    )


def test_random_prefix_defaults_to_random() -> None:
    crypt = make_crypt()
    assert crypt.encrypt("same") != crypt.encrypt("same")


def test_random_prefix_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        make_crypt().encrypt("x", random_prefix=b"short")


@pytest.mark.parametrize(
    ("timestamp", "nonce"), [("12a", "1"), ("1", "a]]>b"), ("", "1"), ("1", ""), ("1<", "1")]
)
def test_encrypt_message_rejects_unsafe_timestamp_or_nonce(timestamp: str, nonce: str) -> None:
    with pytest.raises(ValueError):
        make_crypt().encrypt_message("<xml/>", timestamp=timestamp, nonce=nonce)


# --- Component push envelope (AppId, no ToUserName) -----------------------------------------------------

TICKET_XML = (
    "<xml><AppId><![CDATA[wx134c8103faa5a59e]]></AppId>"
    "<CreateTime>1413192605</CreateTime>"
    "<InfoType><![CDATA[component_verify_ticket]]></InfoType>"
    "<ComponentVerifyTicket><![CDATA[ticket@@@abc]]></ComponentVerifyTicket></xml>"
)


def test_component_push_without_to_user_name() -> None:
    crypt = make_crypt()
    encrypt = crypt.encrypt(TICKET_XML)
    body = envelope(encrypt, AppId=APPID).encode()
    assert parse_encrypted_envelope(body) == {"AppId": APPID, "Encrypt": encrypt}
    signature = crypt.sign("1413192605", "1234", encrypt)
    plain = crypt.decrypt_message(body, msg_signature=signature, timestamp="1413192605", nonce="1234")
    assert parse_xml_fields(plain) == {
        "AppId": APPID,
        "CreateTime": "1413192605",
        "InfoType": "component_verify_ticket",
        "ComponentVerifyTicket": "ticket@@@abc",
    }


@pytest.mark.parametrize(
    "body",
    [
        "<xml><AppId>x</AppId></xml>",
        "<xml><Encrypt></Encrypt></xml>",
        "<xml><Encrypt><![CDATA[]]></Encrypt></xml>",
        "<notxml><Encrypt>abcd</Encrypt></notxml>",
        "<xml><Encrypt>abcd</Encrypt>",
        "not xml at all",
        "",
        b"\xff\xfe\x00garbage",
    ],
)
def test_envelope_without_usable_encrypt(body: str | bytes) -> None:
    with pytest.raises(InvalidXml):
        parse_encrypted_envelope(body)


# --- Tampering -----------------------------------------------------------------------------------------


def flip(encrypt: str, index: int, mask: int = 0x01) -> str:
    raw = bytearray(base64.b64decode(encrypt))
    raw[index] ^= mask
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_ciphertext_fails_signature() -> None:
    tampered = flip(A_ENCRYPT, 100)
    with pytest.raises(InvalidSignature):
        make_crypt().decrypt_message(
            envelope(tampered), msg_signature=A_MSG_SIGNATURE, timestamp=A_TIMESTAMP, nonce=A_NONCE
        )


def test_tampered_ciphertext_first_byte_breaks_msg_len() -> None:
    # CBC: flipping ciphertext byte 0 flips plaintext byte 16, the top byte of msg_len.
    with pytest.raises(InvalidLength):
        make_crypt().decrypt(flip(A_ENCRYPT, 0))


def test_tampered_ciphertext_penultimate_block_breaks_padding() -> None:
    # Flipping the last byte of the penultimate block turns pad byte 22 into 23 in the last block.
    with pytest.raises(InvalidPadding):
        make_crypt().decrypt(flip(A_ENCRYPT, -17))


@given(index=st.integers(min_value=0, max_value=351), mask=st.integers(min_value=1, max_value=255))
def test_any_byte_flip_is_rejected_or_changes_output(index: int, mask: int) -> None:
    crypt = make_crypt()
    tampered = flip(A_ENCRYPT, index, mask)
    with pytest.raises(InvalidSignature):
        crypt.decrypt_message(
            envelope(tampered), msg_signature=A_MSG_SIGNATURE, timestamp=A_TIMESTAMP, nonce=A_NONCE
        )
    try:
        assert crypt.decrypt(tampered) != A_MSG
    except CryptoError:
        pass


@pytest.mark.parametrize(
    ("signature", "timestamp", "nonce"),
    [
        ("6c12a4205838198b8fa631b3220723bb07f1015d", A_TIMESTAMP, A_NONCE),
        (A_MSG_SIGNATURE.upper(), A_TIMESTAMP, A_NONCE),
        ("", A_TIMESTAMP, A_NONCE),
        ("é" * 40, A_TIMESTAMP, A_NONCE),
        (None, A_TIMESTAMP, A_NONCE),
        (A_MSG_SIGNATURE, "1715943330", A_NONCE),
        (A_MSG_SIGNATURE, A_TIMESTAMP, "1590219413"),
        (A_MSG_SIGNATURE, None, A_NONCE),
    ],
)
def test_tampered_signature(signature: str, timestamp: str, nonce: str) -> None:
    with pytest.raises(InvalidSignature):
        make_crypt().decrypt_message(
            envelope(A_ENCRYPT), msg_signature=signature, timestamp=timestamp, nonce=nonce
        )


def test_wrong_token_fails_signature() -> None:
    with pytest.raises(InvalidSignature):
        WXBizMsgCrypt("BBBBB", AES_KEY, APPID).verify_signature(
            A_MSG_SIGNATURE, A_TIMESTAMP, A_NONCE, A_ENCRYPT
        )


# --- Crafted plaintexts: padding, lengths, appid, UTF-8 -------------------------------------------------


def test_bad_padding_zero() -> None:
    data = full_str(b"<xml/>")
    data += b"\x00" * (32 - len(data) % 32)
    with pytest.raises(InvalidPadding):
        make_crypt().decrypt(raw_encrypt(data))


def test_bad_padding_33() -> None:
    data = full_str(b"<xml/>")
    data += bytes([33]) * (64 - len(data))
    with pytest.raises(InvalidPadding):
        make_crypt().decrypt(raw_encrypt(data))


def test_bad_padding_inconsistent_bytes() -> None:
    data = pkcs7_32(full_str(b"<xml/>"))
    pad = data[-1]
    assert pad >= 2
    data = data[:-2] + bytes([pad - 1, pad])  # last byte right, the one before it wrong
    with pytest.raises(InvalidPadding):
        make_crypt().decrypt(raw_encrypt(data))


def test_bad_padding_longer_than_buffer() -> None:
    with pytest.raises(InvalidPadding):
        make_crypt().decrypt(raw_encrypt(b"x" * 15 + bytes([20])))


def test_well_formed_padding_17_to_32_is_accepted() -> None:
    # The case a stock 16-byte PKCS#7 unpadder gets wrong: pad values above 16.
    msg = b"<xml>" + b"o" * 19 + b"</xml>"  # FullStr 68 bytes -> pad value 28
    data = pkcs7_32(full_str(msg))
    assert data[-1] > 16
    assert make_crypt().decrypt(raw_encrypt(data)) == msg.decode()


def test_msg_len_too_large() -> None:
    data = pkcs7_32(full_str(b"<xml/>", msg_len=1000))
    with pytest.raises(InvalidLength):
        make_crypt().decrypt(raw_encrypt(data))


def test_msg_len_max_uint32() -> None:
    data = pkcs7_32(full_str(b"<xml/>", msg_len=0xFFFFFFFF))
    with pytest.raises(InvalidLength):
        make_crypt().decrypt(raw_encrypt(data))


def test_buffer_shorter_than_header() -> None:
    data = pkcs7_32(b"r" * 16 + b"\x00\x00")  # 18 bytes of content, fewer than random + msg_len
    with pytest.raises(InvalidLength):
        make_crypt().decrypt(raw_encrypt(data))


def test_msg_len_eating_the_appid_gives_wrong_appid() -> None:
    msg = b"<xml/>"
    data = pkcs7_32(full_str(msg, msg_len=len(msg) + 3))
    with pytest.raises(InvalidAppId):
        make_crypt().decrypt(raw_encrypt(data))


@pytest.mark.parametrize("other", ["wx0000000000000000", "wx134c8103faa5a59", "wx134c8103faa5a59ee", ""])
def test_wrong_appid(other: str) -> None:
    encrypt = (
        make_crypt(appid=other).encrypt("<xml/>")
        if other
        else raw_encrypt(pkcs7_32(full_str(b"<xml/>", b"")))
    )
    with pytest.raises(InvalidAppId):
        make_crypt().decrypt(encrypt)


def test_invalid_utf8_message() -> None:
    data = pkcs7_32(full_str(b"<xml>\xff\xfe</xml>"))
    with pytest.raises(InvalidXml):
        make_crypt().decrypt(raw_encrypt(data))


def test_wrong_key() -> None:
    # Deterministic for these fixed inputs: the garbage plaintext's last byte is 0xff, out of 1..32.
    with pytest.raises(InvalidPadding):
        make_crypt(key="B" * 43).decrypt(A_ENCRYPT)


@given(key=st.text(alphabet=ALNUM, min_size=43, max_size=43))
def test_wrong_key_never_yields_the_message(key: str) -> None:
    if key == AES_KEY:
        return
    with pytest.raises(CryptoError):
        make_crypt(key=key).decrypt(A_ENCRYPT)


# --- Base64 and ciphertext length ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "encrypt",
    [
        A_ENCRYPT[:-1],  # truncated: incorrect padding
        A_ENCRYPT[:-3],
        A_ENCRYPT[:101],
        A_ENCRYPT[:50] + "\n" + A_ENCRYPT[50:],  # strict: no skipped characters
        A_ENCRYPT[:50] + "!" + A_ENCRYPT[51:],
        A_ENCRYPT[:50] + "中" + A_ENCRYPT[51:],
        A_ENCRYPT.replace("+", "-").replace("/", "_"),  # urlsafe alphabet is not accepted
        None,
    ],
)
def test_invalid_base64(encrypt: str) -> None:
    with pytest.raises(InvalidBase64):
        make_crypt().decrypt(encrypt)


@pytest.mark.parametrize(
    "raw",
    [b"", b"x" * 15, b"x" * 20, b"x" * 351, base64.b64decode(A_ENCRYPT)[:-1]],
)
def test_ciphertext_not_multiple_of_16(raw: bytes) -> None:
    with pytest.raises(DecryptError):
        make_crypt().decrypt(base64.b64encode(raw).decode())


def test_truncated_at_quantum_boundary() -> None:
    # Dropping the final 4-char quantum leaves valid base64 of 351 bytes.
    with pytest.raises(DecryptError):
        make_crypt().decrypt(A_ENCRYPT[:-4])


@given(data=st.binary(max_size=200))
def test_decrypt_arbitrary_bytes_raises_only_crypto_errors(data: bytes) -> None:
    try:
        make_crypt().decrypt(base64.b64encode(data).decode())
    except CryptoError:
        pass


@given(text=st.text(max_size=200))
def test_decrypt_arbitrary_text_raises_only_crypto_errors(text: str) -> None:
    try:
        make_crypt().decrypt(text)
    except CryptoError:
        pass


# --- AES key validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "A" * 42,
        "A" * 44,
        "",
        "A" * 42 + "+",
        "A" * 42 + "/",
        "A" * 42 + "=",
        "A" * 42 + "-",
        "A" * 42 + "é",
        "A" * 42 + "٣",  # a Unicode digit, not [0-9]
        "A" * 43 + "\n",
        " " + "A" * 42,
        None,
    ],
)
def test_bad_aes_key(key: str) -> None:
    with pytest.raises(InvalidAesKey):
        WXBizMsgCrypt(TOKEN, key, APPID)


def test_repr_hides_secrets() -> None:
    text = repr(WXBizMsgCrypt("secret-token", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", APPID))
    assert "secret-token" not in text and "abcdefg" not in text and APPID in text


# --- Hostile XML ---------------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><Encrypt>&lol9;</Encrypt></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><Encrypt>&xxe;</Encrypt></xml>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://example.invalid/evil.dtd">
<xml><Encrypt>abcd</Encrypt></xml>"""

PLAIN_DTD = """<!DOCTYPE xml><xml><Encrypt>abcd</Encrypt></xml>"""

HOSTILE = [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PLAIN_DTD]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_envelope(body: str) -> None:
    with pytest.raises(InvalidXml):
        parse_encrypted_envelope(body)
    with pytest.raises(InvalidXml):
        parse_encrypted_envelope(body.encode())
    with pytest.raises(InvalidXml):
        make_crypt().decrypt_message(
            body, msg_signature=A_MSG_SIGNATURE, timestamp=A_TIMESTAMP, nonce=A_NONCE
        )


@pytest.mark.parametrize("xml", HOSTILE)
def test_hostile_decrypted_message(xml: str) -> None:
    crypt = make_crypt()
    # Signed and encrypted correctly, so only the XML parsing of the plaintext can reject it.
    plain = crypt.decrypt(crypt.encrypt(xml))
    with pytest.raises(InvalidXml):
        parse_xml_fields(plain)


def test_oversized_body() -> None:
    body = envelope(A_ENCRYPT, Padding="x" * (64 * 1024))
    with pytest.raises(InvalidXml):
        parse_encrypted_envelope(body)
    with pytest.raises(InvalidXml):
        make_crypt().decrypt_message(
            body, msg_signature=A_MSG_SIGNATURE, timestamp=A_TIMESTAMP, nonce=A_NONCE
        )
    with pytest.raises(InvalidXml):
        parse_xml_fields(body.encode())


def test_max_bytes_counts_utf8_bytes() -> None:
    body = "<xml><Encrypt>abcd</Encrypt><Note>" + "中" * 10 + "</Note></xml>"
    limit = len(body) + 5  # enough characters, but not enough bytes
    with pytest.raises(InvalidXml):
        parse_encrypted_envelope(body, max_bytes=limit)
    assert parse_encrypted_envelope(body, max_bytes=len(body.encode()))["Note"] == "中" * 10


def test_parse_xml_fields_direct_children_only() -> None:
    xml = "<xml><A>1</A><B><C>nested</C></B><A>2</A><Empty/></xml>"
    assert parse_xml_fields(xml) == {"A": "1", "B": "", "Empty": ""}


@given(data=st.binary(max_size=300) | st.text(max_size=300))
def test_envelope_parser_raises_only_invalid_xml(data: bytes | str) -> None:
    try:
        parse_encrypted_envelope(data)
    except InvalidXml:
        pass
