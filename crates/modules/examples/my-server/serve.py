"""my-server: answers every GET with the configured message, on the configured port."""

import http.server
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "etc", "server.json"), encoding="utf-8") as f:
    CONFIG = json.load(f)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (CONFIG["message"] + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


http.server.ThreadingHTTPServer(("127.0.0.1", CONFIG["port"]), Handler).serve_forever()
