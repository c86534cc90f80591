"""Fast tests of the Linux image builder: no apt, no VM. Real apt and QEMU are in scenarios/."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import stat
import struct
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab.errors import ImageError
from lab.images import LinuxImage, cached_linux_image, default_cache_dir, linux_image
from lab.images import apt as apt_module
from lab.images import linux as linux_module
from lab.images.apt import Resolved, kernel_package, package_closure, parse_depends, parse_policy
from lab.images.initramfs import newc_entry, write_initramfs
from lab.images.kernel_modules import module_name, parse_modules_dep, select_modules
from lab.images.libraries import check_links, elf_info, prune_libraries
from lab.images.manifest import (
    NOT_BUILDER,
    builder_hash,
    builder_modules,
    describe_changes,
    local_inputs,
    manifest_key,
    summarize_changes,
)
from lab.images.programs import build_programs
from lab.images.recipe import RECIPE_DIR, Recipe, with_variant
from lab.images.rootfs import busybox_links, is_stripped, unpack_tar
from lab.images.tree import guest_path, in_root

# Trimmed from real `apt-cache depends --recurse --no-recommends ...` output on Debian 12.
DEPENDS = """\
openiked
  Depends: adduser
  Depends: openssl
  Depends: libc6
  Depends: libssl3
iproute2
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libc6
  Depends: libselinux1
tcpdump
  Depends: adduser
  Depends: libc6
  Depends: libpcap0.8
libpcap0.8
  Depends: libc6
  Depends: libdbus-1-3
libdbus-1-3
  Depends: libc6
 |Depends: libsystemd0
  Depends: libelogind0
linux-image-cloud-amd64
  Depends: linux-image-6.1.0-56-cloud-amd64
linux-image-6.1.0-56-cloud-amd64
  Depends: kmod
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    dracut
    initramfs-tools
openssl
  Depends: libc6
  Depends: libssl3
  Depends: <no-provider-at-all>
adduser
  Depends: passwd
passwd
  Depends: libpam0g
libssl3
  Depends: libc6
libselinux1
  Depends: libc6
  Depends: libpcre2-8-0
libsystemd0
  Depends: libc6
libelogind0
  Depends: libc6
libc6
  Depends: libgcc-s1
libgcc-s1
  Depends: libc6
libpcre2-8-0
  Depends: libc6
debconf
cdebconf
<debconf-2.0>
<linux-initramfs-tool>
<no-provider-at-all>
libpam0g
  Depends: libc6
kmod
  Depends: libc6
initramfs-tools
dracut
"""


def test_parse_depends_groups_alternatives_and_expands_virtual_packages() -> None:
    graph = parse_depends(DEPENDS)
    assert graph["iproute2"] == [["debconf", "cdebconf", "debconf"], ["libc6"], ["libselinux1"]]
    assert graph["libdbus-1-3"] == [["libc6"], ["libsystemd0", "libelogind0"]]
    assert graph["openssl"][-1] == []  # a virtual package nobody provides
    assert "<debconf-2.0>" in graph  # apt lists virtual packages as blocks too; they are never chosen
    assert graph["debconf"] == []


def test_closure_drops_virtual_lines_excluded_packages_and_later_alternatives() -> None:
    graph = parse_depends(DEPENDS)
    closure = package_closure(graph, ["openiked", "iproute2", "tcpdump"], {"adduser", "debconf", "cdebconf"})
    assert closure == {
        "openiked",
        "iproute2",
        "tcpdump",
        "openssl",
        "libc6",
        "libgcc-s1",
        "libssl3",
        "libselinux1",
        "libpcre2-8-0",
        "libpcap0.8",
        "libdbus-1-3",
        "libsystemd0",
    }
    assert not any(name.startswith("<") for name in closure)


def test_closure_takes_the_next_alternative_when_the_first_is_excluded() -> None:
    graph = parse_depends(DEPENDS)
    closure = package_closure(graph, ["tcpdump"], {"adduser", "libsystemd0"})
    assert "libelogind0" in closure and "libsystemd0" not in closure


def test_kernel_package_is_the_metapackages_versioned_dependency() -> None:
    graph = parse_depends(DEPENDS)
    assert kernel_package(graph, "linux-image-cloud-amd64") == "linux-image-6.1.0-56-cloud-amd64"
    with pytest.raises(ImageError):
        kernel_package(graph, "openiked")


def test_parse_policy_reads_candidates() -> None:
    text = """\
openiked:
  Installed: 7.2-1
  Candidate: 7.2-1
  Version table:
 *** 7.2-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
busybox-static:
  Installed: (none)
  Candidate: 1:1.35.0-4+deb12u1+b1
