/*
 * dns.c - DNS and SRV discovery: a lookup service (weir/lb.h) resolving an
 * upstream's names with c-ares, asynchronously on the control thread's
 * loop, or once and blocking for a program's start-up.
 *
 * A round has its own c-ares channel (so every round reads
 * /etc/resolv.conf afresh, as a container's DNS may move), whose sockets
 * c-ares reports through its socket-state callback; they join the loop.
 * The loop is edge-triggered and c-ares reads a socket once per call, so
 * after each event the round polls its sockets without waiting until none
 * is ready (drain). A timer follows ares_timeout for retries.
 *
 * A name's query either answers (addresses, with TTLs), says nothing
 * exists (NXDOMAIN, or no records of the type: the name has no addresses
 * now), or fails (timeout, SERVFAIL, refused, a malformed or truncated
 * answer). The service keeps each name's last answer so that a failing
 * name keeps its addresses (weir_lookup_dns_new's contract).
 *
 * SRV: one query for the records, then one A/AAAA lookup per target; the
 * records' own TTL is read from the answer (c-ares 1.18's SRV parser does
 * not return it), with ares_expand_name walking the names.
 *
 * Threads: a round and the service's state belong to the control thread;
 * weir_lookup_dns_now runs on its caller's.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/loop.h"
#include "lb/dns.h"
#include "lb/upstream_int.h"
#include "net/sock.h"

#define T_SRV_TYPE 33
#define C_IN_CLASS 1
#define MAX_SRV_TARGETS 1024

enum { R_PENDING, R_OK, R_NONE, R_FAIL };

typedef struct srv_target {
    char *host;
    uint16_t port, priority, weight;
    int state;
    weir_lb_target *v;
    size_t n;
    uint32_t ttl_s;
} srv_target;

/* One name's outcome in a round. */
typedef struct name_result {
    int state;
    char err[120];
    weir_lb_target *v;
    size_t n, cap;
    uint32_t ttl_s; /* shortest TTL seen; UINT32_MAX = none */
    srv_target *t;  /* SRV: its records */
    size_t n_t, t_pending;
} name_result;

typedef struct dns_opts {
    weir_dns_name *names; /* hosts owned */
    size_t n_names;
    bool srv;
    char *servers_csv; /* normalised, or NULL */
    char **search;
    size_t n_search;
    int family;
    uint32_t timeout_ms, tries, min_ttl_ms, interval_ms;
} dns_opts;

typedef struct dns_sock {
    weir_io io;
    struct dns_round *r;
    bool want_write;
} dns_sock;

typedef struct dns_service dns_service;

/* One round: a channel and its queries. Owner: its service (async) or the
 * caller of weir_lookup_dns_now. */
typedef struct dns_round {
    const dns_opts *o;
    ares_channel ch;
    bool have_ch;
    size_t pending; /* c-ares queries not answered */
    name_result *res;
    /* async only */
    weir_loop *loop;
    dns_service *svc;
    weir_lookup *round;
    dns_sock **socks;
    size_t n_socks;
    weir_timer timer;
    bool finish_queued;
} dns_round;

/* A name's last answer, kept across rounds. */
typedef struct last_answer {
    bool known;
    weir_lb_target *v;
    size_t n;
} last_answer;

struct dns_service {
    dns_opts o;
    last_answer *last; /* per name */
    dns_round *cur;    /* the round in flight */
};

/* One c-ares query's context. */
typedef struct query {
    dns_round *r;
    size_t name;
    long target; /* SRV target index, or -1 */
} query;

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_global_init(void)
{
    ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- options ---- */

static void opts_free(dns_opts *o)
{
    for (size_t i = 0; i < o->n_names; i++)
        free((char *)o->names[i].host);
    free(o->names);
    free(o->servers_csv);
    for (size_t i = 0; i < o->n_search; i++)
        free(o->search[i]);
    free(o->search);
    memset(o, 0, sizeof(*o));
}

/* One server item ("ip", "ip:port", "v6", "[v6]:port") as "ip:port" or
 * "[v6]:port" appended to csv. Returns false if it is not one. */
static bool server_item(const char *item, size_t len, char *csv, size_t cap, size_t *used)
{
    char buf[80];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, item, len);
    buf[len] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    char text[96];
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        snprintf(text, sizeof(text), "%s:53", buf);
    } else if (inet_pton(AF_INET6, buf, &a6) == 1) {
        snprintf(text, sizeof(text), "[%s]:53", buf);
    } else {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (weir__addr_parse(buf, &ss, &sl) < 0)
            return false;
        weir__addr_format((struct sockaddr *)&ss, text, sizeof(text));
    }
    int w = snprintf(csv + *used, cap - *used, "%s%s", *used ? "," : "", text);
    if (w < 0 || (size_t)w >= cap - *used)
        return false;
    *used += (size_t)w;
    return true;
}

