"""The Vagrantfile: it must provision exactly what ikedlab renders for the guide's lab.

Fast checks need neither Vagrant nor VMs. The Vagrantfile itself is evaluated by Ruby under a small recorder
that stands in for Vagrant's configuration object (skipped when Ruby is missing); `vagrant validate` runs
when Vagrant and vagrant-libvirt are installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab.placement import load_topology as load
from lab.plan import render_lab
from lab.platforms import get_platform, platform_names
from lab.vagrant import SUMMARY, VAGRANT_NICS, render, vagrant_platform

REPO = Path(__file__).resolve().parent.parent
VAGRANTFILE = REPO / "Vagrantfile"
KEY_HELPER = REPO / "vagrant" / "install-peer-key.sh"
GUEST_DIR = "/tmp/ikedlab"
RENDER_SUBDIR = Path(".vagrant") / "ikedlab-render"

RUBY_MISSING = (
    "ruby is not installed (it comes with Vagrant: `apt-get install vagrant`, or `apt-get install ruby`)"
)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _shift(text: str, offset: int) -> str:
    return re.sub(r"\bvio(\d+)\b", lambda m: f"vio{int(m.group(1)) + offset}", text)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A copy of the Vagrantfile and its helpers, so evaluating it never writes into the repository."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(VAGRANTFILE, root / "Vagrantfile")
    shutil.copytree(REPO / "vagrant", root / "vagrant")
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKEDLAB_")}
    env.update(
        IKEDLAB_PYTHON=sys.executable,
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        VAGRANT_CHECKPOINT_DISABLE="1",
    )
    env.update(extra)
    return env


# --- the render the Vagrantfile runs -----------------------------------------------------------------


def test_vagrantfile_renders_with_lab_vagrant_into_its_own_folder():
    text = VAGRANTFILE.read_text()
    assert '"-m", "lab.vagrant", "render", "--out", RENDER_DIR' in text
    assert 'RENDER_DIR = File.join(ROOT, ".vagrant", "ikedlab-render")' in text
    # Nothing the render owns is restated in the Vagrantfile's code (its comments may name them).
    code = re.sub(r"(^|\s)# .*$", "", text, flags=re.M)
    for rendered in (
        "hostname.",
        "mygate",
        "sysctl",
        "iked.conf",
        "/etc/",
        "10.0.",
        "192.0.2.",
        "198.51.100.",
        "example.com",
        "rcctl",
        "vio",
    ):
        assert rendered not in code, rendered


def test_vagrant_dialect_numbers_the_lab_interfaces_after_vagrants_nic():
    assert vagrant_platform("openbsd").interface_name(0) == "vio1"
    assert vagrant_platform("openbsd").interface_name(1) == "vio2"
    assert get_platform("openbsd").interface_name(0) == "vio0"  # the plain dialect is untouched
    assert "openbsd-vagrant" not in platform_names()  # Vagrant is a machine, not another platform


def test_summary_matches_the_guide_topology(tmp_path: Path):
    out = tmp_path / "render"
    result = subprocess.run(
        [sys.executable, "-m", "lab.vagrant", "render", "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    assert result.stdout.strip() == str((out / SUMMARY).resolve())
    lab = json.loads((out / SUMMARY).read_text())
    topology = load()

    assert list(lab["hosts"]) == list(topology.hosts) == ["initlan", "init", "inet", "resp", "resplan"]
    assert lab["interface_offset"] == 1
    for name, host in topology.hosts.items():
        entry = lab["hosts"][name]
        assert [(i["name"], i["link"], i["address"], i["prefixlen"]) for i in entry["interfaces"]] == [
            (f"vio{i.index + 1}", i.link, str(i.address.ip), i.address.network.prefixlen)
            for i in host.interfaces
        ]
        assert entry["gateway"] == (str(host.gateway) if host.gateway else None)
        # "files" is exactly what the host's folder holds, i.e. what the file provisioner uploads.
        assert entry["files"] == sorted(_files(out / name))
    assert lab["links"] == {
        link.name: {
            "subnet": str(link.subnet),
            "netmask": str(link.subnet.netmask),
            "ends": {h: str(a) for h, a in link.ends.items()},
        }
        for link in topology.links.values()
    }
    assert lab["links"]["wan1"] == {
        "subnet": "192.0.2.0/24",
        "netmask": "255.255.255.0",
        "ends": {"init": "192.0.2.1", "inet": "192.0.2.254"},
    }
    init, resp = lab["hosts"]["init"]["ipsec"], lab["hosts"]["resp"]["ipsec"]
    assert (init["peer"], init["mode"], init["srcid"]) == ("resp", "active", "init.example.com")
    assert (resp["peer"], resp["mode"], resp["srcid"]) == ("init", "passive", "resp.example.com")
    assert init["peer_pubkey_path"] == "/etc/iked/pubkeys/fqdn/resp.example.com"
    assert resp["peer_pubkey_path"] == "/etc/iked/pubkeys/fqdn/init.example.com"
    assert init["public_key"] == resp["public_key"] == "/etc/iked/local.pub"
    assert init["ike_start"] == get_platform("openbsd").ike_start_command()
    assert [h for h, e in lab["hosts"].items() if e["ipsec"]] == ["init", "resp"]


def test_vagrant_render_is_ikedlabs_render_with_interfaces_moved_up_by_one(tmp_path: Path):
    plain, vagrant = tmp_path / "plain", tmp_path / "vagrant"
    render_lab(None, "openbsd", plain)
    render(None, "openbsd", vagrant)
    for host in load().hosts:
        expected = {_shift(path, 1): _shift(text, 1) for path, text in _files(plain / host).items()}
        assert _files(vagrant / host) == expected, host
    init = (vagrant / "init" / "provision.sh").read_text()
    assert "sh /etc/netstart vio1 vio2\n" in init
    assert 'files/etc/hostname.vio1" /etc/hostname.vio1\n' in init
    assert "vio0" not in "".join(t for h in load().hosts for t in _files(vagrant / h).values())


def test_every_uploaded_file_is_installed_by_provision_sh(tmp_path: Path):
    render(None, "openbsd", tmp_path)
    for host in load().hosts:
        script = (tmp_path / host / "provision.sh").read_text()
        installed = re.findall(r'"\$\(dirname "\$0"\)/(files/\S+)" (\S+)\n', script)
        assert sorted(src for src, _ in installed) == sorted(
            p for p in _files(tmp_path / host) if p != "provision.sh"
        )
        assert all(src == f"files{dest}" for src, dest in installed)


def test_render_keeps_an_identical_render_and_replaces_a_changed_one(tmp_path: Path):
    out = tmp_path / "render"
    render(None, "openbsd", out)
    inode = (out / "init" / "provision.sh").stat().st_ino
    render(None, "openbsd", out)
    assert (out / "init" / "provision.sh").stat().st_ino == inode  # unchanged: left alone for readers
    (out / "stale").write_text("left over\n")
    render(None, "openbsd", out)
    assert not (out / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render"]  # no temporary folders left behind


def test_render_refuses_a_folder_that_is_not_a_render(tmp_path: Path):
    (tmp_path / "precious").write_text("keep me\n")
    from lab.errors import IkedlabError

    with pytest.raises(IkedlabError, match="not an ikedlab render"):
        render(None, "openbsd", tmp_path)
    assert (tmp_path / "precious").read_text() == "keep me\n"


def test_render_rejects_a_platform_without_a_box(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "lab.vagrant", "render", "--platform", "linux", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 1
    assert "no box for platform 'linux'" in result.stderr


# --- the key helper, run here with the host's sh -----------------------------------------------------

PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def _helper(src: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(KEY_HELPER), str(src), str(dest)], capture_output=True, text=True)


def test_key_helper_installs_then_reports_unchanged(tmp_path: Path):
    dest = tmp_path / "pubkeys" / "fqdn" / "resp.example.com"
    for expected in ("changed", "unchanged"):
        src = tmp_path / "peer.pub"
        src.write_text(PEM)
        result = _helper(src, dest)
        assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr
        assert not src.exists()
    assert dest.read_text() == PEM
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_key_helper_refuses_what_is_not_a_public_key(tmp_path: Path):
    src, dest = tmp_path / "peer.pub", tmp_path / "dest"
    src.write_text("cat: /etc/iked/local.pub: No such file or directory\n")
    result = _helper(src, dest)
    assert result.returncode == 1 and "not a PEM public key" in result.stderr
    assert not dest.exists()


# --- the Vagrantfile evaluated by Ruby, with a recorder in place of Vagrant --------------------------

HARNESS = r"""
require "json"

