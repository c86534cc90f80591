"""Swap a gateway's iked.conf in a running lab, without a new `up`.

The new file is written and judged by `iked -n` first (a rejected file is reported with iked's own line and
the running iked is left alone). Then iked restarts on every gateway, passive side first — on Linux a
gateway whose peer restarted alone keeps its dead SAs (see docs/known-limits.md) — and ikedlab waits for the
tunnel, or reports the line of iked's log that says why it will not come up.
"""

from __future__ import annotations

from lab import redact
from lab.errors import LabError, ProvisionError
from lab.lab import Lab
from lab.provision import IKED_OK, restart_tunnel, write_ike_conf
from lab.settings import SA_TIMEOUT


def reconfigure(lab: Lab, host_name: str, ike_conf: str, timeout: float = SA_TIMEOUT) -> None:
    redact.register_config(ike_conf)  # its PSKs are the lab's secrets before anything runs
    if not lab.hosts:
        lab.attach()
    gateways = lab.gateways()
    host = lab.host(host_name)
    if host not in gateways:
        raise LabError(
            f"{host_name} is not an IPsec gateway (gateways: {', '.join(g.name for g in gateways)})"
        )
    # iked judges the new file beside the old one: a rejected file leaves the gateway as it was.
    candidate = f"{host.platform.ike_conf}.ikedlab-new"
    host.write_file(candidate, ike_conf, 0o600)
    verdict = host.run(f"{host.platform.ike_check_command(candidate)}; rm -f {candidate}")
    if not IKED_OK.search(verdict.output):
        last = verdict.output.strip().splitlines()[-1] if verdict.output.strip() else "no output"
        raise ProvisionError(f"{host_name}: iked rejects the new iked.conf: {last}")
    write_ike_conf(host, ike_conf)
    lab.record_ike_conf(host_name, ike_conf)
    (lab.run_dir / "configs").mkdir(parents=True, exist_ok=True)
    (lab.run_dir / "configs" / f"{host_name}.iked.conf").write_text(redact.scrub(ike_conf))
    restart_tunnel(gateways, timeout)  # a tunnel iked gives up on fails at once, with iked's own line
