/*
 * request_gate.c - the checks every request passes before any phase (see
 * request_gate.h and docs/config.md, "What weir refuses").
 *
 * The order matters: the target and the path are decided first (a request
 * weir cannot route safely never reaches the application), then the
 * client's header fields are cleaned, before weir adds its own. So nothing
 * a client sends can remove a field weir adds later (a client's
 * "Connection: X-Forwarded-For" only removes the client's own field), and
 * identity fields from untrusted peers are gone before anything reads them.
 */
#include "proxy/request_gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/ascii.h"
#include "http/h1_parse.h"

/* RFC 3986 2.3: decoding these never changes what a path means. */
static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * The segment out[start..*n) just ended (at a '/' about to be written, or
 * at the end of the path): drops it if it is ".", drops it and the one
 * before it if it is "..". Returns false for a ".." directly under the
 * root. *n then ends just after a '/', so the caller writes no second one.
 */
static bool end_segment(char *out, size_t *n, bool *dropped)
{
    size_t end = *n, start = end;
    while (start > 0 && out[start - 1] != '/')
        start--;
    size_t len = end - start;
    *dropped = false;
    if (len == 1 && out[start] == '.') {
        *n = start;
        *dropped = true;
    } else if (len == 2 && out[start] == '.' && out[start + 1] == '.') {
        if (start <= 1)
            return false;        /* "/.." : above the root */
        size_t prev = start - 1; /* the '/' before ".." */
        while (prev > 0 && out[prev - 1] != '/')
            prev--;
        *n = prev;
        *dropped = true;
    }
    return true;
}

/* After normalising: a "." or ".." segment once encoded slashes and
 * backslashes count as separators ("/static/..%2Fadmin"), or once a
 * segment's ";parameters" are cut ("/static/..;/admin"). Backends that
 * decode %2F (nginx, many frameworks), treat '\' as '/' (IIS, some Java
 * servers) or drop path parameters (Tomcat) would climb. */
static bool hidden_dot_segment(const char *p, size_t n)
{
    size_t seg = 0;
    for (size_t i = 0; i <= n; i++) {
        size_t sep = 0;
        if (i == n || p[i] == '/' || p[i] == '\\')
            sep = 1;
        else if (p[i] == '%' && i + 2 < n && p[i + 1] == '2' && p[i + 2] == 'F')
            sep = 3;
        else if (p[i] == '%' && i + 2 < n && p[i + 1] == '5' && p[i + 2] == 'C')
            sep = 3;
        if (!sep)
            continue;
        const char *semi = memchr(p + seg, ';', i - seg);
        size_t len = semi ? (size_t)(semi - (p + seg)) : i - seg;
        if ((len == 1 && p[seg] == '.') || (len == 2 && p[seg] == '.' && p[seg + 1] == '.'))
            return true;
        i += sep - 1;
        seg = i + 1;
    }
    return false;
}

size_t weir__path_normalize(weir_str in, bool merge_slashes, char *out, const char **why)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    bool hidden_sep = false;
    if (in.len == 0 || in.ptr[0] != '/') {
        *why = "the path does not start with '/'";
        return 0;
    }
    for (size_t i = 0; i < in.len; i++) {
        unsigned char ch = (unsigned char)in.ptr[i];
        if (ch == '%') {
            int hi = i + 2 < in.len ? weir__hex_digit((unsigned char)in.ptr[i + 1]) : -1;
            int lo = i + 2 < in.len ? weir__hex_digit((unsigned char)in.ptr[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *why = "invalid percent-encoding in the path";
                return 0;
            }
            i += 2;
            unsigned char d = (unsigned char)(hi * 16 + lo);
            if (d == 0) {
                *why = "encoded NUL in the path";
                return 0;
            }
            if (!unreserved(d)) {
                /* Kept encoded: "%2F" is data inside a segment, not a
                 * separator (it never splits or resolves a segment). */
                hidden_sep = hidden_sep || d == '/' || d == '\\';
                out[n++] = '%';
                out[n++] = hex[hi];
                out[n++] = hex[lo];
                continue;
            }
            ch = d;
        } else if (ch == '#') {
            *why = "a fragment in the request target";
            return 0;
        } else if (ch <= 0x20 || ch == 0x7f) {
            *why = "a control character in the path";
            return 0;
        } else if (ch == '\\' || ch == ';') {
            hidden_sep = true;
        }
        if (ch == '/' && n > 0) {
            bool dropped;
            if (!end_segment(out, &n, &dropped)) {
                *why = "the path climbs above the root";
                return 0;
            }
            if (dropped || (merge_slashes && out[n - 1] == '/'))
                continue;
        }
        out[n++] = (char)ch;
    }
    bool dropped;
    if (!end_segment(out, &n, &dropped)) {
        *why = "the path climbs above the root";
        return 0;
    }
    if (hidden_sep && hidden_dot_segment(out, n)) {
        *why = "a dot segment behind an encoded slash or a backslash";
        return 0;
    }
    return n;
}