static int opts_copy(dns_opts *d, const weir_dns_options *o, char *err, size_t err_len)
{
    memset(d, 0, sizeof(*d));
    if (!o->n_names) {
        snprintf(err, err_len, "no names to resolve");
        return WEIR_ERR_INVAL;
    }
    if (o->family != AF_UNSPEC && o->family != AF_INET && o->family != AF_INET6) {
        snprintf(err, err_len, "the address family must be AF_UNSPEC, AF_INET or AF_INET6");
        return WEIR_ERR_INVAL;
    }
    d->names = calloc(o->n_names, sizeof(*d->names));
    if (!d->names)
        goto oom;
    for (size_t i = 0; i < o->n_names; i++) {
        const weir_dns_name *n = &o->names[i];
        if (!n->host || !n->host[0] || strlen(n->host) > 253 ||
            (!o->srv && (n->port == 0 || n->weight < 1 || n->weight > 10000))) {
            snprintf(err, err_len, "name %zu: a host (253 characters at most)%s", i + 1,
                     o->srv ? "" : ", a port and a weight 1..10000 are needed");
            opts_free(d);
            return WEIR_ERR_INVAL;
        }
        d->names[i] = *n;
        d->names[i].host = strdup(n->host);
        d->n_names++;
        if (!d->names[i].host)
            goto oom;
    }
    if (o->servers && o->servers[0]) {
        size_t cap = strlen(o->servers) * 2 + 64, used = 0;
        d->servers_csv = malloc(cap);
        if (!d->servers_csv)
            goto oom;
        for (const char *p = o->servers; *p;) {
            while (*p == ' ' || *p == ',')
                p++;
            if (!*p)
                break;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ')
                e++;
            if (!server_item(p, (size_t)(e - p), d->servers_csv, cap, &used)) {
                snprintf(err, err_len, "'%.*s' is not a DNS server address (ip or ip:port)",
                         (int)(e - p), p);
                opts_free(d);
                return WEIR_ERR_INVAL;
            }
            p = e;
        }
        if (!used) {
            free(d->servers_csv);
            d->servers_csv = NULL;
        }
    }
    if (o->n_search) {
        d->search = calloc(o->n_search, sizeof(*d->search));
        if (!d->search)
            goto oom;
        for (size_t i = 0; i < o->n_search; i++) {
            if (!(d->search[i] = strdup(o->search[i])))
                goto oom;
            d->n_search++;
        }
    }
    d->srv = o->srv;
    d->family = o->family;
    d->timeout_ms = o->timeout_ms ? o->timeout_ms : 2000;
    d->tries = o->tries ? o->tries : 2;
    d->min_ttl_ms = o->min_ttl_ms ? o->min_ttl_ms : 1000;
    d->interval_ms = o->interval_ms ? o->interval_ms : 30000;
    return WEIR_OK;
oom:
    opts_free(d);
    snprintf(err, err_len, "out of memory");
    return WEIR_ERR_NOMEM;
}

/* ---- results ---- */

static void fail(name_result *nr, const char *what, int status)
{
    nr->state = R_FAIL;
    snprintf(nr->err, sizeof(nr->err), "%s: %s", what, ares_strerror(status));
}

/* Whether status says the name has nothing (not that the query failed). */
static bool nothing_there(int status)
{
    return status == ARES_ENOTFOUND || status == ARES_ENODATA;
}

