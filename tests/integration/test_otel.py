"""OpenTelemetry traces (otlp_exporter) and Server-Timing, against a
Python OTLP/HTTP collector (otlputil.Collector): a proxied request is a
server span with one client span per upstream attempt, the backend gets
weir's attempt span as its parent, a client's traceparent is continued
(and a malformed one starts a new trace, its tracestate dropped), the
sampler's ratio holds over 1,000 requests, retries are spans with their
cause, h2 and gRPC are traced too, and a collector that is down or hangs
under 15 s of keep-alive load fails no request, keeps memory bounded and
counts what it dropped."""
import json
import re
import subprocess
import threading
import time
import urllib.request

import pytest

import backends as B
import conftest
import grpcutil as G
import tlsutil as TL
from conftest import closed_port, free_port
from otlputil import Collector
from test_failover import Load
from test_reload import wait_log
from test_tls import cert_section, pki  # noqa: F401 (the session PKI fixture)

CONFIG = """
[basic]
otlp_flush_interval = "100ms"
otlp_service_name = "edge"
%(basic)s

[admin]
addr = "127.0.0.1:@ADMIN@"

[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
otlp_exporter = "@OTLP@"
access_log = %(access_log)s
access_log_file = "@TMP@/access.log"
%(server)s

[locations.l]
upstream = "u"

[upstreams.u]
addrs = [%(addrs)s]
%(upstream)s
"""