RECORDED = []
RUBY_BLOCKS = []

# Stands in for any Vagrant configuration object: records assignments and calls, runs nested blocks.
class Recorder
  def initialize(path)
    @path = path
    @children = {}
  end

  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      RECORDED << { "at" => @path, "set" => n.chomp("="), "value" => args.first }
      return args.first
    end
    return (@children[n] ||= Recorder.new(@path + [n])) if args.empty? && kw.empty? && blk.nil?
    RECORDED << { "at" => @path, "call" => n, "args" => args.map(&:to_s),
                  "kw" => kw.map { |k, v| [k.to_s, v] }.to_h, "block" => !blk.nil? }
    if n == "ruby"
      RUBY_BLOCKS << blk # run by Vagrant after `up`; exercised separately below
    elsif blk
      blk.call(Recorder.new(@path + ["#{n}:#{args.join(",")}"]))
    end
    nil
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    yield Recorder.new([])
  end
end

# Guests for Ikedlab.exchange_keys: a file table per guest, every command recorded.
class FakeComm
  attr_reader :files, :log

  def initialize(name, files, log)
    @name, @files, @log = name, files, log
  end

  def ready?
    true
  end

  def test(cmd, _opts = nil)
    @log << [@name, "test", cmd]
    cmd.scan(/test -s (\S+)/).flatten.all? { |p| @files.key?(p) }
  end

  def upload(from, to)
    @files[to] = File.read(from)
  end

  def sudo(cmd, opts = {}, &blk)
    @log << [@name, "sudo", cmd]
    case cmd
    when /\Acat (\S+)\z/
      blk&.call(:stdout, @files.fetch(Regexp.last_match(1)))
    when %r{\Ash (/tmp/ikedlab-install-peer-key-\w+\.sh) (\S+) (\S+);}
      helper, key, dest = Regexp.last_match.captures
      raise "helper not uploaded" unless @files.key?(helper)
      out = @files[dest] == @files[key] ? "unchanged" : "changed"
      @files[dest] = @files.delete(key)
      @files.delete(helper)
      blk&.call(:stdout, "#{out}\n")
    end
    0
  end
