/*
 * vary.c - variant keys (see vary.h).
 *
 * Normalization (RFC 9111 4.1 lets a cache use what the field's
 * definition allows): every line of the field joined as one list; spaces
 * and tabs around ',', ';' and '=' and at the ends dropped; for the
 * Accept-* fields, whose members are case-insensitive and whose order
 * carries no preference (q-values do), members lower-cased and sorted,
 * empty ones dropped. Other fields keep their bytes but for the spaces at
 * the ends of each line.
 */
#include "cache/vary.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_MEMBERS 64
#define MAX_VALUE 4096

static bool named(weir_str n, const char *name, size_t len)
{
    return n.len == len && strncasecmp(n.ptr, name, len) == 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int cmp_str(const void *a, const void *b)
{
    const weir_str *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->ptr, y->ptr, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

long weir__vary_names(const weir_headers *h, char *out, size_t cap)
{
    weir_str names[MAX_MEMBERS];
    size_t n = 0;
    char lower[MAX_VALUE];
    size_t used = 0;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (!named(f.name, "vary", 4))
            continue;
        const char *p = f.value.ptr, *end = p + f.value.len;
        while (p < end) {
            while (p < end && (is_ows(*p) || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > s && is_ows(e[-1]))
                e--;
            if (e == s)
                continue;
            if (e - s == 1 && *s == '*')
                return -1;
            for (const char *c = s; c < e; c++) {
                if (!tchar(*c))
                    return -1;
            }
            if (n == MAX_MEMBERS || used + (size_t)(e - s) > sizeof(lower))
                return -1;
            for (const char *c = s; c < e; c++)
                lower[used + (size_t)(c - s)] = (*c >= 'A' && *c <= 'Z') ? (char)(*c + 32) : *c;
            names[n++] = (weir_str){lower + used, (size_t)(e - s)};
            used += (size_t)(e - s);
        }
    }
    qsort(names, n, sizeof(names[0]), cmp_str);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && cmp_str(&names[i], &names[i - 1]) == 0)
            continue; /* each once */
        if (o + names[i].len + 1 > cap)
            return -1;
        if (o)
            out[o++] = ',';
        memcpy(out + o, names[i].ptr, names[i].len);
        o += names[i].len;
    }
    return (long)o;
}

/* One list member without the spaces around ';' and '=' (and at its
 * ends), lower-cased if asked, into out; its length. */
static size_t member(const char *s, const char *e, bool lower, char *out)
{
    size_t o = 0;
    for (const char *c = s; c < e; c++) {
        if (is_ows(*c)) {
            const char *nx = c;
            while (nx < e && is_ows(*nx))
                nx++;
            bool around = nx == e || *nx == ';' || *nx == '=' ||
                          (o && (out[o - 1] == ';' || out[o - 1] == '='));
            if (!around && o)
                out[o++] = ' ';
            c = nx - 1;
            continue;
        }
        out[o++] = lower && *c >= 'A' && *c <= 'Z' ? (char)(*c + 32) : *c;
    }
    return o;
}

/* The normalized value of field `name` in h into out (cap bytes): its
 * length, -1 when h has no such field, -2 when it does not fit. */
static long normalized(const weir_headers *h, weir_str name, char *out, size_t cap)
{
    /* Only the four whose members are case-insensitive and unordered; an
     * Accept-Profile or Accept-Tenant keeps its bytes. */
    static const char *const lists[] = {"accept", "accept-encoding", "accept-language",
                                        "accept-charset"};
    bool accept = false;
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]) && !accept; i++)
        accept = name.len == strlen(lists[i]) && memcmp(name.ptr, lists[i], name.len) == 0;
    char buf[MAX_VALUE];
    weir_str members[MAX_MEMBERS];
    size_t n = 0, used = 0, o = 0;
    bool any = false;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (!named(f.name, name.ptr, name.len))
            continue;
        any = true;
        const char *p = f.value.ptr, *end = p + f.value.len;
        if (!accept) { /* the line as it is, but its ends; lines joined by ',' */
            while (p < end && is_ows(*p))
                p++;
            while (end > p && is_ows(end[-1]))
                end--;
            if (o + (size_t)(end - p) + 1 > cap)
                return -2;
            if (o)
                out[o++] = ',';
            memcpy(out + o, p, (size_t)(end - p));
            o += (size_t)(end - p);
            continue;
        }
        while (p < end) {
            const char *s = p;
            bool quoted = false;
            while (p < end && (quoted || *p != ',')) {
                if (*p == '"')
                    quoted = !quoted;
                p++;
            }
            if (used + (size_t)(p - s) > sizeof(buf))
                return -2;
            size_t len = member(s, p, true, buf + used);
            if (len) {
                if (n == MAX_MEMBERS)
                    return -2;
                members[n++] = (weir_str){buf + used, len};
                used += len;
            }
            if (p < end)
                p++; /* the comma */
        }
    }
    if (!any)
        return -1;
    if (!accept)
        return (long)o;
    qsort(members, n, sizeof(members[0]), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (o + members[i].len + 1 > cap)
            return -2;
        if (o)
            out[o++] = ',';
        memcpy(out + o, members[i].ptr, members[i].len);
        o += members[i].len;
    }
    return (long)o;
}

long weir__vary_key(const char *primary, size_t primary_len, const char *names, size_t names_len,
                    const weir_headers *h, char *out, size_t cap)
{
    if (primary_len > cap)
        return -1;
    memcpy(out, primary, primary_len);
    size_t o = primary_len;
    const char *p = names, *end = names + names_len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        weir_str name = {p, (size_t)(e - p)};
        if (o + 2 + name.len > cap)
            return -1;
        out[o++] = '\n';
        memcpy(out + o, name.ptr, name.len);
        o += name.len;
        long vl = normalized(h, name, out + o + 1, cap - o - 1);
        if (vl == -2)
            return -1;
        if (vl >= 0) {
            out[o++] = ':';
            o += (size_t)vl;
        }
        p = comma ? comma + 1 : end;
    }
    return (long)o;
}
