/*
 * vars.c - header values with variables (see vars.h).
 */
#include "app/vars.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/fields.h"

typedef enum var {
    V_TEXT,
    V_REMOTE_ADDR,
    V_PEER_ADDR,
    V_HOST,
    V_SCHEME,
    V_METHOD,
    V_PATH,
    V_URI,
    V_QUERY,
    V_REQUEST_ID,
    V_UPSTREAM_ADDR,
    V_HTTP,   /* $http_NAME: a request header (text: its name) */
    V_COOKIE, /* $cookie_NAME: a cookie of the request (text: its name) */
} var;

typedef struct seg {
    var v;
    char *text; /* V_TEXT */
    size_t len;
} seg;

struct weir_tmpl {
    seg *v;
    size_t n;
};

static const struct {
    const char *name;
    var v;
} names[] = {
    {"remote_addr", V_REMOTE_ADDR},
    {"client_ip", V_REMOTE_ADDR},
    {"peer_addr", V_PEER_ADDR},
    {"host", V_HOST},
    {"scheme", V_SCHEME},
    {"method", V_METHOD},
    {"path", V_PATH},
    {"uri", V_URI},
    {"query", V_QUERY},
    {"request_id", V_REQUEST_ID},
    {"upstream_addr", V_UPSTREAM_ADDR},
};

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool push(weir_tmpl *t, var v, const char *text, size_t len)
{
    if (v == V_TEXT && len == 0)
        return true;
    if (v == V_TEXT && t->n && t->v[t->n - 1].v == V_TEXT) {
        /* Two literal pieces in a row (an environment value next to text). */
        seg *last = &t->v[t->n - 1];
        char *nt = realloc(last->text, last->len + len + 1);
        if (!nt)
            return false;
        memcpy(nt + last->len, text, len);
        last->len += len;
        nt[last->len] = '\0';
        last->text = nt;
        return true;
    }
    seg *nv = realloc(t->v, (t->n + 1) * sizeof(*nv));
    if (!nv)
        return false;
    t->v = nv;
    seg *s = &t->v[t->n++];
    *s = (seg){v, NULL, 0};
    if (v == V_TEXT || v == V_HTTP || v == V_COOKIE) {
        if (!(s->text = malloc(len + 1))) {
            t->n--;
            return false;
        }
        memcpy(s->text, text, len);
        s->text[len] = '\0';
        s->len = len;
    }
    return true;
}

weir_tmpl *weir__tmpl_compile(const char *text, bool *oom)
{
    *oom = false;
    if (!strchr(text, '$'))
        return NULL;
    weir_tmpl *t = calloc(1, sizeof(*t));
    if (!t) {
        *oom = true;
        return NULL;
    }
    bool any = false, ok = true;
    const char *p = text, *lit = text;
    while (ok && (p = strchr(p, '$'))) {
        if (p[1] == '{') { /* ${ENV} */
            const char *e = strchr(p + 2, '}');
            size_t nl = e ? (size_t)(e - p - 2) : 0;
            char name[128];
            if (!e || nl == 0 || nl >= sizeof(name)) {
                p++;
                continue;
            }
            memcpy(name, p + 2, nl);
            name[nl] = '\0';
            const char *val = getenv(name);
            ok = push(t, V_TEXT, lit, (size_t)(p - lit)) &&
                 push(t, V_TEXT, val ? val : "", val ? strlen(val) : 0);
            any = true;
            p = lit = e + 1;
            continue;
        }
        size_t nl = 0;
        while (name_char(p[1 + nl]))
            nl++;
        var v = V_TEXT;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strlen(names[i].name) == nl && memcmp(names[i].name, p + 1, nl) == 0)
                v = names[i].v;
        }
        if (v == V_TEXT && nl == 8 && memcmp(p + 1, "hostname", 8) == 0) {
            char host[256] = "";
            gethostname(host, sizeof(host) - 1);
            ok = push(t, V_TEXT, lit, (size_t)(p - lit)) && push(t, V_TEXT, host, strlen(host));
            any = true;
            p = lit = p + 1 + nl;
            continue;
        }
        if (v == V_TEXT && ((nl > 5 && memcmp(p + 1, "http_", 5) == 0) ||
                            (nl > 7 && memcmp(p + 1, "cookie_", 7) == 0))) {
            /* nginx's $http_x_api_key (the header X-Api-Key) and
             * $cookie_session. */
            bool header = p[1] == 'h';
            size_t skip = header ? 5 : 7;
            ok = push(t, V_TEXT, lit, (size_t)(p - lit)) &&
                 push(t, header ? V_HTTP : V_COOKIE, p + 1 + skip, nl - skip);
            if (ok && header) {
                char *h = t->v[t->n - 1].text;
                for (size_t i = 0; h[i]; i++)
                    h[i] = h[i] == '_'                  ? '-'
                           : h[i] >= 'A' && h[i] <= 'Z' ? (char)(h[i] + 32)
                                                        : h[i];
            }
            any = true;
            p = lit = p + 1 + nl;
            continue;
        }
        if (v == V_TEXT) { /* not a variable: kept */
            p++;
            continue;
        }
        ok = push(t, V_TEXT, lit, (size_t)(p - lit)) && push(t, v, NULL, 0);
        any = true;
        p = lit = p + 1 + nl;
    }
    if (ok)
        ok = push(t, V_TEXT, lit, strlen(lit));
    if (!ok || !any) {
        *oom = !ok;
        weir__tmpl_free(t);
        return NULL;
    }
    return t;
}

void weir__tmpl_free(weir_tmpl *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].text);
    free(t->v);
    free(t);
}

static weir_str value_of(const seg *g, weir_session *s)
{
    switch (g->v) {
    case V_TEXT:
        return (weir_str){g->text, g->len};
    case V_REMOTE_ADDR:
        return weir_session_client_ip(s);
    case V_PEER_ADDR:
        return weir_session_peer_ip(s);
    case V_HOST:
        return weir_headers_get(weir_session_req_headers(s), "host");
    case V_SCHEME: {
        weir_tls_info ti;
        return weir_session_tls(s, &ti) ? WEIR_STR("https") : WEIR_STR("http");
    }
    case V_METHOD:
        return weir_session_method(s);
    case V_PATH:
        return weir_session_path(s);
    case V_URI:
        return weir_session_target(s);
    case V_QUERY:
        return weir_session_query(s);
    case V_REQUEST_ID:
        return weir_session_request_id(s);
    case V_UPSTREAM_ADDR:
        return weir_session_upstream_addr(s);
    case V_HTTP:
        return weir_headers_get(weir_session_req_headers(s), g->text);
    case V_COOKIE:
        return weir__cookie(weir_session_req_headers(s), g->text);
    }
    return WEIR_STR_NULL;
}

weir_str weir__tmpl_render(const weir_tmpl *t, weir_session *s)
{
    size_t len = 0;
    for (size_t i = 0; i < t->n; i++)
        len += value_of(&t->v[i], s).len;
    char *out = weir_session_alloc(s, len + 1);
    if (!out)
        return WEIR_STR_NULL;
    size_t off = 0;
    for (size_t i = 0; i < t->n; i++) {
        weir_str part = value_of(&t->v[i], s);
        /* A value never carries a line break into a header. */
        for (size_t k = 0; k < part.len && off < len; k++) {
            char c = part.ptr[k];
            out[off++] = c == '\r' || c == '\n' || c == '\0' ? ' ' : c;
        }
    }
    out[off] = '\0';
    return (weir_str){out, off};
}
