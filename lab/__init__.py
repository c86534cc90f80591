"""ikedlab: a virtual lab for IPsec with iked, built from QEMU guests under libvirt."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout ikedlab runs from: image recipes live in images/ beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
