"""3. On init, the traffic is seen in plaintext before encapsulation and after decapsulation (enc0)."""

from guide import guide


def test_decapsulated_capture_shows_the_ping_in_plaintext(lab):
    g = guide(lab)
    src, dst = g.address(g.initlan), g.address(g.resplan)
    with g.init.capture_decapsulated() as box:
        assert g.initlan.ping(dst, count=3).received == 3
    capture = box[0]
    requests = [p for p in capture.packets if (p.src, p.dst) == (src, dst) and "echo request" in p.summary]
    replies = [p for p in capture.packets if (p.src, p.dst) == (dst, src) and "echo reply" in p.summary]
    assert len(requests) >= 3, f"no plaintext echo requests {src} > {dst} in:\n{capture.text}"
    assert len(replies) >= 3, f"no plaintext echo replies {dst} > {src} in:\n{capture.text}"
