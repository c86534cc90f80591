"""lab.py without VMs: `up` on a fake hypervisor and fake consoles boots every host on its platform's media,
runs the plan and saves its state; a failing `up` leaves nothing behind; `attach` resolves platforms again."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from fakes import FakeConsole, recorded

from lab import base, cli, guests, qemu_files, snapshot, status
from lab.blueprint import UpRequest
from lab.errors import ConsoleTimeout, HypervisorError, IkedConfError, LabError, ProvisionError
from lab.hypervisor import Accel, LabDomain, domain_name
from lab.lab import Lab
from lab.placement import load_topology
from lab.platforms import BootMedia, Platform, platform_names
from lab.qemu_files import QemuUser


class FakeHypervisor:
    def __init__(self):
        self.specs = {}
        self.running: set[str] = set()
        self.saved = {}  # domain -> spec; a save file names its domain, as a real one holds its definition
        self.calls: list[str] = []

    def version(self):
        return "libvirt 9000000 qemu 7002000"

    def suspend(self, name):
        self.calls.append(f"suspend {self.specs[name].host}")
        self.running.discard(name)

    def save(self, name, path):
        self.calls.append(f"save {self.specs[name].host}")
        path.write_text(name)
        self.saved[name] = self.specs.pop(name)  # a saved domain stops (and a transient one vanishes)

    def restore(self, path):
        spec = self.saved[path.read_text()]
        self.calls.append(f"restore {spec.host}")
        self.specs[spec.name] = spec

    def domains(self, lab=None):
        return [
            LabDomain(s.name, s.lab, s.host, s.platform, s.name in self.running, None)
            for s in self.specs.values()
            if lab in (None, s.lab)
        ]

    remote = False  # the caller's own libvirtd

    def check_ports_free(self, ports, lab):
        pass

    def accel(self, probe_kernel, cache_dir):
        return Accel("qemu", "test")

    def create(self, spec, paused=False):
        self.specs[spec.name] = spec
        return 0.1

    def qemu_user(self, accel="qemu"):
        return QemuUser(os.getuid(), os.getgid())

    def resume(self, name):
        self.running.add(name)

    def console_argv(self, name, learner=False):
        return ["/bin/true", name]

    def ptys(self, name):
        return {}  # no QEMU, no pty: no console keeper (tests/test_keeper.py has one), no files channel

    def destroy_lab(self, lab):
        removed = [n for n, s in self.specs.items() if s.lab == lab]
        for n in removed:
            del self.specs[n]
            self.running.discard(n)
        return removed

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A Lab whose hypervisor and consoles are fakes; the consoles it made, by host."""
    consoles: dict[str, FakeConsole] = {}
    hv = FakeHypervisor()

    def console(self, host, platform, lock_timeout=None, lock=None):
        c = consoles[host] = FakeConsole(
            host,
            platform,
            {
                platform.sa_command(): recorded(platform.name, "sa_established"),
                platform.ping_command("10.0.2.2", 1, 1): recorded(platform.name, "ping_ok"),
            },
        )
        return c

    monkeypatch.setenv("IKEDLAB_QEMU_DIR", str(tmp_path / "qemu"))
    monkeypatch.setattr(guests.Guests, "console", console)
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    for name in ("vmlinuz", "initrd", "golden.qcow2"):
        (tmp_path / name).write_bytes(b"image")
    media = BootMedia(
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd",
        cmdline="console=ttyS0",
        disk=tmp_path / "golden.qcow2",
    )
    platform_names()  # every platform module loaded (the registry fills lazily), so each one is faked
    for cls in Platform._registry.values():
        monkeypatch.setattr(cls, "boot_media", lambda self, release=None, iked=None: media)
    monkeypatch.setattr(guests, "Hypervisor", lambda: hv)  # every Lab of this test, the CLI's too
    lab = Lab("t")
    return lab, hv, consoles


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_up_boots_each_host_on_its_platform_and_runs_the_plan(fake, platform):
    lab, hv, consoles = fake
    lab.up(UpRequest(platform=platform, save_snapshot=False))
    specs = {s.host: s for s in hv.specs.values()}
    assert set(specs) == set(consoles) == {"initlan", "init", "inet", "resp", "resplan"}
    for host, spec in specs.items():
        p = lab.platforms[host]
        assert spec.platform == p.name and spec.memory_mib == p.memory_mib
        if p.facts.boot == "kernel":
            assert spec.kernel and spec.disk is None and spec.cmdline.startswith("console=ttyS0")
        else:
            assert spec.disk == qemu_files.overlay("t", lab.run_dir, host) and spec.kernel is None
    assert all(c.attached for c in consoles.values())
    state = json.loads(lab.blueprint_file.read_text())
    assert state["platforms"] == {h: platform for h in specs}
    plan = lab.plan()
    assert (lab.run_dir / "configs" / "init.iked.conf").read_text() == plan.hosts["init"].ike_conf.content
    assert consoles["init"].files[plan.hosts["init"].platform.ike_conf] == plan.hosts["init"].ike_conf.content