/* True if the path is certainly normal already: nothing to decode,
 * resolve or merge. One pass; most paths take only this. */
static bool plainly_normal(weir_str p)
{
    for (size_t i = 0; i < p.len; i++) {
        unsigned char c = (unsigned char)p.ptr[i];
        if (c == '%' || c == '#' || c == '\\' || c <= 0x20 || c == 0x7f)
            return false;
        if (c == '/' && i + 1 < p.len && (p.ptr[i + 1] == '/' || p.ptr[i + 1] == '.'))
            return false;
    }
    return p.len > 0 && p.ptr[0] == '/';
}

int weir__gate_target(weir_arena *a, weir_str target, bool merge_slashes, weir_str *out,
                      const char **why)
{
    const char *q = memchr(target.ptr, '?', target.len);
    weir_str path = {target.ptr, q ? (size_t)(q - target.ptr) : target.len};
    if (q && memchr(q, '#', target.len - path.len)) {
        /* RFC 9112 3.2: a fragment is never sent; backends disagree on
         * whether what follows is part of the query. */
        *why = "a fragment in the request target";
        return WEIR_ERR_INVAL;
    }
    if (plainly_normal(path)) {
        *out = target;
        return WEIR_OK;
    }
    char *buf = weir__arena_alloc(a, target.len);
    if (!buf)
        return WEIR_ERR_NOMEM;
    size_t n = weir__path_normalize(path, merge_slashes, buf, why);
    if (n == 0)
        return WEIR_ERR_INVAL;
    if (q) {
        memmove(buf + n, q, target.len - path.len); /* "?query" */
        n += target.len - path.len;
    }
    *out = (weir_str){buf, n};
    return WEIR_OK;
}

/* ---- header fields ---- */

static bool name_is(weir_str name, const char *lower)
{
    return weir_h1_name_is(name, lower);
}

/* Identity fields believed only from trusted proxies (weir sets the first
 * two itself). X-Forwarded-For is kept and appended to. */
static bool identity_field(weir_str n)
{
    switch (n.len) {
    case 9:
        return name_is(n, "x-real-ip") || name_is(n, "forwarded");
    case 16:
        return name_is(n, "x-forwarded-host") || name_is(n, "x-forwarded-port");
    case 17:
        return name_is(n, "x-forwarded-proto");
    default:
        return false;
    }
}

/* The next token of a Connection value at *p (before e), or an empty one
 * at the end. */
static weir_str next_token(const char **p, const char *e)
{
    while (*p < e && (**p == ' ' || **p == '\t' || **p == ','))
        (*p)++;
    const char *t = *p;
    while (*p < e && **p != ',' && **p != ' ' && **p != '\t')
        (*p)++;
    return (weir_str){t, (size_t)(*p - t)};
}

/* True if one of the Connection fields of h nominates name. */
static bool nominated(const weir_headers *h, weir_str name)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const weir_header *f = &h->v[i];
        if (f->name.len != 10 || !name_is(f->name, "connection"))
            continue;
        const char *p = f->value.ptr, *e = p + f->value.len;
        while (p < e) {
            weir_str t = next_token(&p, e);
            if (t.len == name.len && name.len && strncasecmp(t.ptr, name.ptr, name.len) == 0)
                return true;
        }
    }
    return false;
}

#define MAX_NOMINATED 16

/* The tokens of h's Connection fields that could name a field to drop
 * (hop-by-hop names are dropped by the codecs whatever): into tok, their
 * count, or -1 if more than MAX_NOMINATED (then nominated() decides per
 * field). Most messages' only token is keep-alive or close: none, and no
 * field needs a look. */
static int nominations(const weir_headers *h, weir_str *tok)
{
    int n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const weir_header *f = &h->v[i];
        if (f->name.len != 10 || !name_is(f->name, "connection"))
            continue;
        const char *p = f->value.ptr, *e = p + f->value.len;
        while (p < e) {
            weir_str w = next_token(&p, e);
            if (!w.len || weir__is_hop_by_hop(w) || (w.len == 5 && name_is(w, "close")))
                continue;
            if (n == MAX_NOMINATED)
                return -1;
            tok[n++] = w;
        }
    }
    return n;
}

/* name is one of tok[0..n) (n from nominations; -1: look in h). */
static bool among(const weir_headers *h, const weir_str *tok, int n, weir_str name)
{
    if (n < 0)
        return nominated(h, name);
    for (int i = 0; i < n; i++) {
        if (tok[i].len == name.len && strncasecmp(tok[i].ptr, name.ptr, name.len) == 0)
            return true;
    }
    return false;
}

