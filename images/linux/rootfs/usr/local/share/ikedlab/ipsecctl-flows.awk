# `ip xfrm policy` → ipsecctl's FLOWS: section ("flow esp in from A to B peer P type use").
# A policy is a block: "src A dst B", then "dir in|out|fwd ...", then "tmpl src X dst Y", "proto esp ...".
# The peer is the template's far end: its source for inbound flows, its destination for outbound ones.
function host(a) { sub(/\/32$/, "", a); return a }
function flush() {
	if (src != "" && (dir == "in" || dir == "out") && proto != "") {
		peer = (dir == "in") ? tsrc : tdst
		printf "flow %s %s from %s to %s peer %s type %s\n", proto, dir, host(src), host(dst), peer,
			(dir == "in") ? "use" : "require"
		n++
	}
	src = dst = dir = tsrc = tdst = proto = ""
}
BEGIN { print "FLOWS:"; n = 0 }
/^src / { flush(); src = $2; dst = $4; next }
/^[ \t]+dir / { dir = $2; next }
/^[ \t]+tmpl src / { tsrc = $3; tdst = $5; next }
/^[ \t]+proto (esp|ah) / { proto = $2; next }
END { flush(); if (n == 0) print "No flows" }