ACCESS_LOG = '"{trace_id} {span_id} {status} {uri}"'
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@pytest.fixture
def collector():
    made = []

    def make(**kw):
        c = Collector(**kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()
    for c in made:  # every export decoded (protobuf by the protobuf library)
        assert not c.errors, c.errors


@pytest.fixture
def traced(weir_toml, backend, collector):
    def start(basic="", server="", upstream="", addrs=None, otlp=None, handler=None,
              access_log=None):
        b = backend(handler or B.fixed(b"hello\n"))
        c = otlp if otlp is not None else collector()
        admin = free_port()
        text = CONFIG % {"basic": basic, "server": server, "upstream": upstream,
                         "access_log": access_log or ACCESS_LOG,
                         "addrs": ", ".join('"%s"' % a for a in (addrs or ["@B@"]))}
        text = text.replace("@OTLP@", c.url if isinstance(c, Collector) else c).replace(
            "@ADMIN@", str(admin))
        w = weir_toml(text, B=b)
        w.admin_port, w.backend, w.collector = admin, b, c
        return w
    return start


def metric(w, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % w.admin_port,
                                  timeout=5).read().decode()
    m = re.search(re.escape(name) + r" (\d+)", text)
    return int(m.group(1)) if m else None


def one_server_span(c, trace_id=None, timeout=10):
    def find():
        ss = [s for s in c.server_spans() if trace_id is None or s["traceId"] == trace_id]
        return ss[0] if ss else None
    return conftest.wait_for(find, timeout)


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json", None])
def test_a_proxied_request_is_a_server_span_with_its_attempt(traced, tmp_path, protocol):
    w = traced(basic='otlp_protocol = "%s"\n' % protocol if protocol else "")
    r = B.get(w.port, "/a/b?q=1")
    assert r.status == 200
    sp = one_server_span(w.collector)
    assert sp, w.describe()
    assert sp["name"] == "GET l" and sp["kind"] == 2 and "parentSpanId" not in sp
    a = sp["attrs"]
    assert a["http.request.method"] == "GET" and a["url.path"] == "/a/b"
    assert a["http.route"] == "l" and a["http.response.status_code"] == 200
    assert a["client.address"] == "127.0.0.1" and a["network.protocol.version"] == "1.1"
    assert a["weir.server"] == "s" and a["weir.upstream"] == "u"
    assert a["http.response.size"] > 0 and a["http.request.size"] > 0
    assert sp["resource"]["service.name"] == "edge"
    assert int(sp["endTimeUnixNano"]) >= int(sp["startTimeUnixNano"]) > (time.time() - 60) * 1e9
    kids = w.collector.children(sp)
    assert len(kids) == 1, kids
    k = kids[0]
    assert k["kind"] == 3 and k["name"] == "GET"
    ka = k["attrs"]
    assert ka["server.address"] == "127.0.0.1" and ka["server.port"] == w.backend.port
    assert ka["weir.attempt"] == 1 and ka["http.response.status_code"] == 200
    assert ka["weir.connection.reused"] is False and "weir.connect_time_us" in ka
    assert int(sp["startTimeUnixNano"]) <= int(k["startTimeUnixNano"])
    assert int(k["endTimeUnixNano"]) <= int(sp["endTimeUnixNano"])
    # The backend's parent is the attempt's span; the trace is the request's.
    got = TP_RE.match(w.backend.last().headers.get("traceparent"))
    assert got and got.groups() == (sp["traceId"], k["spanId"], "01")
    # The access log names the same trace and span.
    line = conftest.wait_for(lambda: (tmp_path / "access.log").exists() and
                             (tmp_path / "access.log").read_text().strip())
    assert line == "%s %s 200 /a/b?q=1" % (sp["traceId"], sp["spanId"]), line
    # A later request may reuse the pooled connection: its attempt says so.
    for _ in range(5):
        assert B.get(w.port, "/again").status == 200
    assert conftest.wait_for(lambda: any(
        s["attrs"].get("weir.connection.reused") for s in w.collector.spans()
        if s["kind"] == 3)), w.collector.spans()
    # protobuf unless asked otherwise, as OpenTelemetry's exporters do
    want = "application/json" if protocol == "http/json" else "application/x-protobuf"
    assert set(w.collector.encodings) == {want}, w.collector.encodings


# Texts a client controls: percent-encoded bytes that are not UTF-8,
# controls, quotes, a path long enough for two-byte lengths. (An encoded
# NUL is refused with a 400 before the request has a span.)
HOSTILE_PATHS = ["/caf%C3%A9/%FF%FE/x", "/%00nul/%01%1f%7f", '/q"uo\\te', "/" + "p" * 300,
                 "/%E2%82" + "%AC" * 3 + "/%ED%A0%80/%F4%90%80%80/%C0%AF"]


def test_both_encodings_carry_the_same_hostile_texts(traced):
    """The same requests through weir with each encoding: the collector
    decodes every protobuf export with the protobuf library (which
    refuses a string that is not UTF-8), and both say the same."""
    seen = {}
    for protocol in ("http/protobuf", "http/json"):
        w = traced(basic='otlp_protocol = "%s"\n' % protocol, server="h2c = true\n")
        for path in HOSTILE_PATHS:
            B.get(w.port, path)
        # Raw bytes past ASCII in the request line (nginx takes them too).
        raw = B.request(w.port, b"GET /raw\xff\xc3\xa9\xc0\xaf\xed\xa0\x80 HTTP/1.1\r\n"
                                b"Host: x\r\nConnection: close\r\n\r\n")
        h2 = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                             "http://127.0.0.1:%d/h2%%FF%%C3%%A9" % w.port], timeout=30)
        assert h2.returncode == 0, h2
        assert conftest.wait_for(
            lambda: len(w.collector.server_spans()) >= len(HOSTILE_PATHS) + (raw.status == 200),
            10), w.describe()
        seen[protocol] = sorted(
            (s["attrs"].get("url.path"), s["attrs"].get("http.response.status_code"), s["name"])
            for s in w.collector.server_spans())
        assert not w.collector.errors, w.collector.errors
        w.stop()
    assert seen["http/protobuf"] == seen["http/json"], seen
    assert any("\ufffd" in (p or "") for p, _, _ in seen["http/json"]), seen


def test_an_incoming_traceparent_is_continued(traced):
    w = traced()
    r = B.get(w.port, "/", headers=[("traceparent", TP), ("tracestate", "congo=t61rcWkgMzE")])
    assert r.status == 200
    sp = one_server_span(w.collector, "0af7651916cd43dd8448eb211c80319c")
    assert sp, w.collector.spans()
    assert sp["parentSpanId"] == "b7ad6b7169203331"
    seen = w.backend.last().headers
    trace, parent, flags = TP_RE.match(seen.get("traceparent")).groups()
    assert trace == "0af7651916cd43dd8448eb211c80319c" and flags == "01"
    assert parent == w.collector.children(sp)[0]["spanId"] != "b7ad6b7169203331"
    assert seen.get("tracestate") == "congo=t61rcWkgMzE"
    assert len(seen.get_all("traceparent")) == 1


