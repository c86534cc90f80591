"""From a bug report to a lasting check: `ikedlab case NAME --from BUNDLE` writes scenarios/cases/NAME/.

The bundle (`ikedlab bundle`) is read as `up --from` reads it (lab.replay: never extracted, every member and
manifest field checked). The case it becomes:
- each gateway's template is the bundle's own iked.conf for it (`user/GATEWAY.iked.conf`), with the guide
  lab's addresses and networks turned into template variables ({{ init.address }}, {{ resp.lan }}) and
  jinja2's own delimiters escaped; a literal `psk "…"` the same on both sides becomes the case's secret
  (fresh for every run, blanked in evidence). A gateway without a file of its own gets the guide's iked.conf;
- the steps are the healthy tunnel's (established on both gateways, then the LANs ping each other through
  IPsec), so the case passes once the bug is fixed;
- when the bundle reproduced an iked failure (`up --expect-failure`), the case carries it as a known failure
  on every cell: a strict xfail while iked still says that, a red case the day it stops.
Read it, give `reference.bug` its URL, and run it: `make catalogue CASES=NAME`.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab import gate
from lab.catalogue import CASES_DIR
from lab.catalogue.case import CaseError, load_case
from lab.catalogue.context import lab_context
from lab.catalogue.steps import REGEX_CHARS
from lab.errors import LabError
from lab.placement import load_topology
from lab.replay import MANIFEST, parse_manifest, read_members

GUIDE_TEMPLATE = """\
# The guide's iked.conf for {{ me.name }} (OpenBSD's site-to-site guide), as ikedlab's provisioning writes it.
init="{{ init.address }}"
resp="{{ resp.address }}"
initlan="{{ init.lan }}"
resplan="{{ resp.lan }}"

ikev2 '{{ me.name }}' {{ me.mode }} esp \\
\tfrom ${{ me.name }}lan to ${{ peer.name }}lan \\
\tfrom ${{ me.name }}lan to ${{ peer.name }} \\
\tlocal ${{ me.name }} peer ${{ peer.name }} \\
\tsrcid {{ me.srcid }}
"""
_PSK = re.compile(r'\bpsk\s+"([^"\n]*)"')
#: iked's words for a tunnel that will not come up, the known failure's match when the bundle's own pattern
#: is too long to keep (ikedlab's own "any iked failure" is 237 characters).
_ANY_FAILURE = r"authentication failed|no proposal chosen|NO_PROPOSAL_CHOSEN|policy mismatch|gave up"


def _templated(text: str, replacements: list[tuple[str, str]]) -> str:
    """A user's iked.conf as a template: jinja2's delimiters escaped first, then the lab's values named."""
    text = re.sub(r"\{(?=[{%#])", "{{ '{' }}", text)
    for value, variable in replacements:
        text = re.sub(rf"(?<![\w.:/]){re.escape(value)}(?![\w.:/]|\.\d)", variable, text)
    return text


def case_from_bundle(archive: Path, name: str, cases: Path = CASES_DIR) -> Path:
    """Write the case folder `cases/NAME` from the bundle `archive`; refuse to overwrite one."""
    gate.CASE.check(name, "NAME")
    folder = cases / name
    if folder.exists():
        raise LabError(f"{folder} exists: pick another name, or remove it first")
    members = read_members(archive)
    manifest = parse_manifest(members[MANIFEST])
    guide = load_topology(None)
    gateways = [g.name for g in guide.gateways]
    strangers = [h for h in manifest.iked_conf if h not in gateways]
    if strangers:
        raise LabError(
            f"{archive}: iked.conf for {', '.join(strangers)}, which the guide's lab (the catalogue's) has "
            f"not: a case configures its gateways {', '.join(gateways)}"
        )
    context = lab_context(guide, {})
    replacements: list[tuple[str, str]] = []
    for view in context.hosts.values():
        if view.lan:
            replacements.append((view.lan, f"{{{{ {view.name}.lan }}}}"))
        replacements.append((view.address, f"{{{{ {view.name}.address }}}}"))
    texts = {}
    for host, member in manifest.iked_conf.items():
        try:
            texts[host] = gate.decode(members[member], gate.IKED_CONF_BYTES)
        except KeyError:
            raise LabError(f"{archive}: the manifest names {member}, which the bundle lacks") from None
        except gate.GateError as e:
            raise LabError(f"{archive}: {member}: {e.message}") from None
    psks = {m for text in texts.values() for m in _PSK.findall(text)}
    shared_psk = len(texts) == len(gateways) and len(psks) == 1
    templates = {}
    for host in gateways:
        if host not in texts:
            templates[f"{host}.iked.conf.j2"] = GUIDE_TEMPLATE
            continue
        text = _templated(texts[host], replacements)
        if shared_psk:
            text = _PSK.sub('psk "{{ secrets.psk }}"', text)
        templates[f"{host}.iked.conf.j2"] = f"# From {archive.name}: {host}'s own iked.conf.\n{text}"
    made = "; ".join(f"{k} {v}" for k, v in manifest.ikedlab.items()) or "an unknown ikedlab"
    lines = [
        "description: >-",
        f"  Made from the bug report {gate.shown(archive.name)} ({made}): the gateways' own",
        "  configurations; the tunnel must come up and carry the LANs' traffic.",
        "reference:",
        f"  bug: {_yaml_quoted(archive.name)}  # the report's URL",
    ]
    if shared_psk:
        lines.append("secrets: [psk]  # the bundle's PSK, replaced by a fresh one for every run")
    lines += [
        "steps:",
        "  - tunnel: established",
        "  - ping: {from: initlan, to: resplan, count: 3, tunnel: both, capture_at: init}",
    ]
    if manifest.expect_failure:
        words = manifest.expect_failure
        match = words if len(words) <= REGEX_CHARS and _compiles(words) else _ANY_FAILURE
        lines += [
            "known:",
            '  - cells: ["*"]',
            f"    reason: {_yaml_quoted('the failure the report shows: iked said /' + words + '/')}",
            f"    reference: {_yaml_quoted(archive.name)}",
            f"    match: {_yaml_quoted(match)}",
        ]
    folder.mkdir(parents=True)
    try:
        (folder / "case.yaml").write_text("\n".join(lines) + "\n")
        for file, text in templates.items():
            (folder / file).write_text(text)
        load_case(folder)  # what was written reads back as a case, or nothing is left
    except (CaseError, OSError):
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        raise
    return folder


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _yaml_quoted(text: str) -> str:
    """A YAML single-quoted scalar (a quote is doubled, nothing else is special); control characters out."""
    return "'" + re.sub(r"[\x00-\x1f\x7f]", " ", text).replace("'", "''") + "'"
