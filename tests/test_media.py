"""OpenBSD media: signify verification with a throwaway key, downloads from a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.errors import ImageError
from lab.images import media
from lab.images.media import (
    Media,
    MediaNotVerified,
    MediaUnavailable,
    download,
    fetch_media,
    find_signify_key,
    signed_sha256,
)

SIGNIFY = shutil.which(media.SIGNIFY)
needs_signify = pytest.mark.skipif(SIGNIFY is None, reason=f"{media.SIGNIFY} is not installed")
RELEASE = "6.1"  # a release no shipped key covers: every key in these tests is the test's own


@pytest.fixture(autouse=True)
def no_host_keys(monkeypatch, tmp_path):
    """Keys come only from the test: no /etc/signify, no project key for RELEASE."""
    monkeypatch.setattr(media, "SYSTEM_KEY_DIRS", (tmp_path / "etc-signify",))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)


def signify(*args: str | Path, cwd: Path) -> None:
    subprocess.run([SIGNIFY, *map(str, args)], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Path]:
    """A fake install61.iso, its SHA256 list signed by a fresh key pair, and the public key."""
    if SIGNIFY is None:
        pytest.skip(f"{media.SIGNIFY} is not installed")
    work = tmp_path / "mirror" / RELEASE / "amd64"
    work.mkdir(parents=True)
    iso = work / "install61.iso"
    iso.write_bytes(b"OpenBSD install media, or so it says\n" * 1000)
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    (work / "SHA256").write_text(f"SHA256 (install61.iso) = {digest}\nSHA256 (bsd.rd) = {'0' * 64}\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    signify(
        "-G",
        "-n",
        "-c",
        "test 6.1 base",
        "-p",
        keys / "openbsd-61-base.pub",
        "-s",
        keys / "openbsd-61-base.sec",
        cwd=keys,
    )
    signify(
        "-S",
        "-e",
        "-s",
        keys / "openbsd-61-base.sec",
        "-m",
        work / "SHA256",
        "-x",
        work / "SHA256.sig",
        cwd=work,
    )
    return {
        "iso": iso,
        "sig": work / "SHA256.sig",
        "key": keys / "openbsd-61-base.pub",
        "mirror": tmp_path / "mirror",
    }


# --- signify ------------------------------------------------------------------------------------------


@needs_signify
def test_good_signature(signed, tmp_path):
    got = fetch_media(RELEASE, iso=signed["iso"], signify_key=signed["key"], cache_dir=tmp_path)
    assert isinstance(got, Media) and got.verified
    assert "install61.iso: OK" in got.how
    assert got.sha256 == hashlib.sha256(signed["iso"].read_bytes()).hexdigest()


@needs_signify
def test_any_file_name_is_checked_as_the_listed_one(signed, tmp_path):
    renamed = tmp_path / "downloads" / "openbsd.iso"
    renamed.parent.mkdir()
    shutil.copy(signed["iso"], renamed)
    got = fetch_media(RELEASE, iso=renamed, sig=signed["sig"], signify_key=signed["key"], cache_dir=tmp_path)
    assert got.verified and got.iso == renamed


@needs_signify
def test_tampered_iso(signed, tmp_path):
    with signed["iso"].open("ab") as f:
        f.write(b"a backdoor")
    with pytest.raises(MediaNotVerified, match="does not match the checksum OpenBSD signed"):
        fetch_media(RELEASE, iso=signed["iso"], signify_key=signed["key"], cache_dir=tmp_path)


@needs_signify
def test_tampered_signature_list(signed, tmp_path):
    text = signed["sig"].read_text().replace("SHA256 (bsd.rd) = 0", "SHA256 (bsd.rd) = 1")
    signed["sig"].write_text(text)
    with pytest.raises(MediaNotVerified, match="bad signature"):
        fetch_media(RELEASE, iso=signed["iso"], signify_key=signed["key"], cache_dir=tmp_path)


@needs_signify
def test_wrong_key(signed, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    signify("-G", "-n", "-p", other / "o.pub", "-s", other / "o.sec", cwd=other)
    with pytest.raises(MediaNotVerified, match="wrong key"):
        fetch_media(RELEASE, iso=signed["iso"], signify_key=other / "o.pub", cache_dir=tmp_path)


@needs_signify
def test_key_found_on_the_host(signed, tmp_path, monkeypatch):
    host_keys = tmp_path / "etc-signify"
    host_keys.mkdir()
    shutil.copy(signed["key"], host_keys / "openbsd-61-base.pub")
    assert find_signify_key(RELEASE) == host_keys / "openbsd-61-base.pub"
    assert fetch_media(RELEASE, iso=signed["iso"], cache_dir=tmp_path).verified


def test_missing_key(tmp_path):
    iso = tmp_path / "install61.iso"
    iso.write_bytes(b"x")
    (tmp_path / "SHA256.sig").write_text("untrusted comment: x\n")
    with pytest.raises(MediaNotVerified) as caught:
        fetch_media(RELEASE, iso=iso, cache_dir=tmp_path)
    assert str(caught.value) == (
        "no signify key for OpenBSD 6.1 (openbsd-61-base.pub): fetch etc/signify/openbsd-61-base.pub "
        "from OpenBSD's source tree and pass --signify-key FILE"
    )
    assert "base60.tgz" in (caught.value.hint or "")


def test_missing_key_file(tmp_path):
    with pytest.raises(MediaNotVerified, match="does not exist"):
        fetch_media(RELEASE, iso=tmp_path / "x.iso", signify_key=tmp_path / "nope.pub", cache_dir=tmp_path)


@needs_signify
def test_iso_without_sig_is_refused(signed, tmp_path):
    alone = tmp_path / "alone" / "install61.iso"
    alone.parent.mkdir()
    shutil.copy(signed["iso"], alone)
    with pytest.raises(MediaNotVerified, match="no SHA256.sig .* --sig PATH"):
        fetch_media(RELEASE, iso=alone, signify_key=signed["key"], cache_dir=tmp_path)


def test_insecure_is_recorded_and_said(tmp_path, capsys):
    iso = tmp_path / "install61.iso"
    iso.write_bytes(b"unverified")
    got = fetch_media(RELEASE, iso=iso, insecure=True, cache_dir=tmp_path)
    assert not got.verified
    assert got.how.startswith("NOT VERIFIED (--insecure")
    assert got.sha256 == hashlib.sha256(b"unverified").hexdigest()
    assert "WARNING" in capsys.readouterr().err


NEXT_RELEASE = media.next_release(media.SUPPORTED_RELEASES[-1])
# Once the next release is cut, -current's snapshots are signed with the key after it (already in
# OpenBSD's tree, as each release's base set carries the next one's key).
AFTER_NEXT = media.next_release(NEXT_RELEASE)


@pytest.mark.parametrize("release", [*media.SUPPORTED_RELEASES, NEXT_RELEASE, AFTER_NEXT])
def test_project_ships_a_key_for_every_release_and_the_next_two(release):
    # Each traced to etc/signify/openbsd-NN-base.pub in OpenBSD's source
    # (images/openbsd/README.md).
    key = find_signify_key(release)
    assert key is not None and key.parent == media.PROJECT_KEYS_DIR
    comment, value = key.read_text().splitlines()
    assert comment == f"untrusted comment: openbsd {release} base public key"
    raw = base64.b64decode(value)
    assert len(raw) == 42 and raw[:2] == b"Ed"  # signify: algorithm, 8-byte key number, Ed25519 key


def test_shipped_keys_agree_with_openbsds_publications():
    # 7.5: the value FACTS.md took from OpenBSD's docs; 7.9: the one openbsd.org/79.html lists.
    published = {
        "7.5": "RWRGj1pRpprAfgeF/rgld4ubduChLvTkigA1Zj7WLDsVA4qfYSWOEI8q",
        "7.9": "RWTSdNN9A3yvWNn7mUjXwv9DOCOUnyfuV+mq1iGPIfD+NhN8EYnEQ1at",
    }
    for release, value in published.items():
        key = find_signify_key(release)
        assert key is not None and key.read_text().splitlines()[1] == value


@needs_signify
def test_release_build_needs_no_signify_key(signed, tmp_path, capsys):
    # `image build --platform openbsd --release 7.9 --iso FILE`: the shipped 7.9 key is used. The test's
    # media is signed by its own key, so the shipped one rejects it: that is the proof it was the one used.
    from lab import cli

    work = tmp_path / "79"
    work.mkdir()
    iso = work / "install79.iso"
    iso.write_bytes(signed["iso"].read_bytes())
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    (work / "SHA256").write_text(f"SHA256 (install79.iso) = {digest}\n")
    secret = signed["key"].with_suffix(".sec")
    signify("-S", "-e", "-s", secret, "-m", work / "SHA256", "-x", work / "SHA256.sig", cwd=work)
    code = cli.main(["image", "build", "--platform", "openbsd", "--release", "7.9", "--iso", str(iso)])
    err = capsys.readouterr().err
    assert code == 1
    assert "openbsd-79-base.pub (checked against the wrong key)" in err
    assert "--signify-key" not in err.splitlines()[0]


# --- snapshots (OpenBSD -current) ------------------------------------------------------------------------

SNAPSHOT_LIST = (
    "untrusted comment: verify with openbsd-80-base.pub\nRWSMSt0e...\n"
    "SHA256 (BUILDINFO) = " + "1" * 64 + "\nSHA256 (bsd.rd) = " + "2" * 64 + "\n"
    "SHA256 (install80.iso) = " + "3" * 64 + "\n"
)


def test_snapshot_media_urls_and_key():
    plan = media.media_plan("snapshots", sig_text=SNAPSHOT_LIST)
    base = "https://cdn.openbsd.org/pub/OpenBSD/snapshots/amd64"
    assert (plan.sig_url, plan.buildinfo_url, plan.iso_url) == (
        f"{base}/SHA256.sig",
        f"{base}/BUILDINFO",
        f"{base}/install80.iso",
    )
    assert (plan.version, plan.key) == ("8.0", "openbsd-80-base.pub")
    assert media.media_plan("snapshots") == plan  # before the list is read: the next release's, 8.0
    assert find_signify_key(plan.version) == media.PROJECT_KEYS_DIR / "openbsd-80-base.pub"
    release = media.media_plan("7.9", mirror="https://mirror.example/pub/OpenBSD/")
    assert release.iso_url == "https://mirror.example/pub/OpenBSD/7.9/amd64/install79.iso"
    assert release.key == "openbsd-79-base.pub"


def test_snapshot_build_date_names_the_build():
    # etc/Makefile's sha target: date -u "+Build date: %s - %+"
    assert media.snapshot_build("Build date: 1747008000 - Mon May 12 00:00:00 UTC 2025\n") == "20250512-0000"
    with pytest.raises(MediaUnavailable, match="BUILDINFO"):
        media.snapshot_build("nothing here\n")


@pytest.fixture
def snapshot_mirror(tmp_path: Path) -> dict[str, Path]:
    """snapshots/amd64/ with install80.iso, BUILDINFO and their list signed by a test key named as 8.0's."""
    if SIGNIFY is None:
        pytest.skip(f"{media.SIGNIFY} is not installed")
    work = tmp_path / "mirror" / "snapshots" / "amd64"
    work.mkdir(parents=True)
    keys = tmp_path / "snapkeys"
    keys.mkdir()
    signify("-G", "-n", "-p", keys / "openbsd-80-base.pub", "-s", keys / "openbsd-80-base.sec", cwd=keys)

    def publish(epoch: int) -> None:
        (work / "install80.iso").write_bytes(f"snapshot {epoch}\n".encode() * 500)
        (work / "BUILDINFO").write_text(f"Build date: {epoch} - some day\n")
        lines = [
            f"SHA256 ({name}) = {hashlib.sha256((work / name).read_bytes()).hexdigest()}\n"
            for name in ("BUILDINFO", "install80.iso")
        ]
        (work / "SHA256").write_text("".join(lines))
        sha, sig = work / "SHA256", work / "SHA256.sig"
        signify("-S", "-e", "-s", "openbsd-80-base.sec", "-m", sha, "-x", sig, cwd=keys)

    publish(1747008000)
    return {"mirror": tmp_path / "mirror", "key": keys / "openbsd-80-base.pub", "publish": publish}  # type: ignore[dict-item]