def test_an_unsampled_parent_is_carried_not_recorded(traced):
    w = traced()
    unsampled = "00-11111111111111111111111111111111-2222222222222222-00"
    assert B.get(w.port, "/u", headers=[("traceparent", unsampled)]).status == 200
    seen = TP_RE.match(w.backend.last().headers.get("traceparent")).groups()
    assert seen[0] == "1" * 32 and seen[1] != "2" * 16 and seen[2] == "00"
    assert B.get(w.port, "/later").status == 200
    assert one_server_span(w.collector), w.describe()
    time.sleep(0.3)
    assert all(s["traceId"] != "1" * 32 for s in w.collector.spans())


@pytest.mark.parametrize("bad", [
    TP.upper().replace("00-", "00-", 1),  # upper-case hex
    "ff" + TP[2:],  # version ff is invalid
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
    TP + "-extra",  # version 00 is exactly 55 characters
    TP[:-1],  # short
    "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",  # not hex
    "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",  # separators
    "",
])
def test_a_malformed_traceparent_starts_a_new_trace(traced, bad):
    w = traced()
    assert B.get(w.port, "/", headers=[("traceparent", bad),
                                       ("tracestate", "congo=t61rcWkgMzE")]).status == 200
    sp = one_server_span(w.collector)
    assert sp, w.describe()
    assert "parentSpanId" not in sp and sp["traceId"] != "0af7651916cd43dd8448eb211c80319c"
    seen = w.backend.last().headers
    assert TP_RE.match(seen.get("traceparent")).group(1) == sp["traceId"]
    assert seen.get("tracestate") is None  # another trace's state is not carried into a new one


def test_a_later_version_is_read_as_version_00(traced):
    w = traced()
    later = "cc" + TP[2:] + "-what-the-future-adds"
    assert B.get(w.port, "/", headers=[("traceparent", later)]).status == 200
    sp = one_server_span(w.collector, "0af7651916cd43dd8448eb211c80319c")
    assert sp and sp["parentSpanId"] == "b7ad6b7169203331", w.collector.spans()
    assert w.backend.last().headers.get("traceparent").startswith("00-0af76519")


def test_a_server_without_an_exporter_passes_traceparent_through(weir_toml, backend):
    b = backend(B.fixed(b"hi\n"))
    w = weir_toml("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@B@"]
