"""ikedlab: a virtual lab for IPsec with iked, built from QEMU guests under libvirt."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout ikedlab runs from, for what only a checkout has (make targets, docs/): an installed ikedlab
#: needs none, everything `up` uses travels in the package (templates, topologies, and the image recipes:
#: images/ in a checkout, lab/images/recipes/ in the wheel).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
