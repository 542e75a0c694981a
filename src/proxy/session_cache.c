/*
 * session_cache.c - a session's use of the HTTP cache (weir/cache.h).
 *
 * State CACHE (after request_filter): request_cache_filter runs, then, if
 * the request turned caching on, the lookup. A usable stored response is
 * answered as a generated response whose body is the stored object's own
 * memory (the session holds a reference until it ends): no copy per hit.
 * Otherwise the request goes upstream, with conditional fields when a
 * stale stored response has validators, and weir__cache_response() looks
 * at what comes back after upstream_response_filter: a 304 to weir's own
 * validation refreshes the stored head and answers from the store, a 5xx
 * may be answered by a stale one, and a storable response has its head
 * kept and its body copied as it streams (weir__cache_tee) until the whole
 * of it has arrived (weir__cache_body_end), when it is stored.
 *
 * Concurrent misses of one key wait for the first one's (store.h locks);
 * a wake comes as a task on this session's loop. stale-while-revalidate
 * answers from the store and starts a background request: a session of its
 * own with the same request and no client (its response goes nowhere),
 * which runs every phase and refreshes the store as a miss would.
 *
 * Owner: the session; loop thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache/entry.h"
#include "cache/policy.h"
#include "cache/store.h"
#include "cache/vary.h"
#include "core/log.h"
#include "http/msg.h"
#include "proxy/session-t.h"
#include "proxy/session.h"

#define KEY_MAX 4096
#define VARY_MAX 1024
#define STATUS_MAX 192

typedef enum fwd_kind {
    FWD_NONE,     /* a hit */
    FWD_URI_MISS, /* nothing stored for the URI */
    FWD_VARY_MISS,
    FWD_STALE,   /* a stored response, validated (or refreshed) first */
    FWD_REQUEST, /* the request's directives sent it (no-cache) */
    FWD_METHOD,  /* not a method the cache answers */
    FWD_BYPASS,  /* the key callback bypassed it */
} fwd_kind;

static const char *const fwd_names[] = {NULL,      "uri-miss", "vary-miss", "stale",
                                        "request", "method",   "bypass"};

typedef struct sess_cache sess_cache;

struct sess_cache {
    weir_cache *c;
    weir_cache_settings set;
    char targeted[64];
    const char *targ; /* targeted, or NULL for none */
    char *key, *vkey; /* primary key; variant key (or NULL) */
    size_t key_len, vkey_len;
    weir_cache_req q;
    time_t req_time;
    weir_cobj *obj; /* the stored response served, or being validated */
    fwd_kind fwd;
    int fwd_status;
    const char *detail; /* why not stored, or how stale was served */
    bool get, head, unsafe;
    bool owner;   /* holds the lock of key */
    bool no_lock; /* told by a lock's holder that it did not store */
    /* A background refresh holds the lock of the key it refreshes (given
     * by the request that started it), released when it ends. */
    weir_cache *rl_c;
    char *rl_key;
    size_t rl_len;
    bool conditional;
    bool resp_seen, served, stored;
    weir_str c_inm, c_ims;        /* the client's own validators, kept aside */
    weir_str c_range, c_if_range; /* and its Range and If-Range (.ptr NULL: none, or two) */
    /* storing */
    bool tee, tee_over;
    char *tee_buf;
    size_t tee_len, tee_cap;
    size_t tee_want;   /* the body's Content-Length; 0: unknown */
    weir_centry shead; /* the head to store */
    int64_t lifetime;
    char *vary;
    size_t vary_len;
    /* waiting for a lock */
    weir_cwaiter w;
    weir_timer timer;
    bool waiting;
    uint64_t wait_start_us, wait_end_us; /* the wait (loop clock); 0: none */
    const char *wait_end;                /* how it ended: "filled", "timeout" */
    char status[STATUS_MAX];
    size_t status_len;
};

static time_t wall(const weir_session *s)
{
    return (time_t)(weir__loop_wall_ms(s->loop) / 1000);
}

static bool method_is(const weir_session *s, const char *m)
{
    size_t n = strlen(m);
    return s->req.method.len == n && memcmp(s->req.method.ptr, m, n) == 0;
}

/* ---- the public calls ---- */

int weir_session_cache_enable(weir_session *s, weir_cache *c, const weir_cache_settings *settings)
{
    if (!c || s->state > SS_CACHE || (s->state == SS_CACHE && s->sub > 0))
        return WEIR_ERR_INVAL;
    sess_cache *k = s->cache;
    if (!k) {
        k = weir__arena_alloc(&s->arena, sizeof(*k));
        if (!k)
            return WEIR_ERR_NOMEM;
        memset(k, 0, sizeof(*k));
        s->cache = k;
    }
    k->c = c;
    k->set = settings ? *settings : (weir_cache_settings){0};
    const char *t = k->set.targeted_field ? k->set.targeted_field : "CDN-Cache-Control";
    k->targ = NULL;
    if (strcmp(t, "-") != 0 && strlen(t) < sizeof(k->targeted)) {
        strcpy(k->targeted, t);
        k->targ = k->targeted;
    }
    k->set.targeted_field = k->targ;
    if (!k->set.heuristic_max)
        k->set.heuristic_max = 86400;
    if (!k->set.lock_timeout_ms)
        k->set.lock_timeout_ms = 5000;
    uint64_t max = weir__cstore_max_object(c);
    if (!k->set.max_object_bytes || k->set.max_object_bytes > max)
        k->set.max_object_bytes = max;
    return WEIR_OK;
}