@needs_signify
def test_snapshot_download_verify_and_next_build(snapshot_mirror, tmp_path):
    root = snapshot_mirror["mirror"]

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        cache = tmp_path / "cache"
        got = fetch_media("snapshots", mirror=url, cache_dir=cache, signify_key=snapshot_mirror["key"])
        assert got.verified and got.snapshot and (got.version, got.build) == ("8.0", "20250512-0000")
        assert got.iso == cache / "openbsd" / "snapshots" / "amd64" / "20250512-0000" / "install80.iso"
        snapshot_mirror["publish"](1747094400)  # the next day's build
        newer = fetch_media("snapshots", mirror=url, cache_dir=cache, signify_key=snapshot_mirror["key"])
        assert newer.build == "20250513-0000" and newer.iso.is_file()
        assert not got.iso.exists()  # one snapshot's download at a time
    finally:
        httpd.shutdown()


def test_snapshot_signed_by_a_key_not_shipped_says_which_file_to_fetch(tmp_path):
    work = tmp_path / "snap"
    work.mkdir()
    (work / "install82.iso").write_bytes(b"x")
    (work / "BUILDINFO").write_text("Build date: 1800000000 - later\n")
    (work / "SHA256.sig").write_text(SNAPSHOT_LIST.replace("80", "82"))
    with pytest.raises(MediaNotVerified) as caught:
        fetch_media("snapshots", iso=work / "install82.iso", cache_dir=tmp_path)
    assert str(caught.value) == (
        "no signify key for OpenBSD 8.2 (openbsd-82-base.pub): fetch etc/signify/openbsd-82-base.pub "
        "from OpenBSD's source tree and pass --signify-key FILE"
    )


