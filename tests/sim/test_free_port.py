"""sim.broker.free_port: ports chosen together must differ (a NATS node binds three of them at once)."""

from __future__ import annotations

import socket

from sim.broker import free_port


def test_one_process_never_gets_the_same_port_twice() -> None:
    """500 ports chosen while none is bound yet (as a cluster's ports are) are all different: drawn at random from
    about 22,000 ports with no memory, two would coincide in almost every run."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_is_bindable_and_below_the_ephemeral_range() -> None:
    port = free_port()
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        low = int(f.read().split()[0])
    assert port < low
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