""", B=b)
    for tp in (TP, "garbage"):
        assert B.get(w.port, "/", headers=[("traceparent", tp)]).status == 200
        assert b.last().headers.get("traceparent") == tp


def test_retries_are_attempt_spans_with_their_cause(traced):
    dead = closed_port()
    w = traced(addrs=["127.0.0.1:%d" % dead, "@B@"], upstream="max_fails = 0\n")
    for _ in range(6):
        assert B.get(w.port, "/r").status == 200

    def retried():
        return [s for s in w.collector.server_spans() if s["attrs"].get("weir.retries")]
    got = conftest.wait_for(retried)
    assert got, w.collector.spans()
    sp = got[0]
    assert sp["attrs"]["weir.retries"] == 1
    kids = sorted(w.collector.children(sp), key=lambda k: k["attrs"]["weir.attempt"])
    assert [k["attrs"]["weir.attempt"] for k in kids] == [1, 2]
    first, second = kids
    assert first["attrs"]["error.type"] == "connect" and first["status"]["code"] == 2
    assert first["attrs"]["server.port"] == dead
    assert second["attrs"]["http.response.status_code"] == 200 and "status" not in second
    assert int(first["endTimeUnixNano"]) <= int(second["startTimeUnixNano"])
    # The backend's parent is the attempt that reached it.
    tps = [r.headers.get("traceparent") for r in w.backend.requests]
    assert "00-%s-%s-01" % (sp["traceId"], second["spanId"]) in tps
    # The metrics count the retry by its cause, and the time per backend.
    assert metric(w, 'weir_upstream_retries_total{upstream="u",cause="connect"}') >= 1
    assert metric(w, 'weir_backend_duration_seconds_count{upstream="u",backend="127.0.0.1:%d"}'
                  % w.backend.port) >= 1


def test_the_sampling_ratio_holds_over_a_thousand_requests(traced):
    w = traced(basic='otlp_sampler = "ratio:0.25"\notlp_batch_size = 200\n')
    s = B.connect(w.port)
    rd = B.Reader(s)
    flags = {"00": 0, "01": 0}
    for i in range(1000):
        s.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        assert B.read_response(rd).status == 200
    s.close()
    for r in w.backend.requests:
        flags[TP_RE.match(r.headers.get("traceparent")).group(3)] += 1
    assert sum(flags.values()) == 1000
    # Binomial(1000, 0.25): mean 250, sd 13.7; 5 sd either way.
    assert 181 <= flags["01"] <= 319, flags
    assert conftest.wait_for(lambda: len(w.collector.server_spans()) == flags["01"], 15), (
        len(w.collector.server_spans()), flags)
    # parentbased is the default: a sampled parent is always recorded.
    w2 = traced(basic='otlp_sampler = "parentbased_ratio:0"\n')
    for i in range(20):
        tid = "%032x" % (i + 1)
        assert B.get(w2.port, "/", headers=[("traceparent", "00-%s-%016x-01" % (tid, i + 1))]
                     ).status == 200
        assert B.get(w2.port, "/").status == 200  # no parent: ratio 0
    assert conftest.wait_for(lambda: len(w2.collector.server_spans()) == 20)
    time.sleep(0.3)
    assert len(w2.collector.server_spans()) == 20


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.deadline(120)
def test_a_collector_down_under_load_fails_nothing_and_memory_stays_bounded(traced, collector):
    port = free_port()
    w = traced(otlp="http://127.0.0.1:%d" % port, basic="otlp_batch_size = 256\n")
    load = Load(w.port, n=4).start()
    time.sleep(3)
    rss_early = rss_kb(w.proc.pid)
    time.sleep(12)
    load.finish()
    rss_late = rss_kb(w.proc.pid)
    bad, errors = load.failures()
    assert not bad and not errors, (bad, errors[:5])
    assert load.total() > 1000
    # Four batches of 256 wait at most; the rest is dropped and counted.
    assert rss_late - rss_early < 64 * 1024, (rss_early, rss_late)
    assert metric(w, 'weir_otlp_spans_total{result="dropped_export"}') > 0
    # Backoff (1 s doubling): a handful of tries in 15 s, not one per tick.
    assert 0 < metric(w, "weir_otlp_export_failures_total") <= 12
    assert w.stderr().count("sent again with backoff") == 1
    # The collector comes up: what waited, and what comes, is exported.
    c = collector(port=port)
    assert B.get(w.port, "/after").status == 200
    assert conftest.wait_for(lambda: any(s["attrs"].get("url.path") == "/after"
                                         for s in c.server_spans()), 40), w.describe()
    assert metric(w, 'weir_otlp_spans_total{result="exported"}') > 0


@pytest.mark.deadline(120)
def test_a_hanging_collector_never_slows_requests(traced, collector):
    c = collector(delay=8.0)
    w = traced(otlp=c, basic="otlp_batch_size = 64\n")
    load = Load(w.port, n=4).start()
    time.sleep(3)
    rss_early = rss_kb(w.proc.pid)
    time.sleep(12)
    load.finish()
    rss_late = rss_kb(w.proc.pid)
    bad, errors = load.failures()
    assert not bad and not errors, (bad, errors[:5])
    assert load.total() > 1000
    assert c.posts >= 1
    assert rss_late - rss_early < 64 * 1024, (rss_early, rss_late)
    assert conftest.wait_for(lambda: metric(w, "weir_otlp_export_failures_total") > 0, 10)
    assert metric(w, 'weir_otlp_spans_total{result="dropped_export"}') > 0
    # (A worker's queue that fills meanwhile drops and counts: the unit
    # test otlp/a_full_ring_drops_and_counts; how soon it fills here
    # depends on the machine's speed.)


def test_export_headers_and_h2(traced):
    w = traced(basic='otlp_headers = ["Authorization: Bearer s3cret", "X-Tenant: a"]\n',
               server="h2c = true\n")
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                        "%{http_code} %{http_version}", "http://127.0.0.1:%d/h2" % w.port],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "200 2", r
    sp = one_server_span(w.collector)
    assert sp and sp["attrs"]["network.protocol.version"] == "2", w.collector.spans()
    headers = w.collector.exports[0][0]
    assert headers["authorization"] == "Bearer s3cret" and headers["x-tenant"] == "a"
    assert headers["content-type"] == "application/x-protobuf"


def test_h2_attempts_parents_server_timing_and_the_connected_event(traced):
    """Over h2 as over h1: the server span's attempt is the backend's
    parent, Server-Timing is in the h2 answer, and an attempt on a new
    connection has the "connected" event (a reused one has none)."""
    w = traced(server="h2c = true\nserver_timing = true\n")
    for path in ("/first", "/second"):
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o",
                            "/dev/null", "http://127.0.0.1:%d%s" % (w.port, path)],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.startswith("HTTP/2 200"), r
        st = [h.split(":", 1)[1].strip() for h in r.stdout.splitlines()
              if h.lower().startswith("server-timing:")]
        assert len(st) == 1 and SERVER_TIMING.match(st[0]), r.stdout
    assert conftest.wait_for(lambda: len(w.collector.server_spans()) == 2, 10), w.describe()
    by_path = {s["attrs"]["url.path"]: s for s in w.collector.server_spans()}
    tps = [r.headers.get("traceparent") for r in w.backend.requests]
    events = {}
    for path, sp in by_path.items():
        assert sp["attrs"]["network.protocol.version"] == "2", sp
        kids = w.collector.children(sp)
        assert len(kids) == 1 and kids[0]["kind"] == 3, kids
        k = kids[0]
        assert "00-%s-%s-01" % (sp["traceId"], k["spanId"]) in tps, (tps, k)
        events[path] = [e["name"] for e in k.get("events", [])]
        for e in k.get("events", []):
            assert int(k["startTimeUnixNano"]) <= int(e["timeUnixNano"]) <= int(
                k["endTimeUnixNano"]), k
    # A new upstream connection has the event, a pooled one not (the second
    # request may come to the other worker, whose pool is its own).
    assert events["/first"] == ["connected"], events
    for path, sp in by_path.items():
        k = w.collector.children(sp)[0]
        assert events[path] == ([] if k["attrs"]["weir.connection.reused"] else ["connected"]), (
            path, k)


def test_the_json_access_log_names_the_trace(traced, tmp_path):
    w = traced(access_log='"json"')
    assert B.get(w.port, "/j").status == 200
    sp = one_server_span(w.collector)
    assert sp, w.describe()
    line = conftest.wait_for(lambda: (tmp_path / "access.log").exists() and
                             (tmp_path / "access.log").read_text().strip())
    doc = json.loads(line)
    assert doc["trace_id"] == sp["traceId"] and doc["span_id"] == sp["spanId"], (doc, sp)


def test_the_tls_handshake_is_a_span_of_the_connections_first_request(traced, pki):  # noqa: F811
    import http.client
    w = traced(server='certificates = ["a"]\n', upstream="\n" + cert_section(pki, "a"))
    conn = http.client.HTTPSConnection("127.0.0.1", w.port, context=TL.client_context(pki),
                                       timeout=10)
    for path in ("/one", "/two"):  # one keep-alive connection
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    assert conftest.wait_for(lambda: len(w.collector.server_spans()) >= 2, 10), w.describe()
    by_path = {s["attrs"]["url.path"]: s for s in w.collector.server_spans()}
    one, two = by_path["/one"], by_path["/two"]
    assert one["attrs"]["tls.protocol.version"] == "1.3", one
    assert two["attrs"]["tls.protocol.version"] == "1.3", two
    hs = [k for k in w.collector.children(one) if k["name"] == "tls handshake"]
    assert len(hs) == 1, w.collector.children(one)
    h = hs[0]
    assert h["kind"] == 1 and h["attrs"]["tls.protocol.version"] == "1.3", h
    assert h["attrs"]["tls.cipher"] and h["attrs"]["tls.resumed"] is False, h
    start, end = int(h["startTimeUnixNano"]), int(h["endTimeUnixNano"])
    # The loop's clock, read once a round: a handshake within one round
    # (a loaded machine, TSan) takes 0.
    assert 0 < start <= end <= int(one["startTimeUnixNano"]), (h, one)
    assert int(one["startTimeUnixNano"]) - start < 10e9  # the same clock, not an epoch off
    # The connection's later requests do not tell it again.
    assert not [k for k in w.collector.children(two) if k["name"] == "tls handshake"]


def test_a_collector_that_refuses_is_not_retried_one_that_is_busy_is(traced, collector):
    """OTLP/HTTP: a 400 will never be taken (the batch is dropped and
    counted, sent once); a 503 is sent again with backoff until the
    collector takes it, and then nothing is lost."""
    refusing = collector(status=400)
    w = traced(otlp=refusing)
    for i in range(20):
        assert B.get(w.port, "/x%d" % i).status == 200
    assert conftest.wait_for(
        lambda: metric(w, 'weir_otlp_spans_total{result="dropped_export"}') == 20, 10), \
        w.describe()
    time.sleep(1.5)  # a retry would have come by now (backoff starts at 1 s)
    assert refusing.posts == metric(w, "weir_otlp_export_failures_total") <= 20
    assert not refusing.exports

    busy = collector(status=503)
    w2 = traced(otlp=busy)
    for i in range(10):
        assert B.get(w2.port, "/y%d" % i).status == 200
    assert conftest.wait_for(lambda: busy.posts >= 2, 10), w2.describe()  # sent again
    assert metric(w2, 'weir_otlp_spans_total{result="exported"}') == 0
    busy.status = 200
    assert conftest.wait_for(lambda: len(busy.server_spans()) == 10, 15), w2.describe()
    assert metric(w2, 'weir_otlp_spans_total{result="dropped_export"}') in (0, None)


def test_reloads_that_switch_the_encoding_lose_no_span(weir_toml, backend, collector, tmp_path):
    """Requests keep coming while reloads switch otlp_protocol and the
    service name: every request is a span, every export decodes, and each
    batch says the encoding and the name it was begun with."""
    import signal
    b, c = backend(B.fixed(b"ok\n")), collector()
    base = CONFIG % {"basic": "", "server": "", "upstream": "", "addrs": '"@B@"',
                     "access_log": ACCESS_LOG}
    base = base.replace("@OTLP@", c.url).replace("@ADMIN@", str(free_port()))

    def text(src, protocol, name):
        return src.replace('otlp_service_name = "edge"',
                           'otlp_service_name = "%s"\notlp_protocol = "%s"' % (name, protocol))
    w = weir_toml(text(base, "http/protobuf", "edge"), B=b)
    path = tmp_path / "weir-1.toml"
    first = path.read_text().replace('otlp_service_name = "edge"\notlp_protocol = "http/protobuf"',
                                     'otlp_service_name = "edge"')
    sent, bad, stop = [0], [], [False]

    def load():
        while not stop[0]:
            r = B.get(w.port, "/r%d" % sent[0])
            sent[0] += 1
            if r.status != 200:
                bad.append(r.status)
    t = threading.Thread(target=load)
    t.start()
    try:
        for i, (protocol, name) in enumerate([("http/json", "edge-json"),
                                              ("http/protobuf", "edge-pb"),
                                              ("http/json", "edge-json2")]):
            time.sleep(0.7)
            path.write_text(text(first, protocol, name))
            w.signal(signal.SIGHUP)
            assert wait_log(w, "reloaded", i + 1), w.describe()
        time.sleep(0.7)
    finally:
        stop[0] = True
        t.join(30)
    assert not bad and sent[0] > 50, (bad, sent[0])
    assert conftest.wait_for(lambda: len(c.server_spans()) >= sent[0], 10), (
        len(c.server_spans()), sent[0])
    assert len(c.server_spans()) == sent[0]
    assert set(c.encodings) == {"application/json", "application/x-protobuf"}
    names = {"application/json": {"edge-json", "edge-json2"},
             "application/x-protobuf": {"edge", "edge-pb"}}
    with c.lock:
        exports = list(zip(c.encodings, c.exports))
    for ctype, (_, doc) in exports:
        for rs in doc["resourceSpans"]:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
            assert attrs["service.name"] in names[ctype], (ctype, attrs)


AUTH_CONF = """
[basic]
otlp_flush_interval = "100ms"