def test_a_failed_up_removes_what_it_created(fake, monkeypatch):
    lab, hv, _ = fake
    original = FakeConsole._answer

    def iked_rejects(self, command):
        if command == self.platform.ike_check_command():
            return "/etc/iked.conf: 3: syntax error\n"
        return original(self, command)

    monkeypatch.setattr(FakeConsole, "_answer", iked_rejects)
    with pytest.raises(ProvisionError, match="iked rejects"):
        lab.up(UpRequest(platform="linux"))
    assert hv.specs == {} and not lab.blueprint_file.exists()


def test_a_lab_already_up_is_refused_before_anything_changes(fake):
    lab, hv, _ = fake
    lab.up(UpRequest(platform="linux"))
    created = dict(hv.specs)
    with pytest.raises(LabError, match="lab 't' is already up"):
        lab.up(UpRequest(platform="linux"))
    assert hv.specs == created


def test_attach_resolves_each_hosts_platform_from_the_state(fake, tmp_path):
    lab, hv, _ = fake
    lab.up(UpRequest(platform="linux"))
    again = Lab("t", run_dir=lab.run_dir)
    again.guests._hypervisor = hv  # type: ignore[assignment]
    hosts = again.attach(only=["init"])
    assert list(hosts) == ["init"] and again.platforms["resp"].name == "linux"
    assert again.plan().hosts["init"].ike_conf == lab.plan().hosts["init"].ike_conf


def test_bad_names_and_missing_state_are_one_line(tmp_path):
    with pytest.raises(LabError, match="'Bad_Name' is not a lab name"):
        Lab("Bad_Name")
    with pytest.raises(LabError, match="lab 'gone' is not up"):
        Lab("gone", run_dir=tmp_path).read()
    (tmp_path / "blueprint.json").write_text("{")
    with pytest.raises(LabError, match="blueprint.json: unreadable"):
        Lab("gone", run_dir=tmp_path).read()
    assert Path(tmp_path / "blueprint.json").exists()


def test_a_failed_up_keeps_evidence_before_the_guests_go(fake, monkeypatch):
    lab, hv, consoles = fake
    original = FakeConsole._answer
    seen_alive = []

    def no_tunnel(self, command):
        if command == self.platform.sa_command():
            return recorded(self.platform.name, "sa_none")
        if command == self.platform.ike_log_command():
            seen_alive.append(bool(hv.specs))  # asked while the guests still exist
            return "ikev2_msg_auth: authentication failed for FQDN/init.example.com\n"
        if command == self.platform.kernel_ipsec_command():
            return "src 192.0.2.1 dst 198.51.100.1\n"
        return original(self, command)

    monkeypatch.setattr(FakeConsole, "_answer", no_tunnel)
    with pytest.raises(ProvisionError):
        lab.up(UpRequest(platform="linux"))
    evidence = lab.run_dir / "evidence"
    for gateway in ("init", "resp"):
        assert "authentication failed" in (evidence / f"{gateway}.iked.log").read_text()
        assert (evidence / f"{gateway}.ikectl-show-sa.txt").exists()
        assert (evidence / f"{gateway}.kernel-ipsec.txt").read_text().startswith("src 192.0.2.1")
    assert (evidence / "configs" / "init.iked.conf").exists()
    assert seen_alive and all(seen_alive) and hv.specs == {}  # fetched first, then everything removed


