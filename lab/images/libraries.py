"""Shared libraries in the staged tree: ELF files read without tools, every program's DT_NEEDED followed by
soname as ld.so would, and the libraries nothing links to pruned."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ImageError, first_and_more
from lab.images.tree import guest_path, in_root, walk


@dataclass(frozen=True)
class ElfInfo:
    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...] = ()  # DT_RUNPATH / DT_RPATH directories (strongSwan's /usr/lib/ipsec)


def elf_info(data: bytes) -> ElfInfo | None:
    """The program interpreter and DT_NEEDED names of a 64-bit little-endian ELF file; None otherwise."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    interpreter = None
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            interpreter = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    runpath: list[str] = []
    for _, sh_type, _, _, offset, size, link, _ in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for entry in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, entry)
            if tag == 0:
                break
            if tag in (1, 15, 29):  # DT_NEEDED, DT_RPATH, DT_RUNPATH
                start = strtab + value
                text = data[start : data.index(b"\0", start)].decode()
                if tag == 1:
                    needed.append(text)
                else:
                    runpath += [d for d in text.split(":") if d.startswith("/")]
    return ElfInfo(interpreter, tuple(needed), tuple(runpath))


def library_dirs(root: Path) -> list[str]:
    """Where the guest's ld.so looks for libraries (its ld.so.conf.d plus the defaults), as tree paths."""
    dirs = ["usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64"]
    for conf in sorted((root / "etc/ld.so.conf.d").glob("*.conf")):
        for line in conf.read_text().splitlines():
            if line.startswith("/") and (rel := guest_path(line.strip())) and rel not in dirs:
                dirs.append(rel)
    return dirs


@dataclass(frozen=True)
class LinkCheck:
    problems: list[str]  # e.g. "usr/sbin/arpd needs libdb-5.3.so (not in the image)"
    unused: list[str]  # shared libraries nothing in the image links to


def check_links(root: Path, required: Iterable[str] = (), keep: Iterable[str] = ()) -> LinkCheck:
    """Follow every program's DT_NEEDED libraries, by soname through the library directories, as ld.so
    would. Programs are all ELF files except the shared libraries at the top of a library directory,
    so plugins in subdirectories (ossl-modules/legacy.so) count as programs. `keep` names libraries
    loaded with dlopen (sonames), which no DT_NEEDED mentions."""
    libdirs = library_dirs(root)
    elves: dict[str, ElfInfo] = {}
    for path in walk(root):
        if path.is_symlink() or not path.is_file() or path.suffix == ".ko":
            continue
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        if info := elf_info(path.read_bytes()):
            elves[path.relative_to(root).as_posix()] = info
    libraries = {rel for rel in elves if rel.rsplit("/", 1)[0] in libdirs}
    problems = [f"{rel} is not in the image" for rel in required if in_root(root, rel) is None]
    start = [(rel, rel) for rel in sorted(elves) if rel not in libraries]
    start += [(f"{d}/{name}", "keep") for name in keep for d in libdirs if in_root(root, f"{d}/{name}")]
    found = _follow(root, start, libdirs, elves)
    return LinkCheck(sorted(set(problems + found.problems)), sorted(libraries - found.real))


@dataclass(frozen=True)
class Closure:
    looked_up: dict[str, str]  # each path a program or ld.so asks for (a soname link too) -> the real file
    real: set[str]  # the real files among them
    problems: list[str]  # what is asked for and not there


def closure(root: Path, programs: Iterable[str]) -> Closure:
    """Everything `programs` (guest paths) need to run: themselves, their loader, their libraries."""
    return _follow(root, [(guest_path(p) or p, p) for p in programs], library_dirs(root), None)


def _follow(
    root: Path, todo: list[tuple[str, str]], libdirs: list[str], elves: dict[str, ElfInfo] | None
) -> Closure:
    """Walk (path, who needs it) pairs through interpreters and DT_NEEDED sonames as ld.so would. `elves`:
    the tree's ELF files already read (None: read each one as it is reached)."""
    looked_up: dict[str, str] = {}
    used: set[str] = set()
    problems: list[str] = []
    while todo:
        rel, user = todo.pop()
        found = in_root(root, rel)
        if found is None:
            problems.append(f"{user} needs {rel} (not in the image)")
            continue
        real = found.relative_to(root).as_posix()
        looked_up[rel] = real
        if real in used:
            continue
        used.add(real)
        info = elves.get(real) if elves is not None else elf_info(found.read_bytes())
        if info is None:
            continue
        if info.interpreter:
            todo.append((guest_path(info.interpreter) or info.interpreter, real))
        search = [*(p for d in info.runpath if (p := guest_path(d))), *libdirs]
        for soname in info.needed:
            lib = next((f"{d}/{soname}" for d in search if in_root(root, f"{d}/{soname}")), None)
            if lib is None:
                problems.append(f"{real} needs {soname} (not in the image)")
            else:
                todo.append((lib, real))
    return Closure(looked_up, used, problems)


def copy_closure(root: Path, programs: Iterable[str], out: Path) -> list[str]:
    """Copy what `programs` need to run (see `closure`) from the tree `root` to `out`, at the same paths,
    each path as a plain file (a soname link becomes a copy of its library). Returns the paths copied."""
    found = closure(root, programs)
    if found.problems:
        message, others = first_and_more(found.problems)
        raise ImageError(f"cannot keep {', '.join(programs)}: {message}", details=others)
    for rel, real in sorted(found.looked_up.items()):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / real, out / rel)
    return sorted(found.looked_up)


def host_argv(root: Path, program: str) -> list[str]:
    """The argv that runs `program` (a guest path) of the tree `root` on this host, with the tree's own
    loader and libraries: a trixie program needs trixie's glibc (2.41), which a bookworm host lacks.
    --inhibit-cache: never the host's /etc/ld.so.cache, so no host library stands in for a missing one."""
    path = in_root(root, guest_path(program) or program)
    info = elf_info(path.read_bytes()) if path else None
    if path is None or info is None:
        raise ImageError(f"{program} is not a program of the image at {root}")
    if info.interpreter is None:
        return [str(path)]  # static
    loader = in_root(root, guest_path(info.interpreter) or info.interpreter)
    if loader is None:
        raise ImageError(f"{program} needs {info.interpreter}, which is not in the image at {root}")
    dirs = [*(p for d in info.runpath if (p := guest_path(d))), *library_dirs(root)]
    found = ":".join(str(root / d) for d in dirs if (root / d).is_dir())
    return [str(loader), "--inhibit-cache", "--library-path", found, str(path)]


def prune_libraries(root: Path, unused: Iterable[str]) -> int:
    """Delete unused libraries and the symlinks left pointing at them; returns the bytes freed."""
    freed = 0
    for rel in unused:
        freed += (root / rel).stat().st_size
        (root / rel).unlink()
    for d in library_dirs(root):
        if (root / d).is_dir() and not (root / d).is_symlink():
            for link in (root / d).iterdir():
                if link.is_symlink() and in_root(root, link.relative_to(root).as_posix()) is None:
                    link.unlink()
    return freed