[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
otlp_exporter = "@OTLP@"

[plugins.auth]
category = "forward_auth"
auth_url = "http://@A@/verify"

[locations.l]
upstream = "u"
plugins = ["auth"]

[upstreams.u]
addrs = ["@B@"]
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_a_plugin_that_waits_is_a_child_span(weir_toml, backend, collector, protocol):
    """forward_auth waits for its sub-request: that wait is an internal
    span under the request's, as long as the auth service took, with the
    plugin's name and how it ended (a refusal too)."""
    def slow_auth(conn, req):
        time.sleep(0.2)
        status = 200 if req.headers.get("authorization") == "Bearer ok" else 403
        conn.send(B.response_head(status, [("Content-Length", "0")]))
    a, b, c = backend(slow_auth), backend(B.fixed(b"in\n")), collector()
    text = AUTH_CONF.replace("@OTLP@", c.url).replace(
        "[basic]\n", '[basic]\notlp_protocol = "%s"\n' % protocol)
    w = weir_toml(text, A=a, B=b)
    assert B.get(w.port, "/p", headers=[("Authorization", "Bearer ok")]).status == 200
    assert B.get(w.port, "/q").status == 403
    assert conftest.wait_for(lambda: len(c.server_spans()) >= 2, 10), w.describe()
    by_path = {s["attrs"]["url.path"]: s for s in c.server_spans()}
    for path, result in (("/p", "continue"), ("/q", "answered")):
        sp = by_path[path]
        waits = [k for k in c.children(sp) if k["kind"] == 1]
        assert len(waits) == 1, c.children(sp)
        k = waits[0]
        assert k["name"] == "plugin auth", k
        assert k["attrs"]["weir.plugin"] == "auth"
        assert k["attrs"]["weir.plugin.category"] == "forward_auth"
        assert k["attrs"]["weir.plugin.result"] == result, k
        took = int(k["endTimeUnixNano"]) - int(k["startTimeUnixNano"])
        assert 0.15e9 < took < int(sp["endTimeUnixNano"]) - int(sp["startTimeUnixNano"]) + 1
        assert int(sp["startTimeUnixNano"]) <= int(k["startTimeUnixNano"])
    # The refused request never reached the backend: no attempt span.
    assert [k["kind"] for k in c.children(by_path["/q"])] == [1]


def test_a_grpc_call_is_traced_and_the_backend_gets_its_parent(tmp_path, weir_toml, collector):
    c = collector()
    b = G.GrpcBackend("A")
    try:
        port = free_port()
        text = G.config(port, [b], server={"otlp_exporter": c.url},
                        extra='[basic]\notlp_flush_interval = "100ms"\n')
        w = weir_toml(text.replace("127.0.0.1:%d" % port, "127.0.0.1:@PORT@"))
        ch = G.channel(w.port)
        assert G.unary(ch, b"hi") == b"A:hi"
        ch.close()
        sp = one_server_span(c)
        assert sp, w.describe()
        a = sp["attrs"]
        assert a["url.path"] == "/weir.test.Svc/Unary" and a["network.protocol.version"] == "2"
        assert a["http.response.status_code"] == 200
        kid = c.children(sp)[0]
        assert b.metadata[-1]["traceparent"] == "00-%s-%s-01" % (sp["traceId"], kid["spanId"])
    finally:
        b.stop()


# ---- Server-Timing ----

SERVER_TIMING = re.compile(r"^upstream-connect;dur=[0-9.]+, upstream-response;dur=[0-9.]+, "
                           r"(cache;desc=\"([a-z-]+)\", )?total;dur=([0-9.]+)$")


def test_server_timing(weir_toml, backend):
    b = backend(B.fixed(b"hi\n", headers=[("Server-Timing", "db;dur=53")]))
    off = free_port()
    w = weir_toml("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l", "local"]
server_timing = true
[servers.off]
addr = "127.0.0.1:%d"
locations = ["l"]
[locations.l]
upstream = "u"
[locations.local]
path = "/local"
echo = true
[upstreams.u]
addrs = ["@B@"]
""" % off, B=b)
    r = B.get(w.port, "/")
    values = r.headers.get_all("server-timing")
    assert "db;dur=53" in values  # the backend's own stays
    mine = [v for v in values if v != "db;dur=53"]
    assert len(mine) == 1 and SERVER_TIMING.match(mine[0]), values
    # Answered by weir itself: the total only.
    r = B.get(w.port, "/local")
    assert re.match(r"^total;dur=[0-9.]+$", r.headers.get("server-timing")), r.headers
    # Off unless asked: the backend's header only.
    conftest.wait_port(off)
    assert B.get(off, "/").headers.get_all("server-timing") == ["db;dur=53"]


def test_server_timing_says_a_cache_hit(weir_toml, backend):
    b = backend(B.fixed(b"cached\n", headers=[("Cache-Control", "max-age=60")]))
    w = weir_toml("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
server_timing = true
[caches.default]
memory = "8MB"
[plugins.c]
category = "cache"
[locations.l]
upstream = "u"
plugins = ["c"]
[upstreams.u]
addrs = ["@B@"]
""", B=b)
    first = SERVER_TIMING.match(B.get(w.port, "/x").headers.get("server-timing"))
    assert first and first.group(2) == "uri-miss", first
    hit = B.get(w.port, "/x").headers.get("server-timing")
    assert re.match(r'^cache;desc="hit", total;dur=[0-9.]+$', hit), hit


