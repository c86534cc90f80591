"""Fast tests: no virtual machines, no libvirt daemon (libvirt's test:///default driver at most)."""
