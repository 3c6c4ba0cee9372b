"""Getting an application's traffic into the proxy: cgroup v2 runs with the eBPF redirect.

Public API::

    r = Redirector.create(proxy_port)            # new cgroup, redirect attached
    subprocess.Popen(cmd, preexec_fn=r.enter)    # the child and all its descendants
    r.original_destination(peer, sockname)       # in the proxy, once per accepted connection
    r.refuse([(ip, port)]); r.allow_only([...])  # those connects fail: ECONNREFUSED
    r.refused()                                  # {(ip, port): refused connects}
    Redirector.create(proxy_port, pass_closed=True)  # a local port nothing listens on: the
    r.closed(); r.reached()                      # kernel's; {(ip, port): refused / NATed}
    r.close()

    Redirector.attach(cgroup_path_or_container_id, proxy_port)
    cleanup_leftovers()  # what dead runs left behind (create() does it too)
    doctor()             # [Check(name, ok, detail, fix)]

A run fails closed: if its owner dies, every TCP connect of the run fails until the run's
processes are gone and a later cleanup removes it (see redirector.py).

Setup, teardown and cleanup raise RedirectError (saying what to do); ``enter`` raises
OSError in the child (subprocess reports it), ``original_destination`` never raises for
well-formed addresses; ``refuse``/``allow_only`` raise RedirectError for a destination
that is not an IP address and port.
"""

from trproxy.redirect.checks import Check, doctor
from trproxy.redirect.cleanup import cleanup_leftovers
from trproxy.redirect.errors import RedirectError
from trproxy.redirect.redirector import Redirector

__all__ = ["Check", "RedirectError", "Redirector", "cleanup_leftovers", "doctor"]
