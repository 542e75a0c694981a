/*
 * health.c - active health checks, run on the server's control thread.
 *
 * Each upstream with a check gets a timer every interval; each tick probes
 * every member that has no probe in flight: a non-blocking connect (TCP
 * checks stop there), then for HTTP checks one "GET path" with
 * "Connection: close", reading until the response head is complete and,
 * when a body substring is expected, until the body holds it or the
 * connection closes (16 KiB at most); gRPC checks send one
 * grpc.health.v1.Health/Check call over h2c (nghttp2) and want the answer
 * SERVING with grpc-status 0. UDP checks send one datagram (the payload,
 * or a DNS query) on a connected socket and want a datagram back: an ICMP
 * port unreachable fails them at once. Every probe has the check's timeout.
 *
 * A backend turns unhealthy after `fall` consecutive failed probes and
 * healthy again after `rise` consecutive successes; the verdict is an
 * atomic the workers read at selection, and every change is logged.
 *
 * A member that joins after the check is set starts unhealthy
 * (upstream.c) and is probed at once (kick), not at the next tick.
 *
 * The runner's thread is the server's control thread: it also runs the
 * upstreams' lookup services (discovery.c, dns.c).
 *
 * Everything here runs on the control thread; workers are never blocked.
 */
#include "lb/health.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/jitter.h"
#include "core/log.h"
#include "core/loop.h"
#include "net/tls.h"
#include "http/h1_parse.h"
#include "lb/upstream_int.h"
#include "net/proxy_proto.h"
#include "net/sock.h"

#define PROBE_BUF (16 * 1024)

typedef struct probe probe;
typedef struct checked checked;

/* One upstream under check. */
struct checked {
    weir_upstream *u;
    weir_health_check hc; /* copied when the runner started */
    weir_timer tick;
    probe *probes; /* in flight */
    weir_health_runner *r;
};

struct probe {
    weir_io io;
    weir_timer timeout;
    checked *c;
    weir_backend *b; /* a reference */
    probe *next;
    bool connected;
    bool dgram_sent; /* a UDP check's datagram went out */
    size_t sent, req_len;
    char req[1400];
    size_t got;
    char buf[PROBE_BUF];
    SSL *ssl; /* a check over TLS */
    bool tls_done;
    /* gRPC checks */
    nghttp2_session *ng;
    size_t fed;      /* bytes of buf given to ng */
    int grpc_status; /* -1 until the trailers say */
    int serving;     /* HealthCheckResponse.status, -1 until known */
    bool grpc_done;
    unsigned char msg[64]; /* the response message, length-prefixed */
    size_t msg_len;
    unsigned char call[300]; /* the request message */
    size_t call_len, call_sent;
};

struct weir_health_runner {
    weir_loop *loop;
    pthread_t thread;
    bool started;
    bool stopping; /* the loop has returned: start no probe */
    checked *v;
    size_t n;
    weir_upstream **disc; /* upstreams with a lookup service (discovery.c) */
    size_t n_disc;
    uint64_t transitions; /* state changes, for tests and metrics */
};

static void set_verdict(checked *c, weir_backend *b, bool ok, const char *why)
{
    const weir_health_check *hc = &c->hc;
    bool healthy = atomic_load(&b->healthy);
    if (ok) {
        b->hc_fall = 0;
        if (!healthy && ++b->hc_rise >= hc->rise) {
            atomic_store(&b->healthy, true);
            atomic_fetch_add(&b->health_changes, 1);
            weir__lb_note_change(c->u);
            b->hc_rise = 0;
            c->r->transitions++;
            weir_log_info("upstream %s: backend %s is healthy again (%u checks passed)", c->u->name,
                          b->text, hc->rise);
        }
    } else {
        b->hc_rise = 0;
        if (healthy && ++b->hc_fall >= hc->fall) {
            atomic_store(&b->healthy, false);
            atomic_fetch_add(&b->health_changes, 1);
            weir__lb_note_change(c->u);
            b->hc_fall = 0;
            c->r->transitions++;
            weir_log_warn("upstream %s: backend %s is unhealthy after %u failed checks: %s",
                          c->u->name, b->text, hc->fall, why);
        }
    }
}

