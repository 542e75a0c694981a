/*
 * gate_fuzz.c - libFuzzer target for the request gate
 * (src/proxy/request_gate.c): a request head is parsed as the HTTP/1
 * server does, then gated, and what would go upstream is checked.
 *
 * Invariants, for every request the gate lets through:
 *   - the forwarded path starts with '/' (or is "*" for OPTIONS);
 *   - it holds no "." or ".." segment, also once %2F, %5C, '\' count as
 *     separators and ";params" are cut, no "//" when slashes merge, no
 *     escape of an unreserved character and no lower-case hex digit;
 *   - normalising it again changes nothing (one normal form);
 *   - it is never longer than what the client sent;
 *   - no Connection field, no name with '_', and no field a Connection
 *     field named remains; identity fields are gone (untrusted peer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_check.h"

#include "http/h1_parse.h"
#include "proxy/request_gate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEADERS 64

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lower case is not normal */
}

/* The checks on a normalised path p (no query). */
static void check_path(weir_str p, bool merge)
{
    CHECK(p.len > 0 && p.ptr[0] == '/');
    size_t seg = 0;
    for (size_t i = 0; i <= p.len; i++) {
        size_t sep = 0;
        if (i == p.len || p.ptr[i] == '/' || p.ptr[i] == '\\')
            sep = 1;
        else if (p.ptr[i] == '%' && i + 2 < p.len &&
                 ((p.ptr[i + 1] == '2' && p.ptr[i + 2] == 'F') ||
                  (p.ptr[i + 1] == '5' && p.ptr[i + 2] == 'C')))
            sep = 3;
        if (i < p.len && p.ptr[i] == '%') {
            CHECK(i + 2 < p.len);
            int hi = hexval(p.ptr[i + 1]), lo = hexval(p.ptr[i + 2]);
            CHECK(hi >= 0 && lo >= 0);
            CHECK(!unreserved((unsigned char)(hi * 16 + lo)) && hi * 16 + lo != 0);
        }
        CHECK(i == p.len || p.ptr[i] != '#');
        if (!sep)
            continue;
        const char *semi = memchr(p.ptr + seg, ';', i - seg);
        size_t len = semi ? (size_t)(semi - (p.ptr + seg)) : i - seg;
        CHECK(!(len == 1 && p.ptr[seg] == '.'));
        CHECK(!(len == 2 && p.ptr[seg] == '.' && p.ptr[seg + 1] == '.'));
        if (merge && i < p.len && p.ptr[i] == '/' && i + 1 < p.len)
            CHECK(p.ptr[i + 1] != '/');
        i += sep - 1;
        seg = i + 1;
    }
    /* Idempotent. */
    char *again = malloc(p.len ? p.len : 1);
    const char *why = NULL;
    size_t n = weir__path_normalize(p, merge, again, &why);
    CHECK(n == p.len && memcmp(again, p.ptr, n) == 0);
    free(again);
}

static bool names(const weir_headers *h, const char *name)
{
    return weir__headers_find(h, name, 0) >= 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool merge = data[0] & 1;
    const char *buf = (const char *)data + 1;
    size--;
    weir_header hv[MAX_HEADERS];
    weir_h1_request r = {.headers = hv};
    size_t scan = 0;
    if (weir_h1_parse_request(buf, size, &r, MAX_HEADERS, &scan) <= 0)
        return 0;
    weir_h1_framing f;
    if (weir_h1_request_framing(&r, &f) < 0)
        return 0;

    static char mem[4096];
    weir_arena a;
    weir__arena_init(&a, mem, sizeof(mem));
    static weir_msg m;
    memset(&m, 0, WEIR_MSG_RESET_LEN);
    weir__headers_init(&m.headers, &a);
    m.method = r.method;
    m.target = r.target;
    m.version = 10 + r.minor_version;
    for (size_t i = 0; i < r.n_headers; i++)
        weir__headers_push(&m.headers, hv[i].name, hv[i].value);
    m.body = f.kind == WEIR_H1_BODY_NONE ? WEIR_BODY_NONE : WEIR_BODY_KNOWN;
    m.upgrade = f.upgrade;

    /* What the client's Connection fields named, before the gate. */
    weir_str named[MAX_HEADERS];
    size_t n_named = 0;
    for (size_t i = 0; i < r.n_headers; i++) {
        if (!weir_h1_name_is(hv[i].name, "connection"))
            continue;
        for (size_t k = 0; k < r.n_headers && n_named < MAX_HEADERS; k++) {
            char tmp[128];
            if (hv[k].name.len >= sizeof(tmp))
                continue;
            memcpy(tmp, hv[k].name.ptr, hv[k].name.len);
            tmp[hv[k].name.len] = '\0';
            if (weir_h1_list_has_token(hv[i].value, tmp) && !weir__is_hop_by_hop(hv[k].name))
                named[n_named++] = hv[k].name;
        }
    }

    weir_proxy_options o;
    memset(&o, 0, sizeof(o));
    o.max_uri_bytes = 8192;
    o.keep_slashes = !merge;
    weir_gate g;
    weir__gate_request(&m, &a, &o, false, &g);
    if (g.status == 0) {
        CHECK(g.path.ptr != NULL);
        if (!(g.path.len == 1 && g.path.ptr[0] == '*'))
            check_path(g.path, merge);
        weir_str fwd = g.fwd_target.ptr ? g.fwd_target : m.target;
        CHECK(fwd.len <= r.target.len);
        CHECK(!names(&m.headers, "connection"));
        CHECK(!names(&m.headers, "x-real-ip") && !names(&m.headers, "x-forwarded-proto") &&
              !names(&m.headers, "forwarded"));
        for (uint32_t i = 0; i < m.headers.n; i++) {
            CHECK(!memchr(m.headers.v[i].name.ptr, '_', m.headers.v[i].name.len));
            for (size_t k = 0; k < n_named; k++) {
                CHECK(!(m.headers.v[i].name.len == named[k].len &&
                        strncasecmp(m.headers.v[i].name.ptr, named[k].ptr, named[k].len) == 0));
            }
        }
    } else {
        CHECK(g.status >= 400 && g.status < 600 && g.reason);
    }
    weir__arena_reset(&a);
    return 0;
}
