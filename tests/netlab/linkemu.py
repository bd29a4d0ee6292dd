#!/usr/bin/env python3
"""A network in user space for ferry's namespace tests: netem's delay, jitter and loss,
plus dropping UDP, between network namespaces that the test made.

Why this exists: the kernel these tests run on has no `sch_netem` (and no module loading),
so `tc qdisc ... netem` is refused. A TUN device in each namespace and this process moving
IPv4 packets between them gives the same thing: every node is a real network stack (its
own TCP, its own UDP, its own routes), and what happens to the packets in between is up
to us.

    linkemu.py --node NAME NETNS ADDR [delay=MS] [jitter=MS] [loss=P] [udp=off] ...

Each node gets a TUN device in NETNS with ADDR/24; a packet from node A to node B is
delayed by A's delay plus B's delay (each drawn ±jitter), and lost with A's loss, then
again with B's loss: a node's settings describe its access link, in both directions. A
node with udp=off neither sends nor receives UDP (a network that blocks it). The delay
line holds at most LIMIT packets (20,000, about 30 MB); beyond that, packets drop and are
counted apart from the configured loss. (netem's default of 1,000 per device, applied here
to the whole network, turned a 1% loss into 20%.)

Prints "ready" once every device is up. Reads commands on stdin, one per line,
`set NAME key=value...` (for example `set client loss=1`) or `stats` (prints, per node,
`stats NAME sent=N dropped=N overflow=N` for the packets it sent: delivered, lost as
configured, lost to the full delay line); exits when stdin closes, so it
never outlives the test that started it. Only touches the namespaces it was given.
"""

import argparse
import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
LIMIT = 20_000


class Node:
    def __init__(self, name, netns, addr, settings):
        self.name, self.netns, self.addr = name, netns, addr
        self.delay = self.jitter = self.loss = 0.0
        self.udp = True
        self.apply(settings)
        self.fd = None
        self.passed = self.dropped = self.overflow = 0

    def apply(self, settings):
        for item in settings:
            key, _, value = item.partition("=")
            if key == "delay":
                self.delay = float(value) / 1000
            elif key == "jitter":
                self.jitter = float(value) / 1000
            elif key == "loss":
                self.loss = float(value)
            elif key == "udp":
                self.udp = value != "off"
            else:
                raise SystemExit(f"linkemu: unknown setting {item!r} (delay, jitter, loss, udp)")

    def one_way(self):
        return max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", nargs="+", action="append", required=True, metavar="NAME NETNS ADDR [k=v]")
    args = parser.parse_args()
    nodes = [Node(n[0], n[1], n[2], n[3:]) for n in args.node]
    by_addr = {bytes(map(int, n.addr.split("."))): n for n in nodes}
    by_name = {n.name: n for n in nodes}

    for index, node in enumerate(nodes):
        dev = f"fl{os.getpid()}x{index}"[:15]
        node.fd = open_tun(dev)
        ip("link", "set", "dev", dev, "netns", node.netns)
        ip("-n", node.netns, "link", "set", "lo", "up")
        ip("-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", dev)
        ip("-n", node.netns, "link", "set", dev, "up")
    print("ready", flush=True)

    by_fd = {n.fd: n for n in nodes}
    line = []  # the delay line: (due, sequence, destination, packet)
    sequence = 0
    stdin = sys.stdin.fileno()
    while True:
        timeout = max(0.0, line[0][0] - time.monotonic()) if line else 1.0
        readable, _, _ = select.select([stdin, *by_fd], [], [], timeout)
        for fd in readable:
            if fd == stdin:
                command = sys.stdin.readline()
                if not command:
                    return
                words = command.split()
                if len(words) >= 2 and words[0] == "set" and words[1] in by_name:
                    by_name[words[1]].apply(words[2:])
                elif words == ["stats"]:
                    for n in nodes:
                        print(f"stats {n.name} sent={n.passed} dropped={n.dropped} overflow={n.overflow}", flush=True)
                continue
            source = by_fd[fd]
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                # IPv4 only: the devices have no IPv6 address, and what the kernel sends
                # on its own over IPv6 (router solicitations) has nowhere to go.
                if len(packet) < 20 or packet[0] >> 4 != 4:
                    continue
                target = by_addr.get(packet[16:20])
                if target is None:
                    continue
                udp = packet[9] == 17
                if (
                    (udp and not (source.udp and target.udp))
                    or random.random() < source.loss
                    or random.random() < target.loss
                ):
                    source.dropped += 1
                    continue
                if len(line) >= LIMIT:
                    source.overflow += 1
                    continue
                source.passed += 1
                sequence += 1
                due = time.monotonic() + source.one_way() + target.one_way()
                heapq.heappush(line, (due, sequence, target.fd, packet))
        now = time.monotonic()
        while line and line[0][0] <= now:
            _, _, fd, packet = heapq.heappop(line)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # the namespace's stack refused it (device going down): a lost packet


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
