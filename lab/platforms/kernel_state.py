"""The kernel's IPsec state, SAs and flows, as typed readings (lab.readings.KernelState): what a catalogue
case left behind is read here, on each kernel in its own words, keys never printed.

    parse_ip_xfrm(text) -> KernelState           Linux: `ip -s xfrm state` (keys blanked), a marker line,
                                                 `ip xfrm policy`
    parse_ipsecctl_kernel(text) -> KernelState   OpenBSD: `ipsecctl -sa` (no -k: no keys), every flow and
                                                 SA, IPv6 and deny flows included

Pure parsers, no I/O; a text that is not the command's output raises ParseError.
"""

from __future__ import annotations

import ipaddress
import re

from lab.errors import ParseError
from lab.platforms.parsers import ipsecctl_keywords
from lab.readings import KernelPolicy, KernelSa, KernelState

POLICY_MARK = "--- ip xfrm policy"
#: The crypto API's names -> iked.conf's (the ones `ipsecctl -sa` prints on OpenBSD).
_XFRM_AUTH = {
    "hmac(sha1)": "hmac-sha1",
    "hmac(sha256)": "hmac-sha2-256",
    "hmac(sha384)": "hmac-sha2-384",
    "hmac(sha512)": "hmac-sha2-512",
    "hmac(md5)": "hmac-md5",
}
_XFRM_PROTOCOL = {"esp": "esp", "ah": "ah", "comp": "ipcomp", "4": "ipip", "41": "ipip6"}
_BITS = re.compile(r"\((\d+) bits\)")


def _xfrm_enc(name: str, bits: int) -> str:
    if name == "cbc(aes)":
        return f"aes-{bits}"
    if name == "rfc4106(gcm(aes))":
        return f"aes-{bits - 32}-gcm"  # the key carries a 32-bit salt
    if name == "rfc3686(ctr(aes))":
        return f"aes-{bits - 32}-ctr"
    if name.startswith("rfc7539esp(chacha20"):
        return "chacha20-poly1305"
    if name == "cbc(des3_ede)":
        return "3des"
    if name == "ecb(cipher_null)":
        return "null"
    return name


def parse_ip_xfrm(text: str) -> KernelState:
    """`ip -s xfrm state` (keys blanked), a `--- ip xfrm policy` line, then `ip xfrm policy`.

    An SA with no key (no enc, auth or aead line: an SPI reserved with SADB_GETSPI, or the kernel's acquire)
    is larval. Policies owned by a socket (a daemon's IKE sockets bypassing IPsec) are no flows and are left
    out; so is a policy's second template's detail beyond its protocol (a bundle reads "ipcomp+esp").
    """
    if POLICY_MARK not in text:
        raise ParseError(f"no `{POLICY_MARK}` line: not the kernel state command's output")
    state_text, policy_text = text.split(POLICY_MARK, 1)
    sas: list[KernelSa] = []
    sa: dict[str, str] | None = None

    def close_sa() -> None:
        if sa and "protocol" in sa:
            keyed = any(sa.get(k) for k in ("enc", "auth"))
            sas.append(
                KernelSa(
                    protocol=sa["protocol"],
                    mode=sa.get("mode", ""),
                    src=sa["src"],
                    dst=sa["dst"],
                    spi=int(sa["spi"], 16),
                    enc=sa.get("enc", ""),
                    auth=sa.get("auth", ""),
                    comp=sa.get("comp", ""),
                    encap=sa.get("encap", ""),
                    larval=sa["protocol"] in ("esp", "ah") and not keyed,
                )
            )

    for line in state_text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "src" and not line[0].isspace() and len(words) >= 4:
            close_sa()
            sa = {"src": words[1], "dst": words[3]}
        elif sa is None:
            continue
        elif words[0] == "proto" and len(words) >= 4 and words[2] == "spi":
            sa["protocol"] = _XFRM_PROTOCOL.get(words[1], words[1])
            sa["spi"] = words[3].split("(")[0]
            if "mode" in words:
                sa["mode"] = words[words.index("mode") + 1]
        elif words[0] in ("auth-trunc", "auth") and len(words) >= 2:
            sa["auth"] = _XFRM_AUTH.get(words[1], words[1])
        elif words[0] in ("enc", "aead") and len(words) >= 2:
            bits = _BITS.search(line)
            sa["enc"] = _xfrm_enc(words[1], int(bits.group(1)) if bits else 0)
        elif words[0] == "comp" and len(words) >= 2:
            sa["comp"] = words[1]
        elif words[0] == "encap" and "sport" in words and "dport" in words:
            kind = words[words.index("type") + 1] if "type" in words else "udp"
            sa["encap"] = f"{kind} {words[words.index('sport') + 1]} {words[words.index('dport') + 1]}"
    close_sa()
    return KernelState(tuple(sas), tuple(_xfrm_policies(policy_text)))