static void dead_io(weir_io *io, uint32_t events) {}

/* Frees a probe without a verdict. */
static void probe_drop(probe *p)
{
    checked *c = p->c;
    weir__timer_stop(c->r->loop, &p->timeout);
    if (p->io.fd >= 0) {
        weir__io_del(c->r->loop, &p->io);
        close(p->io.fd);
        p->io.fd = -1;
    }
    for (probe **pp = &c->probes; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    weir__lb_backend_unref(p->b);
    if (p->ng)
        nghttp2_session_del(p->ng);
    p->ng = NULL;
    if (p->ssl)
        SSL_free(p->ssl);
    p->ssl = NULL;
    /* An event for this fd may still be queued in this loop round. */
    p->io.cb = dead_io;
    weir__loop_defer(c->r->loop, free, p);
}

static void probe_end(probe *p, bool ok, const char *why)
{
    set_verdict(p->c, p->b, ok, why);
    probe_drop(p);
}

/* ---- gRPC: one Health/Check call over h2c ---- */

static int g_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    probe *p = user;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
        p->grpc_status = 0;
        for (size_t i = 0; i < vl; i++)
            p->grpc_status = p->grpc_status * 10 + (value[i] - '0');
    }
    return 0;
}

static int g_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *user)
{
    probe *p = user;
    size_t take = len < sizeof(p->msg) - p->msg_len ? len : sizeof(p->msg) - p->msg_len;
    memcpy(p->msg + p->msg_len, data, take);
    p->msg_len += take;
    return 0;
}

static int g_close(nghttp2_session *ng, int32_t id, uint32_t err, void *user)
{
    probe *p = user;
    p->grpc_done = true;
    /* HealthCheckResponse { ServingStatus status = 1; }: after the 5-byte
     * prefix, field 1 as a varint (0x08 VALUE); absent = UNKNOWN (0). */
    p->serving = 0;
    if (p->msg_len >= 7 && p->msg[5] == 0x08)
        p->serving = p->msg[6];
    return 0;
}

static ssize_t g_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *user)
{
    probe *p = user;
    size_t n = p->call_len - p->call_sent < len ? p->call_len - p->call_sent : len;
    memcpy(buf, p->call + p->call_sent, n);
    p->call_sent += n;
    if (p->call_sent == p->call_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Builds the session and serializes the preface, SETTINGS, HEADERS and
 * DATA into p->req. */
static bool grpc_request(probe *p, const char *authority)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return false;
    nghttp2_session_callbacks_set_on_header_callback(cbs, g_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, g_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, g_close);
    int rc = nghttp2_session_client_new(&p->ng, cbs, p);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        p->ng = NULL;
        return false;
    }
    p->grpc_status = p->serving = -1;
    /* HealthCheckRequest { string service = 1; } behind the gRPC prefix
     * (uncompressed, 4-byte length). */
    size_t sl = strlen(p->c->hc.path);
    if (sl > 200)
        return false;
    size_t ml = sl ? 2 + sl : 0;
    p->call[0] = 0;
    p->call[1] = p->call[2] = p->call[3] = 0;
    p->call[4] = (unsigned char)ml;
    if (sl) {
        p->call[5] = 0x0a;
        p->call[6] = (unsigned char)sl;
        memcpy(p->call + 7, p->c->hc.path, sl);
    }
    p->call_len = 5 + ml;
    nghttp2_submit_settings(p->ng, NGHTTP2_FLAG_NONE, NULL, 0);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {NV(":method", "POST"),
                       NV(":scheme", "http"),
                       NV(":path", "/grpc.health.v1.Health/Check"),
                       NV(":authority", authority),
                       NV("content-type", "application/grpc"),
                       NV("te", "trailers"),
                       NV("user-agent", "weir-health-check")};
#undef NV
    nghttp2_data_provider dp = {.read_callback = g_read};
    if (nghttp2_submit_request(p->ng, NULL, nv, sizeof(nv) / sizeof(nv[0]), &dp, NULL) < 0)
        return false;
    p->req_len = 0; /* nghttp2 starts with the client preface itself */
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(p->ng, &d);
        if (n <= 0)
            break;
        if (p->req_len + (size_t)n > sizeof(p->req))
            return false;
        memcpy(p->req + p->req_len, d, (size_t)n);
        p->req_len += (size_t)n;
    }
    return true;
}

