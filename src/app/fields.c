/*
 * fields.c - cookies and query parameters (see fields.h).
 */
#include "app/fields.h"

#include <string.h>
#include <strings.h>

/* The first value of cookie `name` in every Cookie field; with count, how
 * many times it is sent (else it stops at the first). */
static weir_str scan_cookies(const weir_headers *h, const char *name, size_t *count)
{
    size_t nl = strlen(name);
    weir_str first = WEIR_STR_NULL;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len != 6 || strncasecmp(f.name.ptr, "cookie", 6) != 0)
            continue;
        const char *p = f.value.ptr, *end = p + f.value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi)
                semi = end;
            if ((size_t)(semi - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0) {
                if (!first.ptr)
                    first = (weir_str){p + nl + 1, (size_t)(semi - p - nl - 1)};
                if (!count)
                    return first;
                (*count)++;
            }
            p = semi;
        }
    }
    return first;
}

weir_str weir__cookie(const weir_headers *h, const char *name)
{
    return scan_cookies(h, name, NULL);
}

size_t weir__cookie_count(const weir_headers *h, const char *name)
{
    size_t n = 0;
    scan_cookies(h, name, &n);
    return n;
}

weir_str weir__query_param(weir_str q, const char *name)
{
    size_t nl = strlen(name);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        if ((size_t)(amp - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl + 1, (size_t)(amp - p - nl - 1)};
        if ((size_t)(amp - p) == nl && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl, 0};
        p = amp + 1;
    }
    return WEIR_STR_NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

long weir__unescape(weir_str v, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < v.len; i++) {
        char ch = v.ptr[i];
        if (ch == '%') {
            int hi = i + 2 < v.len ? hexval(v.ptr[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(v.ptr[i + 2]) : -1;
            if (lo < 0)
                return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o == cap)
            return -1;
        out[o++] = ch;
    }
    return (long)o;
}

size_t weir__query_params(weir_str q, const char *name, weir_str *first)
{
    size_t count = 0;
    *first = WEIR_STR_NULL;
    while (q.len) {
        weir_str v = weir__query_param(q, name);
        if (!v.ptr)
            break;
        if (!count++)
            *first = v;
        size_t used = (size_t)(v.ptr + v.len - q.ptr);
        q = (weir_str){q.ptr + used, q.len - used};
    }
    return count;
}

int weir__drop_query_param(weir_session *s, const char *name)
{
    weir_str t = weir_session_upstream_target(s);
    const char *qm = t.ptr ? memchr(t.ptr, '?', t.len) : NULL;
    if (!qm)
        return WEIR_OK;
    char *out = weir_session_alloc(s, t.len + 1);
    if (!out)
        return WEIR_ERR_NOMEM;
    size_t o = (size_t)(qm - t.ptr), nl = strlen(name);
    memcpy(out, t.ptr, o);
    const char *p = qm + 1, *end = t.ptr + t.len;
    bool first = true;
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        size_t l = (size_t)(amp - p);
        bool match = l >= nl && memcmp(p, name, nl) == 0 && (l == nl || p[nl] == '=');
        if (!match && l) {
            out[o++] = first ? '?' : '&';
            memcpy(out + o, p, l);
            o += l;
            first = false;
        }
        p = amp + 1;
    }
    return weir_session_set_target(s, out, o);
}
