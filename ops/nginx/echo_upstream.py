#!/usr/bin/env python3
"""The application behind the gateway in ops/nginx/test: answers every request with a JSON
echo of the identity headers it received, so the test can see what nginx passed upstream.

    echo_upstream.py PORT_FILE     binds 127.0.0.1 on a free port, writes the port to PORT_FILE
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECHOED = ("x-agent-id", "x-key-id", "x-agent-environment", "authorization", "x-api-key", "x-request-id")


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = {"method": self.command, "path": self.path}
        body.update({name: self.headers.get(name) for name in ECHOED})
        data = (json.dumps(body) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):  # quiet
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    # Written whole, then renamed: a reader never sees half a port.
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