def test_hints_name_the_lab_unless_it_is_the_default(tmp_path):
    with pytest.raises(LabError) as named:
        Lab("other", run_dir=tmp_path).read()
    assert named.value.hint == "start it with `ikedlab --name other up`"
    with pytest.raises(LabError) as default:
        Lab("default", run_dir=tmp_path).read()
    assert default.value.hint == "start it with `ikedlab up`"


def test_status_always_shows_every_host_and_says_what_is_wrong(fake):
    lab, hv, consoles = fake
    lab.up(UpRequest(platform="linux"))
    rows = {r.host: r for r in status.rows(lab)}
    assert all(r.healthy and r.state == "running" for r in rows.values())
    assert rows["init"].tunnel == "ESTABLISHED with resp" and rows["inet"].tunnel == ""

    hv.running.discard(domain_name("t", "inet"))  # the guest died (virsh destroy)
    consoles["resp"].failing.add(lab.platforms["resp"].sa_command())  # iked was killed

    def silent(timeout=0):
        raise ConsoleTimeout("initlan", "shell prompt", timeout, "", None)

    consoles["initlan"].attach = silent  # type: ignore[method-assign]
    consoles["init"].answers[lab.platforms["init"].sa_command()] = recorded("linux", "sa_none")
    rows = {r.host: r for r in status.rows(lab)}
    assert (rows["inet"].state, rows["inet"].healthy) == ("stopped", False)
    assert (rows["resp"].state, rows["resp"].tunnel) == ("running", "iked not running")
    assert rows["initlan"].state == "no answer"
    assert rows["init"].tunnel == "down (peer resp): no IKE SA"
    assert [r.host for r in rows.values() if r.healthy] == ["resplan"]


def test_a_cold_up_saves_one_consistent_cut_then_hands_back_the_restored_lab(fake):
    """Two cuts, each of every guest paused first: the booted base (below iked), then the provisioned lab."""
    lab, hv, consoles = fake
    assert not lab.up(UpRequest(platform="linux")).restored
    hosts = {"initlan", "init", "inet", "resp", "resplan"}
    calls = [c.split()[0] for c in hv.calls if c.split()[0] in ("suspend", "save", "restore")]
    cut = ["suspend"] * 5 + ["save"] * 5 + ["restore"] * 5
    assert calls == cut + cut, calls  # all paused, then all saved: twice
    assert {c.split()[1] for c in hv.calls if c.startswith("restore")} == hosts
    assert set(hv.running) == {s.name for s in hv.specs.values()} and len(hv.specs) == 5
    snap = snapshot.load("t")
    assert (
        snap
        and set(snap.hosts) == hosts
        and json.loads(lab.blueprint_file.read_text())["snapshot_key"] == snap.key
    )
    below = snapshot.load(base.name("t"))
    assert below and set(below.hosts) == hosts
    assert not any(k.startswith(("files ", "options", "provisioning code")) for k in below.inputs)
    assert all(c.attached for c in consoles.values())  # the new consoles, on the restored guests


def test_a_changed_iked_conf_starts_from_the_booted_base_and_provisions_only_the_daemon(fake, tmp_path):
    lab, hv, consoles = fake
    lab.up(UpRequest(platform="linux"))
    lab.down(quiet=True)
    hv.calls.clear()
    own = tmp_path / "resp.conf"
    own.write_text(lab.plan().hosts["resp"].ike_conf.content + "# mine\n")
    result = lab.up(UpRequest(platform="linux", ike_conf_files={"resp": own}))
    assert not result.restored and result.based_in is not None
    assert [c.split()[0] for c in hv.calls] == ["restore"] * 5  # the base; nothing saved after it
    platform = lab.platforms["resp"]
    resp = consoles["resp"].log  # the console opened on the restored base
    conf = platform.ike_conf
    assert any(getattr(a, "path", "") == conf and "# mine" in getattr(a, "content", "") for a in resp)
    assert platform.ike_start_command() in resp
    assert platform.keygen_command() not in resp and not any("addr replace" in str(a) for a in resp)
    assert snapshot.load("t").key != lab.read().snapshot_key  # the provisioned snapshot is the old one
    hv.calls.clear()
    assert lab.has_snapshot()
    lab.reset()  # no snapshot of this state: put back from the base, iked's part provisioned again
    assert [c.split()[0] for c in hv.calls] == ["restore"] * 5
    lab.down(quiet=True)
    hv.calls.clear()
    assert lab.up(UpRequest(platform="linux")).restored  # and still the fast path when nothing changed


