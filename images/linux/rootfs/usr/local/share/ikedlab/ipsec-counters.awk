# ESP and AH counters of a Linux IPsec gateway, read the way ikedlab reads them (lab/platforms/linux.py,
# parse_linux_counters; a fast test holds the two to the same answer). Input:
#   local ADDR...                         this host's addresses
#   `ip -s xfrm state`                    per-SA packets and bytes: an SA to a local address is inbound
#   `nft list counters table inet ikedlab` AH seen on the wire (a stray AH packet with no SA shows there)
# Output: one line "esp_in esp_out ah_in ah_out esp_in_bytes esp_out_bytes".
BEGIN { direction = ""; proto = ""; counter = "" }
/^local / { for (i = 2; i <= NF; i++) local[$i] = 1; next }
/^src [^ ]+ dst [^ ]+/ { direction = ($4 in local) ? "in" : "out"; proto = ""; next }
/^[ \t]+proto (esp|ah) spi / { proto = $2; next }
/^[ \t]+[0-9]+\(bytes\), [0-9]+\(packets\)/ {
	if (direction != "" && proto != "") {
		bytes = $1; packets = $2
		sub(/\(.*/, "", bytes); sub(/\(.*/, "", packets)
		total[proto "_" direction] += packets
		if (proto == "esp") total["esp_" direction "_bytes"] += bytes
	}
	next
}
/counter (esp_in|esp_out|ah_in|ah_out) \{/ { counter = $2; next }
/^[ \t]+packets [0-9]+ bytes [0-9]+/ {
	if (counter ~ /^ah_/ && $2 + 0 > total[counter] + 0) total[counter] = $2 + 0
	counter = ""
	next
}
END {
	printf "%d %d %d %d %d %d\n", total["esp_in"], total["esp_out"], total["ah_in"], total["ah_out"],
		total["esp_in_bytes"], total["esp_out_bytes"]
}
