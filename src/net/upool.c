/*
 * upool.c - backend connections and the per-worker idle pool.
 */
#include "net/upool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/jitter.h"
#include "core/log.h"
#include "core/pool.h"
#include "net/sock.h"
#include "net/conn_limit.h"
#include "net/proxy_proto.h"
#include "net/tls.h"
#include "weir/types.h"

#define N_BUCKETS 256

/* A worker's stake in the shared pool. */
typedef struct upool_home {
    weir_loop *loop;
    bool closed; /* no more pooling (shutdown); guarded by the pool lock */
} upool_home;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static weir_upconn *buckets[N_BUCKETS];
static uint32_t n_bucket[N_BUCKETS];
static _Atomic uint32_t n_idle;
static _Atomic uint64_t migrations;
static __thread upool_home *self;
static weir_pool_class upconn_class;

__attribute__((constructor)) static void register_class(void)
{
    upconn_class = weir__pool_register("upconn", sizeof(weir_upconn), 1024);
}

static void free_upconn(void *u)
{
    weir__pool_put(upconn_class, u);
}

uint64_t weir__upool_idle(void)
{
    return atomic_load_explicit(&n_idle, memory_order_relaxed);
}

size_t weir__upool_idle_addrs(struct sockaddr_storage **out)
{
    *out = NULL;
    pthread_mutex_lock(&pool_lock);
    size_t n = 0, cap = atomic_load_explicit(&n_idle, memory_order_relaxed);
    struct sockaddr_storage *v = cap ? malloc(cap * sizeof(*v)) : NULL;
    for (size_t b = 0; v && b < N_BUCKETS; b++)
        for (weir_upconn *u = buckets[b]; u && n < cap; u = u->next)
            v[n++] = u->addr;
    pthread_mutex_unlock(&pool_lock);
    if (!n) {
        free(v);
        return 0;
    }
    *out = v;
    return n;
}

uint64_t weir__upool_migrations(void)
{
    return atomic_load(&migrations);
}