def test_a_second_up_restores_and_a_changed_input_boots_cold(fake, tmp_path):
    lab, hv, _ = fake
    lab.up(UpRequest(platform="linux"))
    lab.down(quiet=True)
    hv.calls.clear()
    result = lab.up(UpRequest(platform="linux"))
    assert result.restored and result.restored_in is not None
    assert not any(c.startswith(("save", "suspend")) for c in hv.calls)
    lab.down(quiet=True)
    own = tmp_path / "resp.conf"
    own.write_text(lab.plan().hosts["resp"].ike_conf.content + "# mine\n")
    assert not lab.up(UpRequest(platform="linux", ike_conf_files={"resp": own})).restored


def test_a_users_psk_is_kept_as_given_only_in_the_secret_folder(fake, tmp_path):
    lab, hv, consoles = fake
    psk = "0x" + "5ec2e7" * 8
    own = tmp_path / "resp.conf"
    lab.up(UpRequest(platform="linux", save_snapshot=False))
    text = lab.plan().hosts["resp"].ike_conf.content.rstrip("\n") + f" \\\n\tpsk {psk}\n"
    own.write_text(text)
    lab.down(quiet=True)
    lab.up(UpRequest(platform="linux", ike_conf_files={"resp": own}, save_snapshot=False))
    assert consoles["resp"].files[lab.plan().hosts["resp"].platform.ike_conf] == text  # the guest: as given
    assert (lab.run_dir / "secret" / "resp.ike.conf").read_bytes() == text.encode()
    assert Lab("t", run_dir=lab.run_dir).read().options.ike_conf == {"resp": text}  # read back later
    for path in lab.run_dir.rglob("*"):
        if path.is_file() and "secret" not in path.parts:
            assert psk[2:] not in path.read_text(errors="replace").lower(), path
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    lab.down(quiet=True)
    assert not (lab.run_dir / "secret").exists()


def test_up_cold_ignores_a_matching_snapshot_and_down_keeps_it_unless_asked(fake):
    lab, hv, _ = fake
    lab.up(UpRequest(platform="linux"))
    lab.down(quiet=True)
    assert snapshot.load("t") is not None
    assert not lab.up(UpRequest(platform="linux", cold=True)).restored
    lab.down(quiet=True, snapshots=True)
    assert snapshot.load("t") is None


def test_reset_puts_the_running_lab_back_from_its_snapshot(fake):
    lab, hv, consoles = fake
    lab.up(UpRequest(platform="linux"))
    before = consoles["init"]
    hv.calls.clear()
    lab.reset()
    assert sorted(c.split()[0] for c in hv.calls) == ["restore"] * 5
    assert consoles["init"] is not before and lab.host("init").console is consoles["init"]


def test_a_restore_that_is_not_healthy_falls_back_to_a_cold_boot(fake, monkeypatch):
    lab, hv, _ = fake
    lab.up(UpRequest(platform="linux"))
    lab.down(quiet=True)
    monkeypatch.setattr(
        Lab, "verify", lambda self, timeout=0, resumed=False: (_ for _ in ()).throw(ProvisionError("no SA"))
    )
    # The snapshot does not prove healthy: the lab comes up from its booted base instead (no proof there:
    # the tunnel it waits for is the proof), and a cold boot whose own snapshot fails keeps none.
    result = lab.up(UpRequest(platform="linux"))
    assert not result.restored and result.based_in is not None and len(hv.running) == 5
    lab.down(quiet=True, snapshots=True)
    assert not lab.up(UpRequest(platform="linux")).restored
    assert snapshot.load("t") is None and len(hv.running) == 5