static int judge_grpc(probe *p, bool eof, const char **why)
{
    if (p->got > p->fed) {
        ssize_t n =
            nghttp2_session_mem_recv(p->ng, (const uint8_t *)p->buf + p->fed, p->got - p->fed);
        if (n < 0) {
            *why = "invalid HTTP/2 response";
            return 0;
        }
        p->fed = p->got;
        if (p->got == sizeof(p->buf)) /* the answer is small: keep reading into the start */
            p->got = p->fed = 0;
    }
    if (!p->grpc_done) {
        *why = "connection closed before the answer";
        return eof ? 0 : -1;
    }
    if (p->grpc_status != 0) {
        *why = "grpc-status is not OK";
        return 0;
    }
    if (p->serving != 1) {
        *why = "not SERVING";
        return 0;
    }
    return 1;
}

/* The response so far: decides when enough was read. Returns 1 = pass,
 * 0 = fail, -1 = need more. */
static int judge(probe *p, bool eof, const char **why)
{
    const weir_health_check *hc = &p->c->hc;
    if (hc->kind == WEIR_HEALTH_GRPC)
        return judge_grpc(p, eof, why);
    weir_header hdrs[64];
    weir_h1_response r = {.headers = hdrs};
    size_t scan = 0;
    int rc = weir_h1_parse_response(p->buf, p->got, &r, 64, &scan);
    if (rc < 0) {
        *why = "invalid response";
        return 0;
    }
    if (rc == 0) {
        *why = eof ? "connection closed before the response" : "response too large";
        return eof || p->got == sizeof(p->buf) ? 0 : -1;
    }
    bool status_ok = false;
    if (hc->n_expect_status == 0) {
        status_ok = r.status >= 200 && r.status < 300;
    } else {
        for (size_t i = 0; i < hc->n_expect_status; i++)
            status_ok = status_ok || r.status == hc->expect_status[i];
    }
    if (!status_ok) {
        *why = "unexpected status";
        return 0;
    }
    if (!hc->expect_body[0])
        return 1;
    size_t need = strlen(hc->expect_body);
    if (memmem(p->buf + rc, p->got - (size_t)rc, hc->expect_body, need))
        return 1;
    *why = "expected body text not found";
    return eof || p->got == sizeof(p->buf) ? 0 : -1;
}

/* One write of what is left of the request: bytes written, or -errno. */
static ssize_t probe_send(probe *p)
{
    if (!p->ssl) {
        ssize_t n = send(p->io.fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);
        return n < 0 ? -errno : n;
    }
    size_t w;
    ERR_clear_error();
    if (SSL_write_ex(p->ssl, p->req + p->sent, p->req_len - p->sent, &w) == 1)
        return (ssize_t)w;
    int e = SSL_get_error(p->ssl, 0);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -EAGAIN : -EPIPE;
}

/* One read into the buffer: bytes read, 0 at the end, or -errno. */
static ssize_t probe_recv(probe *p)
{
    if (!p->ssl) {
        ssize_t n = recv(p->io.fd, p->buf + p->got, sizeof(p->buf) - p->got, 0);
        return n < 0 ? -errno : n;
    }
    size_t r;
    ERR_clear_error();
    if (SSL_read_ex(p->ssl, p->buf + p->got, sizeof(p->buf) - p->got, &r) == 1)
        return (ssize_t)r;
    int e = SSL_get_error(p->ssl, 0);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return -EAGAIN;
    return e == SSL_ERROR_ZERO_RETURN ? 0 : -ECONNRESET;
}

/* The PROXY header a check starts with (no client: v1 UNKNOWN, v2
 * LOCAL), before TLS. A fresh socket takes its few bytes at once. Returns
 * false after ending the probe. */
