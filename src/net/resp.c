/*
 * resp.c - the Redis protocol's framing (resp.h): commands as
 * redis-server reads them (its multibulk and inline forms, with
 * redis-cli's quoting), replies as a client reads them (RESP2 and RESP3).
 */
#include "net/resp.h"

#include <stdlib.h>
#include <string.h>

#include "core/ascii.h"

#define DEFAULT_MAX_ARGS 1024
#define DEFAULT_MAX_BULK (1u << 20)
#define DEFAULT_MAX_INLINE (64u * 1024)
#define MAX_BULK_EVER (512ull << 20) /* redis-server's proto-max-bulk-len */
#define MAX_NUMBER_LINE 32           /* "*1048576\r\n" and friends */
#define MAX_DEPTH 32
#define MAX_ELEMENTS (1l << 30)

/* A decimal in [p, e): an optional '-' and 1..19 digits within int64_t,
 * no '+', no spaces, no leading zero and no "-0" (redis' string2ll). */
static bool parse_int(const char *p, const char *e, int64_t *out)
{
    bool neg = p < e && *p == '-';
    if (neg)
        p++;
    if (p == e || e - p > 19 || (*p == '0' && (neg || e - p > 1)))
        return false;
    uint64_t v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/*
 * The line that starts at buf[pos]: returns the index of its '\r' (the
 * "\r\n" is there), -1 (WEIR_RESP_BAD) for a '\r' not followed by '\n'
 * or no end within max bytes, or -2 for MORE.
 */
static long line_at(const char *buf, size_t len, size_t pos, size_t max)
{
    size_t room = len - pos, look = room < max ? room : max;
    const char *cr = memchr(buf + pos, '\r', look);
    if (!cr)
        return room < max ? -2 : -1;
    size_t at = (size_t)(cr - buf);
    if (at + 1 >= len)
        return -2;
    return buf[at + 1] == '\n' ? (long)at : -1;
}

/* ---- commands ---- */

static long bad(const char **why, const char *text, long rc)
{
    *why = text;
    return rc;
}

static long multibulk(const char *buf, size_t len, const weir_resp_limits *lim, weir_str *args,
                      size_t *argc, const char **why)
{
    long cr = line_at(buf, len, 1, MAX_NUMBER_LINE);
    if (cr == -2)
        return WEIR_RESP_MORE;
    int64_t n;
    if (cr < 0 || !parse_int(buf + 1, buf + cr, &n))
        return bad(why, "Protocol error: invalid multibulk length", WEIR_RESP_BAD);
    size_t pos = (size_t)cr + 2;
    if (n <= 0) {
        *argc = 0;
        return (long)pos;
    }
    if ((uint64_t)n > lim->max_args)
        return bad(why, "Protocol error: too many arguments", WEIR_RESP_TOO_BIG);
    for (int64_t i = 0; i < n; i++) {
        if (pos >= len)
            return WEIR_RESP_MORE;
        if (buf[pos] != '$')
            return bad(why, "Protocol error: expected '$'", WEIR_RESP_BAD);
        cr = line_at(buf, len, pos + 1, MAX_NUMBER_LINE);
        if (cr == -2)
            return WEIR_RESP_MORE;
        int64_t bl;
        if (cr < 0 || !parse_int(buf + pos + 1, buf + cr, &bl) || bl < 0)
            return bad(why, "Protocol error: invalid bulk length", WEIR_RESP_BAD);
        if ((uint64_t)bl > lim->max_bulk)
            return bad(why, "Protocol error: argument too long", WEIR_RESP_TOO_BIG);
        size_t data = (size_t)cr + 2;
        if (len - data < (uint64_t)bl + 2)
            return WEIR_RESP_MORE;
        if (buf[data + (size_t)bl] != '\r' || buf[data + (size_t)bl + 1] != '\n')
            return bad(why, "Protocol error: expected CRLF after a bulk string", WEIR_RESP_BAD);
        args[i] = (weir_str){buf + data, (size_t)bl};
        pos = data + (size_t)bl + 2;
    }
    *argc = (size_t)n;
    return (long)pos;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* What ends an unquoted inline argument: as redis' sdssplitargs, fewer
 * bytes than separate arguments (\v and \f stay in the argument). */
static bool ends_arg(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Splits an inline line as redis-server does (sdssplitargs): arguments
 * apart by white space, "double quoted" with \n \r \t \b \a \xHH and \c
 * escapes, 'single quoted' with \' only; a closing quote must be followed
 * by a space or the end.
 */
static long split(const char *p, const char *e, const weir_resp_limits *lim, weir_str *args,
                  size_t *argc, char *out, const char **why)
{
    size_t n = 0, o = 0;
    for (;;) {
        while (p < e && is_space(*p))
            p++;
        if (p == e)
            break;
        if (n == lim->max_args)
            return bad(why, "Protocol error: too many arguments", WEIR_RESP_TOO_BIG);
        size_t start = o;
        char quote = 0;
        for (;;) {
            if (p == e) {
                if (quote)
                    return bad(why, "Protocol error: unbalanced quotes in request", WEIR_RESP_BAD);
                break;
            }
            char c = *p;
            if (quote == '"' && c == '\\' && e - p >= 4 && p[1] == 'x' &&
                weir__hex_digit(p[2]) >= 0 && weir__hex_digit(p[3]) >= 0) {
                out[o++] = (char)(weir__hex_digit(p[2]) * 16 + weir__hex_digit(p[3]));
                p += 4;
            } else if (quote == '"' && c == '\\' && e - p >= 2) {
                char x = p[1];
                out[o++] = x == 'n'   ? '\n'
                           : x == 'r' ? '\r'
                           : x == 't' ? '\t'
                           : x == 'b' ? '\b'
                           : x == 'a' ? '\a'
                                      : x;
                p += 2;
            } else if (quote == '\'' && c == '\\' && e - p >= 2 && p[1] == '\'') {
                out[o++] = '\'';
                p += 2;
            } else if (quote && c == quote) {
                p++;
                if (p < e && !is_space(*p))
                    return bad(why, "Protocol error: unbalanced quotes in request", WEIR_RESP_BAD);
                quote = 0;
                break;
            } else if (!quote && ends_arg(c)) {
                break;
            } else if (!quote && (c == '"' || c == '\'')) {
                quote = c;
                p++;
            } else {
                out[o++] = c;
                p++;
            }
        }
        args[n++] = (weir_str){out + start, o - start};
    }
    *argc = n;
    return 0;
}

long weir__resp_command(const char *buf, size_t len, const weir_resp_limits *lim, weir_str *args,
                        size_t *argc, char *scratch, size_t scratch_len, const char **why)
{
    static const weir_resp_limits defaults = {DEFAULT_MAX_ARGS, DEFAULT_MAX_BULK,
                                              DEFAULT_MAX_INLINE};
    weir_resp_limits l = lim ? *lim : defaults;
    if (!l.max_args)
        l.max_args = DEFAULT_MAX_ARGS;
    if (!l.max_bulk || l.max_bulk > MAX_BULK_EVER)
        l.max_bulk = l.max_bulk ? MAX_BULK_EVER : DEFAULT_MAX_BULK;
    if (!l.max_inline)
        l.max_inline = DEFAULT_MAX_INLINE;
    *argc = 0;
    *why = NULL;
    if (len == 0)
        return WEIR_RESP_MORE;
    if (buf[0] == '*')
        return multibulk(buf, len, &l, args, argc, why);
    /* A line of up to max_inline bytes, then CRLF or LF. */
    size_t look = len < (size_t)l.max_inline + 2 ? len : (size_t)l.max_inline + 2;
    const char *nl = memchr(buf, '\n', look);
    if (!nl)
        return len > (size_t)l.max_inline + 1
                   ? bad(why, "Protocol error: too big inline request", WEIR_RESP_TOO_BIG)
                   : WEIR_RESP_MORE;
    const char *e = nl;
    if (e > buf && e[-1] == '\r')
        e--;
    if ((size_t)(e - buf) > l.max_inline || (size_t)(e - buf) > scratch_len)
        return bad(why, "Protocol error: too big inline request", WEIR_RESP_TOO_BIG);
    long rc = split(buf, e, &l, args, argc, scratch, why);
    if (rc < 0) {
        *argc = 0;
        return rc;
    }
    return (long)(nl - buf) + 1;
}

/* ---- replies ---- */

/* The value at buf[pos]: the index after it, WEIR_RESP_MORE (0) or
 * WEIR_RESP_BAD. top, when given, gets the top level. */
static long value(const char *buf, size_t len, size_t pos, int depth, uint64_t max_bulk,
                  weir_resp_value *top)
{
    if (pos >= len)
        return WEIR_RESP_MORE;
    char c = buf[pos];
    bool number_line = c == ':' || c == '$' || c == '!' || c == '=' || c == '*' || c == '%' ||
                       c == '~' || c == '>' || c == '|' || c == '#' || c == '_';
    long cr = line_at(buf, len, pos + 1, number_line ? MAX_NUMBER_LINE : len - pos);
    if (cr == -2)
        return WEIR_RESP_MORE;
    if (cr < 0)
        return WEIR_RESP_BAD;
    const char *l = buf + pos + 1, *le = buf + cr;
    size_t after = (size_t)cr + 2;
    weir_resp_value v = {.p = l, .n = (size_t)(le - l)};
    int64_t n = 0;
    switch (c) {
    case '+':
    case '-':
        v.type = c == '+' ? WEIR_RESP_SIMPLE : WEIR_RESP_ERROR;
        break;
    case ':':
        if (!parse_int(l, le, &v.i))
            return WEIR_RESP_BAD;
        v.type = WEIR_RESP_INTEGER;
        break;
    case '_':
        if (le != l)
            return WEIR_RESP_BAD;
        v.type = WEIR_RESP_NIL;
        break;
    case '#':
        if (le - l != 1 || (*l != 't' && *l != 'f'))
            return WEIR_RESP_BAD;
        v.type = WEIR_RESP_OTHER;
        break;
    case ',':
    case '(':
        if (le == l)
            return WEIR_RESP_BAD;
        v.type = WEIR_RESP_OTHER;
        break;
    case '$':
    case '!':
    case '=':
        if (!parse_int(l, le, &n) || n < -1 || (n == -1 && c != '$'))
            return WEIR_RESP_BAD;
        if (n == -1) {
            v.type = WEIR_RESP_NIL;
            break;
        }
        if ((uint64_t)n > (max_bulk ? max_bulk : MAX_BULK_EVER))
            return WEIR_RESP_BAD;
        if (len - after < (uint64_t)n + 2)
            return WEIR_RESP_MORE;
        if (buf[after + (size_t)n] != '\r' || buf[after + (size_t)n + 1] != '\n')
            return WEIR_RESP_BAD;
        v = (weir_resp_value){
            .type = c == '!' ? WEIR_RESP_ERROR : WEIR_RESP_BULK, .p = buf + after, .n = (size_t)n};
        after += (size_t)n + 2;
        break;
    case '*':
    case '%':
    case '~':
    case '>':
    case '|':
        if (!parse_int(l, le, &n) || n < -1 || (n == -1 && c != '*') || n > MAX_ELEMENTS)
            return WEIR_RESP_BAD;
        if (n == -1) {
            v.type = WEIR_RESP_NIL;
            break;
        }
        if (depth >= MAX_DEPTH)
            return WEIR_RESP_BAD;
        for (int64_t k = 0; k < (c == '%' || c == '|' ? 2 * n : n); k++) {
            long r = value(buf, len, after, depth + 1, max_bulk, NULL);
            if (r <= 0)
                return r;
            after = (size_t)r;
        }
        if (c == '|') /* attributes, then the value they describe */
            return value(buf, len, after, depth, max_bulk, top);
        v = (weir_resp_value){.type = WEIR_RESP_ARRAY, .i = n};
        break;
    default:
        return WEIR_RESP_BAD;
    }
    if (top)
        *top = v;
    return (long)after;
}

long weir__resp_reply(const char *buf, size_t len, uint64_t max_bulk, weir_resp_value *top)
{
    weir_resp_value v;
    long r = value(buf, len, 0, 0, max_bulk, &v);
    if (r > 0 && top)
        *top = v;
    return r;
}

/* ---- writing replies ---- */

static bool reserve(weir_resp_out *o, size_t n)
{
    if (o->oom)
        return false;
    if (o->cap - o->len >= n)
        return true;
    size_t cap = o->cap ? o->cap : 256;
    while (cap - o->len < n) {
        if (cap > SIZE_MAX / 2) {
            o->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(o->p, cap);
    if (!p) {
        o->oom = true;
        return false;
    }
    o->p = p;
    o->cap = cap;
    return true;
}

static void put(weir_resp_out *o, const void *p, size_t n)
{
    if (n && reserve(o, n)) {
        memcpy(o->p + o->len, p, n);
        o->len += n;
    }
}

/* A type byte, a number, CRLF. */
static void head(weir_resp_out *o, char type, int64_t v)
{
    char b[24];
    char *e = b + sizeof(b), *q = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--q = '-';
    put(o, &type, 1);
    put(o, q, (size_t)(e - q));
    put(o, "\r\n", 2);
}

static void line(weir_resp_out *o, char type, const char *s)
{
    size_t n = strlen(s);
    if (!reserve(o, n + 3))
        return;
    o->p[o->len++] = type;
    for (size_t i = 0; i < n; i++)
        o->p[o->len++] = s[i] == '\r' || s[i] == '\n' ? ' ' : s[i];
    o->p[o->len++] = '\r';
    o->p[o->len++] = '\n';
}

void weir__resp_simple(weir_resp_out *o, const char *s)
{
    line(o, '+', s);
}

void weir__resp_error(weir_resp_out *o, const char *s)
{
    line(o, '-', s);
}

void weir__resp_int(weir_resp_out *o, int64_t v)
{
    head(o, ':', v);
}

void weir__resp_bulk(weir_resp_out *o, const void *p, size_t n)
{
    head(o, '$', (int64_t)n);
    put(o, p, n);
    put(o, "\r\n", 2);
}

void weir__resp_nil(weir_resp_out *o)
{
    if (o->resp3)
        put(o, "_\r\n", 3);
    else
        put(o, "$-1\r\n", 5);
}

void weir__resp_array(weir_resp_out *o, size_t n)
{
    head(o, '*', (int64_t)n);
}

void weir__resp_map(weir_resp_out *o, size_t n)
{
    if (o->resp3)
        head(o, '%', (int64_t)n);
    else
        head(o, '*', (int64_t)(2 * n));
}

void weir__resp_out_free(weir_resp_out *o)
{
    free(o->p);
    *o = (weir_resp_out){0};
}
