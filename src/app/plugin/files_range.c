/*
 * files_range.c - Range fields (RFC 9110 14.1-14.2) and the pieces of a
 * multipart/byteranges body (files.h has the contracts).
 *
 * The parser is strict about syntax and lenient in effect: anything it
 * does not understand, or does not like, makes it answer NONE, and the
 * whole file is served with 200, which a client must accept (14.2: a
 * server MAY ignore Range). Only a well-formed set of which nothing
 * overlaps the file is a 416. The DoS rule is Apache's lesson from
 * CVE-2011-3192 ("bytes=0-,0-,0-,...": every part the whole file) and
 * RFC 9110 14.2's list of signs of abuse.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "app/plugin/files.h"

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* 1*DIGIT at v.ptr[*i]; false on no digit or past 2^64 - 1. */
static bool number(weir_str v, size_t *i, uint64_t *out)
{
    size_t j = *i;
    if (j >= v.len || !is_digit(v.ptr[j]))
        return false;
    uint64_t x = 0;
    for (; j < v.len && is_digit(v.ptr[j]); j++) {
        unsigned d = (unsigned)(v.ptr[j] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *i = j;
    *out = x;
    return true;
}

/* One range-spec at v.ptr[*i]: false on a syntax error; *ok says whether
 * it is satisfiable, and then *r is it, clipped to size. */
static bool spec(weir_str v, size_t *i, uint64_t size, weir_range *r, bool *ok)
{
    uint64_t a, b;
    *ok = false;
    if (*i < v.len && v.ptr[*i] == '-') {
        (*i)++;
        if (!number(v, i, &b))
            return false;
        if (b > 0 && size > 0) {
            r->start = b >= size ? 0 : size - b;
            r->len = size - r->start;
            *ok = true;
        }
        return true;
    }
    if (!number(v, i, &a) || *i >= v.len || v.ptr[*i] != '-')
        return false;
    (*i)++;
    bool has_last = *i < v.len && is_digit(v.ptr[*i]);
    b = UINT64_MAX;
    if (has_last && (!number(v, i, &b) || b < a))
        return false;
    if (a < size) {
        uint64_t end = b < size - 1 ? b : size - 1;
        r->start = a;
        r->len = end - a + 1;
        *ok = true;
    }
    return true;
}

static bool overlap(weir_range x, weir_range y)
{
    return x.start < y.start + y.len && y.start < x.start + x.len;
}

/* The DoS rule of files.h, on the n >= 1 satisfiable ranges. */
static bool abusive(const weir_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = i + 1; k < n; k++) {
            if (overlap(r[i], r[k]))
                return true;
        }
    }
    if (n < 3)
        return false;
    uint64_t total = 0; /* no overlap: at most the size */
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && r[i].start < r[i - 1].start)
            return true;
        total += r[i].len;
    }
    return total / n < WEIR_RANGE_MIN_MEAN;
}

int weir__range_parse(weir_str v, uint64_t size, weir_range *out, size_t max, size_t *n)
{
    *n = 0;
    if (!v.ptr)
        return WEIR_RANGE_NONE;
    while (v.len && is_ows(v.ptr[v.len - 1]))
        v.len--;
    while (v.len && is_ows(v.ptr[0])) {
        v.ptr++;
        v.len--;
    }
    if (v.len < 6 || strncasecmp(v.ptr, "bytes=", 6) != 0)
        return WEIR_RANGE_NONE;
    /* 1#range-spec with RFC 9110 5.6.1's empty elements: the set may
     * start with ',' (not with a space), and OWS only around commas. */
    size_t i = 6, specs = 0, got = 0;
    while (i < v.len) {
        if (v.ptr[i] == ',') {
            i++;
            while (i < v.len && is_ows(v.ptr[i]))
                i++;
            continue;
        }
        weir_range r;
        bool ok;
        if (!spec(v, &i, size, &r, &ok) || ++specs > max)
            return WEIR_RANGE_NONE;
        if (ok)
            out[got++] = r;
        while (i < v.len && is_ows(v.ptr[i]))
            i++;
        if (i < v.len && v.ptr[i] != ',')
            return WEIR_RANGE_NONE;
    }
    if (specs == 0)
        return WEIR_RANGE_NONE;
    if (got == 0)
        return WEIR_RANGE_UNSATISFIABLE;
    if (abusive(out, got))
        return WEIR_RANGE_NONE;
    *n = got;
    return WEIR_RANGE_OK;
}

/* ---- multipart/byteranges ---- */

size_t weir__multipart_boundary(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        out[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i < sizeof(rnd); i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15];
    }
    out[32] = '\0';
    return 32;
}

size_t weir__multipart_part_head(char *out, size_t cap, const char *boundary,
                                 const char *content_type, weir_range r, uint64_t size)
{
    int n = snprintf(
        out, cap,
        "\r\n--%s\r\n%s%s%sContent-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n\r\n",
        boundary, content_type ? "Content-Type: " : "", content_type ? content_type : "",
        content_type ? "\r\n" : "", r.start, r.start + r.len - 1, size);
    return n > 0 ? (size_t)n : 0;
}

size_t weir__multipart_tail(char *out, size_t cap, const char *boundary)
{
    int n = snprintf(out, cap, "\r\n--%s--\r\n", boundary);
    return n > 0 ? (size_t)n : 0;
}

uint64_t weir__multipart_length(const char *boundary, const char *content_type, const weir_range *r,
                                size_t n, uint64_t size)
{
    uint64_t total = weir__multipart_tail(NULL, 0, boundary);
    for (size_t i = 0; i < n; i++)
        total += weir__multipart_part_head(NULL, 0, boundary, content_type, r[i], size) + r[i].len;
    return total;
}