static bool push(weir_lb_target **v, size_t *n, size_t *cap, const struct sockaddr *sa,
                 uint16_t port, uint32_t weight)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        weir_lb_target *nv = realloc(*v, c * sizeof(*nv));
        if (!nv)
            return false;
        *v = nv;
        *cap = c;
    }
    struct sockaddr_storage ss = {0};
    if (sa->sa_family == AF_INET) {
        memcpy(&ss, sa, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    } else {
        memcpy(&ss, sa, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    }
    weir__addr_format((struct sockaddr *)&ss, (*v)[*n].addr, sizeof((*v)[*n].addr));
    (*v)[*n].weight = weight;
    (*n)++;
    return true;
}

/* The addresses of an ares_getaddrinfo answer into v (shortest TTL into
 * *ttl_s). False on OOM. */
static bool take_addrs(const dns_opts *o, const struct ares_addrinfo *ai, uint16_t port,
                       uint32_t weight, weir_lb_target **v, size_t *n, uint32_t *ttl_s)
{
    size_t cap = *n;
    for (const struct ares_addrinfo_node *a = ai ? ai->nodes : NULL; a; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            (o->family != AF_UNSPEC && a->ai_family != o->family))
            continue;
        if (!push(v, n, &cap, a->ai_addr, port, weight))
            return false;
        uint32_t t = a->ai_ttl > 0 ? (uint32_t)a->ai_ttl : 0;
        if (t < *ttl_s)
            *ttl_s = t;
    }
    return true;
}

/* weir__dns_answer_ttl (dns.h): c-ares 1.18 parses SRV records without
 * their TTL. */
uint32_t weir__dns_answer_ttl(const unsigned char *abuf, int alen, int type)
{
    if (alen < 12)
        return 0;
    unsigned qd = (unsigned)(abuf[4] << 8 | abuf[5]), an = (unsigned)(abuf[6] << 8 | abuf[7]);
    const unsigned char *p = abuf + 12, *end = abuf + alen;
    uint32_t min = UINT32_MAX;
    for (unsigned i = 0; i < qd + an; i++) {
        char *name = NULL;
        long enc = 0;
        if (ares_expand_name(p, abuf, alen, &name, &enc) != ARES_SUCCESS)
            return 0;
        ares_free_string(name);
        p += enc;
        if (i < qd) {
            if (end - p < 4)
                return 0;
            p += 4;
            continue;
        }
        if (end - p < 10)
            return 0;
        int t = p[0] << 8 | p[1];
        uint32_t ttl = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        size_t rdlen = (size_t)(p[8] << 8 | p[9]);
        p += 10;
        if ((size_t)(end - p) < rdlen)
            return 0;
        p += rdlen;
        if (ttl & 0x80000000u) /* RFC 2181 8: a TTL with its top bit set is 0 */
            ttl = 0;
        if (t == type && ttl < min)
            min = ttl;
    }
    return min == UINT32_MAX ? 0 : min;
}

/* ---- queries ---- */

static void round_maybe_finish(dns_round *r);

static struct ares_addrinfo_hints hints_of(const dns_opts *o)
{
    return (struct ares_addrinfo_hints){
        .ai_family = o->family, .ai_socktype = SOCK_STREAM, .ai_flags = ARES_AI_NOSORT};
}

static uint32_t srv_weight(uint16_t w)
{
    return w < 1 ? 1 : w > 10000 ? 10000 : w;
}

/* An SRV name whose targets all answered: the lowest priority that has
 * addresses. A target that failed makes the name fail (it keeps its last
 * addresses): a backup tier must not take over because DNS hiccuped. */
static void srv_name_done(name_result *nr)
{
    long best = -1;
    for (size_t i = 0; i < nr->n_t; i++) {
        srv_target *t = &nr->t[i];
        if (t->state == R_FAIL) {
            nr->state = R_FAIL;
            snprintf(nr->err, sizeof(nr->err), "target %s: no answer", t->host);
            return;
        }
        if (t->n && (best < 0 || t->priority < best))
            best = t->priority;
    }
    size_t cap = 0;
    for (size_t i = 0; best >= 0 && i < nr->n_t; i++) {
        srv_target *t = &nr->t[i];
        if (!t->n || t->priority != best)
            continue;
        if (t->ttl_s < nr->ttl_s)
            nr->ttl_s = t->ttl_s;
        for (size_t k = 0; k < t->n; k++) {
            if (nr->n == cap) {
                size_t c = cap ? cap * 2 : 8;
                weir_lb_target *v = realloc(nr->v, c * sizeof(*v));
                if (!v) {
                    nr->state = R_FAIL;
                    snprintf(nr->err, sizeof(nr->err), "out of memory");
                    return;
                }
                nr->v = v;
                cap = c;
            }
            nr->v[nr->n++] = t->v[k];
        }
    }
    nr->state = nr->n ? R_OK : R_NONE;
}