static bool send_pp(probe *p)
{
    uint8_t h[32];
    size_t n = p->c->hc.send_proxy == 2 ? weir__pp_write_v2(h, sizeof(h), NULL, NULL, NULL)
                                        : weir__pp_write_v1((char *)h, sizeof(h), NULL, NULL);
    if (send(p->io.fd, h, n, MSG_NOSIGNAL) != (ssize_t)n) {
        probe_end(p, false, "cannot send the PROXY header");
        return false;
    }
    return true;
}

static bool is_dgram(const weir_health_check *hc)
{
    return hc->kind == WEIR_HEALTH_UDP || hc->kind == WEIR_HEALTH_DNS;
}

/* A UDP check's reply: 1 pass, 0 fail, -1 not for this probe (a stray
 * datagram, or a DNS answer to another query). */
static int judge_dgram(const probe *p, const uint8_t *d, size_t n, const char **why)
{
    const weir_health_check *hc = &p->c->hc;
    if (hc->kind == WEIR_HEALTH_DNS) {
        if (n < 12 || memcmp(d, p->req, 2) != 0 || !(d[2] & 0x80))
            return -1;
        unsigned rcode = d[3] & 0x0f;
        if (rcode == 0 || rcode == 3) /* NOERROR, NXDOMAIN: it answers */
            return 1;
        *why = rcode == 2 ? "answered SERVFAIL" : rcode == 5 ? "answered REFUSED" : "DNS error";
        return 0;
    }
    if (!hc->expect_body[0] || memmem(d, n, hc->expect_body, strlen(hc->expect_body)))
        return 1;
    *why = "expected text not in the reply";
    return 0;
}

/* A UDP check's send or receive failed with errno err. */
static void dgram_failed(probe *p, int err)
{
    probe_end(p, false, err == ECONNREFUSED ? "refused (port unreachable)" : strerror(err));
}

static void probe_dgram(probe *p)
{
    if (!p->dgram_sent) {
        ssize_t n = send(p->io.fd, p->req, p->req_len, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            dgram_failed(p, errno);
            return;
        }
        p->dgram_sent = true;
    }
    for (;;) {
        ssize_t n = recv(p->io.fd, p->buf, sizeof(p->buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            dgram_failed(p, errno);
            return;
        }
        const char *why = "";
        int v = judge_dgram(p, (const uint8_t *)p->buf, (size_t)n, &why);
        if (v >= 0) {
            probe_end(p, v == 1, why);
            return;
        }
    }
}

/* A DNS query for name (type A, recursion desired) into p->req. */
static bool dns_query(probe *p, const char *name)
{
    uint8_t *q = (uint8_t *)p->req;
    uint16_t id = (uint16_t)weir__rand32();
    uint8_t head[12] = {(uint8_t)(id >> 8), (uint8_t)id, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, head, sizeof(head));
    size_t n = sizeof(head);
    for (const char *l = name; *l;) {
        const char *dot = strchr(l, '.');
        size_t len = dot ? (size_t)(dot - l) : strlen(l);
        if (len == 0 || len > 63 || n + len + 6 > sizeof(p->req))
            return false;
        q[n++] = (uint8_t)len;
        memcpy(q + n, l, len);
        n += len;
        l += len + (dot ? 1 : 0);
    }
    const uint8_t tail[5] = {0, 0, 1, 0, 1}; /* root, type A, class IN */
    memcpy(q + n, tail, sizeof(tail));
    p->req_len = n + sizeof(tail);
    return true;
}

static void probe_io(weir_io *io, uint32_t events)
{
    probe *p = weir_container_of(io, probe, io);
    if (io->fd < 0)
        return;
    if (is_dgram(&p->c->hc)) {
        probe_dgram(p);
        return;
    }
    if (!p->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            probe_end(p, false, strerror(err));
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN | EPOLLERR | EPOLLHUP)))
            return;
        p->connected = true;
        if (p->c->hc.send_proxy && !send_pp(p))
            return;
        if (p->c->hc.kind == WEIR_HEALTH_TCP) {
            probe_end(p, true, NULL);
            return;
        }
    }
    if (p->ssl && !p->tls_done) {
        ERR_clear_error();
        int r = SSL_do_handshake(p->ssl);
        if (r != 1) {
            int e = SSL_get_error(p->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            char why[300], reason[256];
            snprintf(why, sizeof(why), "TLS handshake failed: %s",
                     weir__tls_describe(p->ssl, e, reason, sizeof(reason)));
            probe_end(p, false, why);
            return;
        }
        p->tls_done = true;
    }
    while (p->sent < p->req_len) {
        ssize_t n = probe_send(p);
        if (n < 0) {
            if (n == -EAGAIN)
                return;
            probe_end(p, false, strerror((int)-n));
            return;
        }
        p->sent += (size_t)n;
    }
    for (;;) {
        if (p->got == sizeof(p->buf)) {
            const char *why = "";
            int v = judge(p, true, &why);
            probe_end(p, v == 1, why);
            return;
        }
        ssize_t n = probe_recv(p);
        if (n == -EAGAIN)
            return;
        if (n == -EINTR)
            continue;
        bool eof = n <= 0;
        if (n > 0)
            p->got += (size_t)n;
        const char *why = n < 0 ? strerror((int)-n) : "";
        int v = n < 0 ? 0 : judge(p, eof, &why);
        if (v >= 0) {
            probe_end(p, v == 1, why);
            return;
        }
        if (eof) {
            probe_end(p, false, "connection closed");
            return;
        }
    }
}

