"""What provisioning writes to each gateway, decided without a lab."""

from lab import topology
from lab.platforms import get_platform
from lab.provision import Options, rendered_ike_conf

GUIDE = topology.load(None, ("linux", "openbsd"))
LINUX = {h: get_platform("linux") for h in GUIDE.hosts}


def test_the_guides_file_by_default():
    conf = rendered_ike_conf(GUIDE, LINUX, "init", Options())
    assert "ikev2 'init' active esp" in conf and "ikesa" not in conf


def test_a_users_own_iked_conf_wins():
    mine = "ikev2 'mine' passive esp from any to any\n"
    assert rendered_ike_conf(GUIDE, LINUX, "resp", Options(ike_conf={"resp": mine})) == mine
    assert rendered_ike_conf(GUIDE, LINUX, "init", Options(ike_conf={"resp": mine})) != mine


def test_peer_any_only_where_asked():
    options = Options(peer_any=("resp",))
    assert "peer any" in rendered_ike_conf(GUIDE, LINUX, "resp", options)
    assert "peer any" not in rendered_ike_conf(GUIDE, LINUX, "init", options)


def test_mixed_platforms_bring_explicit_proposals_to_both_sides():
    mixed = LINUX | {"init": get_platform("openbsd")}
    assert "ikesa enc aes-256" in rendered_ike_conf(GUIDE, mixed, "init", Options())
    assert "ikesa enc aes-256" in rendered_ike_conf(GUIDE, mixed, "resp", Options())
    assert "ikesa" not in rendered_ike_conf(GUIDE, LINUX, "resp", Options())


def test_liveness_interval_is_rendered_when_asked():
    assert "set dpd_check_interval 5" in rendered_ike_conf(GUIDE, LINUX, "init", Options(dpd_interval=5))
