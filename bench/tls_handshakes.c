/*
 * tls_handshakes: new TLS connections per second against one HTTPS server,
 * for bench/run's handshake section (see bench/README.md).
 *
 *   tls_handshakes -p PORT [-c CONNS] [-d SECS] [-r] [-b BODY] [-n SNI]
 *
 * Keeps CONNS connections in flight on 127.0.0.1:PORT for SECS seconds. Each
 * one: TCP connect, TLS handshake (ALPN http/1.1, SNI "localhost"), one
 * "GET / HTTP/1.1" with "Connection: close", read the response until the
 * server closes, check it is a 200 (and ends with BODY if given), close, and
 * start the next connection in the same slot. A new connection per request,
 * the server closing first, is what makes every connection cost a full TLS
 * set-up on the server and never leaves the client with TIME_WAIT sockets.
 *
 * -r (resume): each slot offers the session (TLS 1.3: the newest ticket) of
 * its own previous connection, as a browser coming back would. The first
 * connection of each slot is necessarily a full handshake; `resumed` counts
 * the connections the server really resumed (SSL_session_reused), so a
 * server that declines resumption shows as a low resumed count rather than
 * a silently different measurement.
 *
 * Prints shell-safe KEY=VALUE lines on stdout (conns, resumed, errors,
 * rate, handshake-time percentiles, negotiated protocol, cipher, group) and
 * the first few errors on stderr. Exit status 0 if at least one connection
 * completed, 1 otherwise, 2 on bad usage.
 *
 * Built by `make` (CMake builds each C file in bench/) as build/bin/tls_handshakes;
 * bench/run compiles it with `cc -O2 ... -lssl -lcrypto` when that is absent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING };
enum { E_CONNECT, E_HANDSHAKE, E_IO, E_RESPONSE, E_TIMEOUT, E_KINDS };
static const char *const err_names[E_KINDS] = {"connect", "handshake", "io", "response", "timeout"};

typedef struct {
    int fd;
    SSL *ssl;
    SSL_SESSION *sess; /* -r: the session of this slot's previous connection */
    int state;
    double t_start; /* connect() called */
    double hs_time; /* handshake duration, s */
    bool reused;    /* the server resumed the session */
    char head[256]; /* first bytes of the response */
    char tail[128]; /* last bytes of the response */
    size_t head_len, total;
    size_t wpos;
} conn;

static struct sockaddr_in addr;
static SSL_CTX *ctx;
static int ep;
static bool resume;
static const char *want_body;
static const char *sni = "localhost";
static double conn_timeout = 5.0;
static char request[256];
static size_t request_len;

static unsigned long n_ok, n_resumed, n_err[E_KINDS];
static double *hs_times; /* handshake durations of completed connections, s */
static size_t hs_n, hs_cap;
static char proto[32], cipher[64], group[32];
static int errors_printed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void conn_close(conn *c)
{
    if (c->ssl) {
        /* Mark the connection as cleanly shut down (without sending
         * close_notify, as s_time does): OpenSSL would otherwise flag the
         * session not resumable when the SSL is freed. */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = ST_IDLE;
}

static void fail(conn *c, int kind, const char *what)
{
    n_err[kind]++;
    if (errors_printed < 5) {
        char buf[256] = "";
        unsigned long e = ERR_peek_error();
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "tls_handshakes: %s error: %s%s%s\n", err_names[kind], what,
                buf[0] ? ": " : "", buf);
        errors_printed++;
    }
    ERR_clear_error();
    conn_close(c);
}

static void want(conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_start(conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(c, E_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->t_start = now();
    c->head_len = c->total = c->wpos = 0;
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS)
        fail(c, E_CONNECT, strerror(errno));
}

/* SSL_ERROR_WANT_*: wait for the socket; anything else: a failure. */
static bool wait_or_fail(conn *c, int rc, int kind, const char *what)
{
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        want(c, EPOLLIN);
        return true;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        want(c, EPOLLOUT);
        return true;
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "%s (SSL_get_error %d, errno %d)", what, e, errno);
    fail(c, kind, buf);
    return false;
}

/* The handshake is done: note its time and kind (counted once the
 * response has arrived) and the negotiated parameters (once). */
