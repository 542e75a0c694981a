/*
 * test_chunked.c - chunked transfer-coding decoder.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1_parse.h"

/* What decoding a whole input produced. */
typedef struct decoded {
    ssize_t err;     /* 0, or the negative error */
    size_t consumed; /* bytes consumed before the end or the error */
    bool done;
    char *data; /* concatenated data segments */
    size_t data_len;
    char *trailers; /* concatenated trailer segments */
    size_t trailers_len;
    size_t n_segs;
} decoded;

/*
 * Feeds `in` to a fresh decoder, making `step` more bytes visible whenever
 * the decoder has consumed all it was shown, with room for `max_segs`
 * segments per call. Checks on the way that every segment lies inside the
 * bytes consumed by its call.
 */
static void decode(const char *in, size_t len, size_t step, size_t max_segs, decoded *out)
{
    weir_chunked_decoder d;
    weir_chunk_seg segs[16];
    size_t off = 0, end = step < len ? step : len;

    cr_assert_leq(max_segs, 16);
    memset(out, 0, sizeof(*out));
    out->data = malloc(len + 1);
    out->trailers = malloc(len + 1);
    cr_assert(out->data && out->trailers);
    weir_chunked_init(&d);

    for (;;) {
        size_t n = 99;
        ssize_t r = weir_chunked_decode(&d, in + off, end - off, segs, max_segs, &n);
        if (r < 0) {
            out->err = r;
            break;
        }
        cr_assert_leq((size_t)r, end - off);
        cr_assert_leq(n, max_segs);
        for (size_t i = 0; i < n; i++) {
            const char *p = segs[i].bytes.ptr;
            size_t l = segs[i].bytes.len;
            cr_assert(p >= in + off && p + l <= in + off + r, "segment outside consumed bytes");
            cr_assert_gt(l, 0);
            if (segs[i].kind == WEIR_CHUNK_DATA) {
                memcpy(out->data + out->data_len, p, l);
                out->data_len += l;
            } else {
                cr_assert_eq(segs[i].kind, WEIR_CHUNK_TRAILER);
                memcpy(out->trailers + out->trailers_len, p, l);
                out->trailers_len += l;
            }
        }
        out->n_segs += n;
        off += (size_t)r;
        if (d.done)
            break;
        if (off == end || (r == 0 && n == 0)) {
            if (end == len)
                break; /* incomplete */
            end = end + step < len ? end + step : len;
        }
    }
    out->consumed = off;
    out->done = d.done;

    /* once done, nothing more is consumed */
    if (d.done) {
        size_t n = 99;
        cr_assert_eq(weir_chunked_decode(&d, in + off, len - off, segs, max_segs, &n), 0);
        cr_assert_eq(n, 0);
    }
}

static void decoded_free(decoded *d)
{
    free(d->data);
    free(d->trailers);
}

#define S(lit) lit, sizeof(lit) - 1

static void assert_bytes(const char *got, size_t got_len, const char *want, size_t want_len)
{
    cr_assert_eq(got_len, want_len, "length %zu, want %zu", got_len, want_len);
    cr_assert(memcmp(got, want, want_len) == 0, "got \"%.*s\", want \"%.*s\"", (int)got_len, got,
              (int)want_len, want);
}

/* ---- valid bodies ----------------------------------------------------- */