size_t weir_session_cache_default_key(weir_session *s, char *out, size_t cap)
{
    weir_str host = weir_headers_get(&s->req.headers, "host");
    weir_str path = s->path.ptr ? s->path : s->req.target;
    const char *qm = memchr(path.ptr, '?', path.len);
    if (qm) /* (the target, when there is no normalized path) */
        path.len = (size_t)(qm - path.ptr);
    weir_str query = weir_session_query(s);
    /* "/e?" is not "/e" (RFC 3986 6.2.3): the '?' counts even alone */
    bool has_query = memchr(s->req.target.ptr, '?', s->req.target.len) != NULL;
    const char *scheme = s->down_ssl || s->cache_https ? "https://" : "http://";
    size_t n = strlen(scheme) + host.len + path.len + (has_query ? query.len + 1 : 0);
    if (n > cap)
        return n;
    char *p = out;
    memcpy(p, scheme, strlen(scheme));
    p += strlen(scheme);
    for (size_t i = 0; i < host.len; i++)
        *p++ = (char)((host.ptr[i] >= 'A' && host.ptr[i] <= 'Z') ? host.ptr[i] + 32 : host.ptr[i]);
    memcpy(p, path.ptr, path.len);
    p += path.len;
    if (has_query) {
        *p++ = '?';
        memcpy(p, query.ptr, query.len);
    }
    return n;
}

bool weir_session_cache_lock_wait(const weir_session *s, uint64_t *start_us, uint64_t *end_us,
                                  const char **how)
{
    const sess_cache *k = s->cache;
    if (!k || !k->wait_start_us)
        return false;
    *start_us = k->wait_start_us;
    *end_us = k->wait_end_us;
    *how = k->wait_end_us ? k->wait_end : "aborted";
    return true;
}

weir_str weir_session_cache_status(const weir_session *s)
{
    if (!s->cache || !s->cache->status_len)
        return WEIR_STR_NULL;
    return (weir_str){s->cache->status, s->cache->status_len};
}

/* ---- Cache-Status (RFC 9211) ---- */

static void set_status(weir_session *s, sess_cache *k, int64_t ttl, bool have_ttl)
{
    int n;
    if (k->fwd == FWD_NONE)
        n = snprintf(k->status, sizeof(k->status), "weir; hit");
    else
        n = snprintf(k->status, sizeof(k->status), "weir; fwd=%s", fwd_names[k->fwd]);
    if (k->fwd != FWD_NONE && k->fwd_status)
        n += snprintf(k->status + n, sizeof(k->status) - (size_t)n, "; fwd-status=%d",
                      k->fwd_status);
    if (have_ttl)
        n += snprintf(k->status + n, sizeof(k->status) - (size_t)n, "; ttl=%" PRId64, ttl);
    if (k->stored)
        n += snprintf(k->status + n, sizeof(k->status) - (size_t)n, "; stored");
    if (k->detail)
        n += snprintf(k->status + n, sizeof(k->status) - (size_t)n, "; detail=%s", k->detail);
    k->status_len = (size_t)n < sizeof(k->status) ? (size_t)n : sizeof(k->status) - 1;
    weir__headers_push(&s->resp.headers, WEIR_STR("Cache-Status"),
                       (weir_str){k->status, k->status_len});
}

/* ---- answering from a stored response ---- */

/* An entity tag list (If-None-Match) holds `etag`, weakly compared. */
static bool etag_listed(weir_str list, weir_str etag)
{
    weir_str want = etag;
    if (want.len > 2 && memcmp(want.ptr, "W/", 2) == 0) {
        want.ptr += 2;
        want.len -= 2;
    }
    const char *p = list.ptr, *end = p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p < end && *p == '*')
            return true;
        if (end - p > 2 && memcmp(p, "W/", 2) == 0)
            p += 2;
        if (p >= end || *p != '"')
            return false; /* not a list of entity tags: no match */
        const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (!q)
            return false;
        if ((size_t)(q + 1 - p) == want.len && memcmp(p, want.ptr, want.len) == 0)
            return true;
        p = q + 1;
    }
    return false;
}

/* The client's conditional request is answered 304 (RFC 9110 13.2.2). */
static bool not_modified(const sess_cache *k, const weir_chead *h)
{
    if (h->e.status != 200 || !(k->get || k->head))
        return false;
    if (k->c_inm.ptr) {
        weir_str v = k->c_inm;
        while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t')) {
            v.ptr++;
            v.len--;
        }
        if (v.len && v.ptr[0] == '*') /* any current representation (RFC 9110 13.1.2) */
            return true;
        return h->etag.ptr && etag_listed(k->c_inm, h->etag);
    }
    time_t ims, lm;
    return k->c_ims.ptr && h->last_modified.ptr && weir_http_date_parse(k->c_ims, &ims) &&
           weir_http_date_parse(h->last_modified, &lm) && lm <= ims;
}