static void addr_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    (void)timeouts;
    query *q = arg;
    dns_round *r = q->r;
    name_result *nr = &r->res[q->name];
    const weir_dns_name *nm = &r->o->names[q->name];
    if (q->target < 0) {
        if (status == ARES_SUCCESS) {
            nr->ttl_s = UINT32_MAX;
            if (!take_addrs(r->o, ai, nm->port, nm->weight, &nr->v, &nr->n, &nr->ttl_s))
                fail(nr, nm->host, ARES_ENOMEM);
            else
                nr->state = nr->n ? R_OK : R_NONE;
        } else if (nothing_there(status)) {
            nr->state = R_NONE;
        } else {
            fail(nr, nm->host, status);
        }
    } else {
        srv_target *t = &nr->t[q->target];
        t->ttl_s = UINT32_MAX;
        if (status == ARES_SUCCESS)
            t->state = take_addrs(r->o, ai, t->port, srv_weight(t->weight), &t->v, &t->n, &t->ttl_s)
                           ? R_OK
                           : R_FAIL;
        else
            t->state = nothing_there(status) ? R_NONE : R_FAIL;
        if (--nr->t_pending == 0)
            srv_name_done(nr);
    }
    if (ai)
        ares_freeaddrinfo(ai);
    free(q);
    r->pending--;
    round_maybe_finish(r);
}

static bool lookup_addr(dns_round *r, size_t name, long target, const char *host)
{
    query *q = host ? malloc(sizeof(*q)) : NULL;
    if (!q)
        return false;
    *q = (query){.r = r, .name = name, .target = target};
    struct ares_addrinfo_hints h = hints_of(r->o);
    /* An SRV target is absolute (RFC 2782): with its root dot, no search
     * domain is tried before it (c-ares strips the dot from the record). */
    char abs[300];
    size_t len = strlen(host);
    if (target >= 0 && len && host[len - 1] != '.' && len + 2 <= sizeof(abs)) {
        memcpy(abs, host, len);
        abs[len] = '.';
        abs[len + 1] = '\0';
        host = abs;
    }
    r->pending++;
    ares_getaddrinfo(r->ch, host, NULL, &h, addr_answer, q); /* may answer at once */
    return true;
}

static void srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    query *q = arg;
    dns_round *r = q->r;
    name_result *nr = &r->res[q->name];
    const char *host = r->o->names[q->name].host;
    struct ares_srv_reply *srv = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &srv);
    if (status == ARES_SUCCESS) {
        nr->ttl_s = weir__dns_answer_ttl(abuf, alen, T_SRV_TYPE);
        size_t n = 0;
        for (struct ares_srv_reply *s = srv; s; s = s->next) {
            /* "." as the target: decidedly no service (RFC 2782) */
            if (s->host && s->host[0] && strcmp(s->host, ".") != 0 && n < MAX_SRV_TARGETS)
                n++;
        }
        nr->t = calloc(n ? n : 1, sizeof(*nr->t));
        if (!nr->t) {
            fail(nr, host, ARES_ENOMEM);
        } else {
            for (struct ares_srv_reply *s = srv; s && nr->n_t < n; s = s->next) {
                if (!s->host || !s->host[0] || strcmp(s->host, ".") == 0)
                    continue;
                srv_target *t = &nr->t[nr->n_t];
                if (!(t->host = strdup(s->host)))
                    break;
                t->port = s->port;
                t->priority = s->priority;
                t->weight = s->weight;
                t->state = R_PENDING;
                nr->n_t++;
            }
            if (nr->n_t == 0) {
                nr->state = R_NONE;
            } else {
                /* One extra count so that answers given at once cannot end
                 * the name before every target has been asked. */
                nr->t_pending = nr->n_t + 1;
                for (size_t i = 0; i < nr->n_t; i++) {
                    if (!lookup_addr(r, q->name, (long)i, nr->t[i].host)) {
                        nr->t[i].state = R_FAIL;
                        nr->t_pending--;
                    }
                }
                if (--nr->t_pending == 0)
                    srv_name_done(nr);
            }
        }
        ares_free_data(srv);
    } else if (nothing_there(status)) {
        nr->state = R_NONE;
    } else {
        fail(nr, host, status);
    }
    free(q);
    r->pending--;
    round_maybe_finish(r);
}