def _xfrm_policies(text: str) -> list[KernelPolicy]:
    policies: list[KernelPolicy] = []
    block: list[list[str]] = []

    def close() -> None:
        if not block:
            return
        head = block[0]
        rest = block[1:]
        direction = next((w[1] for w in rest if w[0] == "dir" and len(w) > 1), "")
        if not direction:  # "socket in|out": a socket's own policy
            return
        templates = [w for w in rest if w[0] == "tmpl"]
        protos = [w for w in rest if w[0] == "proto" and w is not head]
        upper = ""
        if "proto" in head:
            i = head.index("proto")
            upper = " ".join(head[i + 1 : i + 2])
        peer = ""
        if templates and len(templates[0]) >= 5:
            tsrc, tdst = templates[0][2], templates[0][4]
            peer = tdst if direction == "out" else tsrc
        if peer in ("0.0.0.0", "::"):  # a transport template names no end: the peer is the selector's host
            far = head[3] if direction == "out" else head[1]
            peer = far.split("/")[0] if far.endswith(("/32", "/128")) else ""
        protocol = "+".join(_XFRM_PROTOCOL.get(w[1], w[1]) for w in protos if len(w) > 1)
        mode = next((w[w.index("mode") + 1] for w in protos if "mode" in w[:-1]), "")
        action = next((w[w.index("action") + 1] for w in rest if "action" in w[:-1]), "")
        policies.append(
            KernelPolicy(
                direction=direction,
                src=head[1],
                dst=head[3],
                protocol=protocol,
                mode=mode,
                peer=peer,
                action=action,
                upper=upper,
            )
        )

    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "src" and not line[0].isspace() and len(words) >= 4:
            close()
            block = [words]
        elif block:
            block.append(words)
    close()
    return policies


# --- OpenBSD ----------------------------------------------------------------------------------------------


def _ipsecctl_network(word: str) -> str:
    """ipsecctl prints a host as its address and a network with its prefix: both as a network."""
    try:
        return str(ipaddress.ip_network(word, strict=False))
    except ValueError:
        return word  # "any", a name: kept as printed


def parse_ipsecctl_kernel(text: str) -> KernelState:
    """Every flow and SA of `ipsecctl -sa`, keys never printed (no -k): the kernel's whole IPsec state.

    Unlike parse_ipsecctl_sa (the tunnel's readings), nothing is left out: IPv6 flows, deny flows and IPComp
    SAs are state a case may leave behind.
    """
    if "FLOWS:" not in text and "SAD:" not in text:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise ParseError(f"ipsecctl -sa printed neither FLOWS nor SAD: {last}")
    sas: list[KernelSa] = []
    policies: list[KernelPolicy] = []
    for raw in text.splitlines():
        tokens = raw.split()
        if len(tokens) < 3:
            continue
        if tokens[0] == "flow" and tokens[2] in ("in", "out"):
            kw = ipsecctl_keywords(tokens[3:])
            upper = kw.get("proto", "")
            policies.append(
                KernelPolicy(
                    direction=tokens[2],
                    src=_ipsecctl_network(kw.get("from", "")),
                    dst=_ipsecctl_network(kw.get("to", "")),
                    protocol=tokens[1],
                    mode="tunnel",
                    peer=kw.get("peer", ""),
                    srcid=kw.get("srcid", ""),
                    dstid=kw.get("dstid", ""),
                    action=kw.get("type", ""),
                    upper=upper,
                )
            )
        elif tokens[0] in ("esp", "ah", "ipcomp", "ipip") and "spi" in tokens:
            kw = ipsecctl_keywords(tokens[2:])
            try:
                spi = int(kw["spi"], 16)
            except (KeyError, ValueError):
                continue
            sas.append(
                KernelSa(
                    protocol=tokens[0],
                    mode=tokens[1] if tokens[1] in ("tunnel", "transport") else "",
                    src=kw.get("from", ""),
                    dst=kw.get("to", ""),
                    spi=spi,
                    enc=kw.get("enc", ""),
                    auth=kw.get("auth", ""),
                    comp=kw.get("comp", ""),
                    encap="udpencap" if "udpencap" in tokens else "",
                )
            )
    return KernelState(tuple(sas), tuple(policies))