static bool parse_u64(const char *p, const char *end, uint64_t *v)
{
    if (p == end)
        return false;
    uint64_t x = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || x > (UINT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    *v = x;
    return true;
}

/*
 * A Range request on a stored 200 (RFC 9110 14): 206 with *off and *n for
 * one satisfiable range, 416 for one that is not, 0 to send the whole
 * (no Range, several ranges, another unit, a syntax error, or an If-Range
 * that does not match: each is allowed to get the whole response).
 */
static int range_of(const sess_cache *k, const weir_chead *h, uint64_t len, uint64_t *off,
                    uint64_t *n)
{
    weir_str r = k->c_range;
    if (!r.ptr || h->e.status != 200)
        return 0;
    weir_str ir = k->c_if_range;
    if (ir.ptr) {
        if (ir.len && (ir.ptr[0] == '"')) {
            if (!h->etag.ptr || h->etag.len != ir.len || memcmp(h->etag.ptr, ir.ptr, ir.len) != 0)
                return 0; /* only a strong match (13.1.5) */
        } else {
            time_t a, b;
            if (!h->last_modified.ptr || !weir_http_date_parse(ir, &a) ||
                !weir_http_date_parse(h->last_modified, &b) || a != b)
                return 0;
        }
    }
    const char *p = r.ptr, *end = r.ptr + r.len;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return 0;
    p += 6;
    if (memchr(p, ',', (size_t)(end - p)))
        return 0;
    const char *dash = memchr(p, '-', (size_t)(end - p));
    if (!dash)
        return 0;
    uint64_t a = 0, b = 0;
    if (dash == p) { /* a suffix: the last b bytes */
        if (!parse_u64(dash + 1, end, &b))
            return 0;
        if (b == 0 || len == 0)
            return 416;
        *off = b >= len ? 0 : len - b;
        *n = len - *off;
        return 206;
    }
    if (!parse_u64(p, dash, &a))
        return 0;
    if (dash + 1 == end)
        b = len ? len - 1 : 0;
    else if (!parse_u64(dash + 1, end, &b) || b < a)
        return 0;
    if (a >= len)
        return 416;
    if (b >= len)
        b = len - 1;
    *off = a;
    *n = b - a + 1;
    return 206;
}

static weir_str arena_fmt(weir_session *s, const char *fmt, uint64_t a, uint64_t b, uint64_t c)
{
    char tmp[96];
    int n = snprintf(tmp, sizeof(tmp), fmt, a, b, c);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return WEIR_STR_NULL;
    char *p = weir__arena_dup(&s->arena, tmp, (size_t)n);
    return p ? (weir_str){p, (size_t)n} : WEIR_STR_NULL;
}

/* The response is k->obj's: its head, Age and Cache-Status, and its body
 * (a part of it for a Range, none for HEAD or a 304). */
static void serve(weir_session *s, sess_cache *k, int64_t age)
{
    const weir_cobj *o = k->obj;
    const weir_chead *h = weir__chead(o);
    weir__gen_release(s);
    memset(&s->resp, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&s->resp.headers, &s->arena);
    s->resp.version = 11;
    int status = h->e.status;
    uint64_t off = 0, n = o->body_len;
    int rs = 0;
    if (not_modified(k, h))
        status = 304;
    else if (k->get && (rs = range_of(k, h, o->body_len, &off, &n)) != 0)
        status = rs;
    s->resp.status = status;
    weir__headers_reserve(&s->resp.headers, (uint32_t)h->e.n_fields + 5);
    for (size_t i = 0; i < h->e.n_fields; i++) {
        weir_str name = h->e.fields[i].name;
        if ((name.len == 14 && strncasecmp(name.ptr, "content-length", 14) == 0) ||
            (name.len == 13 && strncasecmp(name.ptr, "content-range", 13) == 0))
            continue; /* (a 200's Content-Range means nothing; weir writes its own) */
        if (status == 416 && name.len == 12 && strncasecmp(name.ptr, "content-type", 12) == 0)
            continue;
        weir__headers_push(&s->resp.headers, name, h->e.fields[i].value);
    }
    weir__headers_push(&s->resp.headers, WEIR_STR("Age"),
                       arena_fmt(s, "%" PRIu64, (uint64_t)age, 0, 0));
    bool bodiless = status == 304 || status == 204 || status < 200;
    if (status == 206)
        weir__headers_push(
            &s->resp.headers, WEIR_STR("Content-Range"),
            arena_fmt(s, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, off, off + n - 1, o->body_len));
    if (status == 416) {
        weir__headers_push(&s->resp.headers, WEIR_STR("Content-Range"),
                           arena_fmt(s, "bytes */%" PRIu64, o->body_len, 0, 0));
        off = n = 0;
    }
    if (!bodiless)
        weir__headers_push(&s->resp.headers, WEIR_STR("Content-Length"),
                           arena_fmt(s, "%" PRIu64, n, 0, 0));
    set_status(s, k, h->lifetime - age, true);
    s->resp.body = bodiless || k->head ? WEIR_BODY_NONE : WEIR_BODY_KNOWN;
    s->resp.content_length = s->resp.body == WEIR_BODY_KNOWN ? n : 0;
    s->gen_body = (weir_str){o->body + off, (size_t)n};
    s->gen.kind = s->resp.body == WEIR_BODY_KNOWN && n ? GEN_MEMORY : GEN_NONE;
    s->generated = true;
    k->served = true;
}

/* ---- keys ---- */

static bool make_key(weir_session *s, sess_cache *k)
{
    char *buf = weir__arena_alloc(&s->arena, KEY_MAX);
    if (!buf)
        return false;
    const weir_proxy_ops *ops = s->svc->ops;
    size_t n = ops->cache_key ? ops->cache_key(s, s->ctx, buf, KEY_MAX)
                              : weir_session_cache_default_key(s, buf, KEY_MAX);
    if (n == 0 || n > KEY_MAX)
        return false;
    k->key = buf;
    k->key_len = n;
    return true;
}

/* The key of the request's variant under names. */
static bool variant_key(weir_session *s, sess_cache *k, const char *names, size_t len)
{
    size_t cap = k->key_len + 8 * 1024;
    char *buf = weir__arena_alloc(&s->arena, cap);
    long n = buf ? weir__vary_key(k->key, k->key_len, names, len, &s->req.headers, buf, cap) : -1;
    if (n < 0)
        return false;
    k->vkey = buf;
    k->vkey_len = (size_t)n;
    return true;
}

/* ---- the lock ---- */

static void lock_release(sess_cache *k, bool stored)
{
    if (k->owner) {
        k->owner = false;
        weir__clock_release(k->c, k->key, k->key_len, stored);
    }
}

static void lock_woken(void *arg)
{
    weir_session *s = arg;
    sess_cache *k = s->cache;
    weir__timer_stop(s->loop, &k->timer);
    k->w.state = WEIR_CWAIT_IDLE;
    k->waiting = false;
    k->wait_end_us = weir__loop_now_us(s->loop);
    k->wait_end = "filled";
    s->pending = false;
    if (s->state == SS_DONE) { /* aborted while it waited */
        if (!s->running)
            weir__session_finish(s);
        return;
    }
    weir__cstore_count(k->c, WEIR_CSTAT_COALESCED);
    /* Once woken it never waits again: a response that was not storable,
     * or another variant than its own (Vary), sends it straight upstream
     * instead of queueing behind the next miss of the same URI. */
    k->no_lock = true;
    weir__session_run(s);
}

static void lock_timeout(weir_timer *t)
{
    sess_cache *k = weir_container_of(t, sess_cache, timer);
    if (!weir__clock_cancel(k->c, &k->w))
        return; /* the wake is on its way */
    weir_session *s = k->w.arg;
    k->waiting = false;
    k->wait_end_us = weir__loop_now_us(s->loop);
    k->wait_end = "timeout";
    k->no_lock = true;
    s->pending = false;
    weir__session_run(s);
}

/* ---- background refresh (stale-while-revalidate) ---- */

typedef struct bg_sink {
    weir_exchange x;
    struct sockaddr_storage peer;
    char ip[48];
    weir_session *s;
    struct bg_sink *next, *prev; /* this worker's background requests */
} bg_sink;

static __thread bg_sink *bg_list;

static int sink_read_body(weir_exchange *x, weir_str *segs, size_t max, size_t *n, weir_str *t)
{
    (void)x, (void)segs, (void)max;
    *n = 0;
    *t = WEIR_STR_NULL;
    return WEIR_DONE;
}

static void sink_consume(weir_exchange *x)
{
    (void)x;
}

static int sink_write_head(weir_exchange *x, const weir_msg *m)
{
    (void)x, (void)m;
    return WEIR_OK;
}

static int sink_write_body(weir_exchange *x, const weir_str *segs, size_t n)
{
    (void)x, (void)segs, (void)n;
    return WEIR_OK;
}

static int sink_write_end(weir_exchange *x, weir_str trailers)
{
    (void)x, (void)trailers;
    return WEIR_OK;
}

static int sink_flush(weir_exchange *x)
{
    (void)x;
    return WEIR_OK;
}

static bool sink_gone(weir_exchange *x)
{
    (void)x;
    return false;
}

static void sink_tunnel(weir_exchange *x)
{
    (void)x;
}

static const weir_exchange_ops sink_ops = {
    .read_body = sink_read_body,
    .consume_body = sink_consume,
    .write_head = sink_write_head,
    .write_body = sink_write_body,
    .write_end = sink_write_end,
    .flush = sink_flush,
    .peer_gone = sink_gone,
    .tunnel = sink_tunnel,
};

static void sink_done(void *owner, bool reuse)
{
    (void)reuse;
    bg_sink *k = owner;
    if (k->prev)
        k->prev->next = k->next;
    else
        bg_list = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k);
}

