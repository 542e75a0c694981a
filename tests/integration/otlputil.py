"""A Python OTLP/HTTP collector for the tests: POST /v1/traces in the
protobuf encoding (decoded by the protobuf library, otlp_pb) or the JSON
one, recording each export's document and headers. It can answer a
status of the test's choice, or hang (a slow collector)."""
import http.server
import json
import threading
import time

import otlp_pb
from conftest import free_port


class Collector:
    def __init__(self, status=200, delay=0.0, port=None):
        self.status, self.delay = status, delay
        self.exports = []  # (headers dict, document)
        self.encodings = []  # the Content-Type of each export taken
        self.errors = []  # bodies that did not decode
        self.posts = 0
        self.lock = threading.Lock()
        self.port = port or free_port()
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with me.lock:
                    me.posts += 1
                if me.delay:
                    time.sleep(me.delay)
                status = me.status
                if status == 200 and self.path == "/v1/traces":
                    ctype = self.headers.get("Content-Type", "")
                    try:
                        if ctype == "application/x-protobuf":
                            doc = otlp_pb.decode(body)
                        elif ctype == "application/json":
                            doc = json.loads(body)
                        else:
                            raise ValueError("Content-Type %r" % ctype)
                    except Exception as e:  # the test fails on it: recorded
                        with me.lock:
                            me.errors.append("%s: %r" % (e, body[:200]))
                        status = 400
                    else:
                        with me.lock:
                            me.exports.append(
                                ({k.lower(): v for k, v in self.headers.items()}, doc))
                            me.encodings.append(ctype)
                out = b"{}"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def spans(self):
        """Every span received: dicts with 'attrs' (key -> python value)
        and 'resource' (the resource's attrs) added."""
        out = []
        with self.lock:
            exports = list(self.exports)
        for _, doc in exports:
            for rs in doc["resourceSpans"]:
                res = attrs(rs["resource"].get("attributes", []))
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        sp = dict(sp)
                        sp["attrs"] = attrs(sp.get("attributes", []))
                        sp["resource"] = res
                        out.append(sp)
        return out

    def server_spans(self):
        return [s for s in self.spans() if s["kind"] == 2]

    def children(self, span):
        return [s for s in self.spans()
                if s.get("parentSpanId") == span["spanId"] and s["traceId"] == span["traceId"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def attrs(lst):
    out = {}
    for a in lst:
        v = a["value"]
        if "stringValue" in v:
            out[a["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[a["key"]] = int(v["intValue"])
        elif "boolValue" in v:
            out[a["key"]] = v["boolValue"]
        else:
            out[a["key"]] = v
    return out
