#!/usr/bin/env python3
"""Records the first TLS record of each TCP connection on 127.0.0.1.

Usage: listener.py PORT OUTFILE [MAX]

Every accepted connection is read until one complete TLS record (5-byte
header plus its length) has arrived; the record is appended to OUTFILE as one
hex line and the connection is closed without an answer, so the browser never
gets past its first flight and holds no session state to resume. Records that
are not a handshake record holding a ClientHello are dropped. Stops after MAX
records (default 20) or when killed. Binds to 127.0.0.1 only.
"""
import socket
import sys


def read_record(conn):
    buf = b""
    while True:
        need = 5 if len(buf) < 5 else 5 + int.from_bytes(buf[3:5], "big")
        if len(buf) >= need:
            return buf[:need]
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    got = 0
    while got < limit:
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            rec = read_record(conn)
        except OSError:
            rec = None
        finally:
            conn.close()
        if rec and rec[0] == 0x16 and len(rec) > 5 and rec[5] == 0x01:
            with open(out, "a") as f:
                f.write(rec.hex() + "\n")
            got += 1
            print(f"hello {got}: {len(rec)} bytes", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