void weir__cache_shutdown(void)
{
    /* Each abort ends its session, which unlinks it (sink_done). */
    while (bg_list) {
        bg_sink *k = bg_list;
        weir_session *s = k->s;
        bg_list = k->next;
        if (bg_list)
            bg_list->prev = NULL;
        k->next = k->prev = NULL;
        s->origin.done = NULL; /* not unlinked twice */
        free(k);
        weir__session_handler.stream_abort(s);
    }
}

/* A copy of s's request, without a client, that refreshes the store. */
static void start_refresh(weir_session *s, sess_cache *k)
{
    weir_msg *req = NULL;
    weir_session *b = weir__session_handler.stream_new(s->svc, s->loop, &req);
    bg_sink *sink = b ? calloc(1, sizeof(*sink)) : NULL;
    if (!sink) {
        if (b)
            weir__session_handler.stream_drop(b);
        weir__clock_release(k->c, k->key, k->key_len, false);
        return;
    }
    sink->x.ops = &sink_ops;
    weir_arena *a = &b->arena;
    req->method = (weir_str){weir__arena_dup(a, "GET", 3), 3};
    req->target =
        (weir_str){weir__arena_dup(a, s->req.target.ptr, s->req.target.len), s->req.target.len};
    req->version = 11;
    req->body = WEIR_BODY_NONE;
    bool ok = req->method.ptr && req->target.ptr;
    for (size_t i = 0; ok && i < s->req.headers.n; i++) {
        weir_header f = s->req.headers.v[i];
        if (weir__is_hop_by_hop(f.name) ||
            (f.name.len == 5 && !strncasecmp(f.name.ptr, "range", 5)) ||
            (f.name.len > 3 && !strncasecmp(f.name.ptr, "if-", 3)) ||
            (f.name.len == 14 && !strncasecmp(f.name.ptr, "content-length", 14)))
            continue;
        char *nm = weir__arena_dup(a, f.name.ptr, f.name.len);
        char *v = weir__arena_dup(a, f.value.ptr, f.value.len);
        ok = nm && v &&
             weir__headers_push(&req->headers, (weir_str){nm, f.name.len},
                                (weir_str){v, f.value.len}) == 0;
    }
    if (!ok) {
        weir__clock_release(k->c, k->key, k->key_len, false);
        free(sink);
        weir__session_handler.stream_drop(b);
        return;
    }
    size_t alen = !s->client_addr                         ? 0
                  : s->client_addr->sa_family == AF_INET  ? sizeof(struct sockaddr_in)
                  : s->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : 0;
    if (alen)
        memcpy(&sink->peer, s->client_addr, alen);
    memcpy(sink->ip, s->peer_ip, s->peer_ip_len);
    weir_stream_origin o = {
        .owner = sink,
        .done = sink_done,
        .peer = alen ? (const struct sockaddr *)&sink->peer : NULL,
        .peer_ip = {sink->ip, s->peer_ip_len},
    };
    sess_cache *bk = weir__arena_alloc(a, sizeof(*bk));
    char *lk = bk ? weir__arena_dup(a, k->key, k->key_len) : NULL;
    if (!lk) {
        weir__clock_release(k->c, k->key, k->key_len, false);
        free(sink);
        weir__session_handler.stream_drop(b);
        return;
    }
    memset(bk, 0, sizeof(*bk));
    bk->rl_c = k->c;
    bk->rl_key = lk;
    bk->rl_len = k->key_len;
    b->cache = bk;
    b->cache_https = s->down_ssl != NULL || s->cache_https;
    weir_log_debug("cache: refreshing %.*s in the background", (int)k->key_len, k->key);
    sink->s = b;
    sink->next = bg_list;
    if (bg_list)
        bg_list->prev = sink;
    bg_list = sink;
    weir__session_handler.stream_start(b, &sink->x, 0, &o);
}

/* ---- the lookup (state CACHE) ---- */