/* A Connection field that nominates a field the message's framing or
 * routing depends on: a client trying to make weir and the backend
 * disagree. */
static const char *bad_nomination(const weir_headers *h)
{
    static const weir_str framing[] = {WEIR_STR("host"), WEIR_STR("content-length"),
                                       WEIR_STR("transfer-encoding")};
    for (size_t i = 0; i < sizeof(framing) / sizeof(framing[0]); i++) {
        if (nominated(h, framing[i]))
            return "the Connection header names Host, Content-Length or Transfer-Encoding";
    }
    return NULL;
}

/*
 * One pass that keeps only the fields that may go on. The fixed hop-by-hop
 * names (TE, Upgrade, ...) are left to the codecs, which know which of
 * them to carry (an Upgrade on an upgrade request, "TE: trailers" to an
 * HTTP/2 backend).
 */
static void clean_fields(weir_msg *m, const weir_proxy_options *o, bool trusted_peer)
{
    weir_headers *h = &m->headers;
    bool has_conn = weir__headers_find(h, "connection", 0) >= 0;
    weir_str tok[MAX_NOMINATED];
    int n_tok = has_conn ? nominations(h, tok) : 0;
    bool drop_identity = !o->no_forwarded_headers;
    uint32_t out = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        weir_str name = h->v[i].name;
        bool drop = false;
        if (!o->underscores_in_headers && memchr(name.ptr, '_', name.len))
            drop = true;
        else if (drop_identity && identity_field(name))
            /* X-Real-IP is weir's to set even from a trusted proxy: it
             * names the client weir resolved. */
            drop = !trusted_peer || name_is(name, "x-real-ip");
        else if (n_tok && !weir__is_hop_by_hop(name) && among(h, tok, n_tok, name))
            drop = true;
        if (!drop)
            h->v[out++] = h->v[i];
    }
    if (out != h->n)
        weir__headers_changed(h);
    h->n = out;
    if (has_conn)
        weir_headers_remove(h, "connection");
}

void weir__gate_response(weir_msg *m)
{
    weir_headers *h = &m->headers;
    if (weir__headers_find(h, "connection", 0) < 0)
        return;
    weir_str tok[MAX_NOMINATED];
    int n_tok = nominations(h, tok);
    uint32_t out = 0;
    for (uint32_t i = 0; n_tok && i < h->n; i++) {
        weir_str name = h->v[i].name;
        /* Framing fields are the codecs' to judge, whatever is nominated. */
        bool framing = (name.len == 14 && name_is(name, "content-length")) ||
                       (name.len == 17 && name_is(name, "transfer-encoding"));
        if (framing || weir__is_hop_by_hop(name) || !among(h, tok, n_tok, name))
            h->v[out++] = h->v[i];
    }
    if (!n_tok)
        out = h->n;
    if (out != h->n)
        weir__headers_changed(h);
    h->n = out;
    weir_headers_remove(h, "connection");
}

static bool method_is(weir_str m, const char *lit, size_t len)
{
    return m.len == len && memcmp(m.ptr, lit, len) == 0;
}

void weir__gate_request(weir_msg *m, weir_arena *a, const weir_proxy_options *o, bool trusted_peer,
                        weir_gate *g)
{
    memset(g, 0, sizeof(*g));
    weir_str t = m->target;
    /* RFC 9112 3.2: CONNECT takes an authority, and weir is no forward
     * proxy (HTTP/2 extended CONNECT arrives here as an upgrade GET).
     * TRACE would echo credentials back (nginx refuses it too). */
    if (method_is(m->method, "CONNECT", 7) || method_is(m->method, "TRACE", 5)) {
        g->status = 405;
        g->reason = "method not allowed";
        return;
    }
    if (t.len == 1 && t.ptr[0] == '*') {
        if (!method_is(m->method, "OPTIONS", 7)) {
            g->status = 400;
            g->reason = "asterisk-form target with a method other than OPTIONS";
            return;
        }
        g->path = t;
    } else if (t.len == 0 || t.ptr[0] != '/') {
        g->status = 400;
        g->reason = "the request target is not origin-form";
        return;
    } else if (t.len > o->max_uri_bytes) {
        g->status = 414;
        g->reason = "request target over max_uri_size";
        return;
    } else {
        weir_str fwd;
        int rc = weir__gate_target(a, t, !o->keep_slashes, &fwd, &g->reason);
        if (rc != WEIR_OK) {
            g->status = rc == WEIR_ERR_NOMEM ? 503 : 400;
            if (rc == WEIR_ERR_NOMEM)
                g->reason = "out of memory";
            return;
        }
        const char *q = memchr(fwd.ptr, '?', fwd.len);
        g->path = (weir_str){fwd.ptr, q ? (size_t)(q - fwd.ptr) : fwd.len};
        if (fwd.ptr != t.ptr)
            g->fwd_target = fwd;
    }
    const char *bad = bad_nomination(&m->headers);
    if (bad) {
        g->status = 400;
        g->reason = bad;
        return;
    }
    clean_fields(m, o, trusted_peer);
    /* A body on GET or HEAD has no defined meaning (RFC 9110 9.3.1): some
     * backends read it, some take it for the next request. It is
     * forwarded, but neither connection carries another request. */
    if (m->body != WEIR_BODY_NONE &&
        (method_is(m->method, "GET", 3) || method_is(m->method, "HEAD", 4)))
        g->close = true;
}

