/*
 * h1_fuzz.c - libFuzzer target for the HTTP/1.x head parsers, the framing
 * rules and the chunked decoder (src/http/h1_parse.c).
 *
 * Besides crashes and sanitizer reports it checks that incremental use
 * agrees with one-shot use: a head split in two (and fed byte by byte)
 * parses to the same result as the whole, and a chunked body decoded in one
 * go yields the same bytes as one decoded byte by byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "http/h1_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEADERS 32

static bool str_same(weir_str a, weir_str b)
{
    return a.ptr == b.ptr && a.len == b.len;
}

static void check_headers_inside(const weir_header *h, size_t n, const char *buf, int head_len)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i].name.len > 0);
        CHECK(h[i].name.ptr >= buf && h[i].name.ptr + h[i].name.len <= buf + head_len);
        CHECK(h[i].value.ptr >= buf && h[i].value.ptr + h[i].value.len <= buf + head_len);
    }
}

static void fuzz_request(const char *buf, size_t size, size_t split)
{
    weir_header h1[MAX_HEADERS], h2[MAX_HEADERS];
    weir_h1_request whole = {.headers = h1}, part = {.headers = h2};
    size_t scan = 0;

    int r = weir_h1_parse_request(buf, size, &whole, MAX_HEADERS, &scan);
    CHECK(r <= (int)size);

    /* split in two: a prefix, then everything with the same scan */
    size_t scan2 = 0;
    int r2 = weir_h1_parse_request(buf, split, &part, MAX_HEADERS, &scan2);
    if (r2 == WEIR_H1_INCOMPLETE)
        r2 = weir_h1_parse_request(buf, size, &part, MAX_HEADERS, &scan2);
    CHECK(r2 == r);

    /* and one byte at a time, for heads of a sane size */
    if (size <= 2048) {
        weir_h1_request bytewise = {.headers = h2};
        size_t scan3 = 0;
        int r3 = WEIR_H1_INCOMPLETE;
        for (size_t k = 1; k <= size && r3 == WEIR_H1_INCOMPLETE; k++)
            r3 = weir_h1_parse_request(buf, k, &bytewise, MAX_HEADERS, &scan3);
        CHECK(r3 == r);
    }
    if (r <= 0)
        return;

    CHECK(str_same(whole.method, part.method) && str_same(whole.target, part.target));
    CHECK(whole.n_headers == part.n_headers);
    CHECK(whole.minor_version == 0 || whole.minor_version == 1);
    CHECK(whole.method.len > 0 && whole.target.len > 0);
    check_headers_inside(whole.headers, whole.n_headers, buf, r);

    weir_h1_framing f;
    int fr = weir_h1_request_framing(&whole, &f);
    CHECK(fr == WEIR_OK || (fr <= WEIR_H1_E_CL_AND_TE && fr >= WEIR_H1_E_TE_HTTP10));
    if (fr == WEIR_OK) {
        CHECK(f.kind != WEIR_H1_BODY_CLOSE);
        CHECK(f.kind == WEIR_H1_BODY_LENGTH || f.content_length == 0);
    }
    for (size_t i = 0; i < whole.n_headers; i++)
        (void)weir_h1_list_has_token(whole.headers[i].value, "close");
}

static void fuzz_response(const char *buf, size_t size, size_t split)
{
    weir_header h1[MAX_HEADERS], h2[MAX_HEADERS];
    weir_h1_response whole = {.headers = h1}, part = {.headers = h2};
    size_t scan = 0, scan2 = 0;

    int r = weir_h1_parse_response(buf, size, &whole, MAX_HEADERS, &scan);
    int r2 = weir_h1_parse_response(buf, split, &part, MAX_HEADERS, &scan2);
    if (r2 == WEIR_H1_INCOMPLETE)
        r2 = weir_h1_parse_response(buf, size, &part, MAX_HEADERS, &scan2);
    CHECK(r2 == r);
    if (r <= 0)
        return;

    CHECK(whole.status >= 100 && whole.status <= 999);
    CHECK(str_same(whole.reason, part.reason));
    check_headers_inside(whole.headers, whole.n_headers, buf, r);

    static const weir_str methods[] = {WEIR_STR("GET"), WEIR_STR("HEAD"), WEIR_STR("CONNECT")};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        weir_h1_framing f;
        int fr = weir_h1_response_framing(&whole, methods[i], &f);
        CHECK(fr == WEIR_OK || fr == WEIR_H1_E_CL_INVALID || fr == WEIR_H1_E_CL_MULTIPLE);
        if (fr == WEIR_OK && f.kind == WEIR_H1_BODY_CLOSE)
            CHECK(!f.keep_alive);
    }
}

