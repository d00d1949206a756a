"""A fragile origin, as many real services are (gunicorn sync workers, Python and Ruby servers, PHP-FPM at
its limit): Python's standard-library HTTPServer, single-threaded, HTTP/1.0 with a close after every
response, and a listen backlog of 5. It names its pid in the body, as mend-demo does.

Usage: python3 fragile_server.py PORT
"""

import http.server
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = ("fragile (pid %d)\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
assert server.request_queue_size == 5
server.serve_forever()