static weir_cobj *lookup(weir_session *s, sess_cache *k)
{
    weir_cobj *o = weir__cstore_get(k->c, k->key, k->key_len);
    if (!o || !weir__chead(o)->marker) {
        k->fwd = FWD_URI_MISS;
        return o;
    }
    const weir_chead *m = weir__chead(o);
    bool ok = variant_key(s, k, m->vary, m->vary_len);
    weir__cobj_unref(o);
    k->fwd = FWD_VARY_MISS;
    if (!ok)
        return NULL;
    o = weir__cstore_get(k->c, k->vkey, k->vkey_len);
    if (o && weir__chead(o)->marker) { /* (cannot be stored so) */
        weir__cobj_unref(o);
        return NULL;
    }
    return o;
}

/* Conditional fields for validating k->obj; the client's own are kept
 * aside (answered from the store after the 304). */
static void add_validators(weir_session *s, sess_cache *k)
{
    const weir_chead *h = weir__chead(k->obj);
    if (!h->etag.ptr && !h->last_modified.ptr)
        return;
    k->c_inm = weir_headers_get(&s->req.headers, "if-none-match");
    k->c_ims = weir_headers_get(&s->req.headers, "if-modified-since");
    weir_headers_remove(&s->req.headers, "if-none-match");
    weir_headers_remove(&s->req.headers, "if-modified-since");
    /* The whole response refreshes the store; the client's range is cut
     * from it afterwards (or, if it changed, the whole 200 answers, which
     * RFC 9110 14.2 allows). */
    weir_headers_remove(&s->req.headers, "range");
    weir_headers_remove(&s->req.headers, "if-range");
    if (h->etag.ptr)
        weir__headers_push(&s->req.headers, WEIR_STR("If-None-Match"), h->etag);
    if (h->last_modified.ptr)
        weir__headers_push(&s->req.headers, WEIR_STR("If-Modified-Since"), h->last_modified);
    k->conditional = true;
    weir__cstore_count(k->c, WEIR_CSTAT_REVALIDATION);
}

typedef enum look_result { LOOK_UPSTREAM, LOOK_SERVED, LOOK_WAIT } look_result;

static look_result look(weir_session *s, sess_cache *k)
{
    const weir_proxy_ops *ops = s->svc->ops;
    k->get = method_is(s, "GET");
    k->head = method_is(s, "HEAD");
    /* Every method but the safe ones, those of unknown safety included
     * (RFC 9111 4.4): PROPPATCH, MKCOL, a PURGE the backend answers... */
    k->unsafe = !k->get && !k->head && !method_is(s, "OPTIONS") && !method_is(s, "TRACE");
    if (!k->get && !k->head) {
        k->fwd = FWD_METHOD;
        if (k->unsafe && !make_key(s, k))
            k->unsafe = false;
        return LOOK_UPSTREAM;
    }
    if (!k->key && !make_key(s, k)) {
        k->fwd = FWD_BYPASS;
        k->get = k->head = false; /* nothing is stored for it */
        return LOOK_UPSTREAM;
    }
    weir__cache_req_read(&k->q, &s->req.headers);
    k->req_time = wall(s);
    k->c_inm = weir_headers_get(&s->req.headers, "if-none-match");
    k->c_ims = weir_headers_get(&s->req.headers, "if-modified-since");
    long at = weir__headers_find(&s->req.headers, "range", 0);
    if (at >= 0 && weir__headers_find(&s->req.headers, "range", (size_t)at + 1) < 0)
        k->c_range = s->req.headers.v[at].value; /* two fields: none (the whole) */
    k->c_if_range = weir_headers_get(&s->req.headers, "if-range");
    weir_cobj *o = lookup(s, k);
    if (o) {
        const weir_chead *h = weir__chead(o);
        time_t now = wall(s);
        int64_t age = weir__cache_age(&h->r, h->e.request_time, h->e.response_time, now);
        weir_cache_use use = weir__cache_use(&k->q, &h->r, h->lifetime, age);
        if (k->rl_c)
            use = WEIR_CACHE_VALIDATE; /* a background refresh */
        if (use != WEIR_CACHE_VALIDATE && ops->cache_hit_filter) {
            weir_cache_meta m = {h->e.status, age,           h->lifetime,
                                 h->e.fields, h->e.n_fields, o->body_len};
            if (ops->cache_hit_filter(s, s->ctx, &m))
                use = WEIR_CACHE_VALIDATE;
        }
        k->obj = o;
        if (use != WEIR_CACHE_VALIDATE) {
            weir__cstore_count(k->c, WEIR_CSTAT_HIT);
            if (use != WEIR_CACHE_USE)
                weir__cstore_count(k->c, WEIR_CSTAT_STALE);
            k->fwd = FWD_NONE;
            if (use == WEIR_CACHE_USE_REVALIDATING && k->get &&
                weir__clock_acquire(k->c, k->key, k->key_len, NULL) == WEIR_CLOCK_OWNER)
                start_refresh(s, k); /* it releases the lock */
            serve(s, k, age);
            return LOOK_SERVED;
        }
        bool asked = (k->q.cc.flags & WEIR_CC_NO_CACHE) || k->q.pragma_no_cache ||
                     (k->q.cc.max_age >= 0 && age > k->q.cc.max_age);
        k->fwd = asked && age < h->lifetime ? FWD_REQUEST : FWD_STALE;
        if (k->q.cc.flags & WEIR_CC_ONLY_IF_CACHED)
            goto only_if_cached;
        if (k->get || k->head) /* a 304 to a HEAD refreshes the head too */
            add_validators(s, k);
        return LOOK_UPSTREAM;
    }
    weir__cstore_count(k->c, WEIR_CSTAT_MISS);
    /* only-if-cached never goes to the origin, but a fill of this key in
     * flight (its body still coming, or just sent to its client) is as
     * good as stored: it waits for it as a miss would, then looks once
     * more. */
    bool only = k->q.cc.flags & WEIR_CC_ONLY_IF_CACHED;
    if (k->get && !k->no_lock && !k->set.no_lock && !k->rl_c) {
        k->w.loop = s->loop;
        k->w.wake = lock_woken;
        k->w.arg = s;
        weir_clock_result r = weir__clock_acquire(k->c, k->key, k->key_len, &k->w);
        if (r == WEIR_CLOCK_WAIT) {
            k->waiting = true;
            k->wait_start_us = weir__loop_now_us(s->loop);
            k->wait_end_us = 0;
            weir_log_debug("cache: %.*s waits for another request's fill", (int)k->key_len, k->key);
            s->pending = true;
            weir__timer_start(s->loop, &k->timer, k->set.lock_timeout_ms, lock_timeout);
            return LOOK_WAIT;
        }
        if (only) { /* nobody is filling it */
            weir__clock_release(k->c, k->key, k->key_len, false);
            goto only_if_cached;
        }
        k->owner = true;
    }
    if (only)
        goto only_if_cached;
    return LOOK_UPSTREAM;
only_if_cached:
    /* RFC 9111 5.2.1.7: nothing usable stored, and the client wants no
     * trip to the origin. */
    if (k->obj) {
        weir__cobj_unref(k->obj);
        k->obj = NULL;
    }
    weir__session_set_generated(s, 504, NULL, 0, "504 Gateway Timeout\n", 20);
    k->detail = "only-if-cached";
    k->fwd_status = 0;
    set_status(s, k, 0, false);
    return LOOK_SERVED;
}

