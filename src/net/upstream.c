/*
 * upstream.c - backend connections and the per-worker idle pool.
 */
#include "net/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/pool.h"
#include "net/sock.h"
#include "weir/types.h"

#define N_BUCKETS 256

typedef struct upool {
    weir_upconn *buckets[N_BUCKETS];
    uint32_t n_bucket[N_BUCKETS]; /* idle connections per bucket */
    uint32_t n_idle;
} upool;

static __thread upool *pool;
static weir_pool_class upconn_class;

__attribute__((constructor)) static void register_class(void)
{
    upconn_class = weir__pool_register("upconn", sizeof(weir_upconn), 1024);
}

static void free_upconn(void *u)
{
    weir__pool_put(upconn_class, u);
}

static uint32_t fnv(const void *p, size_t len, uint32_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static uint32_t sni_hash(const weir_peer *peer)
{
    return fnv(peer->sni, strnlen(peer->sni, sizeof(peer->sni)), 2166136261u);
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

static upool *get_pool(void)
{
    if (!pool)
        pool = calloc(1, sizeof(*pool));
    return pool;
}

static void unlink_idle(weir_upconn *u)
{
    upool *p = get_pool();
    if (u->prev)
        u->prev->next = u->next;
    else
        p->buckets[u->bucket] = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    p->n_idle--;
    p->n_bucket[u->bucket]--;
    weir__timer_stop(u->conn.loop, &u->idle_timer);
}

static void io_cb(weir_io *io, uint32_t events)
{
    weir_upconn *u = weir_container_of(io, weir_upconn, conn.io);
    weir__conn_on_events(&u->conn, events);
    if (u->owner) {
        u->wake(u->owner);
        return;
    }
    /* Idle in the pool: any event means the backend closed the connection
     * or sent bytes nobody asked for. Either way it cannot be reused. */
    unlink_idle(u);
    weir__upconn_close(u, false);
}

static void idle_timeout(weir_timer *t)
{
    weir_upconn *u = weir_container_of(t, weir_upconn, idle_timer);
    unlink_idle(u);
    weir__upconn_close(u, false);
}

weir_upconn *weir__upool_take(weir_loop *loop, const weir_peer *peer, void *owner,
                              weir_upconn_wake_cb wake)
{
    upool *p = get_pool();
    if (!p || p->n_idle == 0)
        return NULL;
    uint32_t b = addr_bucket((const struct sockaddr *)&peer->addr);
    uint32_t sh = sni_hash(peer);
    for (weir_upconn *u = p->buckets[b]; u; u = u->next) {
        if (u->tls == peer->tls && u->sni_hash == sh &&
            weir__addr_equal((const struct sockaddr *)&u->addr,
                             (const struct sockaddr *)&peer->addr)) {
            unlink_idle(u);
            u->owner = owner;
            u->wake = wake;
            return u;
        }
    }
    return NULL;
}

weir_upconn *weir__upconn_connect(weir_loop *loop, const weir_peer *peer, void *owner,
                                  weir_upconn_wake_cb wake, int *err)
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
    u->sni_hash = sni_hash(peer);
    u->owner = owner;
    u->wake = wake;
    return u;
}

int weir__upconn_connect_result(weir_upconn *u)
{
    if (u->connected)
        return WEIR_OK;
    if (!u->conn.writable)
        return WEIR_AGAIN;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(u->conn.io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        return -err;
    u->connected = true;
    return WEIR_OK;
}

void weir__upconn_close(weir_upconn *u, bool reset)
{
    weir__conn_close(&u->conn, reset);
    /* The loop may still hold an event for this connection in the current
     * round; conn_close made its callback a no-op, and the memory is freed
     * only at the end of the round. */
    weir__loop_defer(u->conn.loop, free_upconn, u);
}

void weir__upool_put(weir_upconn *u, uint32_t idle_timeout_ms, uint32_t max_idle)
{
    upool *p = get_pool();
    u->owner = NULL;
    u->wake = NULL;
    u->n_used++;
    /* Readable here means bytes or a close came after the response: either
     * way the connection is not clean. */
    if (!p || idle_timeout_ms == 0 || max_idle == 0 || u->conn.eof || u->conn.error ||
        u->conn.hup || u->conn.readable || u->conn.rstart != u->conn.rend) {
        weir__upconn_close(u, false);
        return;
    }
    uint32_t b = addr_bucket((const struct sockaddr *)&u->addr);
    uint32_t same = 0;
    /* Count this key's idle connections only when the bucket could hold
     * max_idle of them: the common case costs nothing. */
    if (p->n_bucket[b] >= max_idle) {
        for (weir_upconn *o = p->buckets[b]; o; o = o->next) {
            if (o->tls == u->tls && o->sni_hash == u->sni_hash &&
                weir__addr_equal((const struct sockaddr *)&o->addr,
                                 (const struct sockaddr *)&u->addr))
                same++;
        }
    }
    if (same >= max_idle) {
        weir__upconn_close(u, false);
        return;
    }
    /* An idle connection holds no buffer. */
    u->conn.rstart = u->conn.rend = 0;
    weir__conn_release_rbuf(&u->conn);
    u->bucket = b;
    u->prev = NULL;
    u->next = p->buckets[b];
    if (u->next)
        u->next->prev = u;
    p->buckets[b] = u;
    p->n_idle++;
    p->n_bucket[b]++;
    weir__timer_start(u->conn.loop, &u->idle_timer, idle_timeout_ms, idle_timeout);
}

void weir__upool_close_all(weir_loop *loop)
{
    upool *p = pool;
    if (!p)
        return;
    for (int b = 0; b < N_BUCKETS; b++) {
        while (p->buckets[b]) {
            weir_upconn *u = p->buckets[b];
            unlink_idle(u);
            weir__upconn_close(u, false);
        }
    }
    free(p);
    pool = NULL;
}