/* Result of decoding a whole chunked body. */
typedef struct chunk_sum {
    ssize_t err;
    size_t consumed;
    bool done;
    uint64_t data_len, trailer_len;
    uint64_t data_hash; /* FNV-1a over the data bytes, in order */
} chunk_sum;

static void sum_segs(const weir_chunk_seg *segs, size_t n, const char *lo, const char *hi,
                     chunk_sum *s)
{
    for (size_t i = 0; i < n; i++) {
        const weir_chunk_seg *g = &segs[i];
        CHECK(g->bytes.len > 0 && g->bytes.ptr >= lo && g->bytes.ptr + g->bytes.len <= hi);
        if (g->kind == WEIR_CHUNK_TRAILER) {
            s->trailer_len += g->bytes.len;
            continue;
        }
        CHECK(g->kind == WEIR_CHUNK_DATA);
        s->data_len += g->bytes.len;
        for (size_t j = 0; j < g->bytes.len; j++)
            s->data_hash = (s->data_hash ^ (uint8_t)g->bytes.ptr[j]) * 0x100000001b3ull;
    }
}

/* Decodes buf[0..size), showing the decoder `step` new bytes at a time. */
static void chunked_run(const char *buf, size_t size, size_t step, size_t max_segs, chunk_sum *s)
{
    weir_chunked_decoder d;
    weir_chunk_seg segs[8];
    size_t off = 0, end = step < size ? step : size;

    memset(s, 0, sizeof(*s));
    s->data_hash = 0xcbf29ce484222325ull;
    weir_chunked_init(&d);
    for (;;) {
        size_t n = 0;
        ssize_t r = weir_chunked_decode(&d, buf + off, end - off, segs, max_segs, &n);
        if (r < 0) {
            s->err = r;
            break;
        }
        CHECK((size_t)r <= end - off && n <= max_segs);
        sum_segs(segs, n, buf + off, buf + off + r, s);
        off += (size_t)r;
        if (d.done)
            break;
        if (off == end || (r == 0 && n == 0)) {
            if (end == size)
                break;
            end = end + step < size ? end + step : size;
        }
    }
    s->consumed = off;
    s->done = d.done;
    CHECK(s->trailer_len <= 16 * 1024);
}

static void fuzz_chunked(const char *buf, size_t size)
{
    chunk_sum whole, bytewise;
    chunked_run(buf, size, size ? size : 1, 8, &whole);
    chunked_run(buf, size, 1, 1, &bytewise);

    CHECK(whole.err == bytewise.err);
    CHECK(whole.done == bytewise.done);
    if (whole.err)
        return; /* the segments of a failing call are not reported */
    CHECK(whole.consumed == bytewise.consumed);
    CHECK(whole.data_len == bytewise.data_len);
    CHECK(whole.data_hash == bytewise.data_hash);
    CHECK(whole.trailer_len == bytewise.trailer_len);
    CHECK(whole.done || whole.consumed == size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that ASan catches any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);

    size_t split = size ? ((size_t)data[0] * 257u + data[size - 1]) % (size + 1) : 0;
    fuzz_request(buf, size, split);
    fuzz_response(buf, size, split);
    fuzz_chunked(buf, size);

    /* A chunked body behind a head, as the proxy sees it. */
    weir_header h[MAX_HEADERS];
    weir_h1_request req = {.headers = h};
    size_t scan = 0;
    int r = weir_h1_parse_request(buf, size, &req, MAX_HEADERS, &scan);
    if (r > 0)
        fuzz_chunked(buf + r, size - (size_t)r);

    free(buf);
    return 0;
}