void weir__session_step_cache(weir_session *s)
{
    const weir_proxy_ops *ops = s->svc->ops;
    if (s->sub == 0) {
        if (ops->request_cache_filter || s->have_result) {
            weir_phase_result r = s->have_result ? (s->have_result = false, s->result)
                                                 : ops->request_cache_filter(s, s->ctx);
            if (r == WEIR_PHASE_PENDING) {
                s->pending = true;
                return;
            }
            if (r == WEIR_PHASE_ANSWERED && s->generated) {
                weir__session_set_state(s, SS_RESP_HEAD);
                return;
            }
            if (r != WEIR_PHASE_CONTINUE) {
                weir__session_fail(s, 500, "request_cache_filter failed");
                return;
            }
        }
        s->sub = 1;
    }
    sess_cache *k = s->cache;
    if (k && k->c && !k->waiting) {
        if (k->obj) { /* (looking again after a wake) */
            weir__cobj_unref(k->obj);
            k->obj = NULL;
        }
        look_result r = look(s, k);
        if (r == LOOK_WAIT) {
            s->sub = 2;
            return;
        }
        if (r == LOOK_SERVED) {
            weir__session_set_state(s, SS_RESP_HEAD);
            return;
        }
    }
    weir__session_set_state(s, weir__session_wants_buffer(s) ? SS_BUFFER : SS_PEER);
}

/* ---- the response ---- */

/* A successful unsafe method: the target URI, and the Location and
 * Content-Location on the same host, are stale now (RFC 9111 4.4). */
static void invalidate(weir_session *s, sess_cache *k)
{
    weir_cache *c = k->c;
    /* The URI's every entry: a key's fields after its first line break are
     * its variants (Vary, and a program's key fields such as the cache
     * plugin's key_headers), which all go with it. */
    const char *nl = memchr(k->key, '\n', k->key_len);
    size_t base = nl ? (size_t)(nl - k->key) : k->key_len;
    if (weir__cstore_remove(c, k->key, base))
        weir__cstore_count(c, WEIR_CSTAT_INVALIDATION);
    static const char *const fields[] = {"location", "content-location"};
    weir_str host = weir_headers_get(&s->req.headers, "host");
    const char *scheme = s->down_ssl || s->cache_https ? "https://" : "http://";
    for (int i = 0; i < 2; i++) {
        weir_str v = weir_headers_get(&s->resp.headers, fields[i]);
        if (!v.ptr || !v.len)
            continue;
        weir_str path = v;
        size_t sl = strlen(scheme);
        if (v.len > sl && strncasecmp(v.ptr, scheme, sl) == 0) {
            const char *h = v.ptr + sl, *end = v.ptr + v.len;
            const char *slash = memchr(h, '/', (size_t)(end - h));
            size_t hl = slash ? (size_t)(slash - h) : (size_t)(end - h);
            if (hl != host.len || strncasecmp(h, host.ptr, hl) != 0)
                continue; /* another host: not ours to invalidate (4.4) */
            path = slash ? (weir_str){slash, (size_t)(end - slash)} : WEIR_STR("/");
        } else if (v.ptr[0] != '/' || (v.len > 1 && v.ptr[1] == '/')) {
            continue;
        }
        char key[KEY_MAX];
        size_t n = sl + host.len + path.len;
        if (n > sizeof(key))
            continue;
        memcpy(key, scheme, sl);
        for (size_t j = 0; j < host.len; j++)
            key[sl + j] =
                (char)(host.ptr[j] >= 'A' && host.ptr[j] <= 'Z' ? host.ptr[j] + 32 : host.ptr[j]);
        memcpy(key + sl + host.len, path.ptr, path.len);
        if (weir__cstore_remove(c, key, n))
            weir__cstore_count(c, WEIR_CSTAT_INVALIDATION);
    }
}

static bool stale_allowed(weir_session *s, sess_cache *k, int error)
{
    const weir_chead *h = weir__chead(k->obj);
    int64_t age = weir__cache_age(&h->r, h->e.request_time, h->e.response_time, wall(s));
    bool ok = weir__cache_stale_on_error(&k->q, &h->r, h->lifetime, age, k->set.stale_on_error);
    const weir_proxy_ops *ops = s->svc->ops;
    if (ops->should_serve_stale)
        ok = ops->should_serve_stale(s, s->ctx, error, ok);
    return ok;
}

static void serve_stale(weir_session *s, sess_cache *k, int status)
{
    const weir_chead *h = weir__chead(k->obj);
    int64_t age = weir__cache_age(&h->r, h->e.request_time, h->e.response_time, wall(s));
    k->fwd = FWD_STALE;
    k->fwd_status = status;
    k->detail = "stale-on-error";
    weir__cstore_count(k->c, WEIR_CSTAT_STALE);
    serve(s, k, age);
}

/* The 304's validators name the stored response (RFC 9111 4.3.3): its
 * ETag is the stored one, or without one its Last-Modified is. */