static void probe_timeout(weir_timer *t)
{
    probe_end(weir_container_of(t, probe, timeout), false, "timed out");
}

static void start_probe(checked *c, weir_backend *b)
{
    for (probe *p = c->probes; p; p = p->next) {
        if (p->b == b)
            return; /* the previous one is still running */
    }
    probe *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->c = c;
    p->b = b;
    atomic_fetch_add(&b->refs, 1);
    if (c->hc.kind == WEIR_HEALTH_HTTP) {
        const char *host = c->hc.host[0] ? c->hc.host : b->text;
        int n = snprintf(p->req, sizeof(p->req),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: weir-health-check\r\n"
                         "Accept: */*\r\nConnection: close\r\n\r\n",
                         c->hc.path, host);
        p->req_len = n > 0 && (size_t)n < sizeof(p->req) ? (size_t)n : 0;
    } else if (c->hc.kind == WEIR_HEALTH_GRPC) {
        p->next = c->probes;
        c->probes = p;
        p->io.fd = -1;
        if (!grpc_request(p, c->hc.host[0] ? c->hc.host : b->text)) {
            probe_end(p, false, "cannot build the gRPC check");
            return;
        }
        c->probes = p->next;
    }
    p->next = c->probes;
    c->probes = p;
    int fd;
    if (is_dgram(&c->hc)) {
        p->io.fd = -1;
        if (c->hc.kind == WEIR_HEALTH_DNS && !dns_query(p, c->hc.host)) {
            probe_end(p, false, "cannot build the DNS query");
            return;
        }
        if (c->hc.kind == WEIR_HEALTH_UDP) {
            memcpy(p->req, c->hc.payload, c->hc.payload_len);
            p->req_len = c->hc.payload_len;
        }
        fd = socket(b->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&b->addr, b->addr_len) < 0) {
            int err = errno;
            close(fd);
            fd = -err;
        } else if (fd < 0) {
            fd = -errno;
        }
    } else {
        fd = weir__connect_start((struct sockaddr *)&b->addr, b->addr_len);
    }
    p->io.fd = fd;
    p->io.cb = probe_io;
    if (fd < 0) {
        probe_end(p, false, strerror(-fd));
        return;
    }
    if (c->hc.tls && c->hc.kind != WEIR_HEALTH_TCP && !is_dgram(&c->hc)) {
        weir_peer peer;
        weir_backend_peer(b, &peer);
        if (c->hc.sni[0])
            snprintf(peer.sni, sizeof(peer.sni), "%s", c->hc.sni);
        peer.tls = true;
        if (!(p->ssl = weir__tls_client_ssl(c->hc.tls_client, &peer))) {
            probe_end(p, false, "cannot set up TLS");
            return;
        }
        SSL_set_fd(p->ssl, fd);
    }
    if (weir__io_add(c->r->loop, &p->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
        probe_end(p, false, "epoll");
        return;
    }
    weir__timer_start(c->r->loop, &p->timeout, c->hc.timeout_ms, probe_timeout);
}