def test_a_snapshot_that_cannot_be_saved_hands_back_the_running_lab_and_says_why(fake, monkeypatch, capsys):
    """A full disk while saving: the lab is not booted a second time. Guests already saved come back from
    their files, the others are resumed, every shell is proven; one line says there is no warm snapshot."""
    lab, hv, consoles = fake
    save = hv.save
    created = []
    create = hv.create
    monkeypatch.setattr(
        hv, "create", lambda spec, paused=False: created.append(spec.host) or create(spec, paused)
    )

    def resp_disk_full(name, path):
        if name.endswith("resp"):
            raise HypervisorError(f"cannot save {name} to {path}: No space left on device")
        save(name, path)

    monkeypatch.setattr(hv, "save", resp_disk_full)
    assert not lab.up(UpRequest(platform="linux")).restored
    assert sorted(created) == sorted(["initlan", "init", "inet", "resp", "resplan"])  # booted once
    # Twice (the booted base, then the provisioned lab): the four saved come back from their files.
    restored = sorted(c.split()[1] for c in hv.calls if c.startswith("restore"))
    assert restored == sorted(["inet", "init", "initlan", "resplan"] * 2)
    assert snapshot.load("t") is None and snapshot.load(base.name("t")) is None and len(hv.running) == 5
    assert all(c.attached for c in consoles.values())
    said = capsys.readouterr()
    assert "no booted base of lab 't': saving it failed (cannot save" in said.out + said.err
    assert "no warm snapshot of lab 't': saving it failed (cannot save" in said.out + said.err
    assert not snapshot.directory("t").with_name(".t.partial").exists()  # the partial files are gone


def test_the_snapshot_follows_the_image_it_booted_not_the_caches_current_link(fake, tmp_path, monkeypatch):
    """Another checkout's build puts the same image (same manifest) in a new cache folder and repoints
    `current`: the lab still restores, booting the files its snapshot was made from while they exist."""
    lab, hv, _ = fake
    first, second = tmp_path / "image-1", tmp_path / "image-2"
    for folder in (first, second):
        folder.mkdir()
        for name in ("vmlinuz", "initrd.img"):
            (folder / name).write_bytes(b"the same image")

    def image_in(folder, identity="manifest-1"):
        media = BootMedia(folder / "vmlinuz", folder / "initrd.img", "console=ttyS0", identity=identity)
        for cls in Platform._registry.values():
            monkeypatch.setattr(cls, "boot_media", lambda self, release=None, iked=None: media)

    image_in(first)
    lab.up(UpRequest(platform="linux"))
    lab.down(quiet=True)
    image_in(second)  # `current` now names the other folder
    assert lab.up(UpRequest(platform="linux")).restored
    assert {s.kernel for s in hv.specs.values()} == {first / "vmlinuz"}
    lab.down(quiet=True)
    shutil.rmtree(first)  # the snapshot's image is gone: the lab boots what the cache has now
    assert not lab.up(UpRequest(platform="linux")).restored
    assert {s.kernel for s in hv.specs.values()} == {second / "vmlinuz"}
    lab.down(quiet=True)
    image_in(second)
    assert lab.up(UpRequest(platform="linux")).restored
    lab.down(quiet=True)
    image_in(second, identity="manifest-2")  # a different image: the snapshot is stale
    assert not lab.up(UpRequest(platform="linux")).restored


def test_the_status_table_after_up_shows_what_verify_found_without_asking_again(fake):
    lab, hv, consoles = fake
    lab.up(UpRequest(platform="linux"))
    before = {host: len(c.log) for host, c in consoles.items()}
    rows = status.rows(lab, just_verified=True)
    assert all(r.healthy and r.state == "running" for r in rows)
    assert {r.host: r.tunnel for r in rows if r.tunnel} == {
        "init": "ESTABLISHED with resp",
        "resp": "ESTABLISHED with init",
    }
    assert {host: len(c.log) for host, c in consoles.items()} == before
    status.rows(lab)  # `ikedlab status`: asks every gateway
    assert len(consoles["init"].log) > before["init"]


def test_the_lab_keeps_the_topology_it_came_up_with(fake, tmp_path):
    """Editing or deleting the topology file after `up` changes nothing later commands see (issue 25)."""
    lab, hv, _ = fake
    mine = tmp_path / "mine.yaml"
    mine.write_text(load_topology(None).source)
    lab.up(UpRequest(topology=mine, platform="linux"))
    hosts = ["initlan", "init", "inet", "resp", "resplan"]
    for change in ("hosts: [broken", None):  # edited into nonsense, then gone
        if change is None:
            mine.unlink()
        else:
            mine.write_text(change)
        again = Lab("t")
        assert list(again.attach()) == hosts and again.read().topology.path == mine
        assert [r.host for r in status.rows(again) if r.healthy] == hosts
        again.close()