end

class FakeUI
  def initialize(log)
    @log = log
  end

  %w[info success].each { |m| define_method(m) { |msg| @log << ["ui", m, msg] } }
end

State = Struct.new(:id)

class FakeMachine
  attr_reader :name, :communicate, :ui, :state

  def initialize(name, files, log, running: true)
    @name = name
    @communicate = FakeComm.new(name.to_s, files, log)
    @ui = FakeUI.new(log)
    @state = State.new(running ? :running : :not_created)
  end

  def provider_name
    :libvirt
  end
end

class FakeEnv
  def initialize(machines)
    @machines = machines
  end

  def machine(name, provider)
    raise "wrong provider #{provider}" unless provider == :libvirt
    @machines.fetch(name)
  end
end

def guest(name, provisioned: true)
  return {} unless provisioned
  { "/etc/iked/local.pub" => "-----BEGIN PUBLIC KEY-----\n#{name}\n-----END PUBLIC KEY-----\n",
    "/etc/iked.conf" => "# #{name}\n" }
end

load ARGV.fetch(0)

case ARGV.fetch(1)
when "config"
  puts JSON.generate(RECORDED)
when "exchange"
  log = []
  files = { init: guest("init"), resp: guest("resp", provisioned: ARGV[2] != "resp-not-ready") }
  machines = files.map { |n, f| [n, FakeMachine.new(n, f, log)] }.to_h
  env = FakeEnv.new(machines)
  trigger = RUBY_BLOCKS.first
  runs = []
  2.times do
    log.clear
    trigger.call(env, machines[:init]) # as Vagrant does: the trigger of the gateway that just came up
    runs << log.dup
  end
  puts JSON.generate({ "runs" => runs, "files" => files.map { |n, f| [n, f] }.to_h })
