/*
 * health.c - active health checks, run on the server's control thread.
 *
 * Each upstream with a check gets a timer every interval; each tick probes
 * every member that has no probe in flight: a non-blocking connect (TCP
 * checks stop there), then for HTTP checks one "GET path" with
 * "Connection: close", reading until the response head is complete and,
 * when a body substring is expected, until the body holds it or the
 * connection closes (16 KiB at most). Every probe has the check's timeout.
 *
 * A backend turns unhealthy after `fall` consecutive failed probes and
 * healthy again after `rise` consecutive successes; the verdict is an
 * atomic the workers read at selection, and every change is logged.
 *
 * Everything here runs on the control thread; workers are never blocked.
 */
#include "lb/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/h1_parse.h"
#include "lb/upstream_int.h"
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
    size_t sent, req_len;
    char req[1400];
    size_t got;
    char buf[PROBE_BUF];
};

struct weir_health_runner {
    weir_loop *loop;
    pthread_t thread;
    bool started;
    checked *v;
    size_t n;
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
    /* An event for this fd may still be queued in this loop round. */
    p->io.cb = dead_io;
    weir__loop_defer(c->r->loop, free, p);
}

static void probe_end(probe *p, bool ok, const char *why)
{
    set_verdict(p->c, p->b, ok, why);
    probe_drop(p);
}

/* The response so far: decides when enough was read. Returns 1 = pass,
 * 0 = fail, -1 = need more. */
static int judge(probe *p, bool eof, const char **why)
{
    const weir_health_check *hc = &p->c->hc;
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

static void probe_io(weir_io *io, uint32_t events)
{
    probe *p = weir_container_of(io, probe, io);
    if (io->fd < 0)
        return;
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
        if (p->c->hc.kind == WEIR_HEALTH_TCP) {
            probe_end(p, true, NULL);
            return;
        }
    }
    while (p->sent < p->req_len) {
        ssize_t n = send(io->fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            probe_end(p, false, strerror(errno));
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
        ssize_t n = recv(io->fd, p->buf + p->got, sizeof(p->buf) - p->got, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        bool eof = n <= 0;
        if (n > 0)
            p->got += (size_t)n;
        const char *why = n < 0 ? strerror(errno) : "";
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
    }
    p->next = c->probes;
    c->probes = p;
    int fd = weir__connect_start((struct sockaddr *)&b->addr, b->addr_len);
    p->io.fd = fd;
    p->io.cb = probe_io;
    if (fd < 0) {
        probe_end(p, false, strerror(-fd));
        return;
    }
    if (weir__io_add(c->r->loop, &p->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0) {
        probe_end(p, false, "epoll");
        return;
    }
    weir__timer_start(c->r->loop, &p->timeout, c->hc.timeout_ms, probe_timeout);
}

static void tick(weir_timer *t)
{
    checked *c = weir_container_of(t, checked, tick);
    size_t n;
    weir_backend **v = weir__lb_members(c->u, &n);
    for (size_t i = 0; v && i < n; i++) {
        if (!atomic_load(&v[i]->draining))
            start_probe(c, v[i]);
    }
    if (v)
        weir__lb_members_put(v, n);
    weir__timer_start(c->r->loop, &c->tick, c->hc.interval_ms, tick);
}

static void *runner_main(void *arg)
{
    weir_health_runner *r = arg;
    weir__loop_update_time(r->loop);
    for (size_t i = 0; i < r->n; i++)
        tick(&r->v[i].tick); /* first checks at once */
    weir__loop_run(r->loop);
    for (size_t i = 0; i < r->n; i++) {
        weir__timer_stop(r->loop, &r->v[i].tick);
        while (r->v[i].probes)
            probe_drop(r->v[i].probes);
    }
    weir__loop_run_pending(r->loop);
    return NULL;
}

weir_health_runner *weir__health_start(weir_upstream *const *ups, size_t n)
{
    weir_health_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->v = calloc(n ? n : 1, sizeof(*r->v));
    r->loop = weir__loop_new(-1);
    if (!r->v || !r->loop)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&ups[i]->lock);
        bool has = ups[i]->has_hc;
        weir_health_check hc = ups[i]->hc;
        pthread_mutex_unlock(&ups[i]->lock);
        if (!has)
            continue;
        checked *c = &r->v[r->n++];
        c->u = ups[i];
        c->hc = hc;
        c->r = r;
    }
    if (r->n == 0)
        return r; /* nothing to check: no thread */
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0)
        goto fail;
    r->started = true;
    return r;
fail:
    if (r->loop)
        weir__loop_free(r->loop);
    free(r->v);
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
    free(r);
}