static uint32_t fnv(const void *p, size_t len, uint32_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

/* The TLS part of the pool key (SNI, ALPN, client certificate) as a 64-bit
 * hash: connections differing in any of them are never mixed (a collision
 * needs 2^32 distinct keys in practice). */
/* The pool key beyond the address: TLS (SNI, client settings) and the
 * PROXY header a connection started with. */
static uint64_t tls_key(const weir_peer *peer, const weir_upconn_pp *pp)
{
    if (!peer->tls && (!pp || !pp->len))
        return 0;
    uint64_t h = 1469598103934665603ull;
    if (peer->tls) {
        h ^= weir__tls_client_id(peer->tls_client);
        size_t n = strnlen(peer->sni, sizeof(peer->sni));
        for (size_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)peer->sni[i]) * 1099511628211ull;
    }
    for (size_t i = 0; pp && i < pp->len; i++)
        h = (h ^ pp->buf[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

void weir__upconn_pp(weir_upconn_pp *pp, const weir_peer *peer, const struct sockaddr *src,
                     const struct sockaddr *dst, const char *authority)
{
    pp->len = 0;
    if (peer->send_proxy == 1)
        pp->len = (uint16_t)weir__pp_write_v1((char *)pp->buf, sizeof(pp->buf), src, dst);
    else if (peer->send_proxy == 2)
        pp->len = (uint16_t)weir__pp_write_v2(pp->buf, sizeof(pp->buf), src, dst, authority);
}

static uint32_t addr_bucket(const struct sockaddr *sa)
{
    uint32_t h = 2166136261u;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)sa;
        h = fnv(&v4->sin_addr, sizeof(v4->sin_addr), h);
        h = fnv(&v4->sin_port, sizeof(v4->sin_port), h);
    } else {
        const struct sockaddr_in6 *v6 = (const void *)sa;
        h = fnv(&v6->sin6_addr, sizeof(v6->sin6_addr), h);
        h = fnv(&v6->sin6_port, sizeof(v6->sin6_port), h);
    }
    return h % N_BUCKETS;
}

static upool_home *home_of(weir_loop *loop)
{
    if (!self) {
        self = calloc(1, sizeof(*self));
        if (self)
            self->loop = loop;
    }
    return self;
}

static bool same_key(const weir_upconn *u, const struct sockaddr *addr, bool tls, uint64_t sh)
{
    return u->tls == tls && u->tls_key == sh &&
           weir__addr_equal((const struct sockaddr *)&u->addr, addr);
}

/* Pool lock held. */
static void unlink_idle(weir_upconn *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        buckets[u->bucket] = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    u->in_pool = false;
    atomic_fetch_sub_explicit(&n_idle, 1, memory_order_relaxed);
    n_bucket[u->bucket]--;
}

/* Home thread: an idle connection leaves the pool for good (closed, or
 * timed out). False if another worker took it meanwhile. */
static bool leave_pool(weir_upconn *u)
{
    pthread_mutex_lock(&pool_lock);
    bool was = u->in_pool;
    if (was)
        unlink_idle(u);
    pthread_mutex_unlock(&pool_lock);
    if (was)
        weir__timer_stop(u->conn.loop, &u->idle_timer);
    return was;
}

/* True if nothing is waiting on an idle connection: no bytes, no close.
 * epoll can report readiness whose bytes were already read in the same
 * loop round (the event was queued before the read), so an event alone
 * does not prove the connection is dirty. */
static bool idle_clean(weir_upconn *u)
{
    if (u->conn.ssl && SSL_has_pending(u->conn.ssl))
        return false;
    char c;
    ssize_t n = recv(u->conn.io.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        u->conn.readable = false;
        return true;
    }
    return false;
}

static void io_cb(weir_io *io, uint32_t events)
{
    weir_upconn *u = weir_container_of(io, weir_upconn, conn.io);
    weir__conn_on_events(&u->conn, events);
    if (u->owner) {
        u->wake(u->owner);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return; /* writable: nothing to see on an idle connection */
    if (!(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && idle_clean(u))
        return;
    /* Idle in the pool: the backend closed the connection or sent bytes
     * nobody asked for. Either way it cannot be reused. A connection
     * another worker took is freed by the task it posted. */
    if (leave_pool(u))
        weir__upconn_close(u, false);
}

static void idle_timeout(weir_timer *t)
{
    weir_upconn *u = weir_container_of(t, weir_upconn, idle_timer);
    if (leave_pool(u))
        weir__upconn_close(u, false);
}

/* Home thread: the socket now lives on in another worker's connection; drop
 * this object's registration and descriptor (the socket stays open). */
static void release_migrated(void *arg)
{
    weir_upconn *u = arg;
    weir__timer_stop(u->conn.loop, &u->idle_timer);
    weir__upconn_close(u, false);
}

/* Moves u (already unlinked, pool lock held) onto `loop`. */
static weir_upconn *migrate(weir_upconn *u, weir_loop *loop)
{
    int fd = fcntl(u->conn.io.fd, F_DUPFD_CLOEXEC, 0);
    u->conn.shared = fd >= 0; /* its home loop's registration must go at its close */
    weir_upconn *nu = fd >= 0 ? weir__pool_get(upconn_class) : NULL;
    if (nu && weir__conn_init(&nu->conn, loop, fd, io_cb) < 0) {
        weir__pool_put(upconn_class, nu);
        nu = NULL;
    }
    if (!nu && fd >= 0)
        close(fd);
    if (nu) {
        nu->conn.shared = true; /* until the home closes its descriptor: either may go first */
        memcpy(&nu->addr, &u->addr, sizeof(nu->addr));
        nu->addr_len = u->addr_len;
        nu->tls = u->tls;
        nu->tls_key = u->tls_key;
        nu->pp = NULL; /* an idle connection sent its header long ago */
        nu->pp_len = 0;
        nu->connected = true;
        nu->n_used = u->n_used;
        nu->max_uses = u->max_uses;
        nu->retire_at_ms = u->retire_at_ms;
        nu->limit = u->limit; /* the slot moves with the socket */
        u->limit = NULL;
        if (u->conn.ssl) {
            /* The TLS session moves with the socket. */
            weir__conn_set_tls(&nu->conn, u->conn.ssl);
            nu->conn.tls_ready = true;
            u->conn.ssl = NULL;
        }
        /* The socket is idle and writable; the new registration reports that. */
        nu->conn.writable = true;
    }
    /* Posted last (u may be freed as soon as it is queued) and under the
     * pool lock, so the home loop cannot have finished its shutdown
     * (weir__upool_close_all takes the lock) before the task is queued: it
     * runs it before freeing the loop. */
    u->migrated = true;
    weir__loop_post(u->conn.loop, release_migrated, u);
    if (!nu)
        return NULL;
    atomic_fetch_add_explicit(&migrations, 1, memory_order_relaxed);
    return nu;
}

weir_upconn *weir__upool_take(weir_loop *loop, const weir_peer *peer, const weir_upconn_pp *pp,
                              void *owner, weir_upconn_wake_cb wake)
{
    if (atomic_load_explicit(&n_idle, memory_order_relaxed) == 0)
        return NULL;
    upool_home *me = home_of(loop);
    const struct sockaddr *addr = (const struct sockaddr *)&peer->addr;
    uint32_t b = addr_bucket(addr);
    uint64_t sh = tls_key(peer, pp);
    weir_upconn *mine = NULL, *other = NULL;
    uint64_t now = weir__loop_now(loop);
    pthread_mutex_lock(&pool_lock);
    for (weir_upconn *u = buckets[b]; u; u = u->next) {
        /* One past its age is left to its idle timer, which is due. */
        if (!same_key(u, addr, peer->tls, sh) || (u->retire_at_ms && now >= u->retire_at_ms))
            continue;
        if (u->home == me) {
            mine = u;
            break;
        }
        if (!other)
            other = u;
    }
    weir_upconn *got = NULL;
    if (mine) {
        unlink_idle(mine);
        got = mine;
    } else if (other) {
        unlink_idle(other);
        got = migrate(other, loop);
    }
    pthread_mutex_unlock(&pool_lock);
    if (mine)
        weir__timer_stop(loop, &mine->idle_timer);
    if (got) {
        got->owner = owner;
        got->wake = wake;
    }
    return got;
}

weir_upconn *weir__upconn_connect(weir_loop *loop, const weir_peer *peer, const weir_upconn_pp *pp,
                                  void *owner, weir_upconn_wake_cb wake, int *err)
{
    int fd = weir__connect_start((const struct sockaddr *)&peer->addr, peer->addr_len);
    if (fd < 0) {
        *err = fd;
        return NULL;
    }
    weir_upconn *u = weir__pool_get(upconn_class);
    if (!u) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    int rc = weir__conn_init(&u->conn, loop, fd, io_cb);
    if (rc < 0) {
        close(fd);
        weir__pool_put(upconn_class, u);
        *err = rc;
        return NULL;
    }
    memcpy(&u->addr, &peer->addr, sizeof(u->addr));
    u->addr_len = peer->addr_len;
    u->tls = peer->tls;
    u->tls_key = tls_key(peer, pp);
    u->owner = owner;
    u->wake = wake;
    u->pp = NULL;
    u->pp_len = 0;
    if (pp && pp->len) {
        u->pp = malloc(pp->len);
        if (!u->pp) {
            weir__upconn_close(u, true);
            *err = -ENOMEM;
            return NULL;
        }
        memcpy(u->pp, pp->buf, pp->len);
        u->pp_len = pp->len;
    }
    if (peer->tls) {
        SSL *ssl = weir__tls_client_ssl(peer->tls_client, peer);
        if (!ssl) {
            weir__upconn_close(u, true);
            *err = -ENOMEM;
            return NULL;
        }
        weir__conn_set_tls(&u->conn, ssl);
    }
    if (peer->conn_limit) {
        u->limit = peer->conn_limit;
        weir__climit_ref(u->limit);
    }
    u->max_uses = peer->max_requests;
    if (peer->max_connection_age_ms)
        u->retire_at_ms = weir__loop_now(loop) + weir__jitter_ms(peer->max_connection_age_ms);
    return u;
}

/* The TLS handshake after the TCP connect. */
static int handshake(weir_upconn *u)
{
    int rc = weir__conn_handshake(&u->conn);
    if (rc == WEIR_AGAIN)
        return rc;
    if (rc < 0) {
        char addr[WEIR_ADDR_STRLEN];
        weir__addr_format((const struct sockaddr *)&u->addr, addr, sizeof(addr));
        weir__tls_count(WEIR_TLS_UP_FAILURE);
        weir_log_warn("upstream %s: TLS handshake failed: %s", addr, weir__conn_tls_error());
        return rc;
    }
    weir__tls_count(WEIR_TLS_UP_HANDSHAKE);
    if (SSL_session_reused(u->conn.ssl))
        weir__tls_count(WEIR_TLS_UP_RESUMED);
    return WEIR_OK;
}

int weir__upconn_connect_result(weir_upconn *u)
{
    if (u->connected)
        return u->conn.ssl && !u->conn.tls_ready ? handshake(u) : WEIR_OK;
    if (!u->conn.writable)
        return WEIR_AGAIN;
    /* EPOLLOUT alone is a connect that worked; a failed one also reports
     * EPOLLERR or EPOLLHUP (hup): only then is its error asked for. */
    int err = 0;
    socklen_t len = sizeof(err);
    if (u->conn.hup && getsockopt(u->conn.io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        return -err;
    u->connected = true;
    if (u->pp) {
        /* The header comes first, before TLS: a fresh socket's buffer
         * takes its few hundred bytes at once. */
        ssize_t n = send(u->conn.io.fd, u->pp, u->pp_len, MSG_NOSIGNAL);
        int e = n < 0 ? errno : EIO;
        bool whole = n == (ssize_t)u->pp_len;
        free(u->pp);
        u->pp = NULL;
        if (!whole)
            return -e;
        u->conn.bytes_out += u->pp_len;
    }
    return u->conn.ssl ? handshake(u) : WEIR_OK;
}

void weir__upconn_close(weir_upconn *u, bool reset)
{
    free(u->pp);
    u->pp = NULL;
    if (u->limit) {
        weir__climit_release(u->limit);
        weir__climit_unref(u->limit);
        u->limit = NULL;
    }
    weir__conn_close(&u->conn, reset);
    /* The loop may still hold an event for this connection in the current
     * round; conn_close made its callback a no-op, and the memory is freed
     * only at the end of the round. */
    weir__loop_defer(u->conn.loop, free_upconn, u);
}

void weir__upool_put(weir_upconn *u, uint32_t idle_timeout_ms, uint32_t max_idle)
{
    upool_home *me = home_of(u->conn.loop);
    u->owner = NULL;
    u->wake = NULL;
    u->n_used++;
    uint64_t now = weir__loop_now(u->conn.loop);
    /* Aged: closed, so that the next request makes a new connection (to
     * whichever backend a load balancer in between picks now). */
    bool aged =
        (u->max_uses && u->n_used >= u->max_uses) || (u->retire_at_ms && now >= u->retire_at_ms);
    /* Readable here means bytes or a close came after the response: either
     * way the connection is not clean. */
    if (!me || idle_timeout_ms == 0 || max_idle == 0 || aged || u->conn.eof || u->conn.error ||
        u->conn.hup || (u->conn.readable && !idle_clean(u)) || u->conn.rstart != u->conn.rend) {
        weir__upconn_close(u, false);
        return;
    }
    /* Idle no longer than its age left. */
    if (u->retire_at_ms && u->retire_at_ms - now < idle_timeout_ms)
        idle_timeout_ms = (uint32_t)(u->retire_at_ms - now);
    /* An idle connection holds no buffer. */
    u->conn.rstart = u->conn.rend = 0;
    weir__conn_release_rbuf(&u->conn);
    uint32_t b = addr_bucket((const struct sockaddr *)&u->addr);
    pthread_mutex_lock(&pool_lock);
    uint32_t same = 0;
    /* Count this key's idle connections only when the bucket could hold
     * max_idle of them: the common case costs nothing. */
    if (n_bucket[b] >= max_idle) {
        for (weir_upconn *o = buckets[b]; o; o = o->next) {
            if (same_key(o, (const struct sockaddr *)&u->addr, u->tls, u->tls_key))
                same++;
        }
    }
    bool pooled = !me->closed && same < max_idle;
    /* Read before the unlock: another worker may take u at once. */
    weir_conn_limit *lim = pooled ? u->limit : NULL;
    if (lim)
        weir__climit_ref(lim);
    if (pooled) {
        u->bucket = b;
        u->home = me;
        u->in_pool = true;
        u->migrated = false;
        u->prev = NULL;
        u->next = buckets[b];
        if (u->next)
            u->next->prev = u;
        buckets[b] = u;
        n_bucket[b]++;
        atomic_fetch_add_explicit(&n_idle, 1, memory_order_relaxed);
        /* Armed under the lock: a worker that takes it posts the stop to
         * this thread, which runs it after this. */
        weir__timer_start(u->conn.loop, &u->idle_timer, idle_timeout_ms, idle_timeout);
    }
    pthread_mutex_unlock(&pool_lock);
    if (!pooled)
        weir__upconn_close(u, false);
    if (lim) {
        weir__climit_idle(lim); /* a request waiting for a connection takes it */
        weir__climit_unref(lim);
    }
}

void weir__upool_close_all(weir_loop *loop)
{
    upool_home *me = self;
    if (!me)
        return;
    weir_upconn *mine = NULL;
    pthread_mutex_lock(&pool_lock);
    me->closed = true;
    for (int b = 0; b < N_BUCKETS; b++) {
        weir_upconn *u = buckets[b];
        while (u) {
            weir_upconn *next = u->next;
            if (u->home == me) {
                unlink_idle(u);
                u->next = mine; /* reuse the link for our own list */
                mine = u;
            }
            u = next;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    while (mine) {
        weir_upconn *next = mine->next;
        mine->next = NULL;
        weir__timer_stop(loop, &mine->idle_timer);
        weir__upconn_close(mine, false);
        mine = next;
    }
}

/* Frees this thread's pool record at worker exit (after close_all). */
void weir__upool_thread_exit(void)
{
    free(self);
    self = NULL;
}