/* ---- a round's channel ---- */

static void dead_io(weir_io *io, uint32_t events)
{
    (void)io;
    (void)events;
}

static void rearm(dns_round *r);

/* c-ares reads one datagram per call: process what is ready until nothing
 * is (the loop is edge-triggered and will not report it again). */
static void drain(dns_round *r)
{
    for (int round = 0; round < 64 && r->n_socks; round++) {
        struct pollfd pf[16];
        size_t n = r->n_socks < 16 ? r->n_socks : 16;
        for (size_t i = 0; i < n; i++)
            pf[i] = (struct pollfd){.fd = r->socks[i]->io.fd,
                                    .events =
                                        (short)(POLLIN | (r->socks[i]->want_write ? POLLOUT : 0))};
        if (poll(pf, n, 0) <= 0)
            return;
        for (size_t i = 0; i < n; i++) {
            if (!pf[i].revents)
                continue;
            bool rd = pf[i].revents & (POLLIN | POLLERR | POLLHUP);
            bool wr = pf[i].revents & POLLOUT;
            ares_process_fd(r->ch, rd ? pf[i].fd : ARES_SOCKET_BAD,
                            wr ? pf[i].fd : ARES_SOCKET_BAD);
        }
    }
}

static void sock_io(weir_io *io, uint32_t events)
{
    dns_sock *s = weir_container_of(io, dns_sock, io);
    dns_round *r = s->r;
    int fd = io->fd;
    bool rd = events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP);
    ares_process_fd(r->ch, rd ? fd : ARES_SOCKET_BAD, events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
    drain(r);
    rearm(r);
}

static void round_timer(weir_timer *t)
{
    dns_round *r = weir_container_of(t, dns_round, timer);
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts, retries */
    drain(r);
    rearm(r);
}

