"""ikedlab: a virtual lab for IPsec with iked, built from QEMU guests under libvirt."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout ikedlab runs from, for what only a checkout has (make targets, docs/): an installed ikedlab
#: needs none, everything `up` uses is the package's own data (templates, topologies, image recipes).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