def test_a_wait_for_the_cache_lock_is_a_child_span(weir_toml, backend, collector):
    """Two misses of one key at once: the second waits for the first's
    fill (the cache's lock), and that wait is a span of its request. No
    step rests on timing: the backend holds the fill until weir says the
    second waits."""
    release = threading.Event()

    def held_cacheable(conn, req):
        release.wait(30)
        body = b"filled\n"
        conn.send(B.response_head(200, [("Cache-Control", "max-age=60"),
                                        ("Content-Length", str(len(body)))]) + body)
    b, c = backend(held_cacheable), collector()
    w = weir_toml("""
[basic]
log_level = "debug"
otlp_flush_interval = "100ms"
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
otlp_exporter = "%s"
[caches.default]
memory = "8MB"
[plugins.c]
category = "cache"
[locations.l]
upstream = "u"
plugins = ["c"]
[upstreams.u]
addrs = ["@B@"]
""" % c.url, B=b)
    got = []
    first = threading.Thread(target=lambda: got.append(B.get(w.port, "/k").status))
    first.start()
    assert conftest.wait_for(lambda: b.request_count() == 1, 20)  # it holds the lock
    second = threading.Thread(target=lambda: got.append(B.get(w.port, "/k").status))
    second.start()
    assert conftest.wait_for(lambda: "waits for another request's fill" in w.stderr(), 20), \
        w.describe()
    time.sleep(0.4)  # a wait of some length, to see in its span
    release.set()
    first.join(20)
    second.join(20)
    assert got == [200, 200] and b.request_count() == 1
    assert conftest.wait_for(lambda: len(c.server_spans()) == 2, 10), w.describe()
    waits = [k for s in c.server_spans() for k in c.children(s) if k["kind"] == 1]
    assert len(waits) == 1, [c.children(s) for s in c.server_spans()]
    k = waits[0]
    assert k["name"] == "plugin cache" and k["attrs"]["weir.plugin.category"] == "cache"
    assert k["attrs"]["weir.plugin.result"] == "filled", k
    assert int(k["endTimeUnixNano"]) - int(k["startTimeUnixNano"]) >= 0.4e9


