"""Run inside a lab namespace: `catch tcp|udp PORT` reports where each redirected connection
or datagram was going; `dial tcp|udp HOST PORT` says whether it was caught."""

from __future__ import annotations

import socket
import struct
import sys

SO_ORIGINAL_DST = 80


def catch(proto: str, port: int) -> None:
    if proto == "tcp":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(16)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            try:
                raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                dst_port, dst_ip = struct.unpack_from("!2xH4s", raw)
                where = f"{socket.inet_ntoa(dst_ip)}:{dst_port}"
            except OSError:  # not redirected: dialled directly
                where = "{}:{}".format(*conn.getsockname())
            conn.sendall(f"caught {where}".encode())
            conn.close()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        _, peer = server.recvfrom(65535)
        server.sendto(b"caught udp", peer)


def dial(proto: str, host: str, port: int) -> str:
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=1) as conn:
                return conn.recv(100).decode() or "connected, nothing said"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            sock.sendto(b"hello", (host, port))
            return sock.recv(100).decode()
    except OSError as e:
        return f"not caught: {type(e).__name__}"


if __name__ == "__main__":
    if sys.argv[1] == "catch":
        catch(sys.argv[2], int(sys.argv[3]))
    else:
        print(dial(sys.argv[2], sys.argv[3], int(sys.argv[4])))