/* ---- addresses ---- */

int weir_cidr_parse(const char *text, weir_cidr *out)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(buf))
        return WEIR_ERR_INVAL;
    memcpy(buf, text, alen);
    buf[alen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return WEIR_ERR_INVAL;
    }
    unsigned len = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return WEIR_ERR_INVAL;
        len = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return WEIR_ERR_INVAL;
            len = len * 10 + (unsigned)(*p - '0');
        }
        if (len > max)
            return WEIR_ERR_INVAL;
    }
    out->prefix_len = (uint8_t)len;
    /* Host bits off, so "10.1.2.3/8" means 10.0.0.0/8. */
    for (unsigned bit = len; bit < max; bit++)
        out->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return WEIR_OK;
}

static bool block_has(const weir_cidr *c, int family, const uint8_t *addr)
{
    if (c->family != family)
        return false;
    unsigned full = c->prefix_len / 8, rest = c->prefix_len % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (addr[full] & mask) == c->addr[full];
}

/* family and address bytes of a textual or socket address, IPv4-mapped
 * IPv6 seen as IPv4. */
static bool match_raw(const weir_cidr *v, size_t n, int family, const uint8_t *addr)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    for (size_t i = 0; i < n; i++) {
        if (block_has(&v[i], family, addr))
            return true;
    }
    return false;
}

bool weir__cidr_match(const weir_cidr *v, size_t n, const struct sockaddr *sa)
{
    if (n == 0 || !sa)
        return false;
    if (sa->sa_family == AF_INET)
        return match_raw(v, n, AF_INET,
                         (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return match_raw(v, n, AF_INET6,
                         (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* One X-Forwarded-For element: "1.2.3.4", "1.2.3.4:5678", "2001:db8::1",
 * "[2001:db8::1]" or "[2001:db8::1]:5678". */
static bool parse_forwarded_addr(const char *p, size_t len, int *family, uint8_t addr[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return false;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', len);
        if (!close)
            return false;
        size_t rest = len - (size_t)(close - p) - 1;
        if (rest && close[1] != ':')
            return false;
        len = (size_t)(close - p) - 1;
        p++;
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - p)))
            len = (size_t)(colon - p); /* one colon: IPv4 with a port */
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

size_t weir__gate_forwarded_client(const weir_headers *h, const weir_proxy_options *o, char *out,
                                   size_t cap)
{
    int family = 0, fam;
    uint8_t best[16], addr[16];
    bool found = false;
    /* Fields from the last to the first, elements from right to left:
     * together, the list right to left. */
    for (long i = (long)h->n - 1; i >= 0; i--) {
        const weir_header *f = &h->v[i];
        if (f->name.len != 15 || !name_is(f->name, "x-forwarded-for"))
            continue;
        const char *s = f->value.ptr, *e = s + f->value.len;
        while (e > s) {
            const char *comma = e;
            while (comma > s && comma[-1] != ',')
                comma--;
            const char *a = comma, *b = e;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            e = comma > s ? comma - 1 : s;
            if (a == b)
                continue;
            if (!parse_forwarded_addr(a, (size_t)(b - a), &fam, addr))
                goto done; /* garbage: trust stops at the last good address */
            family = fam;
            memcpy(best, addr, 16);
            found = true;
            if (!match_raw(o->trusted_proxies, o->n_trusted_proxies, fam, addr))
                goto done;
        }
    }
done:
    if (!found || !inet_ntop(family, best, out, (socklen_t)cap))
        return 0;
    return strlen(out);
}

bool weir__request_id_ok(weir_str id)
{
    if (id.len == 0 || id.len > 64)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        unsigned char c = (unsigned char)id.ptr[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || (c == '.' && i > 0 && id.ptr[i - 1] == '.'))
            return false;
    }
    return true;
}
