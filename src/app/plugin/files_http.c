/*
 * files_http.c - the file ETag and conditional requests (files.h has the
 * contracts; RFC 9110 8.8, 13). Dates: weir_http_date (weir/headers.h).
 * Every parser here takes a slice and never reads past it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "app/plugin/files.h"

/* ---- validators ---- */

/* v without the spaces and tabs around it. */
static weir_str trim(weir_str v)
{
    while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t')) {
        v.ptr++;
        v.len--;
    }
    while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
        v.len--;
    return v;
}

size_t weir__files_etag(const struct stat *st, char out[48])
{
    int n = snprintf(out, 48, "\"%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st->st_mtim.tv_sec,
                     (uint64_t)st->st_size);
    return n > 0 ? (size_t)n : 0;
}

/* One entity-tag at v.ptr[*i] (RFC 9110 8.8.3): *weak and *opaque (the
 * quoted part, quotes included). */
static bool etag_at(weir_str v, size_t *i, bool *weak, weir_str *opaque)
{
    size_t j = *i;
    *weak = false;
    if (v.len - j >= 2 && v.ptr[j] == 'W' && v.ptr[j + 1] == '/') {
        *weak = true;
        j += 2;
    }
    if (j >= v.len || v.ptr[j] != '"')
        return false;
    size_t start = j++;
    for (; j < v.len && v.ptr[j] != '"'; j++) {
        unsigned char c = (unsigned char)v.ptr[j];
        if (c < 0x21 || c == 0x7f) /* etagc = %x21 / %x23-7E / obs-text */
            return false;
    }
    if (j >= v.len)
        return false;
    j++;
    *opaque = (weir_str){v.ptr + start, j - start};
    *i = j;
    return true;
}

/* The representation's own tag; false when it has none or it is not an
 * entity-tag (then only "*" matches it). */
static bool own_tag(weir_str etag, bool *weak, weir_str *opaque)
{
    if (!etag.ptr)
        return false;
    size_t i = 0;
    return etag_at(etag, &i, weak, opaque) && i == etag.len;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Whether the If-Match / If-None-Match value v ("*" or 1#entity-tag)
 * matches etag, by strong or weak comparison (RFC 9110 8.8.3.2). */
static bool list_matches(weir_str v, weir_str etag, bool strong)
{
    v = trim(v);
    if (v.len == 1 && v.ptr[0] == '*')
        return true;
    bool eweak;
    weir_str eop;
    if (!own_tag(etag, &eweak, &eop) || (strong && eweak))
        return false;
    size_t i = 0;
    for (;;) {
        while (i < v.len && (is_ows(v.ptr[i]) || v.ptr[i] == ','))
            i++;
        if (i == v.len)
            return false;
        bool weak;
        weir_str op;
        if (!etag_at(v, &i, &weak, &op))
            return false;
        if (!(strong && weak) && op.len == eop.len && memcmp(op.ptr, eop.ptr, op.len) == 0)
            return true;
        while (i < v.len && is_ows(v.ptr[i]))
            i++;
        if (i < v.len && v.ptr[i] != ',')
            return false;
    }
}

int weir__files_conditional(weir_str if_match, weir_str if_unmodified_since, weir_str if_none_match,
                            weir_str if_modified_since, bool get_or_head, weir_str etag,
                            time_t mtime)
{
    time_t d;
    if (if_match.ptr) {
        if (!list_matches(if_match, etag, true))
            return 412;
    } else if (weir_http_date_parse(if_unmodified_since, &d) && mtime > d) {
        return 412;
    }
    if (if_none_match.ptr) {
        if (list_matches(if_none_match, etag, false))
            return get_or_head ? 304 : 412;
    } else if (get_or_head && weir_http_date_parse(if_modified_since, &d) && mtime <= d) {
        return 304;
    }
    return 200;
}

bool weir__files_if_range(weir_str if_range, weir_str etag, time_t mtime)
{
    if (!if_range.ptr)
        return true;
    weir_str v = trim(if_range);
    if (v.len > 0 && (v.ptr[0] == '"' || (v.len >= 2 && v.ptr[0] == 'W' && v.ptr[1] == '/'))) {
        bool weak, eweak;
        weir_str op, eop;
        size_t i = 0;
        if (!etag_at(v, &i, &weak, &op) || i != v.len || weak)
            return false;
        return own_tag(etag, &eweak, &eop) && !eweak && op.len == eop.len &&
               memcmp(op.ptr, eop.ptr, op.len) == 0;
    }
    time_t d;
    return weir_http_date_parse(v, &d) && d == mtime;
}
