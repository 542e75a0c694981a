"""Message framing through the proxy: chunked both ways, trailers, HTTP/1.0
clients, Expect: 100-continue."""
import subprocess
import time

import backends as B


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_chunked_request_body_arrives_intact(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    pieces = [b"hello ", b"x" * 5000, b"", b"y" * 70000, b" end"]
    body = b"".join(pieces)
    raw = (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"".join(chunk(p) for p in pieces if p) + b"0\r\n\r\n")
    r = B.request(w.port, raw)
    assert r.status == 200
    assert r.body == body
    req = b.last()
    assert req.body == body
    # Re-framed: either chunked or with an exact Content-Length, never both.
    assert req.chunked != req.headers.has("Content-Length"), req.headers
    if req.headers.has("Content-Length"):
        assert int(req.headers.get("Content-Length")) == len(body)


def test_chunked_request_with_extensions_and_trailers(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    raw = (b"POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"5;name=value\r\nhello\r\n6;a=\"q\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    r = B.request(w.port, raw)
    assert r.status == 200 and r.body == b"hello world"
    assert b.last().body == b"hello world"


def test_chunked_request_sent_slowly(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    s = B.connect(w.port)
    s.sendall(b"POST /slowchunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = b""
    for i in range(5):
        piece = b"piece-%d;" % i
        data = chunk(piece)
        for j in range(0, len(data), 3):  # split chunk framing across writes
            s.sendall(data[j:j + 3])
            time.sleep(0.01)
        sent += piece
    s.sendall(b"0\r\n\r\n")
    r = B.read_response(B.Reader(s))
    s.close()
    assert r.status == 200 and r.body == sent


def test_chunked_response_with_trailers_raw(backend, weir):
    pieces = (b"alpha ", b"beta " * 1000, b"gamma\n")
    b = backend(B.chunked(pieces, trailers=(("X-Checksum", "abc123"),)))
    w = weir([b])
    s = B.connect(w.port)
    s.sendall(b"GET /trail HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    r = B.read_response(B.Reader(s))
    s.close()
    assert r.status == 200
    assert r.framing == "chunked"
    assert r.body == b"".join(pieces)
    assert r.trailers.get("X-Checksum") == "abc123"


def test_chunked_response_through_curl(backend, weir, tmp_path):
    pieces = tuple(b"%05d\n" % i for i in range(2000))
    b = backend(B.chunked(pieces, trailers=(("X-Checksum", "abc123"),)))
    w = weir([b])
    out = tmp_path / "body"
    res = subprocess.run(["curl", "-sS", "--max-time", "20", "--raw", "-o", str(out),
                          "-D", "-", "http://127.0.0.1:%d/c" % w.port],
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(b"HTTP/1.1 200")
    # --raw keeps the chunked framing: the trailer section ends the body.
    raw = out.read_bytes()
    assert raw.endswith(b"\r\n0\r\nX-Checksum: abc123\r\n\r\n"), raw[-80:]
    assert B.read_chunked(_BytesReader(raw))[0] == b"".join(pieces)
    res = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", str(out),
                          "http://127.0.0.1:%d/c" % w.port], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == b"".join(pieces)


class _BytesReader(B.Reader):
    def __init__(self, data):
        self.buf = bytearray(data)

    def _fill(self):
        raise B.PeerClosed("end of data")


def test_http10_client_gets_close_delimited_body(backend, weir):
    pieces = (b"one ", b"two ", b"three\n")
    b = backend(B.chunked(pieces, trailers=()))
    w = weir([b])
    s = B.connect(w.port)
    s.sendall(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    r = B.read_response(B.Reader(s))
    s.close()
    assert r.status == 200
    assert not r.headers.has("Transfer-Encoding"), r.headers
    assert r.framing in ("close", "length")
    assert r.body == b"".join(pieces)


def test_content_length_request_is_not_rechunked(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    body = b"z" * 100000
    raw = b"PUT /cl HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    r = B.request(w.port, raw + body)
    assert r.status == 200 and r.body == body
    assert b.last().headers.get("Content-Length") == str(len(body))
    assert not b.last().chunked


def test_expect_100_continue(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    s = B.connect(w.port, timeout=5)
    body = b"payload after continue"
    s.sendall(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    rd = B.Reader(s)
    first = B.read_response(rd, keep_interim=True)  # must come before we send the body
    assert first.status == 100, first
    assert first.version == "HTTP/1.1"
    s.sendall(body)
    r = B.read_response(rd)
    s.close()
    assert r.status == 200 and r.body == body
    assert b.last().body == body


def test_expect_100_continue_curl(backend, weir, tmp_path):
    b = backend(B.echo())
    w = weir([b])
    data = tmp_path / "data"
    data.write_bytes(b"d" * 200000)  # curl sends Expect: 100-continue above 1 MiB/with -H
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "--expect100-timeout", "5",
                          "-H", "Expect: 100-continue", "--data-binary", "@%s" % data,
                          "-w", "%{time_total}", "-o", str(tmp_path / "out"),
                          "http://127.0.0.1:%d/e" % w.port], capture_output=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out").read_bytes() == data.read_bytes()
    # curl waits --expect100-timeout if no 100 Continue comes.
    assert float(res.stdout) < 4, "no 100 Continue: curl waited %s s" % res.stdout