static bool same_validators(const weir_headers *h304, const weir_chead *h)
{
    weir_str et = weir_headers_get(h304, "etag");
    if (et.ptr)
        return h->etag.ptr && h->etag.len == et.len && memcmp(h->etag.ptr, et.ptr, et.len) == 0;
    weir_str lm = weir_headers_get(h304, "last-modified");
    time_t a, b;
    return !lm.ptr || (h->last_modified.ptr && weir_http_date_parse(lm, &a) &&
                       weir_http_date_parse(h->last_modified, &b) && a == b);
}

/*
 * A 304 to weir's validation: the stored head is refreshed (RFC 9111
 * 4.3.4) and the stored body answers. Three exceptions: a 304 naming
 * another representation does not touch the stored one (4.3.3: it is
 * dropped, this answer is the stored response as it was); a 304's
 * Set-Cookie goes to this client only when cookies are not stored; and a
 * refreshed head that may not be stored any more (private, no-store) is
 * dropped from the store and answers this request alone.
 */
static void refreshed(weir_session *s, sess_cache *k)
{
    const weir_chead *h = weir__chead(k->obj);
    time_t now = wall(s);
    weir__cstore_count(k->c, WEIR_CSTAT_REVALIDATED);
    k->fwd = FWD_STALE;
    k->fwd_status = 304;
    if (!same_validators(&s->resp.headers, h)) {
        weir__cstore_remove(k->c, k->obj->key, strlen(k->obj->key));
        k->detail = "validator-mismatch";
        serve(s, k, weir__cache_age(&h->r, h->e.request_time, h->e.response_time, now));
        return;
    }
    /* The 304's fields as they update the store, and the cookies it sets
     * for this client only. */
    weir_headers up;
    weir__headers_init(&up, &s->arena);
    weir_str cookies[16];
    size_t n_cookies = 0;
    for (size_t i = 0; i < s->resp.headers.n; i++) {
        weir_header f = s->resp.headers.v[i];
        if (!k->set.store_cookies && f.name.len == 10 &&
            strncasecmp(f.name.ptr, "set-cookie", 10) == 0) {
            if (n_cookies < 16)
                cookies[n_cookies++] = f.value;
            continue;
        }
        weir__headers_push(&up, f.name, f.value);
    }
    weir_cache_resp r304;
    weir__cache_resp_read(&r304, 304, &up, k->targ, now);
    time_t asked = k->req_time - (time_t)(r304.age > 0 ? r304.age : 0); /* as when storing */
    weir_centry e = {0};
    weir_cobj *n = NULL;
    if (weir__centry_decode(&e, h->e.buf, h->e.len) == 0 &&
        weir__centry_update(&e, &up, asked, now) == 0) {
        char *body = malloc(k->obj->body_len ? k->obj->body_len : 1);
        if (body) {
            memcpy(body, k->obj->body, k->obj->body_len);
            n = weir__cstore_obj(k->obj->key, strlen(k->obj->key), &e, k->targ,
                                 k->set.heuristic_max, k->set.max_ttl, h->vary, h->vary_len, body,
                                 k->obj->body_len);
        } else {
            weir__centry_free(&e);
        }
    } else {
        weir__centry_free(&e);
    }
    if (n) {
        weir_cache_nostore why =
            weir__cache_storable("GET", &k->q, &weir__chead(n)->r, k->set.store_cookies);
        if (why == WEIR_NOSTORE_NONE) {
            weir__cstore_put(k->c, weir__cobj_ref(n));
        } else {
            weir__cstore_remove(k->c, n->key, strlen(n->key));
            k->detail = "no-store";
        }
        weir__cobj_unref(k->obj);
        k->obj = n;
    }
    const weir_chead *nh = weir__chead(k->obj);
    serve(s, k, weir__cache_age(&nh->r, nh->e.request_time, nh->e.response_time, now));
    for (size_t i = 0; i < n_cookies; i++)
        weir__headers_push(&s->resp.headers, WEIR_STR("Set-Cookie"), cookies[i]);
}

bool weir__cache_response(weir_session *s)
{
    sess_cache *k = s->cache;
    if (!k || !k->c || k->resp_seen)
        return false;
    k->resp_seen = true;
    int st = s->resp.status;
    if (s->generated) {
        /* The program's own answer after the origin failed (no backend
         * left to try): a stale response may answer instead. */
        if (k->served || st < 500 || s->failure == WEIR_FAILURE_NONE || !k->obj ||
            !stale_allowed(s, k, -ECONNREFUSED))
            return false;
        lock_release(k, false);
        serve_stale(s, k, 0);
        return true;
    }
    k->fwd_status = st;
    if (k->unsafe) {
        if (st >= 200 && st < 400)
            invalidate(s, k);
        set_status(s, k, 0, false);
        return false;
    }
    if (k->obj && k->conditional && st == 304) {
        weir__session_release_upstream(s, s->req_pump.done && (s->h2up || s->upx.out_keep_alive));
        lock_release(k, false);
        refreshed(s, k);
        return true;
    }
    if (k->obj && st >= 500 && stale_allowed(s, k, 0)) {
        weir__session_release_upstream(s, false);
        lock_release(k, false);
        serve_stale(s, k, st);
        return true;
    }
    if (!k->get) {
        set_status(s, k, 0, false);
        return false;
    }
    time_t now = wall(s);
    weir_cache_resp r;
    weir__cache_resp_read(&r, st, &s->resp.headers, k->targ, now);
    weir_cache_nostore why = weir__cache_storable("GET", &k->q, &r, k->set.store_cookies);
    static const char *const reasons[] = {NULL,         "method",        "status",
                                          "no-store",   "authorization", "vary",
                                          "set-cookie", "no-freshness"};
    bool heuristic = false;
    weir_cache_decision d = {why == WEIR_NOSTORE_NONE, reasons[why],
                             weir__cache_lifetime(&r, k->set.heuristic_max, &heuristic)};
    if (k->set.max_ttl > 0 && d.lifetime > k->set.max_ttl)
        d.lifetime = k->set.max_ttl;
    char vary[VARY_MAX];
    long vl = weir__vary_names(&s->resp.headers, vary, sizeof(vary));
    if (d.store && vl < 0) {
        d.store = false;
        d.reason = "vary";
    }
    uint64_t max = k->set.max_object_bytes;
    if (d.store && s->resp.body == WEIR_BODY_KNOWN && s->resp.content_length > max) {
        d.store = false;
        d.reason = "too-large";
    }
    if (d.store && s->svc->ops->response_cache_filter)
        s->svc->ops->response_cache_filter(s, s->ctx, &d);
    if (d.store && (vl > 0 && !variant_key(s, k, vary, (size_t)vl)))
        d.store = false;
    /* Age is not stored (it is recomputed on each use); what the origin
     * said of it is kept as an earlier request time, which adds it to the
     * response delay where RFC 9111 4.2.3 adds it. */
    time_t asked = k->req_time - (time_t)(r.age > 0 ? r.age : 0);
    if (d.store && weir__centry_make(&k->shead, st, &s->resp.headers, asked, now) == 0) {
        k->tee = true;
        k->lifetime = d.lifetime;
        k->vary_len = vl > 0 ? (size_t)vl : 0;
        k->vary = weir__arena_dup(&s->arena, vary, k->vary_len + 1);
        k->stored = k->vary != NULL;
        k->tee = k->stored;
        if (s->resp.body == WEIR_BODY_KNOWN && s->resp.content_length) {
            k->tee_cap = k->tee_want = (size_t)s->resp.content_length;
            k->tee_buf = malloc(k->tee_cap);
            k->tee = k->tee_buf != NULL;
        }
    } else {
        k->detail = d.reason;
        lock_release(k, false); /* the waiters go upstream themselves */
    }
    /* ttl: what is left of its freshness as it goes out (RFC 9211 2.5),
     * its age counted as when it is served from the store */
    set_status(s, k, d.lifetime - weir__cache_age(&r, k->req_time, now, now), k->stored);
    return false;
}