def test_graph_draws_the_running_lab_and_a_bad_file_is_one_line(fake, tmp_path, capsys):
    lab, hv, _ = fake
    mine = tmp_path / "mine.yaml"
    mine.write_text(load_topology(None).source)
    lab.up(UpRequest(topology=mine, platform="linux"))
    mine.write_text("hosts: [broken")
    capsys.readouterr()
    assert cli.main(["--name", "t", "graph"]) == 0
    assert "ESTABLISHED" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [broken")
    assert cli.main(["--name", "t", "graph", "--topology", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ikedlab: bad.yaml: ") and "YAML" in err[0]


def test_with_a_budget_of_two_labs_warm_state_a_third_lab_evicts_the_least_recently_used(
    fake, monkeypatch, capsys
):
    def lab(name):
        made = Lab(name)
        made.guests._hypervisor = FakeHypervisor()  # type: ignore[assignment]
        return made

    a, b, c = lab("a"), lab("b"), lab("c")  # each `up` below as its own `ikedlab up`, which ends (release)
    a.up(UpRequest(platform="linux"))
    a.release()
    size = snapshot.load("a").size + snapshot.load(base.name("a")).size  # its snapshot and its booted base
    monkeypatch.setenv(
        "IKEDLAB_SNAPSHOT_BUDGET", str(2 * size + size // 2)
    )  # two labs' warm state, not three
    b.up(UpRequest(platform="linux"))
    b.release()
    a.down(quiet=True)
    assert a.up(
        UpRequest(platform="linux")
    ).restored  # a used after b was saved: b is the least recently used
    a.release()
    capsys.readouterr()
    c.up(UpRequest(platform="linux"))
    assert snapshot.load("b") is None and snapshot.load(base.name("b")) is None
    assert snapshot.load("a") and snapshot.load("c")
    said = capsys.readouterr().err
    assert "removed the 2 snapshots (with its booted base) of lab 'b'" in said, said
    for made in (a, b, c):
        made.down(quiet=True)
        made.close()


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_a_restored_guest_gets_the_hosts_clock_on_the_sync_line(fake, platform):
    """A restored guest resumes the clock of its save (measured: 113 s behind after a 90 s gap): the one sync
    line that proves its shell also sets its clock, in the platform's dialect, from the host's."""
    lab, hv, consoles = fake
    before = time.time()
    lab.up(UpRequest(platform=platform))  # cold, saved, restored and proven
    after = time.time()
    for host, console in consoles.items():
        synced = [c for c in console.log if isinstance(c, str) and ("hwclock" in c or c.startswith("date "))]
        assert len(synced) == 1, (host, console.log)
        clocks = [synced[0].split("; ")[0]]  # the clock first, then the reseed (the test below)
        if platform == "linux":
            assert clocks[0] == "hwclock -s -u"  # QEMU's RTC keeps the host's time across the restore
        else:
            stamps = {
                time.strftime("%Y%m%d%H%M.%S", time.gmtime(s)) for s in range(int(before), int(after) + 2)
            }
            assert clocks[0].split()[:2] == ["date", "-u"] and clocks[0].split()[2] in stamps


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_every_restored_guest_gets_its_own_fresh_randomness_on_the_sync_line(fake, platform):
    """Guests restored from one snapshot resume one kernel RNG state (seen: 16 bytes of /dev/urandom equal
    after two resets): the sync line that proves each restored shell also mixes 32 fresh bytes of the host's
    randomness into its kernel's RNG and rekeys it, in the platform's dialect; no two guests and no two
    restores get the same bytes."""
    lab, hv, consoles = fake
    form = {
        "linux": r"/usr/local/sbin/rng-reseed ([0-9a-f]{64})",  # images/linux/programs/rng-reseed.c
        "openbsd": r"echo ([0-9a-f]{64}) >/dev/random",  # sys/dev/rnd.c 1.230, randomwrite()
    }[platform]
    seeds = []
    for restore in (lambda: lab.up(UpRequest(platform=platform)), lab.reset):  # up: cold, saved, restored
        restore()
        for host, console in consoles.items():  # a restored guest's console is a new one
            lines = [c for c in console.log if isinstance(c, str) and "; " in c]
            assert len(lines) == 1, (host, console.log)
            assert (found := re.fullmatch(form, lines[0].split("; ")[1])), lines[0]
            seeds.append(found[1])
    assert len(seeds) == 2 * len(consoles) == len(set(seeds)), seeds


def test_the_reseed_bytes_never_reach_a_log():
    """The seed is hex, which the redactor takes out of every transcript and console log: a shell not yet
    quiet echoes the sync line, seed and all."""
    from lab.platforms import get_platform
    from lab.redact import scrub

    for name in ("linux", "openbsd"):
        line = get_platform(name).restored_command()
        seed = re.search(r"[0-9a-f]{64}", line)
        assert seed and seed[0] not in scrub(f"ikedlab# {line}; printf '%s%s\\n' '@@IKL' 'SYNC0@@'"), line


def test_openbsd_sets_its_clock_with_dates_own_syntax(monkeypatch):
    from lab.platforms import get_platform

    # date(1): [[[[[cc]yy]mm]dd]HH]MM[.SS], UTC with -u (bin/date/date.c 1.45).
    monkeypatch.setattr(time, "time", lambda: 1796287451.4)
    assert get_platform("openbsd").clock_command() == "date -u 202612030844.11 >/dev/null"


def test_a_users_iked_conf_is_judged_by_the_iked_its_gateway_boots(fake, tmp_path, monkeypatch):
    """The judge comes with the gateway's boot media (the image's own iked, a local build), not from the
    host: a judge that refuses everything stops `up` before any guest is created."""
    from lab.ikedconf import IkedJudge

    lab, hv, _ = fake
    media = BootMedia(
        tmp_path / "vmlinuz", tmp_path / "initrd", "console=ttyS0", judge=IkedJudge(("false",), "t")
    )
    monkeypatch.setattr(
        Platform._registry["linux"], "boot_media", lambda self, release=None, iked=None: media
    )
    own = tmp_path / "resp.conf"
    own.write_text("# mine\n")
    with pytest.raises(IkedConfError, match=r"resp.conf: iked -n \(t\) exited 1"):
        lab.up(UpRequest(platform="linux", ike_conf_files={"resp": own}))
    assert hv.specs == {}


def test_an_openbsd_image_built_from_unverified_media_is_boot_media_that_says_so(monkeypatch, tmp_path):
    from lab.images import openbsd as openbsd_images
    from lab.platforms.openbsd import OpenBSD

    manifest = {"verified": False, "how": "NOT VERIFIED (--insecure, no key)"}
    image = openbsd_images.OpenBSDImage(tmp_path / "golden.qcow2", "7.9", "k", manifest)
    monkeypatch.setattr("lab.images.cached_openbsd_image", lambda release=None: image)
    media = OpenBSD.boot_media(OpenBSD.__new__(OpenBSD))
    assert media.unverified == (
        "OpenBSD 7.9 image built from media nobody verified (image build --insecure: "
        "NOT VERIFIED (--insecure, no key))"
    )
    image.manifest["verified"] = True
    assert OpenBSD.boot_media(OpenBSD.__new__(OpenBSD)).unverified == ""


def test_a_lab_on_an_image_built_from_unverified_media_says_so_in_up_and_status(
    fake, monkeypatch, tmp_path, capsys
):
    lab, hv, consoles = fake
    note = "OpenBSD 7.9 image built from media nobody verified"
    media = BootMedia(tmp_path / "vmlinuz", tmp_path / "initrd", "console=ttyS0", tmp_path / "golden.qcow2")
    media = BootMedia(**{**media.__dict__, "unverified": note})
    for cls in Platform._registry.values():
        monkeypatch.setattr(cls, "boot_media", lambda self, release=None, iked=None: media)
    lab.up(UpRequest(platform="openbsd", save_snapshot=False))
    assert f"WARNING: {media.unverified}" in capsys.readouterr().err
    assert status.status_table(lab).caption == f"WARNING: {media.unverified}"
