"""The redactor against the key formats of the programs the lab runs. Each sample's shape was read in the
program's source named beside it; the key bytes in them are made up."""

from __future__ import annotations

import io

import pytest

from lab import redact

KEY_HEX = "6a1e0c5d87f2b3a4c6d8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"

# iproute2 ip/ipxfrm.c (xfrm_algo_print): `\t<enc|auth|auth-trunc|aead> <name> 0x<key> [<bits>]`.
IP_XFRM_STATE = f"""src 192.0.2.1 dst 198.51.100.1
\tproto esp spi 0xb9dfd19b reqid 1 mode tunnel
\treplay-window 0 flag af-unspec
\tauth-trunc hmac(sha384) 0x{KEY_HEX}0011223344556677889900aabbccddeeff 192
\tenc cbc(aes) 0x{KEY_HEX}
\taead rfc4106(gcm(aes)) 0x00112233445566778899aabbccddeeff01020304 128
\tenc cbc(des3_ede) 0x0011223344556677
"""
# openiked iked/util.c print_hex (iked -dvvv): "%02x" per byte, a space every 4 bytes, a line every 32.
IKED_DUMP = """ikev2_sa_keys: SK_ai with 48 bytes
6a1e0c5d 87f2b3a4 c6d8e0f1 a2b3c4d5 e6f70819 2a3b4c5d 6e7f8091 a2b3c4d5
e6f70819 2a3b4c5d 6e7f8091 a2b3c4d5
ikev2_sa_keys: SK_pi with 4 bytes
6a1e0c5d
"""
# strongSwan src/libstrongswan/utils/utils/memory.c mem_printf_hook (%B): "=> %u bytes @ %p", then
# "\n%4d: %s  %s": 16 upper-case bytes a line, spaces between, then the bytes as ASCII.
CHARON_DUMP = """Dec  3 08:00:00 14[IKE] Sk_ei secret => 20 bytes @ 0x55d0c0de1234
Dec  3 08:00:00 14[IKE]    0: 9F 1E 2D 3C 4B 5A 69 78 87 96 A5 B4 C3 D2 E1 F0  ..-<KZix........
Dec  3 08:00:00 14[IKE]   16: 41 42 43 44                                      ABCD
"""
# libreswan lib/libswan/llog_dump.c: "  xx xx xx xx  xx xx …" (16 bytes, groups of 4), three spaces, ASCII.
PLUTO_DUMP = """| SKEYSEED:
|   e3 5c 8c 1f  3d 57 f8 a1  00 11 22 33  44 55 66 77   .\\..=W...."3DUfw
|   ab cd                                                ..
"""
PEM = """key:
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBtVjX5ZyIdvKT/h3VnoAoGCCqGSM49
-----END EC PRIVATE KEY-----
after the key
"""


def test_ip_xfrm_keys_go_and_the_rest_stays() -> None:
    text = redact.scrub(IP_XFRM_STATE)
    assert KEY_HEX not in text and "0011223344556677" not in text
    assert "\tenc cbc(aes) 0x[redacted]\n" in text
    assert "\tauth-trunc hmac(sha384) 0x[redacted] 192\n" in text
    assert "spi 0xb9dfd19b reqid 1" in text  # SPIs are not secret: evidence needs them


def test_iked_charon_and_pluto_dumps() -> None:
    for dump, kept in (
        (IKED_DUMP, "ikev2_sa_keys: SK_ai with 48 bytes"),
        (CHARON_DUMP, "Sk_ei secret => 20 bytes @ 0x55d0c0de1234"),
        (PLUTO_DUMP, "| SKEYSEED:"),
    ):
        text = redact.scrub(dump)
        assert kept in text
        for line in text.splitlines():
            assert not any(tok in line.lower() for tok in ("6a1e0c5d", "9f 1e", "e3 5c", "ab cd", "abcd")), (
                line
            )
        assert len(text.splitlines()) == len(dump.splitlines())  # a line stays a line: the shape stays


def test_private_keys_even_cut_short_and_even_when_secrets_are_shown(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("IKEDLAB_SHOW_SECRETS", "1")
    text = redact.scrub(PEM)
    assert "MHcCAQEE" not in text and "after the key" in text and redact.PRIVATE_KEY_MARK in text
    cut = redact.scrub(PEM.split("-----END")[0])
    assert "MHcCAQEE" not in cut
    assert KEY_HEX in redact.scrub(IP_XFRM_STATE)  # --show-secrets: SA keys stay, for a capture's decryption


def test_psks_in_configurations_and_registered_ones() -> None:
    conf = 'mykey="kept-by-macro"\nikev2 "a" psk 0xC0FFEE00C0FFEE00 srcid a\nikev2 "b" psk $mykey\n'
    assert redact.psks_in(conf) == ["kept-by-macro", "0xC0FFEE00C0FFEE00"]
    assert redact.psks_in('secrets { ike { secret = "swan-secret" } }') == ["swan-secret"]
    assert redact.psks_in(': PSK "pluto-secret"') == ["pluto-secret"]
    redact.register_config(conf)
    text = redact.scrub(f"{conf}iked: auth with kept-by-macro, c0ffee00c0ffee00 in a dump\n")
    assert "kept-by-macro" not in text and "c0ffee00c0ffee00" not in text.lower(), text


def test_digests_and_spis_are_not_keys() -> None:
    line = '"sha256:' + KEY_HEX + '", "commit": "' + KEY_HEX[:40] + '", spi=0x98362a68ed9df6f4'
    assert redact.scrub(line) == line
    assert redact.scrub(f"bare {KEY_HEX} here") == "bare [redacted] here"


def test_placeholders_keep_equalities_and_shape() -> None:
    confs = {
        "init": 'ikev2 "i" psk 0xC0FFEE00C0FFEE00 srcid init\n',
        "resp": "ikev2 'r' psk 0xC0FFEE00C0FFEE00 srcid resp \\\n\tpsk 'other-one'\n",
    }
    out, count = redact.placeholders(confs)
    assert count == 2
    assert out["init"] == 'ikev2 "i" psk "ikedlab-redacted-psk-1" srcid init\n'
    assert out["resp"] == (
        'ikev2 \'r\' psk "ikedlab-redacted-psk-1" srcid resp \\\n\tpsk "ikedlab-redacted-psk-2"\n'
    )


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_stream_is_redacted_line_by_line_whatever_the_reads(chunk: int) -> None:
    data = (IP_XFRM_STATE + IKED_DUMP + PEM + "tail without newline " + KEY_HEX).encode()
    out = io.BytesIO()
    log = redact.RedactingLog(out)
    out.close = lambda: None  # type: ignore[method-assign]  # keep the buffer readable after close()
    for i in range(0, len(data), chunk):
        log.write(data[i : i + chunk])
    log.close()
    assert out.getvalue().decode() == redact.scrub(data.decode())
    assert KEY_HEX not in out.getvalue().decode()