def test_bad_release():
    with pytest.raises(ImageError, match="'7' is not an OpenBSD release"):
        fetch_media("7", iso="/nonexistent", insecure=True)


def test_signed_sha256():
    text = "untrusted comment: x\nRWQ...\nSHA256 (install79.iso) = " + "ab" * 32 + "\n"
    assert signed_sha256(text, "install79.iso") == "ab" * 32
    assert signed_sha256(text, "install78.iso") is None


# --- downloads ----------------------------------------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (the stdlib handler has none) and counts requests."""

    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start = 0
        if (rng := self.headers.get("Range")) and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(signed) -> Iterator[str]:
    root = signed["mirror"]

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@needs_signify
def test_download_verify_and_cache(server, signed, tmp_path):
    cache = tmp_path / "cache"
    got = fetch_media(RELEASE, mirror=server, cache_dir=cache, signify_key=signed["key"])
    assert got.verified
    assert got.iso == cache / "openbsd" / RELEASE / "amd64" / "install61.iso"
    assert got.iso.read_bytes() == signed["iso"].read_bytes()
    fetched = len(RangeHandler.requests)
    fetch_media(RELEASE, mirror=server, cache_dir=cache, signify_key=signed["key"])
    assert len(RangeHandler.requests) == fetched  # cached: nothing downloaded again


