"""Certificates and CAs as openiked's live regress makes them, for the cases that authenticate by certificate.

Facts ported from openiked-portable's regress/live (Makefile rev 1.34, crt.in rev 1.3), the same as OpenBSD's
regress/sbin/iked/live:
- four self-signed root CAs, ca-both, ca-left, ca-right and ca-none, each an RSA 2048 key and the subject
  /C=DE/ST=Bavaria/L=Munich/O=iked/CN=<ca name>;
- one intermediate CA, intermediate-from-ca-none: its own RSA 2048 key, issued by ca-none with
  `basicConstraints = critical, CA:true, pathlen:0`;
- one RSA 2048 key per machine (left, right) certified again and again: `<side>-from-<ca>` has the subject
  CN <side>-from-<ca> and the alternative names DNS:<name>, DNS:<name>-alternative and
  email:<name>@openbsd.org;
- each machine gets (setup_certs) its own certificates from ca-both, from the CA named after the other side,
  from ca-none and from the intermediate, plus the *other* side's certificate from ca-none, in certs/; the
  intermediate, ca-both and the CA named after itself in ca/; its key as private/local.key and the public
  half as local.pub.

Where each private key is made (the regress makes them all on its controller and copies them over sftp):
- each gateway's key: in the gateway itself (`openssl genrsa 2048` into /etc/iked/private/local.key). It
  never leaves the guest; only the public half is read, to be certified.
- the CAs' and the intermediate's keys: on the host running ikedlab, in a private temporary directory (mode
  0700) that lives as long as the Pki object and is removed with it. They never reach a guest, a transcript,
  an evidence folder or a report.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.command import require, run

SUBJECT = "/C=DE/ST=Bavaria/L=Munich/O=iked/CN={cn}"
ROOT_CAS = ("ca-both", "ca-left", "ca-right", "ca-none")
INTERMEDIATE = "intermediate-from-ca-none"
KEY_BITS = 2048
DAYS = 30  # openssl's default, which the regress keeps


def certificates_for(side: str, other: str) -> tuple[str, ...]:
    """The certificates the regress puts in a machine's certs/ (its own four and the other's from ca-none)."""
    return (
        f"{side}-from-ca-both",
        f"{side}-from-ca-{other}",
        f"{side}-from-ca-none",
        f"{side}-from-{INTERMEDIATE}",
        f"{other}-from-ca-none",
    )


def cas_for(side: str) -> tuple[str, ...]:
    """The CA certificates the regress puts in a machine's ca/."""
    return (INTERMEDIATE, f"ca-{side}", "ca-both")


def issuer_of(name: str) -> str:
    """'left-from-ca-both' -> 'ca-both'; 'left-from-intermediate-from-ca-none' -> the intermediate."""
    return name.split("-from-", 1)[1]


@dataclass(frozen=True)
class GatewayFiles:
    """What one gateway gets: file name -> PEM text, for its certs/ and its ca/ directories."""

    certs: dict[str, str]
    cas: dict[str, str]


class Pki:
    """The regress's CAs, made on this host on first use; `close()` removes their keys."""

    def __init__(self) -> None:
        self._openssl = require("openssl", "openssl")
        self._dir: Path | None = None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ikedlab-pki-"))  # mode 0700
            for ca in ROOT_CAS:
                self._key(ca)
                self._openssl_run(
                    "req", "-new", "-x509", "-key", self._dir / f"{ca}.key", "-subj", SUBJECT.format(cn=ca),
                    "-days", str(DAYS), "-out", self._dir / f"{ca}.crt",
                )  # fmt: skip
            self._key(INTERMEDIATE)
            self._issue(INTERMEDIATE, self._dir / f"{INTERMEDIATE}.pub", "intermediate")
        return self._dir

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def ca_certificate(self, name: str) -> str:
        return (self.directory / f"{name}.crt").read_text()

    def files(
        self, public_keys: dict[str, str], sides: tuple[str, ...] = ("left", "right")
    ) -> dict[str, GatewayFiles]:
        """The regress's certificates and CAs for each side, as it distributes them. A side without a key
        here (another daemon, a client authenticated by EAP) gets the CAs only, and no certificate is made
        for it."""
        folder = self.directory
        assert len(sides) == 2, sides
        issued: dict[str, str] = {}
        for side, key in public_keys.items():
            (folder / f"{side}.pub").write_text(key)
        out = {}
        for side in sides:
            other = next(s for s in sides if s != side)
            certs = {}
            for name in certificates_for(side, other):
                owner = name.split("-from-", 1)[0]
                if owner not in public_keys:
                    continue
                if name not in issued:
                    issued[name] = self._issue(name, folder / f"{owner}.pub", "leaf")
                certs[f"{name}.crt"] = issued[name]
            cas = {f"{ca}.crt": self.ca_certificate(ca) for ca in cas_for(side)}
            out[side] = GatewayFiles(certs, cas)
        return out

    # --- openssl ------------------------------------------------------------------------------------------
    def _openssl_run(self, *args: str | Path) -> None:
        run([self._openssl, *args], timeout=60)

    def _key(self, name: str) -> None:
        assert self._dir is not None
        key = self._dir / f"{name}.key"
        self._openssl_run("genrsa", "-out", key, str(KEY_BITS))
        self._openssl_run("rsa", "-in", key, "-pubout", "-out", self._dir / f"{name}.pub")

    def _issue(self, name: str, public_key: Path, profile: str) -> str:
        """A certificate for `name` over `public_key`, signed by the CA its name says issued it."""
        assert self._dir is not None
        issuer = issuer_of(name)
        extensions = self._dir / f"{name}.ext"
        if profile == "intermediate":
            extensions.write_text("[ext]\nbasicConstraints = critical, CA:true, pathlen:0\n")
        else:
            extensions.write_text(
                f"[ext]\nsubjectAltName = DNS:{name}, DNS:{name}-alternative, email:{name}@openbsd.org\n"
            )
        out = self._dir / f"{name}.crt"
        self._openssl_run(
            "x509", "-new", "-subj", SUBJECT.format(cn=name), "-force_pubkey", public_key,
            "-CA", self._dir / f"{issuer}.crt", "-CAkey", self._dir / f"{issuer}.key",
            "-set_serial", str(secrets.randbits(63)), "-days", str(DAYS),
            "-extfile", extensions, "-extensions", "ext", "-out", out,
        )  # fmt: skip
        return out.read_text()