Test(chunked, simple)
{
    decoded r;
    decode(S("5\r\nhello\r\n0\r\n\r\n"), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert(r.done);
    cr_assert_eq(r.consumed, 15);
    assert_bytes(r.data, r.data_len, S("hello"));
    cr_assert_eq(r.trailers_len, 0);
    cr_assert_eq(r.n_segs, 1);
    decoded_free(&r);
}

Test(chunked, empty_body)
{
    decoded r;
    decode(S("0\r\n\r\n"), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert(r.done);
    cr_assert_eq(r.consumed, 5);
    cr_assert_eq(r.n_segs, 0);
    decoded_free(&r);
}

Test(chunked, multiple_chunks_with_extensions)
{
    static const char in[] = "3;a=b\r\nabc\r\n"
                             "A ; foo = \"b\\\"a;r\" ;baz\r\n0123456789\r\n"
                             "001\t;\tx\t=\ttok\r\n!\r\n"
                             "f;e=\"\"\r\n0123456789abcde\r\n"
                             "000;last\r\n\r\n";
    decoded r;
    decode(S(in), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0, "err %zd", r.err);
    cr_assert(r.done);
    cr_assert_eq(r.consumed, sizeof(in) - 1);
    assert_bytes(r.data, r.data_len, S("abc0123456789!0123456789abcde"));
    decoded_free(&r);
}

Test(chunked, valid_extensions)
{
    static const char *const cases[] = {
        "1;a\r\nx\r\n0\r\n\r\n",          "1 ;a\r\nx\r\n0\r\n\r\n",
        "1; a\r\nx\r\n0\r\n\r\n",         "1;a=b\r\nx\r\n0\r\n\r\n",
        "1;a = b\r\nx\r\n0\r\n\r\n",      "1;a=b;c;d=\"e f\"\r\nx\r\n0\r\n\r\n",
        "1;a=\"\\\\\"\r\nx\r\n0\r\n\r\n", "1;a=\"\xe9\"\r\nx\r\n0\r\n\r\n",
        "1;a=\"x\" ;b\r\nx\r\n0\r\n\r\n", "1;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nx\r\n0\r\n\r\n",
        "1\r\nx\r\n0;end=1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        decoded r;
        decode(cases[i], strlen(cases[i]), 1 << 20, 16, &r);
        cr_assert_eq(r.err, 0, "case %zu (%s): err %zd", i, cases[i], r.err);
        cr_assert(r.done, "case %zu", i);
        assert_bytes(r.data, r.data_len, S("x"));
        decoded_free(&r);
    }
}

Test(chunked, hex_sizes)
{
    decoded r;
    decode(S("a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n"), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.data_len, 21);
    decoded_free(&r);

    /* 16 digits and INT64_MAX are fine: the data is just incomplete */
    decode(S("7fffffffffffffff\r\nabc"), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_not(r.done);
    cr_assert_eq(r.consumed, 21);
    assert_bytes(r.data, r.data_len, S("abc"));
    decoded_free(&r);

    decode(S("000000000000000F\r\n"), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.consumed, 18);
    decoded_free(&r);
}

Test(chunked, trailers)
{
    static const char in[] = "4\r\nwiki\r\n0\r\nX-Sum: abc\r\nEmpty:\r\nY:  z \t\r\n\r\n";
    decoded r;
    decode(S(in), 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0, "err %zd", r.err);
    cr_assert(r.done);
    cr_assert_eq(r.consumed, sizeof(in) - 1);
    assert_bytes(r.data, r.data_len, S("wiki"));
    assert_bytes(r.trailers, r.trailers_len, S("X-Sum: abc\r\nEmpty:\r\nY:  z \t\r\n"));
    cr_assert_eq(r.n_segs, 2); /* the data, then all trailer lines in one */
    decoded_free(&r);
}

Test(chunked, bytes_after_end_not_consumed)
{
    static const char in[] = "3\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    for (size_t step = 1; step <= sizeof(in); step++) {
        decoded r;
        decode(S(in), step, 16, &r);
        cr_assert_eq(r.err, 0);
        cr_assert(r.done);
        cr_assert_eq(r.consumed, sizeof(in) - 1 - 18, "step %zu: %zu", step, r.consumed);
        decoded_free(&r);
    }
}

Test(chunked, segment_array_full_returns_early)
{
    static const char in[] = "3\r\nabc\r\n3\r\ndef\r\n0\r\nT: v\r\n\r\n";
    weir_chunked_decoder d;
    weir_chunk_seg segs[1];
    size_t n;
    weir_chunked_init(&d);

    ssize_t r = weir_chunked_decode(&d, in, sizeof(in) - 1, segs, 1, &n);
    /* "abc" fills the array; framing up to the next data is still consumed */
    cr_assert_eq(r, 11);
    cr_assert_eq(n, 1);
    cr_assert_eq(segs[0].bytes.ptr, in + 3);
    cr_assert_eq(segs[0].bytes.len, 3);

    ssize_t r2 = weir_chunked_decode(&d, in + r, sizeof(in) - 1 - (size_t)r, segs, 1, &n);
    cr_assert_eq(r2, 8);
    cr_assert_eq(n, 1);
    cr_assert_eq(segs[0].bytes.ptr, in + 11);
    r += r2;

    r2 = weir_chunked_decode(&d, in + r, sizeof(in) - 1 - (size_t)r, segs, 1, &n);
    cr_assert_eq(r + r2, (ssize_t)sizeof(in) - 1);
    cr_assert_eq(n, 1);
    cr_assert_eq(segs[0].kind, WEIR_CHUNK_TRAILER);
    cr_assert_eq(segs[0].bytes.len, 6);
    cr_assert(d.done);

    /* no room at all: only framing is consumed */
    weir_chunked_init(&d);
    r = weir_chunked_decode(&d, in, sizeof(in) - 1, segs, 0, &n);
    cr_assert_eq(r, 3);
    cr_assert_eq(n, 0);
}

/* ---- every split gives the same result -------------------------------- */

static const struct {
    const char *in;
    size_t len;
} consistency_cases[] = {
    {S("5\r\nhello\r\n0\r\n\r\n")},
    {S("1;a=\"q\\\"\" ; b\r\nx\r\n10\r\n0123456789abcdef\r\n0\r\nA: b\r\nC:d\r\n\r\nextra")},
    {S("3\r\nabc\r\n0\r\nA: b\r\n c\r\n\r\n")},
    {S("3\r\nabc\n0\r\n\r\n")},
    {S("3\r\nabcd\r\n0\r\n\r\n")},
    {S("3;a=\"x\r\nabc\r\n0\r\n\r\n")},
    {S("12345678901234567\r\n")},
    {S("3\r\nabc\r\n0\r\nX: \x01\r\n\r\n")},
    {S("3\r\nab")},
};

Test(chunked, any_split_same_result)
{
    for (size_t c = 0; c < sizeof(consistency_cases) / sizeof(consistency_cases[0]); c++) {
        const char *in = consistency_cases[c].in;
        size_t len = consistency_cases[c].len;
        decoded whole;
        decode(in, len, len, 16, &whole);
        for (size_t step = 1; step < len; step++) {
            for (size_t max_segs = 1; max_segs <= 3; max_segs++) {
                decoded r;
                decode(in, len, step, max_segs, &r);
                cr_assert_eq(r.err, whole.err, "case %zu step %zu: %zd vs %zd", c, step, r.err,
                             whole.err);
                cr_assert_eq(r.done, whole.done);
                if (!r.err)
                    cr_assert_eq(r.consumed, whole.consumed, "case %zu step %zu", c, step);
                if (!r.err) { /* on error, a call's segments are dropped */
                    assert_bytes(r.data, r.data_len, whole.data, whole.data_len);
                    assert_bytes(r.trailers, r.trailers_len, whole.trailers, whole.trailers_len);
                }
                decoded_free(&r);
            }
        }
        decoded_free(&whole);
    }
}

/* ---- errors ----------------------------------------------------------- */

typedef struct bad_case {
    const char *in;
    size_t len;
    ssize_t err;
} bad_case;

#define BAD(lit, e)                                                                                \
    {                                                                                              \
        lit, sizeof(lit) - 1, e                                                                    \
    }

static const bad_case bad_bodies[] = {
    /* sizes */
    BAD("\r\n", WEIR_CHUNK_E_SIZE),
    BAD("\n", WEIR_CHUNK_E_SIZE),
    BAD("0x5\r\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_SIZE),
    BAD(" 5\r\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_SIZE),
    BAD("5 \r\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_SIZE),
    BAD("5\t\r\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_SIZE),
    BAD("+5\r\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_SIZE),
    BAD("-1\r\n", WEIR_CHUNK_E_SIZE),
    BAD("g\r\n", WEIR_CHUNK_E_SIZE),
    BAD("5g\r\n", WEIR_CHUNK_E_SIZE),
    BAD(";a\r\n", WEIR_CHUNK_E_SIZE),
    BAD("00000000000000005\r\nhello\r\n", WEIR_CHUNK_E_SIZE), /* 17 digits */
    BAD("10000000000000000\r\n", WEIR_CHUNK_E_SIZE),
    BAD("8000000000000000\r\n", WEIR_CHUNK_E_SIZE), /* 2^63 */
    BAD("ffffffffffffffff\r\n", WEIR_CHUNK_E_SIZE),
    BAD("5\r\nhello\r\n\r\n", WEIR_CHUNK_E_SIZE),
    /* CRLF */
    BAD("5\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5\rhello\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5;a\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5;a=b\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5;a=\"b\"\nhello\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5\r\nhelloX\r\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5\r\nhello0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5\r\nhello\n0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("5\r\nhello\r0\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("0\r\n\n", WEIR_CHUNK_E_CRLF),
    BAD("0\r\n\rX", WEIR_CHUNK_E_CRLF),
    BAD("0\n\r\n", WEIR_CHUNK_E_CRLF),
    /* extensions */
    BAD("5;\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5; \r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;=b\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a \r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a b\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=b c\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=b \r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\"x\"y\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\"x\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\"\x01\"\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\"\\\x01\"\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a=\x7f\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a(b\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a\0\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;;a\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    BAD("5;a==b\r\nhello\r\n", WEIR_CHUNK_E_EXT),
    /* trailers */
    BAD("0\r\nA: b\r\n c\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\n A: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA : b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA\t: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nAb\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\n: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA(: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA: b\0\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\n\0A: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA: \x01\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA: \x7f\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA: b\rc\r\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("0\r\nA\r: b\r\n\r\n", WEIR_CHUNK_E_TRAILER),
    BAD("0\r\nA: b\n\r\n", WEIR_CHUNK_E_CRLF),
    BAD("0\r\nA: b\r\n\n", WEIR_CHUNK_E_CRLF),
};

Test(chunked, malformed_table)
{
    for (size_t i = 0; i < sizeof(bad_bodies) / sizeof(bad_bodies[0]); i++) {
        for (size_t step = 1; step <= bad_bodies[i].len; step += bad_bodies[i].len - 1) {
            decoded r;
            decode(bad_bodies[i].in, bad_bodies[i].len, step, 16, &r);
            cr_assert_eq(r.err, bad_bodies[i].err, "case %zu (%s) step %zu: got %zd (%s)", i,
                         bad_bodies[i].in, step, r.err, weir_h1_strerror((int)r.err));
            decoded_free(&r);
            if (bad_bodies[i].len == 1)
                break;
        }
    }
}

Test(chunked, extension_length_is_bounded)
{
    size_t len = 0;
    char *in = malloc(8192);
    cr_assert_not_null(in);
    len += (size_t)sprintf(in, "1;a=");
    memset(in + len, 'x', 5000);
    len += 5000;
    len += (size_t)sprintf(in + len, "\r\nx\r\n0\r\n\r\n");
    decoded r;
    decode(in, len, 1 << 20, 16, &r);
    cr_assert_eq(r.err, WEIR_CHUNK_E_EXT);
    decoded_free(&r);

    /* a long but sane extension is fine */
    len = (size_t)sprintf(in, "1;a=");
    memset(in + len, 'x', 4000);
    len += 4000;
    len += (size_t)sprintf(in + len, "\r\nx\r\n0\r\n\r\n");
    decode(in, len, 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert(r.done);
    decoded_free(&r);
    free(in);
}

/* Builds "0\r\n" + trailer lines totalling exactly `trailer_bytes` + "\r\n". */
static char *make_trailers(size_t trailer_bytes, size_t *len)
{
    char *in = malloc(trailer_bytes + 16);
    cr_assert_not_null(in);
    size_t n = (size_t)sprintf(in, "0\r\n"), left = trailer_bytes;
    while (left) {
        /* one line "T: xxx\r\n" of at most 1000 bytes, at least 5 */
        size_t line = left > 1000 ? 1000 : left;
        if (left > 1000 && left - line < 5)
            line -= 5;
        memcpy(in + n, "T: ", 3);
        memset(in + n + 3, 'v', line - 5);
        memcpy(in + n + line - 2, "\r\n", 2);
        n += line;
        left -= line;
    }
    memcpy(in + n, "\r\n", 2);
    *len = n + 2;
    return in;
}

Test(chunked, trailer_section_limit)
{
    size_t len;
    char *in = make_trailers(16 * 1024, &len);
    decoded r;
    decode(in, len, 1 << 20, 16, &r);
    cr_assert_eq(r.err, 0);
    cr_assert(r.done);
    cr_assert_eq(r.trailers_len, 16 * 1024);
    decoded_free(&r);
    decode(in, len, 1, 1, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.trailers_len, 16 * 1024);
    decoded_free(&r);
    free(in);

    in = make_trailers(16 * 1024 + 1, &len);
    decode(in, len, 1 << 20, 16, &r);
    cr_assert_eq(r.err, WEIR_CHUNK_E_TRAILER);
    decoded_free(&r);
    free(in);
}

Test(chunked, large_body_bytewise)
{
    /* 64 chunks of growing size, fed one byte at a time */
    size_t cap = 1 << 20, len = 0, want = 0;
    char *in = malloc(cap);
    cr_assert_not_null(in);
    for (size_t i = 1; i <= 64; i++) {
        len += (size_t)sprintf(in + len, "%zx;i=%zu\r\n", i * 37, i);
        memset(in + len, (int)('a' + i % 26), i * 37);
        len += i * 37;
        want += i * 37;
        memcpy(in + len, "\r\n", 2);
        len += 2;
    }
    len += (size_t)sprintf(in + len, "0\r\n\r\n");
    decoded a, b;
    decode(in, len, len, 16, &a);
    decode(in, len, 1, 2, &b);
    cr_assert_eq(a.err, 0);
    cr_assert(a.done && b.done);
    cr_assert_eq(a.consumed, len);
    cr_assert_eq(b.consumed, len);
    assert_bytes(b.data, b.data_len, a.data, a.data_len);
    cr_assert_eq(a.data_len, want);
    decoded_free(&a);
    decoded_free(&b);
    free(in);
}
