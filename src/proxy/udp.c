/*
 * udp.c - UDP sessions (weir/l4.h): a worker's table of client addresses,
 * each with a socket connected to its backend; the client's datagrams go
 * out on it, the backend's come back through the listener, from the
 * address the client sent to.
 *
 * A session ends after its idle timeout, after the expected number of
 * replies, when the backend refuses, or when its listener closes. Its
 * memory is freed by a deferred task after it ends, so an event already
 * queued for its socket in the same round finds it done.
 */
#include "proxy/udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/jitter.h"
#include "core/log.h"
#include "net/sock.h"
#include "proxy/service.h"

#define UDP_MAX_DATAGRAM 65536
#define UDP_ROUND 64        /* datagrams read per socket and round, for fairness */
#define UDP_MAX_ATTEMPTS 16 /* backends one session may try */
#define UDP_DRAIN_QUIET_MS 1000
#define UDP_FIRST_BUCKETS 256
#define UDP_PENDING_MAX 4096 /* a larger datagram is not kept for a resend */
#define UDP_RECHECK_MS 1000  /* how often a session asks whether its backend is still good */

typedef struct udp_local {
    union {
        struct in_pktinfo v4;
        struct in6_pktinfo v6;
    } pi;
    bool set;
    bool v6;
} udp_local;

struct weir_udp_session {
    weir_udp_table *t;
    weir_loop *loop;
    const weir_service *svc;
    weir_udp_port *port;
    weir_udp_session *hnext;       /* its bucket's chain */
    weir_udp_session *prev, *next; /* the table's list */
    uint64_t hash;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } client;
    socklen_t client_len;
    /* The local address the client sent to, when the listener is a
     * wildcard: the replies leave from it, and it is part of the key. */
    udp_local local;
    char ip[WEIR_ADDR_STRLEN];
    size_t ip_len;
    void *ctx;
    bool has_ctx;
    bool done;
    bool replied; /* the backend answered */
    weir_io up;   /* connected to the backend; fd -1 between attempts */
    weir_peer peer;
    char up_addr[WEIR_ADDR_STRLEN];
    weir_timer idle;
    weir_timer more; /* the backend's socket had more than a round */
    uint64_t last_ms;
    uint64_t t_start_us;
    /* The client's last datagram while the backend has not answered: what
     * goes to the next backend when this one refuses. */
    uint8_t *pending;
    size_t pending_len, pending_cap;
    bool has_pending;
    uint64_t checked_ms; /* when ops->stale last ran */
    uint64_t dg_in, dg_out, dg_up_in;
    uint64_t bytes_in, bytes_out, up_bytes_in, up_bytes_out;
    int attempts; /* failed ones */
    char term[3];
    int status;
    const char *error;
};

const struct sockaddr *weir_udp_session_client_addr(const weir_udp_session *s)
{
    return &s->client.sa;
}

weir_str weir_udp_session_client_ip(const weir_udp_session *s)
{
    return (weir_str){s->ip, s->ip_len};
}

const char *weir_udp_session_listen_addr(const weir_udp_session *s)
{
    return s->port->text;
}

/* ---- the table ---- */

/* murmur3's finalizer: every input bit reaches every output bit, so the
 * bucket (the low bits) depends on the whole address, not its port only. */
static uint64_t fmix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    return fmix(h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)));
}

/* Keyed with the table's random seed: a client cannot choose addresses
 * that share a chain. */
static uint64_t client_hash(const weir_udp_table *t, const struct sockaddr *sa,
                            const weir_udp_port *port, const udp_local *local)
{
    uint64_t h = mix(t->seed ^ (uint64_t)(uintptr_t)port, sa->sa_family);
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        uint64_t w[2];
        memcpy(w, &a->sin6_addr, sizeof(w));
        h = mix(mix(mix(h, w[0]), w[1]), a->sin6_port);
        if (local->set) {
            memcpy(w, &local->pi.v6.ipi6_addr, sizeof(w));
            h = mix(mix(h, w[0]), w[1]);
        }
        return h;
    }
    const struct sockaddr_in *a = (const void *)sa;
    h = mix(h, ((uint64_t)a->sin_addr.s_addr << 16) | a->sin_port);
    return local->set ? mix(h, local->pi.v4.ipi_spec_dst.s_addr) : h;
}

static bool same_local(const udp_local *a, const udp_local *b)
{
    if (a->set != b->set || a->v6 != b->v6)
        return false;
    if (!a->set)
        return true;
    if (a->v6)
        return IN6_ARE_ADDR_EQUAL(&a->pi.v6.ipi6_addr, &b->pi.v6.ipi6_addr) &&
               a->pi.v6.ipi6_ifindex == b->pi.v6.ipi6_ifindex;
    return a->pi.v4.ipi_spec_dst.s_addr == b->pi.v4.ipi_spec_dst.s_addr;
}

