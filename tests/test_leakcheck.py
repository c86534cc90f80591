"""The leak check finds a key in any spelling, in plain files and inside bundles, and files others may read;
it reads neither a snapshot's memory nor a secret/ folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lab import leakcheck

KEY = "6a1e0c5d87f2b3a4c6d8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / name).write_bytes(data)
        (root / name).chmod(0o600)


def bundle(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"top/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_key_in_any_spelling_or_in_a_bundle_is_found_and_the_clean_files_pass(tmp_path: Path):
    spaced = " ".join(KEY[i : i + 2].upper() for i in range(0, len(KEY), 2))  # charon's dump
    grouped = "\n".join(" ".join(KEY[i + j : i + j + 8] for j in range(0, 32, 8)) for i in (0, 32))  # iked's
    root = tmp_path / "artifacts"
    root.mkdir(mode=0o700)
    tree(
        root,
        {
            "clean.log": b"enc cbc(aes) 0x[redacted]\n",
            "a/ip.log": f"enc cbc(aes) 0x{KEY}\n".encode(),
            "b/charon.log": f"14[IKE]    0: {spaced}\n".encode(),
            "c/iked.log": f"{grouped}\n".encode(),
            "d/bundle.tar.gz": bundle({"hosts/init/kernel-ipsec.txt": f"0x{KEY}".encode(), "ok": b"x"}),
            "e/psk.conf": b'ikev2 psk "a-long-secret"\n',
        },
    )
    seen = leakcheck.Seen(keys={KEY}, psks={"a-long-secret"})
    problems = leakcheck.check([root], seen)
    assert sorted(p.split(":")[0] for p in problems) == [
        f"{root}/a/ip.log",
        f"{root}/b/charon.log",
        f"{root}/c/iked.log",
        f"{root}/d/bundle.tar.gz!top/hosts/init/kernel-ipsec.txt",
        f"{root}/e/psk.conf",
    ]
    assert not any(KEY in p or "a-long-secret" in p for p in problems)  # named, never quoted


def test_files_others_may_read_are_problems_but_memory_and_secret_folders_are_not_read(tmp_path: Path):
    root = tmp_path / "labs"
    root.mkdir(mode=0o700)
    tree(root, {"x/secret/resp.iked.conf": KEY.encode(), "snap/init.save": KEY.encode(), "open.log": b"x"})
    (root / "open.log").chmod(0o644)
    assert leakcheck.check([root], leakcheck.Seen(keys={KEY})) == [
        f"{root}/open.log: readable by others (mode 0644)"
    ]


def test_what_sessions_record_adds_up_and_the_check_removes_it(tmp_path: Path, capsys):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(mode=0o700)
    leakcheck.record(leakcheck.Seen(keys={KEY}, labs={"scn-1"}))
    leakcheck.record(leakcheck.Seen(keys={"00112233445566778899aabbccddeeff"}, labs={"scn-2"}))
    assert leakcheck.main([str(artifacts)]) == 0
    assert "leakcheck: 2 SA keys and" in capsys.readouterr().out
    assert not leakcheck.keys_file().exists()
    tree(artifacts, {"leak.log": KEY.encode()})
    leakcheck.record(leakcheck.Seen(keys={KEY}))
    assert leakcheck.main([str(artifacts)]) == 1


def test_each_checkout_checks_only_what_its_own_sessions_recorded(tmp_path: Path, monkeypatch, capsys):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(mode=0o700)
    other = leakcheck.keys_file("/elsewhere/another-checkout")
    assert other != leakcheck.keys_file()
    monkeypatch.setattr(leakcheck.ownership, "CHECKOUT", "/elsewhere/another-checkout")
    leakcheck.record(leakcheck.Seen(keys={KEY}, labs={"scn-theirs"}))
    monkeypatch.undo()
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    leakcheck.record(leakcheck.Seen(keys={KEY}, labs={"scn-mine"}))
    assert leakcheck.main([str(artifacts)]) == 0
    assert "scn-theirs" not in capsys.readouterr().out
    assert other.exists()  # theirs is still there for their own check
