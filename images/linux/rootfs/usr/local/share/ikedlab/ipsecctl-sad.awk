# `ip xfrm state` → ipsecctl's SAD: section ("esp tunnel from A to B spi 0x%08x auth X enc Y").
# Linux names transforms the crypto API's way (cbc(aes) with a key length, hmac(sha384)); OpenBSD the way
# iked.conf does (aes-256, hmac-sha2-384).
function authname(a) {
	if (a == "hmac(sha1)") return "hmac-sha1"
	if (a == "hmac(sha256)") return "hmac-sha2-256"
	if (a == "hmac(sha384)") return "hmac-sha2-384"
	if (a == "hmac(sha512)") return "hmac-sha2-512"
	if (a == "hmac(md5)") return "hmac-md5"
	return a
}
function encname(e, bits) {
	if (e == "cbc(aes)") return "aes-" bits
	if (e == "rfc3686(ctr(aes))") return "aesctr"
	if (e == "rfc4106(gcm(aes))") return "aes-" (bits - 32) "-gcm"
	if (e == "rfc7539esp(chacha20,poly1305)") return "chacha20-poly1305"
	if (e == "cbc(des3_ede)") return "3des"
	if (e == "ecb(cipher_null)") return "null"
	return e
}
# Key length in bits: `ip -s` says "(256 bits)"; plain `ip xfrm state` only shows the key, 4 bits a digit.
function bits(line, key) {
	if (match(line, /\([0-9]+ bits\)/)) return substr(line, RSTART + 1, RLENGTH - 7) + 0
	return (length(key) - 2) * 4
}
function flush() {
	if (src != "" && proto != "") {
		line = sprintf("%s %s from %s to %s spi %s", proto, mode, src, dst, spi)
		if (auth != "") line = line " auth " auth
		if (enc != "") line = line " enc " enc
		print line
		n++
	}
	src = dst = proto = spi = auth = enc = mode = ""
}
BEGIN { print "SAD:"; n = 0 }
/^src / { flush(); src = $2; dst = $4; next }
/^[ \t]+proto (esp|ah) spi / {
	proto = $2; spi = $4; sub(/\(.*/, "", spi)
	mode = "tunnel"
	for (i = 5; i <= NF; i++) if ($i == "mode") mode = $(i + 1)
	next
}
/^[ \t]+auth(-trunc)? / { auth = authname($2); next }
/^[ \t]+enc / { enc = encname($2, bits($0, $3)); next }
/^[ \t]+aead / { enc = encname($2, bits($0, $3)); next }
END { flush(); if (n == 0) print "No entries" }