static weir_udp_session *find(const weir_udp_table *t, const struct sockaddr *sa,
                              const weir_udp_port *port, const udp_local *local, uint64_t h)
{
    for (weir_udp_session *s = t->buckets[h & (t->n_buckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->port == port && weir__addr_equal(&s->client.sa, sa) &&
            same_local(&s->local, local))
            return s;
    }
    return NULL;
}

static void grow(weir_udp_table *t)
{
    size_t n = t->n_buckets * 2;
    weir_udp_session **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (weir_udp_session *s = t->head; s; s = s->next) {
        s->hnext = b[s->hash & (n - 1)];
        b[s->hash & (n - 1)] = s;
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

static void insert(weir_udp_table *t, weir_udp_session *s)
{
    if (atomic_load_explicit(&t->n, memory_order_relaxed) >= t->n_buckets)
        grow(t);
    weir_udp_session **b = &t->buckets[s->hash & (t->n_buckets - 1)];
    s->hnext = *b;
    *b = s;
    s->next = t->head;
    if (t->head)
        t->head->prev = s;
    t->head = s;
    atomic_store_explicit(&t->n, atomic_load_explicit(&t->n, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void unlink_session(weir_udp_table *t, weir_udp_session *s)
{
    weir_udp_session **p = &t->buckets[s->hash & (t->n_buckets - 1)];
    while (*p && *p != s)
        p = &(*p)->hnext;
    if (*p)
        *p = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        t->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    atomic_store_explicit(&t->n, atomic_load_explicit(&t->n, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

/* A datagram that was not passed on: counted, and said at most once a
 * second (a flood must not flood the log too). */
static void dropped(weir_udp_table *t, weir_loop *loop, const char *where, const char *why)
{
    t->dropped++;
    atomic_store_explicit(&t->dropped_total,
                          atomic_load_explicit(&t->dropped_total, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    uint64_t now = weir__loop_now(loop);
    if (t->dropped_log_ms && now - t->dropped_log_ms < 1000)
        return;
    weir_log_warn("udp %s: %s: %llu datagrams dropped", where, why, (unsigned long long)t->dropped);
    t->dropped_log_ms = now;
    t->dropped = 0;
}

/* ---- a session ---- */

static void free_session(void *arg)
{
    weir_udp_session *s = arg;
    free(s->pending);
    free(s);
}

static void close_upstream(weir_udp_session *s)
{
    if (s->up.fd < 0)
        return;
    close(s->up.fd); /* never shared: close() leaves the epoll set too */
    s->up.fd = -1;
}

/* Ends the session: who and when as in weir_l4_stats.termination. */
static void end(weir_udp_session *s, char who, char when, int status, const char *error)
{
    if (s->done)
        return;
    s->done = true;
    s->term[0] = who;
    s->term[1] = when;
    s->term[2] = '\0';
    s->status = status;
    s->error = error;
    weir__timer_stop(s->loop, &s->idle);
    weir__timer_stop(s->loop, &s->more);
    close_upstream(s);
    unlink_session(s->t, s);
    atomic_fetch_sub_explicit(&((weir_service *)s->svc)->udp_sessions, 1, memory_order_relaxed);
    weir_l4_stats st = {
        .status = s->status,
        .bytes_received = s->bytes_in,
        .bytes_sent = s->bytes_out,
        .upstream_bytes_received = s->up_bytes_in,
        .upstream_bytes_sent = s->up_bytes_out,
        .datagrams_received = s->dg_in,
        .datagrams_sent = s->dg_out,
        .upstream_datagrams_received = s->dg_up_in,
        .session_time_us = (int64_t)(weir__loop_now_us(s->loop) - s->t_start_us),
        .connect_time_us = s->up_addr[0] && s->status == 200 ? 0 : -1,
        .upstream_addr = s->up_addr[0] ? s->up_addr : "-",
        .attempts = s->attempts + (s->status == 200),
        .error = s->error,
    };
    memcpy(st.termination, s->term, sizeof(st.termination));
    const weir_udp_ops *ops = s->svc->udp_ops;
    if (s->has_ctx) {
        if (ops->logging)
            ops->logging(s, s->ctx, &st);
        if (ops->free_ctx)
            ops->free_ctx(s->svc->app, s->ctx);
    }
    weir__loop_defer(s->loop, free_session, s);
}

static void up_cb(weir_io *io, uint32_t events);

/* A socket connected to s->peer; 0 or -errno. */
static int open_upstream(weir_udp_session *s)
{
    const struct sockaddr *sa = (const struct sockaddr *)&s->peer.addr;
    int fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, sa, s->peer.addr_len) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    s->up.fd = fd;
    s->up.cb = up_cb;
    int rc = weir__io_add(s->loop, &s->up, EPOLLIN);
    if (rc < 0) {
        close(fd);
        s->up.fd = -1;
    }
    return rc;
}

/*
 * Chooses a backend and opens a socket to it, going on to the next while
 * fail_to_connect agrees. Returns false when the session ended (no backend,
 * or none could be used).
 */
static bool choose(weir_udp_session *s, int error)
{
    const weir_udp_ops *ops = s->svc->udp_ops;
    for (;;) {
        if (error) {
            s->attempts++;
            if (s->attempts >= UDP_MAX_ATTEMPTS || !ops->fail_to_connect ||
                !ops->fail_to_connect(s, s->ctx, &s->peer, error, s->attempts)) {
                end(s, 'S', 'C', 502,
                    error == -ECONNREFUSED ? "backend refused" : "backend unreachable");
                return false;
            }
        }
        memset(&s->peer, 0, sizeof(s->peer));
        if (ops->upstream_peer(s, s->ctx, &s->peer) != WEIR_PHASE_CONTINUE || !s->peer.addr_len) {
            end(s, 'P', 'R', 503, "no backend");
            return false;
        }
        if (s->peer.addr_text)
            snprintf(s->up_addr, sizeof(s->up_addr), "%s", s->peer.addr_text);
        else
            weir__addr_format((const struct sockaddr *)&s->peer.addr, s->up_addr,
                              sizeof(s->up_addr));
        s->peer.addr_text = NULL; /* upstream_peer's, valid only during the call */
        error = open_upstream(s);
        if (!error)
            return true;
        if (error == -EMFILE || error == -ENFILE || error == -ENOBUFS || error == -ENOMEM) {
            /* Ours, not the backend's: its health is not touched. */
            dropped(s->t, s->loop, s->port->text, strerror(-error));
            end(s, 'P', 'R', 500, "no socket for the backend");
            return false;
        }
    }
}

static void send_up(weir_udp_session *s, const uint8_t *data, size_t len);

/* The backend refused (ICMP port unreachable), or its socket failed. */
static void upstream_failed(weir_udp_session *s, int error)
{
    close_upstream(s);
    if (s->replied) {
        /* It answered before: the session ran; the client's next
         * datagram starts a new one. */
        end(s, 'S', 'T', 200, "backend refused");
        return;
    }
    if (!choose(s, error) || !s->has_pending)
        return;
    /* Only the datagram kept goes to the next backend: it is the one
     * `responses` now waits for. */
    s->dg_in = 1;
    send_up(s, s->pending, s->pending_len);
}

static void send_up(weir_udp_session *s, const uint8_t *data, size_t len)
{
    ssize_t n = send(s->up.fd, data, len, 0);
    if (n >= 0) {
        s->up_bytes_out += (uint64_t)n;
        return;
    }
    int err = errno;
    if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH) {
        /* An earlier datagram's ICMP error, reported now: this one was
         * not sent. */
        upstream_failed(s, -err);
        return;
    }
    dropped(s->t, s->loop, s->up_addr, strerror(err));
}

static void reply(weir_udp_session *s, const uint8_t *data, size_t len)
{
    if (s->port->fd < 0) {
        end(s, 'K', 'T', 200, "listener closed");
        return;
    }
    struct iovec iov = {(void *)data, len};
    struct msghdr m = {
        .msg_name = &s->client.sa,
        .msg_namelen = s->client_len,
        .msg_iov = &iov,
        .msg_iovlen = 1,
    };
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } ctl;
    if (s->local.set) {
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = ctl.buf;
        struct cmsghdr *c = (struct cmsghdr *)ctl.buf;
        if (s->client.sa.sa_family == AF_INET6) {
            m.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
            memcpy(CMSG_DATA(c), &s->local.pi.v6, sizeof(s->local.pi.v6));
        } else {
            m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
            memcpy(CMSG_DATA(c), &s->local.pi.v4, sizeof(s->local.pi.v4));
        }
    }
    ssize_t n = sendmsg(s->port->fd, &m, 0);
    if (n < 0) {
        dropped(s->t, s->loop, s->port->text, strerror(errno));
        return;
    }
    s->dg_out++;
    s->bytes_out += (uint64_t)n;
}

static void more_cb(weir_timer *t);

static void read_upstream(weir_udp_session *s)
{
    uint8_t *buf = s->t->buf;
    for (int i = 0; i < UDP_ROUND; i++) {
        ssize_t n = recv(s->up.fd, buf, UDP_MAX_DATAGRAM, 0);
        if (n < 0) {
            int err = errno;
            if (err == EAGAIN)
                return;
            if (err == EINTR)
                continue;
            upstream_failed(s, -err);
            return;
        }
        s->dg_up_in++;
        s->up_bytes_in += (uint64_t)n;
        s->last_ms = weir__loop_now(s->loop);
        if (!s->replied) {
            s->replied = true;
            s->has_pending = false;
            free(s->pending);
            s->pending = NULL;
            s->pending_cap = 0;
        }
        reply(s, buf, (size_t)n);
        if (s->done)
            return;
        uint32_t want = s->svc->udp.responses;
        if (want && s->dg_up_in >= (uint64_t)want * s->dg_in) {
            end(s, '-', 'T', 200, NULL);
            return;
        }
    }
    weir__timer_start(s->loop, &s->more, 0, more_cb);
}

static void more_cb(weir_timer *t)
{
    weir_udp_session *s = weir_container_of(t, weir_udp_session, more);
    if (!s->done && s->up.fd >= 0)
        read_upstream(s);
}

static void up_cb(weir_io *io, uint32_t events)
{
    (void)events;
    weir_udp_session *s = weir_container_of(io, weir_udp_session, up);
    if (s->done || s->up.fd < 0)
        return;
    read_upstream(s);
}

static uint32_t quiet_limit(const weir_udp_session *s)
{
    uint32_t limit = s->svc->udp.idle_timeout_ms;
    return s->t->draining && limit > UDP_DRAIN_QUIET_MS ? UDP_DRAIN_QUIET_MS : limit;
}

static void idle_cb(weir_timer *t)
{
    weir_udp_session *s = weir_container_of(t, weir_udp_session, idle);
    uint64_t now = weir__loop_now(s->loop), limit = quiet_limit(s);
    if (now - s->last_ms < limit) {
        weir__timer_start(s->loop, &s->idle, s->last_ms + limit - now, idle_cb);
        return;
    }
    if (s->t->draining && now - s->last_ms < s->svc->udp.idle_timeout_ms) {
        end(s, 'K', 'T', 200, "shutdown"); /* the drain's shorter quiet */
        return;
    }
    bool short_of = s->svc->udp.responses && !s->replied;
    end(s, 'c', 'T', 200, short_of ? "no reply" : NULL);
}

/* The client's datagram, to its session's backend. */
static void forward(weir_udp_session *s, const uint8_t *data, size_t len)
{
    s->dg_in++;
    s->bytes_in += len;
    s->last_ms = weir__loop_now(s->loop);
    if (!s->replied && s->svc->udp_ops->fail_to_connect) {
        s->has_pending = false;
        if (len > s->pending_cap && len <= UDP_PENDING_MAX) {
            uint8_t *p = realloc(s->pending, len);
            if (p) {
                s->pending = p;
                s->pending_cap = len;
            }
        }
        if (len <= s->pending_cap || len == 0) {
            if (len)
                memcpy(s->pending, data, len);
            s->pending_len = len;
            s->has_pending = true;
        }
    }
    send_up(s, data, len);
}

static weir_udp_session *start(weir_loop *loop, weir_udp_table *t, weir_udp_port *port,
                               const weir_service *svc, const struct sockaddr *client,
                               socklen_t client_len, const udp_local *local, uint64_t h)
{
    weir_service *msvc = (weir_service *)svc;
    if (atomic_fetch_add_explicit(&msvc->udp_sessions, 1, memory_order_relaxed) >=
        svc->udp.max_sessions) {
        atomic_fetch_sub_explicit(&msvc->udp_sessions, 1, memory_order_relaxed);
        dropped(t, loop, port->text, "max_sessions reached");
        return NULL;
    }
    weir_udp_session *s = calloc(1, sizeof(*s));
    if (!s) {
        atomic_fetch_sub_explicit(&msvc->udp_sessions, 1, memory_order_relaxed);
        dropped(t, loop, port->text, "out of memory");
        return NULL;
    }
    s->t = t;
    s->loop = loop;
    s->svc = svc;
    s->port = port;
    s->hash = h;
    s->local = *local;
    s->up.fd = -1;
    memcpy(&s->client, client, client_len);
    s->client_len = client_len;
    s->ip_len = weir__addr_format_ip(client, s->ip, sizeof(s->ip));
    s->t_start_us = weir__loop_now_us(loop);
    s->last_ms = weir__loop_now(loop);
    s->checked_ms = s->last_ms;
    insert(t, s);
    const weir_udp_ops *ops = svc->udp_ops;
    s->ctx = ops->new_ctx ? ops->new_ctx(s, svc->app) : NULL;
    s->has_ctx = true;
    if (!choose(s, 0))
        return NULL;
    weir__timer_start(loop, &s->idle, quiet_limit(s), idle_cb);
    return s;
}

/* The local address a datagram came to, from its control messages. */
static void take_local(udp_local *l, struct msghdr *m)
{
    memset(l, 0, sizeof(*l));
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            l->pi.v4.ipi_spec_dst = pi.ipi_spec_dst;
            l->set = true;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            /* The interface only matters (and is kept) for a link-local one. */
            l->pi.v6.ipi6_addr = pi.ipi6_addr;
            l->pi.v6.ipi6_ifindex = IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr) ? pi.ipi6_ifindex : 0;
            l->set = true;
            l->v6 = true;
        }
    }
}

/* A session whose backend went (reload, discovery, health): it ends, and
 * the datagram starts a new one. Asked at most once a second. */
static bool stale(weir_udp_session *s)
{
    const weir_udp_ops *ops = s->svc->udp_ops;
    uint64_t now = weir__loop_now(s->loop);
    if (!ops->stale || now - s->checked_ms < UDP_RECHECK_MS)
        return false;
    s->checked_ms = now;
    if (!ops->stale(s, s->ctx))
        return false;
    end(s, 'K', 'T', 200, "backend left or unusable");
    return true;
}

bool weir__udp_read(weir_loop *loop, weir_udp_table *t, weir_udp_port *port,
                    const weir_service *svc)
{
    if (!t->buf) {
        t->buf = malloc(UDP_MAX_DATAGRAM);
        t->buckets = calloc(UDP_FIRST_BUCKETS, sizeof(*t->buckets));
        if (!t->buf || !t->buckets) {
            free(t->buf);
            free(t->buckets);
            t->buf = NULL;
            t->buckets = NULL;
            return false; /* tried again at the next datagram's edge */
        }
        t->n_buckets = UDP_FIRST_BUCKETS;
        t->seed = (uint64_t)weir__rand32() << 32 | weir__rand32();
    }
    for (int i = 0; i < UDP_ROUND; i++) {
        union {
            struct sockaddr sa;
            struct sockaddr_storage ss;
        } client;
        union {
            char
                buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {t->buf, UDP_MAX_DATAGRAM};
        struct msghdr m = {
            .msg_name = &client.ss,
            .msg_namelen = sizeof(client.ss),
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = port->pktinfo ? ctl.buf : NULL,
            .msg_controllen = port->pktinfo ? sizeof(ctl.buf) : 0,
        };
        ssize_t n = recvmsg(port->fd, &m, 0);
        if (n < 0) {
            int err = errno;
            if (err == EAGAIN)
                return false;
            if (err == EINTR)
                continue;
            /* ICMP errors of replies to gone clients, with IP_RECVERR off,
             * are not reported here; anything else is the socket's. */
            weir_log_error("udp %s: recvmsg: %s", port->text, strerror(err));
            return false;
        }
        if (m.msg_namelen < sizeof(struct sockaddr_in) ||
            (client.sa.sa_family != AF_INET && client.sa.sa_family != AF_INET6))
            continue;
        udp_local local = {0};
        if (port->pktinfo)
            take_local(&local, &m);
        uint64_t h = client_hash(t, &client.sa, port, &local);
        weir_udp_session *s = find(t, &client.sa, port, &local, h);
        if (s && stale(s))
            s = NULL;
        if (!s) {
            s = start(loop, t, port, svc, &client.sa, m.msg_namelen, &local, h);
            if (!s)
                continue;
        }
        forward(s, t->buf, (size_t)n);
    }
    return true;
}

void weir__udp_drain(weir_udp_table *t)
{
    t->draining = true;
    for (weir_udp_session *s = t->head; s; s = s->next)
        weir__timer_start(s->loop, &s->idle, 0, idle_cb);
}

void weir__udp_close_all(weir_udp_table *t)
{
    while (t->head)
        end(t->head, 'K', 'T', 200, "shutdown");
}

void weir__udp_table_free(weir_udp_table *t)
{
    free(t->buckets);
    free(t->buf);
    t->buckets = NULL;
    t->buf = NULL;
    t->n_buckets = 0;
}