void weir__cache_tee(weir_session *s, const weir_str *segs, size_t n)
{
    sess_cache *k = s->cache;
    if (!k->tee || k->tee_over)
        return;
    uint64_t max = k->set.max_object_bytes;
    for (size_t i = 0; i < n; i++) {
        size_t need = k->tee_len + segs[i].len;
        if (need > max) {
            k->tee_over = true; /* passed through, not stored */
            free(k->tee_buf);
            k->tee_buf = NULL;
            lock_release(k, false);
            return;
        }
        if (need > k->tee_cap) {
            size_t cap = k->tee_cap ? k->tee_cap * 2 : 16384;
            while (cap < need)
                cap *= 2;
            if (cap > max)
                cap = (size_t)max;
            char *b = realloc(k->tee_buf, cap);
            if (!b) {
                k->tee_over = true;
                free(k->tee_buf);
                k->tee_buf = NULL;
                lock_release(k, false);
                return;
            }
            k->tee_buf = b;
            k->tee_cap = cap;
        }
        memcpy(k->tee_buf + k->tee_len, segs[i].ptr, segs[i].len);
        k->tee_len = need;
    }
    /* The whole body is here: stored before its last bytes go to the
     * client, so a request the client sends once it has them finds it. */
    if (k->tee_want && k->tee_len == k->tee_want)
        weir__cache_body_end(s);
}

void weir__cache_body_end(weir_session *s)
{
    sess_cache *k = s->cache;
    if (!k || !k->tee || k->tee_over) {
        if (k)
            lock_release(k, false);
        return;
    }
    k->tee = false;
    const char *skey = k->vary_len ? k->vkey : k->key;
    size_t slen = k->vary_len ? k->vkey_len : k->key_len;
    weir_cobj *o = weir__cstore_obj_with(skey, slen, &k->shead, k->targ, k->lifetime, k->vary,
                                         k->vary_len, k->tee_buf, k->tee_len);
    k->tee_buf = NULL;
    bool ok = o != NULL;
    if (o && k->vary_len) {
        weir_cobj *m = weir__cstore_marker(k->key, k->key_len, k->vary, k->vary_len);
        ok = m && weir__cstore_put(k->c, m);
    } else if (o) {
        /* A response without Vary replaces a marker and its variants. */
        weir__cstore_remove(k->c, k->key, k->key_len);
    }
    if (o)
        ok = weir__cstore_put(k->c, o) && ok;
    if (ok)
        weir__cstore_count(k->c, WEIR_CSTAT_STORED);
    lock_release(k, ok);
}

bool weir__cache_on_fail(weir_session *s, int status)
{
    sess_cache *k = s->cache;
    if (!k || !k->obj || k->served || s->resp_started || status < 500)
        return false;
    if (!stale_allowed(s, k, status == 504 ? -ETIMEDOUT : -ECONNREFUSED))
        return false;
    lock_release(k, false);
    serve_stale(s, k, 0);
    return true;
}

void weir__cache_client_slow(weir_session *s)
{
    /* The body is stored at the pace this client reads it: a client that
     * stops reading must not keep the others of the key waiting for the
     * whole lock timeout. They go upstream on their own now; the response
     * is still stored if it completes. */
    sess_cache *k = s->cache;
    if (k->owner)
        lock_release(k, false);
}

bool weir__cache_abort(weir_session *s)
{
    sess_cache *k = s->cache;
    if (!k || !k->waiting)
        return true;
    if (!weir__clock_cancel(k->c, &k->w))
        return false; /* its wake comes and ends the session */
    weir__timer_stop(s->loop, &k->timer);
    k->waiting = false;
    s->pending = false;
    return true;
}

void weir__cache_end(weir_session *s)
{
    sess_cache *k = s->cache;
    if (!k)
        return;
    weir__timer_stop(s->loop, &k->timer);
    if (k->c)
        lock_release(k, false);
    if (k->rl_c) /* the refresh lock this request was given */
        weir__clock_release(k->rl_c, k->rl_key, k->rl_len, false);
    weir__centry_free(&k->shead);
    free(k->tee_buf);
    k->tee_buf = NULL;
    if (k->obj)
        weir__cobj_unref(k->obj);
    k->obj = NULL;
    s->cache = NULL;
}
