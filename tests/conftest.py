"""Fast tests: no virtual machines, no libvirt daemon (libvirt's test:///default driver at most)."""

import signal

# Tests of Ctrl-C handling send SIGINT to this process, as a terminal would. A job started in the background
# of a non-interactive shell (`make test &`, some CI runners) inherits SIGINT ignored, and Python then keeps
# it ignored: give the tests the handler a user's terminal session has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