@needs_signify
def test_download_resumes_a_partial_file(server, signed, tmp_path):
    dest = tmp_path / "install61.iso"
    whole = signed["iso"].read_bytes()
    (tmp_path / "install61.iso.part").write_bytes(whole[:1000])
    download(f"{server}/{RELEASE}/amd64/install61.iso", dest, "install61.iso")
    assert dest.read_bytes() == whole
    assert RangeHandler.requests[-1][1] == "bytes=1000-"
    assert not (tmp_path / "install61.iso.part").exists()


@needs_signify
def test_download_of_a_complete_part(server, signed, tmp_path):
    dest = tmp_path / "install61.iso"
    (tmp_path / "install61.iso.part").write_bytes(signed["iso"].read_bytes())
    download(f"{server}/{RELEASE}/amd64/install61.iso", dest, "install61.iso")  # server says 416
    assert dest.read_bytes() == signed["iso"].read_bytes()


@needs_signify
def test_missing_release_on_the_mirror(server, signed, tmp_path):
    with pytest.raises(MediaUnavailable, match="HTTP 404"):
        fetch_media("6.0", mirror=server, cache_dir=tmp_path, insecure=True)


def test_no_network_says_what_to_do(tmp_path):
    # Port 9 on loopback: nothing listens, the connection is refused at once, as offline.
    with pytest.raises(MediaUnavailable) as caught:
        fetch_media("7.5", mirror="http://127.0.0.1:9/pub/OpenBSD", cache_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot download OpenBSD 7.5 media from http://127.0.0.1:9/pub/OpenBSD/7.5/amd64"
    )
    assert message.endswith("pass --iso PATH (with its SHA256.sig beside it) or use --platform linux")