static void handshake_done(conn *c)
{
    c->hs_time = now() - c->t_start;
    c->reused = SSL_session_reused(c->ssl);
    if (!proto[0]) {
        snprintf(proto, sizeof(proto), "%s", SSL_get_version(c->ssl));
        snprintf(cipher, sizeof(cipher), "%s", SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
        int nid = SSL_get_negotiated_group(c->ssl);
        const char *g = nid > 0 ? OBJ_nid2sn(nid) : NULL;
        snprintf(group, sizeof(group), "%s", g ? g : "unknown");
    }
}

static void record_ok(conn *c)
{
    if (hs_n == hs_cap) {
        hs_cap = hs_cap ? 2 * hs_cap : 65536;
        hs_times = realloc(hs_times, hs_cap * sizeof(*hs_times));
        if (!hs_times) {
            perror("realloc");
            exit(1);
        }
    }
    hs_times[hs_n++] = c->hs_time;
    n_ok++;
    if (c->reused)
        n_resumed++;
}

static void response_done(conn *c)
{
    c->head[c->head_len] = '\0';
    if (strncmp(c->head, "HTTP/1.1 200", 12) != 0 && strncmp(c->head, "HTTP/1.0 200", 12) != 0) {
        char *nl = strpbrk(c->head, "\r\n");
        if (nl)
            *nl = '\0';
        char buf[160];
        snprintf(buf, sizeof(buf), "not a 200: \"%.100s\" (%zu bytes)", c->head, c->total);
        fail(c, E_RESPONSE, buf);
        return;
    }
    if (want_body) {
        size_t bl = strlen(want_body), tl = c->total < sizeof(c->tail) ? c->total : sizeof(c->tail);
        /* The body ends with "\n" (nginx's return); compare without it. */
        bool ok = tl > bl && memcmp(c->tail + tl - bl - 1, want_body, bl) == 0;
        if (!ok) {
            fail(c, E_RESPONSE, "response does not end with the expected body");
            return;
        }
    }
    record_ok(c);
    if (resume) {
        SSL_SESSION *s = SSL_get1_session(c->ssl);
        if (c->sess)
            SSL_SESSION_free(c->sess);
        c->sess = s;
    }
    conn_close(c);
}

static void step(conn *c)
{
    int rc;
    switch (c->state) {
    case ST_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail(c, E_CONNECT, strerror(err));
            return;
        }
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, sni);
        if (resume && c->sess)
            SSL_set_session(c->ssl, c->sess);
        c->state = ST_HANDSHAKE;
    }
    /* fall through */
    case ST_HANDSHAKE:
        rc = SSL_connect(c->ssl);
        if (rc != 1) {
            wait_or_fail(c, rc, E_HANDSHAKE, "SSL_connect");
            return;
        }
        handshake_done(c);
        c->state = ST_WRITING;
        /* fall through */
    case ST_WRITING:
        while (c->wpos < request_len) {
            rc = SSL_write(c->ssl, request + c->wpos, (int)(request_len - c->wpos));
            if (rc <= 0) {
                wait_or_fail(c, rc, E_IO, "SSL_write");
                return;
            }
            c->wpos += (size_t)rc;
        }
        c->state = ST_READING;
        want(c, EPOLLIN);
        /* fall through */
    case ST_READING:
        for (;;) {
            char buf[16384];
            rc = SSL_read(c->ssl, buf, sizeof(buf));
            if (rc > 0) {
                size_t n = (size_t)rc;
                if (c->head_len < sizeof(c->head) - 1) {
                    size_t k = sizeof(c->head) - 1 - c->head_len;
                    if (k > n)
                        k = n;
                    memcpy(c->head + c->head_len, buf, k);
                    c->head_len += k;
                }
                /* Keep the last sizeof(tail) bytes of the stream. */
                if (n >= sizeof(c->tail)) {
                    memcpy(c->tail, buf + n - sizeof(c->tail), sizeof(c->tail));
                } else {
                    size_t keep = c->total < sizeof(c->tail) ? c->total : sizeof(c->tail);
                    if (keep + n > sizeof(c->tail)) {
                        size_t drop = keep + n - sizeof(c->tail);
                        memmove(c->tail, c->tail + drop, keep - drop);
                        keep -= drop;
                    }
                    memcpy(c->tail + keep, buf, n);
                }
                c->total += n;
                continue;
            }
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify or EOF (ignored-EOF mode) */
                if (c->total == 0) {
                    fail(c, E_RESPONSE, "connection closed without a response");
                    return;
                }
                response_done(c);
                return;
            }
            wait_or_fail(c, rc, E_IO, "SSL_read");
            return;
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (!hs_n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)hs_n);
    if (i >= hs_n)
        i = hs_n - 1;
    return hs_times[i];
}