@pytest.mark.parametrize("basic,server,expect", [
    ('otlp_sampler = "sometimes"\n', "", ":2: 'otlp_sampler' in [basic] is \"always_on\""),
    ('otlp_sampler = "ratio:1.5"\n', "", "'otlp_sampler' in [basic]"),
    ('otlp_headers = ["Bad Name: x"]\n', "", "'otlp_headers' in [basic]: 'Bad Name: x' is not"),
    ('otlp_headers = ["NoColon"]\n', "", "'otlp_headers' in [basic]: 'NoColon' is not"),
    ('otlp_batch_size = 0\n', "", "otlp_batch_size"),
    ('otlp_flush_interval = "soon"\n', "", "otlp_flush_interval"),
    ('otlp_protocol = "grpc"\n', "", ":2: 'otlp_protocol' in [basic] is \"http/protobuf\" or "
     "\"http/json\", not 'grpc'"),
    ("", 'otlp_exporter = "grpc://h:4317"\n', "'otlp_exporter' in [servers.s] is the http://"),
    ("", "server_timing = 1\n", "server_timing"),
])
def test_tracing_settings_are_checked(tmp_path, basic, server, expect):
    conf = tmp_path / "w.toml"
    conf.write_text("[basic]\n%s\n[servers.s]\naddr = \"127.0.0.1:1\"\nlocations = [\"l\"]\n%s"
                    "[locations.l]\necho = true\n" % (basic, server))
    r = subprocess.run([conftest.binary("weir"), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and expect in r.stderr, r.stderr


def test_a_tcp_server_takes_no_otlp_exporter(tmp_path):
    conf = tmp_path / "w.toml"
    conf.write_text('[servers.t]\naddr = "127.0.0.1:1"\nprotocol = "tcp"\nupstream = "u"\n'
                    'otlp_exporter = "http://127.0.0.1:4318"\n'
                    '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    r = subprocess.run([conftest.binary("weir"), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "otlp_exporter" in r.stderr, r.stderr