end
"""


def _ruby(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    harness = project / "harness.rb"
    harness.write_text(HARNESS)
    return subprocess.run(
        ["ruby", str(harness), str(project / "Vagrantfile"), *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        cwd=project,
        timeout=120,
    )


def _recorded(project: Path, **env: str) -> list[dict]:
    result = _ruby(project, "config", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _machine(entry: dict) -> str | None:
    return next((p.split(":", 1)[1] for p in entry["at"] if p.startswith("define:")), None)


needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason=RUBY_MISSING)


@needs_ruby
def test_vagrantfile_defines_the_topologys_machines_networks_and_provisioning(project: Path, tmp_path: Path):
    recorded = _recorded(project)
    topology = load()
    render_dir = project / RENDER_SUBDIR

    defines = [e["args"][0] for e in recorded if e.get("call") == "define"]
    assert defines == list(topology.hosts)

    top = {e["set"]: e["value"] for e in recorded if "set" in e and _machine(e) is None}
    assert top["box"] == "generic/openbsd7"
    assert top["shell"] == "sh"
    assert top["driver"] == "kvm"

    reference = tmp_path / "reference"
    render_lab(None, "openbsd", reference, leading_nics=VAGRANT_NICS)
    attached: dict[str, set[str]] = {}
    for name, host in topology.hosts.items():
        mine = [e for e in recorded if _machine(e) == name]
        networks = [e for e in mine if e.get("call") == "network"]
        # One private network per interface, in the host's interface order (vio1, vio2, ...).
        assert [n["kw"]["libvirt__network_name"] for n in networks] == [
            f"ikedlab-{i.link}" for i in host.interfaces
        ]
        for n in networks:
            assert n["args"] == ["private_network"]
            assert n["kw"]["auto_config"] is False
            assert n["kw"]["libvirt__forward_mode"] == "veryisolated"
            assert n["kw"]["libvirt__dhcp_enabled"] is False
            attached.setdefault(n["kw"]["libvirt__network_name"], set()).add(name)

        provisioners = [(e["args"][0], e["kw"]) for e in mine if e.get("call") == "provision"]
        assert [kind for kind, _ in provisioners] == ["shell", "file", "shell"]
        assert provisioners[0][1]["inline"] == f"rm -rf {GUEST_DIR}"
        upload = provisioners[1][1]
        assert (Path(upload["source"]), upload["destination"]) == (render_dir / name, GUEST_DIR)
        # What is uploaded is exactly what ikedlab renders for this host, and provision.sh runs from there.
        assert _files(Path(upload["source"])) == _files(reference / name)
        assert provisioners[2][1]["inline"] == f"sh {GUEST_DIR}/provision.sh"
        assert provisioners[2][1].get("privileged", True) is True

        triggers = [e for e in mine if e.get("call") == "after"]
        if host.ipsec:
            assert [t["args"] for t in triggers] == [["up", "provision", "reload"]]
            assert any(e.get("call") == "ruby" for e in mine)
        else:
            assert triggers == []
    # Each libvirt network joins exactly the two ends of its link.
    assert attached == {f"ikedlab-{link.name}": set(link.ends) for link in topology.links.values()}


@needs_ruby
def test_box_and_network_prefix_come_from_the_environment(project: Path):
    recorded = _recorded(
        project,
        IKEDLAB_VAGRANT_BOX="example/openbsd79",
        IKEDLAB_VAGRANT_PREFIX="lab2",
        IKEDLAB_VAGRANT_DRIVER="qemu",
    )
    top = {e["set"]: e["value"] for e in recorded if "set" in e and _machine(e) is None}
    assert (top["box"], top["driver"]) == ("example/openbsd79", "qemu")
    names = {e["kw"]["libvirt__network_name"] for e in recorded if e.get("call") == "network"}
    assert names == {"lab2-lan1", "lab2-wan1", "lab2-wan2", "lab2-lan2"}


@needs_ruby
def test_a_bad_topology_stops_the_vagrantfile_with_ikedlabs_message(project: Path, tmp_path: Path):
    result = _ruby(project, "config", IKEDLAB_TOPOLOGY=str(tmp_path / "missing.yaml"))
    assert result.returncode != 0
    assert "ikedlab render failed" in result.stderr
    assert "cannot read the file" in result.stderr


@needs_ruby
def test_key_exchange_crosses_public_keys_and_starts_the_passive_side_first(project: Path):
    result = _ruby(project, "exchange")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    init, resp = out["files"]["init"], out["files"]["resp"]
    assert resp["/etc/iked/pubkeys/fqdn/init.example.com"] == init["/etc/iked/local.pub"]
    assert init["/etc/iked/pubkeys/fqdn/resp.example.com"] == resp["/etc/iked/local.pub"]
    assert not any(p.startswith("/tmp/") for p in [*init, *resp])  # temporary uploads are gone

    openbsd = get_platform("openbsd")
    iked = {openbsd.ike_check_command(), openbsd.ike_stop_command(), openbsd.ike_start_command()}
    first, second = ([(h, c) for h, kind, c in run if kind == "sudo" and c in iked] for run in out["runs"])
    assert first == [
        ("resp", openbsd.ike_check_command()),
        ("resp", openbsd.ike_stop_command()),
        ("resp", openbsd.ike_start_command()),
        ("init", openbsd.ike_check_command()),
        ("init", openbsd.ike_stop_command()),
        ("init", openbsd.ike_start_command()),
    ]
    # Run again with nothing new: iked is started (a no-op when it runs), never stopped.
    assert second == [
        ("resp", openbsd.ike_check_command()),
        ("resp", openbsd.ike_start_command()),
        ("init", openbsd.ike_check_command()),
        ("init", openbsd.ike_start_command()),
    ]


@needs_ruby
def test_key_exchange_waits_for_a_peer_that_is_not_provisioned(project: Path):
    result = _ruby(project, "exchange", "resp-not-ready")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for run in out["runs"]:
        assert [kind for _, kind, _ in run if kind == "sudo"] == []
        assert any(kind == "info" and "resp is not provisioned yet" in msg for _, kind, msg in run)
    assert "/etc/iked/pubkeys/fqdn/resp.example.com" not in out["files"]["init"]


# --- vagrant validate ---------------------------------------------------------------------------------


def _vagrant_skip_reason() -> str | None:
    if shutil.which("vagrant") is None:
        return (
            "vagrant is not installed: `apt-get install vagrant vagrant-libvirt` (Debian) to run "
            "`vagrant validate` on the Vagrantfile"
        )
    plugins = subprocess.run(
        ["vagrant", "plugin", "list"], capture_output=True, text=True, env=_env(), timeout=120
    )
    if "vagrant-libvirt" not in plugins.stdout:
        return "the vagrant-libvirt plugin is missing: `apt-get install vagrant-libvirt` (Debian)"
    return None


def test_vagrant_validate(project: Path):
    reason = _vagrant_skip_reason()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        ["vagrant", "validate"], capture_output=True, text=True, env=_env(), cwd=project, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully." in result.stdout
    assert (project / RENDER_SUBDIR / SUMMARY).is_file()