static void usage(void)
{
    fprintf(stderr, "usage: tls_handshakes -p PORT [-c CONNS] [-d SECS] [-r] [-b BODY] [-n SNI]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port = 0, nconns = 16, opt;
    double secs = 5;
    while ((opt = getopt(argc, argv, "p:c:d:rb:n:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'd':
            secs = atof(optarg);
            break;
        case 'r':
            resume = true;
            break;
        case 'b':
            want_body = optarg;
            break;
        case 'n':
            sni = optarg;
            break;
        default:
            usage();
        }
    }
    if (port <= 0 || port > 65535 || nconns <= 0 || secs <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* a throw-away self-signed certificate */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Sessions are kept per slot by hand, not in OpenSSL's client cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);

    ep = epoll_create1(EPOLL_CLOEXEC);
    conn *conns = calloc((size_t)nconns, sizeof(*conns));
    if (ep < 0 || !conns) {
        perror("tls_handshakes");
        return 1;
    }
    double t0 = now(), end = t0 + secs;
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conn_start(&conns[i]);
    }
    struct epoll_event evs[256];
    double last_check = t0;
    for (;;) {
        double t = now();
        if (t >= end)
            break;
        int ms = (int)((end - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, 256, ms < 100 ? ms : 100);
        for (int i = 0; i < n; i++)
            step(evs[i].data.ptr);
        t = now();
        if (t - last_check >= 0.1) { /* per-connection time limit */
            last_check = t;
            for (int i = 0; i < nconns; i++)
                if (conns[i].state != ST_IDLE && t - conns[i].t_start > conn_timeout)
                    fail(&conns[i], E_TIMEOUT, "no complete response within 5 s");
        }
        if (t < end) /* refill the slots that finished or failed */
            for (int i = 0; i < nconns; i++)
                if (conns[i].state == ST_IDLE)
                    conn_start(&conns[i]);
    }
    double elapsed = now() - t0;
    /* Connections still in flight at the end are dropped, not counted,
     * unless they had already been stuck for longer than a second. */
    double t = now();
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state != ST_IDLE && t - conns[i].t_start > 1.0)
            fail(&conns[i], E_TIMEOUT, "still unanswered after 1 s at the end of the run");
        else if (conns[i].state != ST_IDLE)
            conn_close(&conns[i]);
        if (conns[i].sess)
            SSL_SESSION_free(conns[i].sess);
    }

    qsort(hs_times, hs_n, sizeof(*hs_times), cmp_double);
    unsigned long errs = 0;
    char kinds[256] = "";
    for (int k = 0; k < E_KINDS; k++) {
        errs += n_err[k];
        if (n_err[k]) {
            size_t l = strlen(kinds);
            snprintf(kinds + l, sizeof(kinds) - l, "%s%s=%lu", l ? "," : "", err_names[k],
                     n_err[k]);
        }
    }
    printf("HS_DONE='%lu'\nHS_RESUMED='%lu'\nHS_ERRORS='%lu'\nHS_ERROR_KINDS='%s'\n", n_ok,
           n_resumed, errs, kinds);
    printf("HS_SECS='%.3f'\nHS_RATE='%.1f'\n", elapsed, n_ok / elapsed);
    printf("HS_P50='%.3f'\nHS_P99='%.3f'\n", pct(50) * 1000, pct(99) * 1000);
    printf("HS_PROTO='%s'\nHS_CIPHER='%s'\nHS_GROUP='%s'\n", proto, cipher, group);
    free(hs_times);
    free(conns);
    close(ep);
    SSL_CTX_free(ctx);
    return n_ok ? 0 : 1;
}
