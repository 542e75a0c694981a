/*
 * session_forward.c - what the request carries upstream besides the
 * client's fields: the request id (the client's if valid, else a new one),
 * X-Forwarded-For, X-Real-IP, X-Forwarded-Proto and Via.
 */
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "proxy/request_gate.h"
#include "proxy/session-t.h"

/* The two hex digits of each byte. */
static char hex_pairs[256][2];

__attribute__((constructor)) static void fill_hex_pairs(void)
{
    static const char hex[] = "0123456789abcdef";
    for (int b = 0; b < 256; b++) {
        hex_pairs[b][0] = hex[b >> 4];
        hex_pairs[b][1] = hex[b & 15];
    }
}

/* 128 random bits as 32 hex digits: per-thread xorshift128+ seeded from
 * the kernel, so ids are unpredictable enough for tracing and cost no
 * system call per request. */
static void make_request_id(char out[32])
{
    static __thread uint64_t st[2];
    if (!st[0] && !st[1]) {
        if (getrandom(st, sizeof(st), 0) != sizeof(st)) {
            st[0] = (uint64_t)(uintptr_t)&st ^ 0x9e3779b97f4a7c15ull;
            st[1] = (uint64_t)time(NULL) | 1;
        }
    }
    for (int k = 0; k < 2; k++) {
        uint64_t x = st[0], y = st[1];
        st[0] = y;
        x ^= x << 23;
        st[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        uint64_t v = st[1] + y;
        /* A byte at a time: two digits from the table. */
        for (int i = 0; i < 8; i++)
            memcpy(out + k * 16 + 2 * i, hex_pairs[(v >> (56 - 8 * i)) & 255], 2);
    }
}

weir_str weir_session_request_id(weir_session *s)
{
    if (s->request_id.ptr)
        return s->request_id;
    weir_str given = weir_headers_get(&s->req.headers, "x-request-id");
    if (given.ptr && weir__request_id_ok(given)) {
        s->request_id = given;
        return given;
    }
    char *id = weir__arena_alloc(&s->arena, 32);
    if (!id)
        return (weir_str){"-", 1};
    make_request_id(id);
    s->request_id = (weir_str){id, 32};
    return s->request_id;
}

int weir_session_set_request_id(weir_session *s, const char *id, size_t len)
{
    weir_str v = {id, len};
    if (s->request_id.ptr || !weir__request_id_ok(v))
        return WEIR_ERR_INVAL;
    char *copy = weir__arena_dup(&s->arena, id, len);
    if (!copy)
        return WEIR_ERR_NOMEM;
    s->request_id = (weir_str){copy, len};
    return WEIR_OK;
}

/* Appends ", value" to a field or adds it: X-Forwarded-For, Via. */
static int append_list(weir_session *s, const char *name, const char *value, size_t vlen)
{
    weir_headers *h = &s->req.headers;
    long i = weir__headers_find(h, name, 0);
    if (i < 0) {
        char *v = weir__arena_dup(&s->arena, value, vlen);
        if (!v)
            return WEIR_ERR_NOMEM;
        return weir__headers_push(h, (weir_str){name, strlen(name)}, (weir_str){v, vlen});
    }
    weir_str old = h->v[i].value;
    char *v = weir__arena_alloc(&s->arena, old.len + 2 + vlen);
    if (!v)
        return WEIR_ERR_NOMEM;
    memcpy(v, old.ptr, old.len);
    memcpy(v + old.len, ", ", 2);
    memcpy(v + old.len + 2, value, vlen);
    h->v[i].value = (weir_str){v, old.len + 2 + vlen};
    return WEIR_OK;
}

unsigned weir_session_added_headers(const weir_session *s)
{
    if (s->added_set)
        return s->added;
    const weir_proxy_options *o = &s->svc->opts;
    return (o->no_request_id ? 0u : WEIR_ADD_REQUEST_ID) |
           (o->no_forwarded_headers
                ? 0u
                : WEIR_ADD_X_FORWARDED_FOR | WEIR_ADD_X_REAL_IP | WEIR_ADD_X_FORWARDED_PROTO) |
           (o->no_via ? 0u : WEIR_ADD_VIA);
}

int weir_session_set_added_headers(weir_session *s, unsigned fields)
{
    if ((fields & ~(unsigned)WEIR_ADD_ALL) || s->up_filter_done)
        return WEIR_ERR_INVAL;
    s->added = (uint8_t)fields;
    s->added_set = true;
    return WEIR_OK;
}

int weir__session_add_proxy_headers(weir_session *s)
{
    weir_headers *h = &s->req.headers;
    unsigned add = weir_session_added_headers(s);
    int rc = WEIR_OK;
    if (add & WEIR_ADD_REQUEST_ID) {
        /* The upstream sees the id the logs show (a client's overlong one
         * is replaced). */
        weir_str id = weir_session_request_id(s);
        long i = weir__headers_find(h, "x-request-id", 0);
        if (i < 0) {
            rc = weir__headers_push(h, WEIR_STR("X-Request-Id"), id);
        } else {
            h->v[i].value = id;
            /* One field: a second one would be a second opinion. */
            for (long j; (j = weir__headers_find(h, "x-request-id", (size_t)i + 1)) >= 0;) {
                h->v[j] = h->v[--h->n];
                weir__headers_changed(h);
            }
        }
    }
    /* The client's own identity fields went at the gate, so what is found
     * here was set by the application. */
    if (rc == WEIR_OK && (add & WEIR_ADD_X_FORWARDED_FOR))
        rc = append_list(s, "X-Forwarded-For", s->peer_ip, s->peer_ip_len);
    if (rc == WEIR_OK && (add & WEIR_ADD_X_REAL_IP) && weir__headers_find(h, "x-real-ip", 0) < 0)
        rc = weir__headers_push(h, WEIR_STR("X-Real-IP"),
                                (weir_str){s->client_ip, s->client_ip_len});
    if (rc == WEIR_OK && (add & WEIR_ADD_X_FORWARDED_PROTO) &&
        weir__headers_find(h, "x-forwarded-proto", 0) < 0)
        rc = weir__headers_push(h, WEIR_STR("X-Forwarded-Proto"),
                                s->down_ssl ? WEIR_STR("https") : WEIR_STR("http"));
    if (rc == WEIR_OK && (add & WEIR_ADD_VIA))
        rc = append_list(s, "Via", s->req.version == 10 ? "1.0 weir" : "1.1 weir", 8);
    return rc;
}