static void rearm(dns_round *r)
{
    struct timeval tv;
    if (!r->have_ch || r->pending == 0 || !ares_timeout(r->ch, NULL, &tv)) {
        weir__timer_stop(r->loop, &r->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 + 1;
    weir__loop_update_time(r->loop);
    weir__timer_start(r->loop, &r->timer, ms, round_timer);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    dns_round *r = data;
    size_t i = 0;
    while (i < r->n_socks && r->socks[i]->io.fd != fd)
        i++;
    dns_sock *s = i < r->n_socks ? r->socks[i] : NULL;
    if (!readable && !writable) {
        if (!s)
            return;
        weir__io_del(r->loop, &s->io); /* c-ares closes fd after this */
        r->socks[i] = r->socks[--r->n_socks];
        s->io.cb = dead_io; /* an event for fd may be queued in this loop round */
        weir__loop_defer(r->loop, free, s);
        return;
    }
    if (!s) {
        dns_sock **v = realloc(r->socks, (r->n_socks + 1) * sizeof(*v));
        if (!v)
            return; /* unwatched: the query times out through the timer */
        r->socks = v;
        if (!(s = calloc(1, sizeof(*s))))
            return;
        s->io.fd = fd;
        s->io.cb = sock_io;
        s->r = r;
        s->want_write = writable;
        if (weir__io_add(r->loop, &s->io, EPOLLIN | EPOLLRDHUP | (writable ? EPOLLOUT : 0)) < 0) {
            free(s);
            return;
        }
        r->socks[r->n_socks++] = s;
        return;
    }
    if ((bool)writable != s->want_write) {
        s->want_write = writable;
        weir__io_mod(r->loop, &s->io, EPOLLIN | EPOLLRDHUP | (writable ? EPOLLOUT : 0));
    }
}

static bool is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* A name that is an IP address: its one target into nr. False if it is
 * not one. */
static bool numeric(const weir_dns_name *nm, name_result *nr)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, nm->host, &s4->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, nm->host, &s6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return false;
    push(&nr->v, &nr->n, &nr->cap, (struct sockaddr *)&ss, nm->port, nm->weight ? nm->weight : 1);
    return true;
}

/* Opens r's channel and asks every name. Returns 0, or -1 with err set. */
static int round_open(dns_round *r, char *err, size_t err_len)
{
    const dns_opts *o = r->o;
    pthread_once(&ares_once, ares_global_init);
    if (ares_init_rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(ares_init_rc));
        return -1;
    }
    r->res = calloc(o->n_names, sizeof(*r->res));
    if (!r->res) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    struct ares_options ao = {.timeout = (int)o->timeout_ms, .tries = (int)o->tries};
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    if (o->n_search) {
        ao.domains = o->search;
        ao.ndomains = (int)o->n_search;
        mask |= ARES_OPT_DOMAINS;
    }
    if (o->servers_csv) {
        /* Servers of its own: DNS only, not /etc/hosts. */
        ao.lookups = (char *)"b";
        mask |= ARES_OPT_LOOKUPS;
    }
    if (r->loop) {
        ao.sock_state_cb = sock_state;
        ao.sock_state_cb_data = r;
        mask |= ARES_OPT_SOCK_STATE_CB;
    }
    int rc = ares_init_options(&r->ch, &ao, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(rc));
        return -1;
    }
    r->have_ch = true;
    if (o->servers_csv &&
        (rc = ares_set_servers_ports_csv(r->ch, o->servers_csv)) != ARES_SUCCESS) {
        snprintf(err, err_len, "DNS servers '%s': %s", o->servers_csv, ares_strerror(rc));
        return -1;
    }
    /* One count held while asking: c-ares answers some names (the hosts
     * file, a cache) inside the call, and the round must not end before
     * every name has been asked. */
    r->pending++;
    for (size_t i = 0; i < o->n_names; i++) {
        name_result *nr = &r->res[i];
        nr->state = R_PENDING;
        nr->ttl_s = UINT32_MAX;
        if (numeric(&o->names[i], nr)) {
            /* An address is itself, with no TTL to follow. */
            nr->state = nr->n ? R_OK : R_FAIL;
            if (!nr->n)
                snprintf(nr->err, sizeof(nr->err), "out of memory");
            continue;
        }
        bool ok;
        if (o->srv) {
            query *q = malloc(sizeof(*q));
            ok = q != NULL;
            if (q) {
                *q = (query){.r = r, .name = i, .target = -1};
                r->pending++;
                ares_search(r->ch, o->names[i].host, C_IN_CLASS, T_SRV_TYPE, srv_answer, q);
            }
        } else {
            ok = lookup_addr(r, i, -1, o->names[i].host);
        }
        if (!ok)
            fail(&r->res[i], o->names[i].host, ARES_ENOMEM);
    }
    r->pending--; /* the caller finishes the round if all answered at once */
    return 0;
}

static void round_free(dns_round *r)
{
    if (r->have_ch)
        ares_destroy(r->ch); /* closes its sockets (sock_state) */
    if (r->loop)
        weir__timer_stop(r->loop, &r->timer);
    for (size_t i = 0; r->res && i < r->o->n_names; i++) {
        name_result *nr = &r->res[i];
        free(nr->v);
        for (size_t k = 0; k < nr->n_t; k++) {
            free(nr->t[k].host);
            free(nr->t[k].v);
        }
        free(nr->t);
    }
    free(r->res);
    free(r->socks);
    free(r);
}

/*
 * The round's members into *v, *n; the time to the next round into
 * *next_ms (0: no TTL seen); what failed into err ("" if nothing). With
 * last (the service's), failed names give their last addresses and
 * answered ones replace theirs; returns false when a failed name has no
 * last answer, or when every name looked up failed (the round must then
 * change nothing, and it is not a success).
 */