gone:
  Installed: (none)
  Candidate: (none)
"""
    assert parse_policy(text) == {
        "openiked": "7.2-1",
        "busybox-static": "1:1.35.0-4+deb12u1+b1",
        "gone": None,
    }


# --- recipe and cache key ---------------------------------------------------------------------------


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "recipe"
    shutil.copytree(RECIPE_DIR, copy)
    return copy


def test_the_shipped_recipe_loads() -> None:
    recipe = Recipe.load(RECIPE_DIR)
    assert "openiked" in recipe.packages and {"busybox", "busybox-static"} <= set(recipe.packages)
    # The shell is the dynamic busybox (busybox-static's runs applets before PATH), the applets the static.
    assert recipe.rename["busybox"] == {"usr/bin/busybox": "usr/lib/busybox-sh/busybox"}
    assert recipe.symlinks["bin/sh"] == "/usr/lib/busybox-sh/busybox"
    assert recipe.kernel == "linux-image-cloud-amd64"
    assert {"af_key", "xfrm_user", "esp4", "nf_tables", "nft_log", "virtio_net", "virtio_rng"} <= set(
        recipe.modules
    )
    assert recipe.directories["etc/iked/private"] == 0o700
    assert recipe.cmdline.startswith("console=ttyS0")
    assert "ikedlab-linux ready" in recipe.init.read_text()


def test_the_recipe_builds_its_programs_statically_from_its_own_sources(
    recipe_dir: Path, tmp_path: Path
) -> None:
    """The reseed helper (images/linux/programs/rng-reseed.c): compiled by the host's gcc into the staged
    tree, static (it needs none of the image's libraries), its source part of the image's cache key; bad
    arguments are one line and exit 1 (a good seed is not tried: it would reseed this machine's RNG)."""
    recipe = Recipe.load(recipe_dir)
    assert recipe.programs == {"usr/local/sbin/rng-reseed": "programs/rng-reseed.c"}
    before = local_inputs(recipe)
    source = recipe_dir / "programs" / "rng-reseed.c"
    source.write_text(source.read_text() + "/* a comment is a change */\n")
    assert local_inputs(Recipe.load(recipe_dir)) != before
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on this machine (scripts/setup-host.sh installs it)")
    root = tmp_path / "root"
    assert build_programs(recipe, root) == ["usr/local/sbin/rng-reseed"]
    helper = root / "usr/local/sbin/rng-reseed"
    info = elf_info(helper.read_bytes())
    assert info is not None and info.interpreter is None and info.needed == ()
    for args in ([], ["zz" * 16], ["00" * 15], ["AB" * 16], ["00" * 65]):
        done = subprocess.run([helper, *args], capture_output=True, timeout=10)
        assert done.returncode == 1 and done.stderr.count(b"\n") == 1 and not done.stdout, (args, done)


def test_a_program_whose_source_is_not_the_recipes_is_refused(recipe_dir: Path) -> None:
    recipe = recipe_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("programs/rng-reseed.c", "../../etc/passwd.c"))
    with pytest.raises(
        ImageError, match=r"programs\.usr/local/sbin/rng-reseed: '\.\./\.\./etc/passwd\.c' is not"
    ):
        Recipe.load(recipe_dir)


def test_recipe_errors_name_every_problem(recipe_dir: Path) -> None:
    (recipe_dir / "recipe.yaml").write_text(
        "packages: openiked\nexclude: []\nkernel: k\ncmdline: c\nmodules: [af_key]\n"
        "directories: {tmp: '17x7'}\ncolour: blue\n"
    )
    with pytest.raises(ImageError) as caught:
        Recipe.load(recipe_dir)
    assert caught.value.message.endswith("packages: expected a list of names (and 2 more problems)")
    details = caught.value.details
    assert len(details) == 2 and "directories.tmp" in details[0] and "colour" in details[1]


def test_cache_key_changes_with_any_recipe_file_and_only_then(recipe_dir: Path) -> None:
    resolved = Resolved(
        {"openiked": "7.2-1"}, "linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", "6.1.0-56-cloud-amd64"
    )

    def key() -> str:
        return manifest_key({**local_inputs(Recipe.load(recipe_dir)), **resolved.manifest()})

    first = key()
    assert key() == first
    init = recipe_dir / "init"
    init.write_text(init.read_text() + "# a comment is a change\n")
    second = key()
    assert second != first
    (recipe_dir / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    assert key() != second
    other = Resolved(
        {"openiked": "7.2-2"}, resolved.kernel_package, resolved.kernel_version, resolved.kernel_release
    )
    assert manifest_key({**local_inputs(Recipe.load(recipe_dir)), **other.manifest()}) != key()


def test_a_variant_has_its_own_key_and_leaves_the_default_key_alone(recipe_dir: Path) -> None:
    resolved = Resolved({"openiked": "7.4-1"}, "linux-image-x", "1", "6.1.0-x")

    def key(variant: str | None = None) -> str:
        recipe = Recipe.load(recipe_dir)
        recipe = with_variant(recipe, variant) if variant else recipe
        return manifest_key({**local_inputs(recipe), **resolved.manifest()})

    default, trixie = key(), key("trixie")
    assert default != trixie
    variant_file = recipe_dir / "variants" / "trixie.yaml"
    variant_file.write_text(variant_file.read_text() + "# a change\n")
    assert key() == default and key("trixie") != trixie
    recipe = with_variant(Recipe.load(recipe_dir), "trixie")
    assert recipe.suite == "trixie" and "charon-systemd" in recipe.packages and "openiked" in recipe.packages
    assert "usr/sbin/swanctl" in recipe.require and "usr/sbin/iked" in recipe.require
    with pytest.raises(ImageError, match="unknown Linux image variant 'sid'"):
        with_variant(Recipe.load(recipe_dir), "sid")
    (recipe_dir / "variants" / "bad.yaml").write_text("suite: trixie\nadd_colour: [blue]\n")
    with pytest.raises(ImageError, match="bad.yaml: unknown field: add_colour"):
        with_variant(Recipe.load(recipe_dir), "bad")


def test_cache_key_covers_every_linux_builder_module_and_no_openbsd_one(tmp_path: Path) -> None:
    package = Path(linux_module.__file__).parent
    assert local_inputs(Recipe.load(RECIPE_DIR))["builder"] == builder_hash(package)
    copy = tmp_path / "images"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    hashed = [p.name for p in builder_modules(copy)]
    assert hashed == sorted(hashed)
    builder = "apt cache initramfs kernel_modules libraries linux manifest recipe rootfs tree".split()
    assert {f"{name}.py" for name in builder} <= set(hashed)
    assert set(hashed) | NOT_BUILDER == {p.name for p in copy.glob("*.py")}
    first = builder_hash(copy)
    assert builder_hash(copy) == first
    for name in [*hashed, "new_step.py"]:  # a module added later counts too
        source = copy / name
        before = source.read_text() if source.exists() else None
        source.write_text((before or "") + "# a comment is a change\n")
        assert builder_hash(copy) != first, name
        if before is None:
            source.unlink()
        else:
            source.write_text(before)
        assert builder_hash(copy) == first
    for name in sorted(NOT_BUILDER):  # the OpenBSD image's modules do not rebuild the Linux image
        (copy / name).write_text((copy / name).read_text() + "# a comment\n")
    assert builder_hash(copy) == first


def test_changes_are_described_per_entry() -> None:
    old = {"packages": {"libssl3": "3.0.1", "gone": "1"}, "recipe": {"init": "a"}, "format": 1}
    new = {"packages": {"libssl3": "3.0.2", "new": "2"}, "recipe": {"init": "a"}, "format": 2}
    assert describe_changes(old, new) == [
        "format: 1 -> 2",
        "packages: removed gone",
        "packages: libssl3 3.0.1 -> 3.0.2",
        "packages: added new 2",
    ]
    assert summarize_changes(old, new) == "format; packages (gone, libssl3, new)"


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IKEDLAB_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("IKEDLAB_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "ikedlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ikedlab"


class FakeApt:
    """Stands in for apt and the build: counts calls, so the tests see what the warm path skips."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, recipe_dir: Path) -> None:
        self.state = "lists-1"
        self.version = "7.2-1"
        self.resolves = 0
        self.builds = 0
        monkeypatch.setattr(linux_module, "RECIPE_DIR", recipe_dir)
        monkeypatch.setattr(linux_module, "apt_state", lambda suite="bookworm": self.state)
        monkeypatch.setattr(linux_module, "resolve", self.resolve)
        monkeypatch.setattr(linux_module, "assemble", self.assemble)
        monkeypatch.setattr(linux_module, "say", lambda message: None)

    def resolve(self, recipe: Recipe) -> Resolved:
        self.resolves += 1
        return Resolved({"openiked": self.version}, "linux-image-x", "1", "6.1.0-x")

    def assemble(self, recipe: Recipe, resolved: Resolved, debs: Path, out: Path) -> dict[str, int]:
        self.builds += 1
        out.mkdir(parents=True)
        (out / "vmlinuz").write_bytes(b"kernel")
        (out / "initrd.img").write_bytes(b"initrd")
        return {"initrd_bytes": 6, "unpacked_bytes": 6}


def test_warm_call_asks_apt_nothing_and_rebuilds_only_on_change(
    monkeypatch: pytest.MonkeyPatch, recipe_dir: Path, tmp_path: Path
) -> None:
    apt = FakeApt(monkeypatch, recipe_dir)
    cache = tmp_path / "cache"
    assert cached_linux_image(cache) is None

    first = linux_image(cache)
    assert (apt.resolves, apt.builds) == (1, 1)
    assert isinstance(first, LinuxImage) and first.kernel.read_bytes() == b"kernel"
    assert first.manifest["packages"] == {"openiked": "7.2-1"}
    assert cached_linux_image(cache) == first

    assert linux_image(cache) == first  # warm: no apt, no build
    assert (apt.resolves, apt.builds) == (1, 1)

    apt.state = "lists-2"  # apt-get update ran, same versions: re-resolve, no rebuild
    assert linux_image(cache) == first
    assert (apt.resolves, apt.builds) == (2, 1)
    assert linux_image(cache) == first  # and the new lists were remembered
    assert (apt.resolves, apt.builds) == (2, 1)

    apt.state, apt.version = "lists-3", "7.2-2"  # a new version: rebuild
    second = linux_image(cache)
    assert (apt.resolves, apt.builds) == (3, 2)
    assert second.key != first.key and first.kernel.exists()  # the old image is kept a while

    init = (recipe_dir / "init").read_text()
    (recipe_dir / "init").write_text(init + "\n")
    third = linux_image(cache)
    assert (apt.resolves, apt.builds) == (4, 3) and third.key != second.key

    # Another checkout with the earlier recipe takes its image back: no build.
    (recipe_dir / "init").write_text(init)
    assert linux_image(cache) == second and apt.builds == 3
    (recipe_dir / "init").write_text(init + "\n")
    assert linux_image(cache) == third and apt.builds == 3

    monkeypatch.setattr(linux_module, "IN_USE_GRACE", -1.0)  # as if every older image were long unused
    assert linux_image(cache, rebuild=True).key == third.key
    assert apt.builds == 4
    names = [p.name for p in (cache / "linux").iterdir() if not p.name.startswith(".")]
    assert names.count("current") == 1 and len(names) == 1 + linux_module.KEEP_IMAGES  # older ones go


def test_an_image_a_lab_was_just_handed_survives_other_checkouts_builds(
    monkeypatch: pytest.MonkeyPatch, recipe_dir: Path, tmp_path: Path
) -> None:
    apt = FakeApt(monkeypatch, recipe_dir)
    cache = tmp_path / "cache"
    mine = linux_image(cache)  # a lab got this one and is about to start QEMU on it
    for n in range(linux_module.KEEP_IMAGES + 1):  # other checkouts build theirs meanwhile
        apt.version, apt.state = f"7.2-{n + 10}", f"lists-{n + 10}"
        linux_image(cache)
    assert mine.kernel.exists() and mine.initrd.exists()
    monkeypatch.setattr(linux_module, "IN_USE_GRACE", -1.0)  # long after: nobody asked for it since
    apt.version, apt.state = "7.2-99", "lists-99"
    linux_image(cache)
    assert not mine.kernel.exists()


def test_a_truncated_cached_initrd_is_rebuilt_with_one_line(
    monkeypatch: pytest.MonkeyPatch, recipe_dir: Path, tmp_path: Path
) -> None:
    apt = FakeApt(monkeypatch, recipe_dir)
    said: list[str] = []
    monkeypatch.setattr(linux_module, "say", said.append)
    cache = tmp_path / "cache"
    first = linux_image(cache)
    first.initrd.write_bytes(b"ini")  # truncated: it would boot into a kernel panic
    said.clear()
    second = linux_image(cache)
    assert apt.builds == 2 and second.initrd.read_bytes() == b"initrd"
    assert said[:1] == [
        f"The cached Linux image is damaged ({first.initrd} is 3 bytes, the build wrote 6): rebuilding it"
    ]


def test_a_failed_build_leaves_the_previous_image(
    monkeypatch: pytest.MonkeyPatch, recipe_dir: Path, tmp_path: Path
) -> None:
    apt = FakeApt(monkeypatch, recipe_dir)
    cache = tmp_path / "cache"
    first = linux_image(cache)

    def broken(recipe: Recipe, resolved: Resolved, debs: Path, out: Path) -> dict[str, int]:
        out.mkdir(parents=True)
        (out / "vmlinuz").write_bytes(b"half")
        raise ImageError("interrupted")

    monkeypatch.setattr(linux_module, "assemble", broken)
    apt.version = "7.2-9"
    apt.state = "lists-2"
    with pytest.raises(ImageError):
        linux_image(cache)
    assert cached_linux_image(cache) == first and first.kernel.read_bytes() == b"kernel"
    assert not [p for p in (cache / "linux").iterdir() if p.name.startswith(".build-")]


def _apt_show(name: str, version: str, content: bytes) -> str:
    """An `apt-cache show --no-all-versions NAME=VERSION` record as apt 2.6 prints it on Debian 12 (read
    here for netbase 6.4), with the SHA-256 of `content`."""
    sha = hashlib.sha256(content).hexdigest()
    return (
        f"Package: {name}\nVersion: {version}\nInstalled-Size: 36\nArchitecture: all\n"
        f"Filename: pool/main/n/{name}/{name}_{version}_all.deb\nSize: {len(content)}\n"
        f"MD5sum: 814246d2f01d3238bbd3ef8c15c57076\nSHA256: {sha}\n\n"
    )


def _apt_cache_only(records: str, downloads: list[list[str]]):  # noqa: ANN202
    def run(argv: list[object], **kwargs: object) -> SimpleNamespace:
        args = [str(a) for a in argv]
        if "download" in args:
            downloads.append(args)
            for pin in args[args.index("download") + 1 :]:
                name, version = pin.split("=")
                (Path(str(kwargs["cwd"])) / f"{name}_{version}_all.deb").write_bytes(b"deb")
            return SimpleNamespace(stdout=b"")
        assert "show" in args, f"only apt-cache show may run: {args}"
        return SimpleNamespace(stdout=records.encode())

    return run


def test_debs_already_downloaded_are_reused_without_a_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    downloads: list[list[str]] = []
    records = _apt_show("busybox-static", "1:1.35.0-4+deb12u1+b1", b"deb") + _apt_show(
        "netbase", "6.4", b"deb"
    )
    monkeypatch.setattr(apt_module, "run", _apt_cache_only(records, downloads))
    monkeypatch.setattr(apt_module, "APT_ARCHIVES", tmp_path / "none")
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb").write_bytes(b"deb")
    (debs / "netbase_6.4_all.deb").write_bytes(b"deb")
    (debs / "netbase_6.3_all.deb").write_bytes(b"old")
    found = apt_module.fetch_debs({"busybox-static": "1:1.35.0-4+deb12u1+b1", "netbase": "6.4"}, debs)
    assert found == {
        "busybox-static": debs / "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb",
        "netbase": debs / "netbase_6.4_all.deb",
    }
    assert downloads == []


def test_a_cached_deb_that_is_not_what_apt_verified_is_removed_and_downloaded_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    downloads: list[list[str]] = []
    monkeypatch.setattr(apt_module, "run", _apt_cache_only(_apt_show("netbase", "6.4", b"deb"), downloads))
    monkeypatch.setattr(apt_module, "APT_ARCHIVES", tmp_path / "none")
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "netbase_6.4_all.deb").write_bytes(b"planted: a hard link to /etc/shadow")
    found = apt_module.fetch_debs({"netbase": "6.4"}, debs)
    assert len(downloads) == 1 and downloads[0][-1] == "netbase=6.4"
    assert found["netbase"].read_bytes() == b"deb"


def test_a_copied_cache_is_used_where_there_is_no_apt(
    monkeypatch: pytest.MonkeyPatch, recipe_dir: Path, tmp_path: Path
) -> None:
    apt = FakeApt(monkeypatch, recipe_dir)
    cache = tmp_path / "cache"
    first = linux_image(cache)
    apt.state = "no lists here"
    monkeypatch.setattr(linux_module, "have_apt", lambda: False)
    assert linux_image(cache) == first
    assert (apt.resolves, apt.builds) == (1, 1)


# --- unpacking ----------------------------------------------------------------------------------------


def test_guest_path_merges_usr() -> None:
    assert guest_path("./bin/ip") == "usr/bin/ip"
    assert guest_path("./sbin/modprobe") == "usr/sbin/modprobe"
    assert guest_path("./lib64/ld-linux-x86-64.so.2") == "usr/lib64/ld-linux-x86-64.so.2"
    assert guest_path("./usr/sbin/iked") == "usr/sbin/iked"
    assert guest_path("./etc/iked.conf") == "etc/iked.conf"
    assert guest_path("./") is None and guest_path(".") is None


def test_is_stripped_covers_the_path_and_everything_below() -> None:
    patterns = ("usr/share/doc", "usr/lib/*/gconv")
    assert is_stripped("usr/share/doc", patterns)
    assert is_stripped("usr/share/doc/openiked/copyright", patterns)
    assert is_stripped("usr/lib/x86_64-linux-gnu/gconv/UTF-16.so", patterns)
    assert not is_stripped("usr/share/docs", patterns)
    assert not is_stripped("usr/share", patterns)


def make_tar(entries: list[tuple[str, str, str | bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                data = value if isinstance(value, bytes) else value.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(value)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(value)
                tar.addfile(info)
    return buffer.getvalue()


def merged_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for top in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / top).mkdir(parents=True)
        (root / top).symlink_to(f"usr/{top}")
    return root


def test_unpack_merges_usr_strips_docs_and_keeps_links_working(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    data = make_tar(
        [
            ("dir", "./", ""),
            ("dir", "./bin/", ""),
            ("file", "./bin/kmod", "kmod"),
            ("dir", "./sbin/", ""),
            ("sym", "./sbin/modprobe", "/bin/kmod"),
            ("sym", "./sbin/lsmod", "../bin/kmod"),  # relative and climbing out of a merged dir
            ("hard", "./sbin/insmod", "./bin/kmod"),
            ("dir", "./usr/share/doc/kmod/", ""),
            ("file", "./usr/share/doc/kmod/copyright", "text"),
        ]
    )
    unpack_tar(data, root, ("usr/share/doc",))
    assert (root / "usr/bin/kmod").read_text() == "kmod"
    assert in_root(root, "/sbin/modprobe") == root / "usr/bin/kmod"
    assert in_root(root, "sbin/lsmod") == root / "usr/bin/kmod"
    assert (root / "usr/sbin/insmod").read_text() == "kmod"
    assert not (root / "usr/share/doc").exists()
    assert (root / "bin").is_symlink()


def test_unpack_never_writes_through_a_link_to_the_host(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (root / "usr/lib/ssl").mkdir(parents=True)
    (root / "usr/lib/ssl/certs").symlink_to(outside)  # as openssl's /usr/lib/ssl/certs -> /etc/ssl/certs
    with pytest.raises(ImageError, match="outside the image tree"):
        unpack_tar(make_tar([("file", "./usr/lib/ssl/certs/evil.pem", "x")]), root, ())
    with pytest.raises(ImageError, match="outside the image tree"):
        unpack_tar(make_tar([("file", "./../escape", "x")]), root, ())
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape").exists()


def test_unpack_never_copies_a_host_file_through_a_hard_link(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    secret = tmp_path / "shadow"
    secret.write_text("root:secret")
    planted = make_tar([("sym", "./usr/share/x", str(secret)), ("hard", "./usr/share/y", "./usr/share/x")])
    with pytest.raises(ImageError, match="a hard link to ./usr/share/x, which leads outside the image tree"):
        unpack_tar(planted, root, ())
    assert not (root / "usr/share/y").exists()


def test_in_root_keeps_absolute_links_inside_and_detects_loops(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    (root / "usr/bin/busybox").write_text("bb")
    (root / "usr/bin/sh").symlink_to("/usr/bin/busybox")
    (root / "usr/bin/a").symlink_to("b")
    (root / "usr/bin/b").symlink_to("a")
    assert in_root(root, "/bin/sh") == root / "usr/bin/busybox"
    assert in_root(root, "bin/../bin/sh") == root / "usr/bin/busybox"
    assert in_root(root, "usr/bin/a") is None
    assert in_root(root, "usr/bin/missing") is None


def test_busybox_links_never_shadow_real_programs(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    (root / "usr/bin/busybox").write_text("bb")
    (root / "usr/bin/ip").write_text("iproute2")
    made = busybox_links(root, ["linuxrc", "bin/sh", "sbin/ip", "usr/bin/sha256sum", "bin/busybox"])
    assert made == ["usr/bin/sh", "usr/bin/sha256sum"]
    assert not (root / "usr/sbin/ip").exists()  # /usr/sbin comes first in PATH: it would hide /usr/bin/ip
    assert in_root(root, "bin/sh") == root / "usr/bin/busybox"
    assert not (root / "linuxrc").exists()


# --- ELF and libraries --------------------------------------------------------------------------------


def make_elf(needed: list[str], interpreter: str | None = None, runpath: str | None = None) -> bytes:
    """A minimal ELF64 file with a dynamic section (and a PT_INTERP when given); enough for elf_info."""
    strtab = b"\0"
    entries = []
    for tag, name in [*((1, n) for n in needed), *([(29, runpath)] if runpath else [])]:
        entries.append((tag, len(strtab)))
        strtab += name.encode() + b"\0"
    dynamic = b"".join(struct.pack("<qQ", tag, off) for tag, off in entries) + struct.pack("<qQ", 0, 0)
    interp = (interpreter.encode() + b"\0") if interpreter else b""
    phnum = 1 if interp else 0
    phoff = 64
    interp_off = phoff + 56 * phnum
    strtab_off = interp_off + len(interp)
    dynamic_off = strtab_off + len(strtab)
    shoff = dynamic_off + len(dynamic)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, phoff, shoff, 0, 64, 56, phnum, 64, 3, 0)
    program = struct.pack("<IIQQQQQQ", 3, 4, interp_off, 0, 0, len(interp), len(interp), 1) if interp else b""
    sections = (
        bytes(64)
        + struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0)
        + struct.pack("<IIQQQQIIQQ", 0, 6, 0, 0, dynamic_off, len(dynamic), 1, 0, 8, 16)
    )
    return header + program + interp + strtab + dynamic + sections


def test_elf_info_reads_interpreter_and_needed() -> None:
    info = elf_info(make_elf(["libc.so.6", "libssl.so.3"], "/lib64/ld-linux-x86-64.so.2"))
    assert info is not None
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed == ("libc.so.6", "libssl.so.3")
    assert elf_info(b"#!/bin/sh\n") is None


def test_elf_info_on_a_real_program() -> None:
    sh = Path("/bin/sh").resolve()
    info = elf_info(sh.read_bytes())
    if info is None:
        pytest.skip("/bin/sh is not a 64-bit little-endian ELF here")
    assert info.interpreter is None or info.interpreter.startswith("/")


def test_check_links_finds_missing_and_unused_libraries(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "usr/lib64/ld.so").write_bytes(make_elf([]))
    (root / "usr/bin/prog").write_bytes(make_elf(["liba.so.1"], "/lib64/ld.so"))
    (root / "usr/bin/broken").write_bytes(make_elf(["libgone.so.9"], "/lib64/ld.so"))
    (libdir / "liba.so.1.0").write_bytes(make_elf(["libb.so.1"]))
    (libdir / "liba.so.1").symlink_to("liba.so.1.0")
    (libdir / "libb.so.1").write_bytes(make_elf([]))
    (libdir / "libunused.so.2").write_bytes(make_elf([]))
    (libdir / "libdlopened.so.1").write_bytes(make_elf([]))
    (libdir / "plugins").mkdir()
    (libdir / "plugins/plugin.so").write_bytes(make_elf(["libb.so.1"]))
    (root / "usr/lib/ipsec").mkdir()  # strongSwan's private libraries, found through DT_RUNPATH
    (root / "usr/lib/ipsec/libcharon.so.0").write_bytes(make_elf([]))
    (root / "usr/bin/charon").write_bytes(make_elf(["libcharon.so.0"], "/lib64/ld.so", "/usr/lib/ipsec"))
    result = check_links(root, required=["usr/bin/prog", "usr/sbin/absent"], keep=["libdlopened.so.1"])
    assert result.problems == [
        "usr/bin/broken needs libgone.so.9 (not in the image)",
        "usr/sbin/absent is not in the image",
    ]
    assert result.unused == ["usr/lib/x86_64-linux-gnu/libunused.so.2"]
    prune_libraries(root, result.unused)
    assert not (libdir / "libunused.so.2").exists() and (libdir / "liba.so.1").exists()


# --- kernel modules -----------------------------------------------------------------------------------

MODULES_DEP = """\
kernel/net/key/af_key.ko: kernel/net/xfrm/xfrm_algo.ko
kernel/net/xfrm/xfrm_algo.ko:
kernel/net/ipv4/esp4.ko: kernel/net/xfrm/xfrm_algo.ko
kernel/crypto/ghash-generic.ko:
kernel/net/netfilter/nft_log.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nft_xfrm.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/drivers/char/hw_random/virtio-rng.ko:
"""


def test_select_modules_follows_dependencies_names_globs_and_builtins() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    paths, unknown = select_modules(
        ["af_key", "ghash_generic", "virtio_rng", "aes_generic", "kernel/net/netfilter/nft_*", "nope"],
        deps,
        ["kernel/crypto/aes_generic.ko"],
    )
    assert unknown == ["nope"]
    assert paths == sorted(
        [
            "kernel/net/key/af_key.ko",
            "kernel/net/xfrm/xfrm_algo.ko",
            "kernel/crypto/ghash-generic.ko",
            "kernel/drivers/char/hw_random/virtio-rng.ko",
            "kernel/net/netfilter/nft_log.ko",
            "kernel/net/netfilter/nft_xfrm.ko",
            "kernel/net/netfilter/nf_tables.ko",
            "kernel/net/netfilter/nfnetlink.ko",
        ]
    )
    assert module_name("kernel/crypto/sha512-generic.ko.xz") == "sha512_generic"


# --- the initramfs --------------------------------------------------------------------------------------


def read_newc(data: bytes) -> list[tuple[str, int, int, bytes, tuple[int, int]]]:
    """(name, mode, mtime, data, rdev) of each entry of a newc archive, trailer excluded."""
    entries: list[tuple[str, int, int, bytes, tuple[int, int]]] = []
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[data_start : data_start + filesize]
        offset = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            return entries
        assert fields[2] == 0 and fields[3] == 0  # owned by root
        entries.append((name, fields[1], fields[5], body, (fields[9], fields[10])))


def test_initramfs_is_a_sorted_reproducible_newc_archive(tmp_path: Path) -> None:
    root = merged_root(tmp_path)
    (root / "init").write_text("#!/bin/sh\n")
    (root / "init").chmod(0o755)
    (root / "usr/bin/busybox").write_bytes(b"\x7fELF...")
    (root / "usr/bin/sh").symlink_to("/usr/bin/busybox")
    (root / "dev").mkdir()
    (root / "etc/iked/private").mkdir(parents=True)
    (root / "etc/iked/private").chmod(0o700)

    first, second = io.BytesIO(), io.BytesIO()
    write_initramfs(root, first)
    (root / "init").touch()  # times do not matter
    write_initramfs(root, second)
    assert first.getvalue() == second.getvalue()

    entries = read_newc(gzip.decompress(first.getvalue()))
    names = [e[0] for e in entries]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert names.index("dev") < names.index("dev/console")
    by_name = {e[0]: e for e in entries}
    assert stat.S_ISCHR(by_name["dev/console"][1]) and by_name["dev/console"][4] == (5, 1)
    assert by_name["init"][1] == stat.S_IFREG | 0o755 and by_name["init"][3] == b"#!/bin/sh\n"
    assert stat.S_ISLNK(by_name["bin"][1]) and by_name["bin"][3] == b"usr/bin"
    assert by_name["usr/bin/sh"][3] == b"/usr/bin/busybox"
    assert stat.S_IMODE(by_name["etc/iked/private"][1]) == 0o700
    assert "usr/bin/sh" not in [n for n in names if n.startswith("bin/")]  # bin/ is not walked twice
    assert {e[2] for e in entries} == {0}


def test_newc_entries_are_padded_to_four_bytes() -> None:
    for name in ("a", "ab", "abc", "abcd"):
        for body in (b"", b"x", b"xyz", b"wxyz"):
            assert len(newc_entry(name, stat.S_IFREG | 0o644, 1, body)) % 4 == 0


@pytest.mark.skipif(not Path("/bin/busybox").is_file(), reason="busybox-static is not installed on this host")
def test_a_shell_that_prefers_its_applets_fails_the_build(tmp_path: Path) -> None:
    """Debian's busybox-static (the host's, FEATURE_SH_STANDALONE): its `sh -c 'ip'` runs the applet, not
    PATH's ip, so the guide's commands would not reach scripts. The build refuses such an image."""
    from lab.images.rootfs import check_shell_runs_path_first

    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", tmp_path / "usr/bin/busybox")
    (tmp_path / "usr/bin/sh").symlink_to("/usr/bin/busybox")
    with pytest.raises(ImageError, match="runs busybox applets before PATH"):
        check_shell_runs_path_first(tmp_path)


def test_two_packages_shipping_one_path_both_land(tmp_path: Path) -> None:
    """busybox and busybox-static both ship /bin/busybox: the recipe's `rename:` moves one aside as it is
    unpacked, so the shell (dynamic) and the applets (static) are both in the image."""
    root = merged_root(tmp_path)
    unpack_tar(
        make_tar([("file", "./bin/busybox", "dynamic")]), root, (), {"usr/bin/busybox": "usr/lib/sh/busybox"}
    )
    unpack_tar(make_tar([("file", "./bin/busybox", "static")]), root, ())
    assert (root / "usr/lib/sh/busybox").read_text() == "dynamic"
    assert (root / "usr/bin/busybox").read_text() == "static"


def test_a_rename_for_a_package_the_recipe_does_not_have(recipe_dir: Path) -> None:
    path = recipe_dir / "recipe.yaml"
    path.write_text(path.read_text().replace("rename:\n  busybox:", "rename:\n  busybox-typo:"))
    with pytest.raises(ImageError, match="rename.busybox-typo: not one of packages"):
        Recipe.load(recipe_dir)