/* Probes the members that have no probe in flight. */
static void probe_members(checked *c)
{
    size_t n;
    weir_backend **v = weir__lb_members(c->u, &n);
    for (size_t i = 0; v && i < n; i++) {
        if (!atomic_load(&v[i]->draining))
            start_probe(c, v[i]);
    }
    if (v)
        weir__lb_members_put(v, n);
}

static void tick(weir_timer *t)
{
    checked *c = weir_container_of(t, checked, tick);
    probe_members(c);
    weir__timer_start(c->r->loop, &c->tick, c->hc.interval_ms, tick);
}

/* Members joined (upstream.c's kick_checker): their first check now, not
 * at the next tick, so that they take traffic one interval sooner. */
static void newcomers_task(void *arg)
{
    checked *c = arg;
    if (!c->r->stopping)
        probe_members(c);
}

static void kick(void *arg)
{
    checked *c = arg;
    weir__loop_post(c->r->loop, newcomers_task, c); /* on OOM, the next tick */
}

/* Tells c's upstream how to reach its checker, or that none runs. */
static void set_kick(checked *c, bool on)
{
    pthread_mutex_lock(&c->u->lock);
    c->u->hc_kick = on ? kick : NULL;
    c->u->hc_kick_arg = on ? c : NULL;
    pthread_mutex_unlock(&c->u->lock);
}

static void *runner_main(void *arg)
{
    weir_health_runner *r = arg;
    weir__loop_update_time(r->loop);
    for (size_t i = 0; i < r->n; i++) {
        set_kick(&r->v[i], true);
        tick(&r->v[i].tick); /* first checks at once */
    }
    for (size_t i = 0; i < r->n_disc; i++)
        weir__discovery_attach(r->disc[i], r->loop);
    weir__loop_run(r->loop);
    r->stopping = true;
    for (size_t i = 0; i < r->n_disc; i++)
        weir__discovery_detach(r->disc[i]);
    for (size_t i = 0; i < r->n; i++) {
        set_kick(&r->v[i], false);
        weir__timer_stop(r->loop, &r->v[i].tick);
        while (r->v[i].probes)
            probe_drop(r->v[i].probes);
    }
    /* Posted kicks and answers, and the lookups' deferred ends. */
    weir__loop_run_pending(r->loop);
    return NULL;
}

weir_health_runner *weir__health_start(weir_upstream *const *ups, size_t n)
{
    weir_health_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->v = calloc(n ? n : 1, sizeof(*r->v));
    r->disc = calloc(n ? n : 1, sizeof(*r->disc));
    r->loop = weir__loop_new(-1);
    if (!r->v || !r->disc || !r->loop)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        /* The server starts us at start-up and on every change of its
         * upstreams (reload), on its main thread, before requests use them:
         * build their tables here, so that no request pays for that. On
         * OOM the first selection tries again. */
        weir_upstream_prepare(ups[i]);
        pthread_mutex_lock(&ups[i]->lock);
        bool has = ups[i]->has_hc;
        weir_health_check hc = ups[i]->hc;
        pthread_mutex_unlock(&ups[i]->lock);
        if (ups[i]->disc)
            r->disc[r->n_disc++] = ups[i];
        if (!has)
            continue;
        checked *c = &r->v[r->n++];
        c->u = ups[i];
        c->hc = hc;
        c->r = r;
    }
    if (r->n == 0 && r->n_disc == 0)
        return r; /* nothing to do: no thread */
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0)
        goto fail;
    r->started = true;
    return r;
fail:
    if (r->loop)
        weir__loop_free(r->loop);
    free(r->v);
    free(r->disc);
    free(r);
    return NULL;
}

void weir__health_stop(weir_health_runner *r)
{
    if (!r)
        return;
    if (r->started) {
        weir__loop_stop(r->loop);
        pthread_join(r->thread, NULL);
    }
    weir__loop_free(r->loop);
    free(r->v);
    free(r->disc);
    free(r);
}