static bool assemble(dns_round *r, last_answer *last, weir_lb_target **v, size_t *n,
                     uint32_t *next_ms, char *err, size_t err_len)
{
    const dns_opts *o = r->o;
    size_t total = 0, n_failed = 0, n_looked_up = 0;
    bool complete = true;
    uint32_t ttl_s = UINT32_MAX;
    err[0] = '\0';
    for (size_t i = 0; i < o->n_names; i++) {
        name_result *nr = &r->res[i];
        n_looked_up += !is_ip(o->names[i].host);
        if (nr->state == R_OK)
            total += nr->n;
        else if (nr->state != R_NONE && last && last[i].known)
            total += last[i].n;
    }
    *v = malloc((total ? total : 1) * sizeof(**v));
    *n = 0;
    if (!*v) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    for (size_t i = 0; i < o->n_names; i++) {
        name_result *nr = &r->res[i];
        if (nr->state == R_OK) {
            memcpy(*v + *n, nr->v, nr->n * sizeof(**v));
            *n += nr->n;
            if (nr->ttl_s < ttl_s)
                ttl_s = nr->ttl_s;
        }
        if (nr->state == R_OK || nr->state == R_NONE) {
            if (last) {
                weir_lb_target *copy = NULL;
                if (nr->n && !(copy = malloc(nr->n * sizeof(*copy))))
                    continue; /* keeps the older answer */
                if (nr->n)
                    memcpy(copy, nr->v, nr->n * sizeof(*copy));
                free(last[i].v);
                last[i] = (last_answer){.known = true, .v = copy, .n = nr->n};
            }
            continue;
        }
        if (nr->state == R_PENDING)
            snprintf(nr->err, sizeof(nr->err), "%s: no answer", o->names[i].host);
        if (n_failed++ == 0)
            snprintf(err, err_len, "%s", nr->err);
        if (last && last[i].known) {
            memcpy(*v + *n, last[i].v, last[i].n * sizeof(**v));
            *n += last[i].n;
        } else {
            complete = false;
        }
    }
    if (n_failed && n_failed == n_looked_up)
        complete = false;
    if (n_failed > 1) {
        size_t l = strlen(err);
        snprintf(err + l, err_len - l, " (and %zu more names failed)", n_failed - 1);
    }
    *next_ms = 0;
    if (ttl_s != UINT32_MAX) {
        uint64_t ms = (uint64_t)ttl_s * 1000;
        if (ms < o->min_ttl_ms)
            ms = o->min_ttl_ms;
        *next_ms = ms < o->interval_ms ? (uint32_t)ms : o->interval_ms;
    }
    return complete;
}

/* ---- the lookup service (control thread) ---- */

static void finish_task(void *arg)
{
    dns_round *r = arg;
    dns_service *s = r->svc;
    weir_lookup *round = r->round;
    weir_lb_target *v = NULL;
    size_t n = 0;
    uint32_t next_ms = 0;
    char err[200];
    bool complete = assemble(r, s->last, &v, &n, &next_ms, err, sizeof(err));
    s->cur = NULL;
    round_free(r);
    if (!complete)
        n = 0; /* a name failed that never answered: change nothing */
    if (!complete && !err[0])
        snprintf(err, sizeof(err), "out of memory");
    weir_lookup_done(round, v, n, next_ms, err[0] ? err : NULL);
    free(v);
}

static void round_maybe_finish(dns_round *r)
{
    if (r->pending || !r->loop || r->finish_queued)
        return;
    /* Not here: this may be inside a c-ares callback, and finishing
     * destroys the channel. */
    r->finish_queued = true;
    if (weir__loop_defer(r->loop, finish_task, r) != 0) {
        r->finish_queued = false;
        weir__timer_start(r->loop, &r->timer, 10, round_timer); /* try again soon */
    }
}

static void svc_lookup(void *ud, weir_lookup *round)
{
    dns_service *s = ud;
    char err[200];
    dns_round *r = calloc(1, sizeof(*r));
    if (!r) {
        weir_lookup_done(round, NULL, 0, 0, "out of memory");
        return;
    }
    r->o = &s->o;
    r->svc = s;
    r->round = round;
    r->loop = weir__loop_current();
    s->cur = r;
    if (round_open(r, err, sizeof(err)) < 0) {
        s->cur = NULL;
        round_free(r);
        weir_lookup_done(round, NULL, 0, 0, err);
        return;
    }
    round_maybe_finish(r); /* everything may have answered at once */
    rearm(r);
}

static void svc_cancel(void *ud, weir_lookup *round)
{
    (void)round;
    dns_service *s = ud;
    if (s->cur && s->cur->have_ch)
        ares_cancel(s->cur->ch); /* every query ends now, ECANCELLED */
}

static void svc_free(void *ud)
{
    dns_service *s = ud;
    for (size_t i = 0; s->last && i < s->o.n_names; i++)
        free(s->last[i].v);
    free(s->last);
    opts_free(&s->o);
    free(s);
}

int weir_lookup_dns_new(const weir_dns_options *o, weir_lookup_service *out, char *err,
                        size_t err_len)
{
    memset(out, 0, sizeof(*out));
    dns_service *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return WEIR_ERR_NOMEM;
    }
    int rc = opts_copy(&s->o, o, err, err_len);
    if (rc != WEIR_OK) {
        free(s);
        return rc;
    }
    if (!(s->last = calloc(s->o.n_names, sizeof(*s->last)))) {
        svc_free(s);
        snprintf(err, err_len, "out of memory");
        return WEIR_ERR_NOMEM;
    }
    snprintf(out->kind, sizeof(out->kind), "%s", o->srv ? "srv" : "dns");
    out->lookup = svc_lookup;
    out->cancel = svc_cancel;
    out->free = svc_free;
    out->ud = s;
    out->interval_ms = s->o.interval_ms;
    out->retry_min_ms = o->retry_min_ms ? o->retry_min_ms : 1000;
    return WEIR_OK;
}

/* ---- once, blocking ---- */

int weir_lookup_dns_now(const weir_dns_options *o, weir_lb_target **v, size_t *n, uint32_t *ttl_ms,
                        char *err, size_t err_len)
{
    *v = NULL;
    *n = 0;
    *ttl_ms = 0;
    dns_opts opts;
    int rc = opts_copy(&opts, o, err, err_len);
    if (rc != WEIR_OK)
        return rc;
    dns_round *r = calloc(1, sizeof(*r));
    if (!r) {
        opts_free(&opts);
        snprintf(err, err_len, "out of memory");
        return WEIR_ERR_NOMEM;
    }
    r->o = &opts;
    rc = WEIR_ERR;
    if (round_open(r, err, err_len) == 0) {
        while (r->pending) {
            ares_socket_t socks[ARES_GETSOCK_MAXNUM];
            int bits = ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
            struct pollfd pf[ARES_GETSOCK_MAXNUM];
            nfds_t np = 0;
            for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
                /* c-ares's ARES_GETSOCK_WRITABLE shifts a signed 1 by 31. */
                unsigned ub = (unsigned)bits;
                short ev = (short)((ub & (1u << i) ? POLLIN : 0) |
                                   (ub & (1u << (i + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));
                if (ev)
                    pf[np++] = (struct pollfd){.fd = socks[i], .events = ev};
            }
            struct timeval tv, *tp = ares_timeout(r->ch, NULL, &tv);
            int wait = tp ? (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000 + 1) : 100;
            int ready = poll(pf, np, wait);
            if (ready < 0 && errno != EINTR)
                break;
            if (ready <= 0) {
                ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
                continue;
            }
            for (nfds_t i = 0; i < np; i++) {
                if (!pf[i].revents)
                    continue;
                bool rd = pf[i].revents & (POLLIN | POLLERR | POLLHUP);
                bool wr = pf[i].revents & POLLOUT;
                ares_process_fd(r->ch, rd ? pf[i].fd : ARES_SOCKET_BAD,
                                wr ? pf[i].fd : ARES_SOCKET_BAD);
            }
        }
        bool complete = assemble(r, NULL, v, n, ttl_ms, err, err_len);
        rc = complete && !err[0] ? WEIR_OK : WEIR_ERR;
    }
    round_free(r);
    opts_free(&opts);
    return rc;
}
