/*
 * test_codec.c - the streaming codecs (app/plugin/codec.h): round trips of
 * gzip/br/zstd at several levels fed in uneven pieces, FLUSH keeping a
 * stream decodable, the formats checked against the libraries' own one-shot
 * paths, the deflate decoder on zlib-wrapped and raw input, corrupt,
 * truncated and trailing input, the decompression-bomb guards, memory per
 * stream, and Accept-Encoding negotiation.
 */
#include <brotli/decode.h>
#include <brotli/encode.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "app/plugin/codec.h"

/* ---- helpers ---- */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        cr_assert(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void bytes_free(bytes *b)
{
    free(b->p);
    *b = (bytes){0};
}

/* Compressible text: lines of words and growing numbers. */
static uint8_t *make_text(size_t n)
{
    static const char *const words[] = {"weir ", "proxy ", "stream ", "gzip ", "brotli ",
                                        "zstd ", "body ",  "chunk ",  "\n"};
    uint8_t *p = malloc(n);
    cr_assert(p);
    size_t i = 0;
    unsigned k = 0;
    while (i < n) {
        char w[32];
        int l = k % 11 == 10 ? snprintf(w, sizeof(w), "%u ", k * 7919u)
                             : snprintf(w, sizeof(w), "%s", words[k % 9]);
        for (int j = 0; j < l && i < n; j++)
            p[i++] = (uint8_t)w[j];
        k++;
    }
    return p;
}

static uint8_t *make_random(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n);
    cr_assert(p);
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
    return p;
}

/*
 * Feeds in[0..len) to c in pieces of pieces[0], pieces[1], ... (cycling)
 * with `mode` each, then a last empty call with END if `end`; appends all
 * output to *out. Returns the first error (and stops), else WEIR_OK.
 */
static int feed(weir_codec *c, const uint8_t *in, size_t len, const size_t *pieces, size_t n_pieces,
                int mode, bool end, bytes *out)
{
    size_t off = 0, k = 0;
    weir_str o;
    while (off < len) {
        size_t n = pieces[k++ % n_pieces];
        if (n > len - off)
            n = len - off;
        int rc = weir__codec_run(c, in + off, n, mode, &o);
        if (rc != WEIR_OK)
            return rc;
        put(out, o.ptr, o.len);
        off += n;
    }
    if (end) {
        int rc = weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o);
        if (rc != WEIR_OK)
            return rc;
        put(out, o.ptr, o.len);
    }
    return WEIR_OK;
}

static bytes encode(weir_enc e, int level, const uint8_t *in, size_t len, const size_t *pieces,
                    size_t n_pieces)
{
    bytes out = {0};
    weir_codec *c = weir__codec_encoder(e, level);
    cr_assert(c, "encoder %s level %d", weir__enc_name(e), level);
    cr_assert_eq(feed(c, in, len, pieces, n_pieces, WEIR_CODEC_RUN, true, &out), WEIR_OK);
    weir__codec_free(c);
    return out;
}

/* Decodes in one go with pieces; *rc gets the result. */
static bytes decode(weir_enc e, const uint8_t *in, size_t len, const size_t *pieces,
                    size_t n_pieces, uint64_t max_output, int *rc)
{
    bytes out = {0};
    weir_codec *c = weir__codec_decoder(e, max_output);
    cr_assert(c);
    *rc = feed(c, in, len, pieces, n_pieces, WEIR_CODEC_RUN, true, &out);
    weir__codec_free(c);
    return out;
}

static const size_t whole[] = {SIZE_MAX};
static const size_t one[] = {1};

/* One compressed body in one call, END included. */
static bytes encode_whole(weir_enc e, int level, const uint8_t *in, size_t len)
{
    return encode(e, level, in, len, whole, 1);
}

static void assert_same(const bytes *got, const uint8_t *want, size_t len)
{
    cr_assert_eq(got->len, len, "length %zu, want %zu", got->len, len);
    cr_assert(len == 0 || memcmp(got->p, want, len) == 0, "content differs");
}

/* ---- round trips ---- */

typedef struct level_set {
    weir_enc enc;
    int levels[3];
} level_set;

static const level_set sets[] = {
    {WEIR_ENC_GZIP, {1, 6, 9}},
    {WEIR_ENC_BR, {0, 5, 11}},
    {WEIR_ENC_ZSTD, {1, 3, 19}},
};

static void round_trip(const uint8_t *data, size_t len)
{
    static const size_t enc_pieces[] = {1, 7, 16384, 3, 1000, 7, 65536};
    static const size_t dec_pieces[] = {5, 1, 4096, 13, 7};
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        for (int l = 0; l < 3; l++) {
            weir_enc e = sets[s].enc;
            bytes z = encode(e, sets[s].levels[l], data, len, enc_pieces, 7);
            int rc;
            bytes d = decode(e, z.p, z.len, dec_pieces, 5, 0, &rc);
            cr_assert_eq(rc, WEIR_OK, "%s level %d: %d", weir__enc_name(e), sets[s].levels[l], rc);
            assert_same(&d, data, len);
            bytes_free(&d);
            /* the same stream a byte at a time */
            d = decode(e, z.p, z.len, one, 1, 0, &rc);
            cr_assert_eq(rc, WEIR_OK);
            assert_same(&d, data, len);
            bytes_free(&d);
            bytes_free(&z);
        }
    }
}

Test(codec, round_trip_text_in_uneven_pieces)
{
    size_t len = 300 << 10;
    uint8_t *t = make_text(len);
    round_trip(t, len);
    free(t);
}

Test(codec, round_trip_random_in_uneven_pieces)
{
    size_t len = 100 << 10;
    uint8_t *r = make_random(len, 42);
    round_trip(r, len);
    free(r);
}

/* An encoder may hold back much of its input and write it at once: brotli
 * at quality 4 wrote over 1 MiB of incompressible input after a 1 KiB
 * piece, which a per-call output cap refused (a flaky 502 mid-body under
 * load in test_compression). Every encoder, small pieces, 3 MiB. */
Test(codec, encoder_bursts_are_not_capped)
{
    size_t len = 3u << 20;
    uint8_t *r = make_random(len, 7);
    static const size_t small[] = {1000, 16384, 50000};
    static const level_set burst[] = {
        {WEIR_ENC_BR, {4, 5, 1}}, {WEIR_ENC_GZIP, {6, 1, 9}}, {WEIR_ENC_ZSTD, {3, 1, 19}}};
    for (size_t s = 0; s < 3; s++) {
        for (size_t p = 0; p < 3; p++) {
            bytes z = encode(burst[s].enc, burst[s].levels[0], r, len, &small[p], 1);
            int rc;
            bytes d = decode(burst[s].enc, z.p, z.len, whole, 1, 0, &rc);
            cr_assert_eq(rc, WEIR_OK);
            assert_same(&d, r, len);
            bytes_free(&d);
            bytes_free(&z);
        }
    }
    free(r);
}

Test(codec, round_trip_one_byte_pieces)
{
    size_t len = 20 << 10;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        bytes z = encode(sets[s].enc, sets[s].levels[1], t, len, one, 1);
        int rc;
        bytes d = decode(sets[s].enc, z.p, z.len, whole, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_OK);
        assert_same(&d, t, len);
        bytes_free(&d);
        bytes_free(&z);
    }
    free(t);
}

Test(codec, empty_body_round_trips)
{
    for (size_t s = 0; s < 3; s++) {
        bytes z = encode_whole(sets[s].enc, sets[s].levels[0], NULL, 0);
        cr_assert_gt(z.len, 0, "an empty stream still has a header and trailer");
        int rc;
        bytes d = decode(sets[s].enc, z.p, z.len, whole, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_OK);
        cr_assert_eq(d.len, 0);
        bytes_free(&d);
        bytes_free(&z);
    }
}

Test(codec, end_may_carry_the_last_input)
{
    size_t len = 50000;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        weir_codec *c = weir__codec_encoder(sets[s].enc, sets[s].levels[1]);
        bytes z = {0};
        weir_str o;
        cr_assert_eq(weir__codec_run(c, t, 1000, WEIR_CODEC_RUN, &o), WEIR_OK);
        put(&z, o.ptr, o.len);
        cr_assert_eq(weir__codec_run(c, t + 1000, len - 1000, WEIR_CODEC_END, &o), WEIR_OK);
        put(&z, o.ptr, o.len);
        weir__codec_free(c);
        /* decoded with END on the last piece too */
        c = weir__codec_decoder(sets[s].enc, 0);
        bytes d = {0};
        cr_assert_eq(weir__codec_run(c, z.p, z.len / 2, WEIR_CODEC_RUN, &o), WEIR_OK);
        put(&d, o.ptr, o.len);
        cr_assert_eq(weir__codec_run(c, z.p + z.len / 2, z.len - z.len / 2, WEIR_CODEC_END, &o),
                     WEIR_OK);
        put(&d, o.ptr, o.len);
        assert_same(&d, t, len);
        weir__codec_free(c);
        bytes_free(&d);
        bytes_free(&z);
    }
    free(t);
}

/* ---- FLUSH ---- */

/* After each FLUSH, what was output so far decodes to all input so far
 * (server-sent events stay live), with one streaming decoder fed as the
 * output comes, and with a fresh decoder on everything so far. */
Test(codec, flush_makes_all_input_so_far_decodable)
{
    for (size_t s = 0; s < 3; s++) {
        for (int l = 0; l < 3; l++) {
            weir_enc e = sets[s].enc;
            weir_codec *enc = weir__codec_encoder(e, sets[s].levels[l]);
            weir_codec *dec = weir__codec_decoder(e, 0);
            cr_assert(enc && dec);
            bytes in = {0}, z = {0}, d = {0};
            weir_str o;
            for (int ev = 0; ev < 40; ev++) {
                char line[96];
                int n = snprintf(line, sizeof(line), "event: tick\ndata: {\"n\": %d}\n\n", ev);
                put(&in, line, (size_t)n);
                /* an uneven split: RUN then FLUSH */
                cr_assert_eq(weir__codec_run(enc, line, 5, WEIR_CODEC_RUN, &o), WEIR_OK);
                put(&z, o.ptr, o.len);
                size_t zl = o.len;
                cr_assert_eq(weir__codec_run(enc, line + 5, (size_t)n - 5, WEIR_CODEC_FLUSH, &o),
                             WEIR_OK);
                put(&z, o.ptr, o.len);
                zl += o.len;
                cr_assert_gt(zl, 0, "a flush outputs something");
                cr_assert_eq(weir__codec_run(dec, z.p + z.len - zl, zl, WEIR_CODEC_RUN, &o),
                             WEIR_OK);
                put(&d, o.ptr, o.len);
                assert_same(&d, in.p, in.len);
                if (ev % 8 == 0) {
                    int rc;
                    /* a fresh decoder on all so far: complete up to here,
                     * only the end is missing */
                    weir_codec *f = weir__codec_decoder(e, 0);
                    bytes fd = {0};
                    rc = feed(f, z.p, z.len, whole, 1, WEIR_CODEC_FLUSH, false, &fd);
                    cr_assert_eq(rc, WEIR_OK);
                    assert_same(&fd, in.p, in.len);
                    cr_assert_eq(weir__codec_run(f, NULL, 0, WEIR_CODEC_END, &o), WEIR_ERR_INVAL,
                                 "the stream is not ended yet");
                    weir__codec_free(f);
                    bytes_free(&fd);
                }
            }
            /* a second flush with nothing new is harmless */
            cr_assert_eq(weir__codec_run(enc, NULL, 0, WEIR_CODEC_FLUSH, &o), WEIR_OK);
            put(&z, o.ptr, o.len);
            cr_assert_eq(weir__codec_run(dec, o.ptr, o.len, WEIR_CODEC_RUN, &o), WEIR_OK);
            cr_assert_eq(o.len, 0);
            size_t before = z.len;
            cr_assert_eq(weir__codec_run(enc, NULL, 0, WEIR_CODEC_END, &o), WEIR_OK);
            put(&z, o.ptr, o.len);
            cr_assert_eq(weir__codec_run(dec, z.p + before, z.len - before, WEIR_CODEC_END, &o),
                         WEIR_OK);
            cr_assert_eq(o.len, 0);
            weir__codec_free(enc);
            weir__codec_free(dec);
            bytes_free(&in);
            bytes_free(&z);
            bytes_free(&d);
        }
    }
}

/* ---- the formats, against the libraries' own paths ---- */

static bytes zlib_inflate(int window_bits, const uint8_t *in, size_t len, int *zrc)
{
    z_stream z = {0};
    cr_assert_eq(inflateInit2(&z, window_bits), Z_OK);
    bytes out = {0};
    uint8_t chunk[16384];
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    do {
        z.next_out = chunk;
        z.avail_out = sizeof(chunk);
        *zrc = inflate(&z, Z_NO_FLUSH);
        put(&out, chunk, sizeof(chunk) - z.avail_out);
    } while (*zrc == Z_OK);
    inflateEnd(&z);
    return out;
}

static bytes zlib_deflate(int window_bits, const uint8_t *in, size_t len)
{
    z_stream z = {0};
    cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    bytes out = {0};
    uint8_t chunk[16384];
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    int zrc;
    do {
        z.next_out = chunk;
        z.avail_out = sizeof(chunk);
        zrc = deflate(&z, Z_FINISH);
        put(&out, chunk, sizeof(chunk) - z.avail_out);
    } while (zrc == Z_OK);
    cr_assert_eq(zrc, Z_STREAM_END);
    deflateEnd(&z);
    return out;
}

Test(codec, gzip_output_is_gzip_for_zlib)
{
    size_t len = 200000;
    uint8_t *t = make_text(len);
    bytes z = encode_whole(WEIR_ENC_GZIP, 6, t, len);
    cr_assert(z.len > 18 && z.p[0] == 0x1f && z.p[1] == 0x8b && z.p[2] == 8, "gzip magic");
    int zrc;
    bytes d = zlib_inflate(15 + 16, z.p, z.len, &zrc); /* gzip only */
    cr_assert_eq(zrc, Z_STREAM_END);
    assert_same(&d, t, len);
    bytes_free(&d);
    d = zlib_inflate(31, z.p, z.len, &zrc);
    cr_assert_eq(zrc, Z_STREAM_END);
    assert_same(&d, t, len);
    bytes_free(&d);
    bytes_free(&z);
    free(t);
}

Test(codec, br_and_zstd_output_decode_with_the_libraries)
{
    size_t len = 200000;
    uint8_t *t = make_text(len);
    uint8_t *back = malloc(len + 1);
    bytes z = encode_whole(WEIR_ENC_BR, 9, t, len);
    size_t bl = len + 1;
    cr_assert_eq(BrotliDecoderDecompress(z.len, z.p, &bl, back), BROTLI_DECODER_RESULT_SUCCESS);
    cr_assert_eq(bl, len);
    cr_assert_eq(memcmp(back, t, len), 0);
    bytes_free(&z);
    z = encode_whole(WEIR_ENC_ZSTD, 3, t, len);
    size_t zl = ZSTD_decompress(back, len + 1, z.p, z.len);
    cr_assert(!ZSTD_isError(zl), "%s", ZSTD_getErrorName(zl));
    cr_assert_eq(zl, len);
    cr_assert_eq(memcmp(back, t, len), 0);
    bytes_free(&z);
    free(back);
    free(t);
}

Test(codec, decoders_take_the_libraries_output)
{
    size_t len = 100000;
    uint8_t *t = make_text(len);
    int rc;
    /* gzip decoder: gzip and zlib wrappers */
    int wraps[] = {15 + 16, 15};
    for (int i = 0; i < 2; i++) {
        bytes z = zlib_deflate(wraps[i], t, len);
        bytes d = decode(WEIR_ENC_GZIP, z.p, z.len, one, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_OK, "window bits %d", wraps[i]);
        assert_same(&d, t, len);
        bytes_free(&d);
        bytes_free(&z);
    }
    /* br at brotli's default window (22, larger than the encoder's) */
    size_t cap = BrotliEncoderMaxCompressedSize(len);
    bytes z = {malloc(cap), cap, cap};
    cr_assert(BrotliEncoderCompress(11, 22, BROTLI_MODE_TEXT, len, t, &z.len, z.p));
    bytes d = decode(WEIR_ENC_BR, z.p, z.len, whole, 1, 0, &rc);
    cr_assert_eq(rc, WEIR_OK);
    assert_same(&d, t, len);
    bytes_free(&d);
    bytes_free(&z);
    /* zstd, with its content size in the frame header */
    cap = ZSTD_compressBound(len);
    z = (bytes){malloc(cap), 0, cap};
    z.len = ZSTD_compress(z.p, cap, t, len, 19);
    cr_assert(!ZSTD_isError(z.len));
    d = decode(WEIR_ENC_ZSTD, z.p, z.len, one, 1, 0, &rc);
    cr_assert_eq(rc, WEIR_OK);
    assert_same(&d, t, len);
    bytes_free(&d);
    bytes_free(&z);
    free(t);
}

Test(codec, deflate_decoder_takes_zlib_wrapped_and_raw)
{
    size_t len = 70000;
    uint8_t *t = make_text(len);
    static const size_t pieces[] = {1, 1, 1, 500, 3};
    int wraps[] = {15, -15, -9, 9};
    for (int i = 0; i < 4; i++) {
        bytes z = zlib_deflate(wraps[i], t, len);
        int rc;
        bytes d = decode(WEIR_ENC_DEFLATE, z.p, z.len, pieces, 5, 0, &rc);
        cr_assert_eq(rc, WEIR_OK, "window bits %d: %d", wraps[i], rc);
        assert_same(&d, t, len);
        bytes_free(&d);
        d = decode(WEIR_ENC_DEFLATE, z.p, z.len, whole, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_OK);
        assert_same(&d, t, len);
        bytes_free(&d);
        bytes_free(&z);
    }
    /* the shortest raw stream: an empty final fixed block */
    int rc;
    bytes d = decode(WEIR_ENC_DEFLATE, (const uint8_t *)"\x03\x00", 2, whole, 1, 0, &rc);
    cr_assert_eq(rc, WEIR_OK);
    cr_assert_eq(d.len, 0);
    bytes_free(&d);
    /* a gzip stream is not deflate */
    bytes z = zlib_deflate(15 + 16, t, 1000);
    d = decode(WEIR_ENC_DEFLATE, z.p, z.len, whole, 1, 0, &rc);
    cr_assert_eq(rc, WEIR_ERR_INVAL);
    bytes_free(&d);
    bytes_free(&z);
    free(t);
}

/* ---- bad arguments, corrupt, truncated and trailing input ---- */

Test(codec, bad_arguments_give_null_or_inval)
{
    cr_assert_null(weir__codec_encoder(WEIR_ENC_GZIP, 0));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_GZIP, 10));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_BR, -1));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_BR, 12));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_ZSTD, 0));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_ZSTD, 20));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_DEFLATE, 6));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_IDENTITY, 1));
    cr_assert_null(weir__codec_encoder(WEIR_ENC_COUNT, 1));
    cr_assert_null(weir__codec_decoder(WEIR_ENC_IDENTITY, 0));
    cr_assert_null(weir__codec_decoder(WEIR_ENC_COUNT, 0));
    cr_assert_null(weir__codec_decoder((weir_enc)-1, 0));
    weir__codec_free(NULL);

    weir_codec *c = weir__codec_encoder(WEIR_ENC_GZIP, 1);
    weir_str o = {"x", 1};
    cr_assert_eq(weir__codec_run(c, NULL, 3, WEIR_CODEC_RUN, &o), WEIR_ERR_INVAL);
    cr_assert_null(o.ptr);
    weir__codec_free(c);
    c = weir__codec_encoder(WEIR_ENC_GZIP, 1);
    cr_assert_eq(weir__codec_run(c, "x", 1, 7, &o), WEIR_ERR_INVAL);
    weir__codec_free(c);
    cr_assert_eq(weir__codec_run(NULL, "x", 1, WEIR_CODEC_RUN, &o), WEIR_ERR_INVAL);
}

Test(codec, calls_after_end_or_an_error_are_refused)
{
    for (size_t s = 0; s < 3; s++) {
        weir_codec *c = weir__codec_encoder(sets[s].enc, sets[s].levels[0]);
        weir_str o;
        cr_assert_eq(weir__codec_run(c, "abc", 3, WEIR_CODEC_END, &o), WEIR_OK);
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_ERR_INVAL);
        cr_assert_eq(weir__codec_run(c, "d", 1, WEIR_CODEC_RUN, &o), WEIR_ERR_INVAL);
        weir__codec_free(c);
        c = weir__codec_decoder(sets[s].enc, 0);
        cr_assert_neq(weir__codec_run(c, "\xff\xff\xff\xff\xff\xff", 6, WEIR_CODEC_RUN, &o),
                      WEIR_OK);
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_ERR_INVAL);
        weir__codec_free(c);
    }
}

/* Decodes z with the last `cut` bytes removed: INVAL at END, not before. */
static void assert_truncated_refused(weir_enc e, const bytes *z, size_t cut)
{
    weir_codec *c = weir__codec_decoder(e, 0);
    weir_str o;
    cr_assert_eq(weir__codec_run(c, z->p, z->len - cut, WEIR_CODEC_RUN, &o), WEIR_OK);
    cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_ERR_INVAL, "%s cut by %zu",
                 weir__enc_name(e), cut);
    weir__codec_free(c);
}

Test(codec, truncated_stream_is_refused_at_end)
{
    size_t len = 40000;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        bytes z = encode_whole(sets[s].enc, sets[s].levels[1], t, len);
        assert_truncated_refused(sets[s].enc, &z, 1);
        assert_truncated_refused(sets[s].enc, &z, 4);
        assert_truncated_refused(sets[s].enc, &z, z.len / 2);
        assert_truncated_refused(sets[s].enc, &z, z.len); /* nothing at all */
        bytes_free(&z);
    }
    bytes z = zlib_deflate(-15, t, len);
    assert_truncated_refused(WEIR_ENC_DEFLATE, &z, 3);
    assert_truncated_refused(WEIR_ENC_DEFLATE, &z, z.len - 1); /* one byte: still probing */
    bytes_free(&z);
    free(t);
}

Test(codec, corrupt_stream_is_refused)
{
    size_t len = 40000;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        weir_enc e = sets[s].enc;
        bytes z = encode_whole(e, sets[s].levels[1], t, len);
        /* a damaged body, and a damaged trailer (gzip CRC-32 and length,
         * zstd content checksum) */
        size_t at[] = {z.len / 2, z.len - 2};
        for (int i = 0; i < 2; i++) {
            if (e == WEIR_ENC_BR && i == 1)
                continue; /* no checksum in brotli: its last bytes may be padding */
            z.p[at[i]] ^= 0x55;
            int rc;
            bytes d = decode(e, z.p, z.len, whole, 1, 0, &rc);
            cr_assert_eq(rc, WEIR_ERR_INVAL, "%s damaged at %zu: %d", weir__enc_name(e), at[i], rc);
            bytes_free(&d);
            z.p[at[i]] ^= 0x55;
        }
        bytes_free(&z);
        int rc;
        bytes d = decode(e, (const uint8_t *)"this is not compressed", 22, whole, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_ERR_INVAL, "%s", weir__enc_name(e));
        bytes_free(&d);
    }
    free(t);
}

Test(codec, data_after_the_end_is_refused)
{
    size_t len = 10000;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        weir_enc e = sets[s].enc;
        bytes z = encode_whole(e, sets[s].levels[1], t, len);
        /* garbage in the same call */
        bytes g = {0};
        put(&g, z.p, z.len);
        put(&g, "X", 1);
        int rc;
        bytes d = decode(e, g.p, g.len, whole, 1, 0, &rc);
        cr_assert_eq(rc, WEIR_ERR_INVAL, "%s: %d", weir__enc_name(e), rc);
        bytes_free(&d);
        /* a second stream in a later call */
        weir_codec *c = weir__codec_decoder(e, 0);
        weir_str o;
        cr_assert_eq(weir__codec_run(c, z.p, z.len, WEIR_CODEC_RUN, &o), WEIR_OK);
        cr_assert_eq(o.len, len);
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_FLUSH, &o), WEIR_OK,
                     "empty calls after the end are fine");
        int rc2 = weir__codec_run(c, z.p, z.len, WEIR_CODEC_RUN, &o);
        cr_assert_eq(rc2, WEIR_ERR_INVAL, "%s: %d", weir__enc_name(e), rc2);
        weir__codec_free(c);
        /* ended, then END with no input */
        c = weir__codec_decoder(e, 0);
        cr_assert_eq(weir__codec_run(c, z.p, z.len, WEIR_CODEC_RUN, &o), WEIR_OK);
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_OK);
        weir__codec_free(c);
        bytes_free(&g);
        bytes_free(&z);
    }
    free(t);
}

/* ---- decompression bombs and the per-call cap ---- */

static bytes zeros_compressed(weir_enc e, size_t n)
{
    uint8_t *zeros = calloc(1, n);
    bytes z = encode_whole(e, e == WEIR_ENC_BR ? 5 : 6, zeros, n);
    free(zeros);
    return z;
}

Test(codec, bomb_stops_at_max_output)
{
    size_t ten = 10u << 20, mib = 1u << 20;
    for (size_t s = 0; s < 3; s++) {
        weir_enc e = sets[s].enc;
        bytes z = zeros_compressed(e, ten);
        cr_assert_lt(z.len, 64 << 10);
        /* pieces so small that no call reaches the per-call cap */
        static const size_t tiny[] = {16};
        weir_codec *c = weir__codec_decoder(e, mib);
        bytes d = {0};
        int rc = feed(c, z.p, z.len, tiny, 1, WEIR_CODEC_RUN, true, &d);
        cr_assert_eq(rc, WEIR_CODEC_E_TOO_LARGE, "%s: %d", weir__enc_name(e), rc);
        cr_assert_leq(d.len, mib, "never past max_output");
        weir_str o;
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_ERR_INVAL);
        weir__codec_free(c);
        bytes_free(&d);
        /* unlimited and in small pieces, gzip and zstd decode; brotli packs
         * more than 1 MiB of zeros into 16 bytes, so the per-call cap
         * stops it anyway */
        c = weir__codec_decoder(e, 0);
        rc = feed(c, z.p, z.len, tiny, 1, WEIR_CODEC_RUN, true, &d);
        if (e == WEIR_ENC_BR) {
            cr_assert_eq(rc, WEIR_CODEC_E_TOO_LARGE, "%s: %d", weir__enc_name(e), rc);
        } else {
            cr_assert_eq(rc, WEIR_OK, "%s: %d", weir__enc_name(e), rc);
            cr_assert_eq(d.len, ten);
        }
        weir__codec_free(c);
        bytes_free(&d);
        /* all at once: more than max(1 MiB, 64 * in_len) from one call */
        cr_assert_lt(z.len * 64, mib);
        c = weir__codec_decoder(e, 0);
        o = (weir_str){"x", 1};
        cr_assert_eq(weir__codec_run(c, z.p, z.len, WEIR_CODEC_RUN, &o), WEIR_CODEC_E_TOO_LARGE);
        cr_assert_eq(o.len, 0);
        weir__codec_free(c);
        bytes_free(&z);
    }
}

Test(codec, max_output_is_inclusive)
{
    size_t len = 30000;
    uint8_t *t = make_text(len);
    for (size_t s = 0; s < 3; s++) {
        weir_enc e = sets[s].enc;
        bytes z = encode_whole(e, sets[s].levels[1], t, len);
        static const size_t pieces[] = {100};
        int rc;
        bytes d = decode(e, z.p, z.len, pieces, 1, len, &rc);
        cr_assert_eq(rc, WEIR_OK);
        assert_same(&d, t, len);
        bytes_free(&d);
        d = decode(e, z.p, z.len, pieces, 1, len - 1, &rc);
        cr_assert_eq(rc, WEIR_CODEC_E_TOO_LARGE);
        cr_assert_lt(d.len, len);
        bytes_free(&d);
        bytes_free(&z);
    }
    free(t);
}

Test(codec, per_call_cap_grows_with_the_input)
{
    /* 4 MiB that deflate squeezes about 30 times: over 1 MiB from one call,
     * but under 64 times the call's input */
    size_t n = 4u << 20;
    uint8_t *r = make_random(n / 40 + 1, 9), *v = calloc(1, n);
    for (size_t i = 0; i < n; i += 40)
        v[i] = r[i / 40];
    bytes z = encode_whole(WEIR_ENC_GZIP, 6, v, n);
    cr_assert(z.len * 64 > n && z.len < n / 16, "ratio %zu", n / z.len);
    weir_codec *c = weir__codec_decoder(WEIR_ENC_GZIP, 0);
    weir_str o;
    cr_assert_eq(weir__codec_run(c, z.p, z.len, WEIR_CODEC_END, &o), WEIR_OK);
    cr_assert_eq(o.len, n);
    cr_assert_eq(memcmp(o.ptr, v, n), 0);
    weir__codec_free(c);
    bytes_free(&z);
    /* an encoder is under the same cap, far from it */
    c = weir__codec_encoder(WEIR_ENC_ZSTD, 1);
    cr_assert_eq(weir__codec_run(c, v, n, WEIR_CODEC_END, &o), WEIR_OK);
    cr_assert_lt(o.len, n / 16);
    weir__codec_free(c);
    free(v);
    free(r);
}

Test(codec, zstd_window_over_the_decoder_bound_is_too_large)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, 24);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1);
    uint8_t out[256];
    /* "abc" first without the end, so that the size is not known and the
     * frame header keeps the 16 MiB window */
    ZSTD_inBuffer ib = {"abc", 3, 0};
    ZSTD_outBuffer ob = {out, sizeof(out), 0};
    cr_assert(!ZSTD_isError(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_continue)));
    cr_assert_eq(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end), 0);
    ZSTD_freeCCtx(cc);
    weir_codec *c = weir__codec_decoder(WEIR_ENC_ZSTD, 0);
    weir_str o;
    cr_assert_eq(weir__codec_run(c, out, ob.pos, WEIR_CODEC_END, &o), WEIR_CODEC_E_TOO_LARGE);
    weir__codec_free(c);
}

/* ---- memory ---- */

/* The bounds in codec.h (the library's state), plus the output buffer and
 * some slack; measured on 1 MiB of text in 16 KiB pieces, decoded in 4 KiB
 * pieces. */
Test(codec, memory_per_stream_is_bounded)
{
    size_t len = 1u << 20;
    uint8_t *t = make_text(len);
    struct {
        weir_enc e;
        int level;
        size_t enc_kib, dec_kib;
    } cases[] = {
        {WEIR_ENC_GZIP, 1, 320, 128},     {WEIR_ENC_GZIP, 9, 320, 128},
        {WEIR_ENC_BR, 0, 256, 1280},      {WEIR_ENC_BR, 1, 256, 1280},
        {WEIR_ENC_BR, 4, 5120, 1280},     {WEIR_ENC_BR, 5, 6144, 1280},
        {WEIR_ENC_BR, 6, 7168, 1280},     {WEIR_ENC_BR, 9, 40960, 1280},
        {WEIR_ENC_BR, 11, 12288, 1280},   {WEIR_ENC_ZSTD, 1, 2048, 2048},
        {WEIR_ENC_ZSTD, 3, 3072, 2048},   {WEIR_ENC_ZSTD, 9, 15360, 2048},
        {WEIR_ENC_ZSTD, 19, 20480, 2048},
    };
    static const size_t pieces[] = {16384};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        weir_codec *c = weir__codec_encoder(cases[i].e, cases[i].level);
        size_t peak = 0, off = 0;
        bytes z = {0};
        weir_str o;
        while (off < len) {
            cr_assert_eq(weir__codec_run(c, t + off, pieces[0], WEIR_CODEC_RUN, &o), WEIR_OK);
            put(&z, o.ptr, o.len);
            off += pieces[0];
            size_t m = weir__codec_mem(c);
            peak = m > peak ? m : peak;
        }
        cr_assert_eq(weir__codec_run(c, NULL, 0, WEIR_CODEC_END, &o), WEIR_OK);
        put(&z, o.ptr, o.len);
        cr_expect_leq(peak >> 10, cases[i].enc_kib, "%s %d encoder: %zu KiB",
                      weir__enc_name(cases[i].e), cases[i].level, peak >> 10);
        weir__codec_free(c);
        c = weir__codec_decoder(cases[i].e, 0);
        peak = 0;
        off = 0;
        while (off < z.len) {
            size_t n = z.len - off < 4096 ? z.len - off : 4096;
            cr_assert_eq(weir__codec_run(c, z.p + off, n, WEIR_CODEC_RUN, &o), WEIR_OK);
            off += n;
            size_t m = weir__codec_mem(c);
            peak = m > peak ? m : peak;
        }
        cr_expect_leq(peak >> 10, cases[i].dec_kib, "%s %d decoder: %zu KiB",
                      weir__enc_name(cases[i].e), cases[i].level, peak >> 10);
        weir__codec_free(c);
        bytes_free(&z);
    }
    free(t);
}

Test(codec, a_big_buffer_is_cut_back)
{
    size_t n = 4u << 20;
    uint8_t *r = make_random(n, 7);
    weir_codec *c = weir__codec_encoder(WEIR_ENC_GZIP, 1);
    weir_str o;
    size_t before = weir__codec_mem(c);
    cr_assert_eq(weir__codec_run(c, r, n, WEIR_CODEC_RUN, &o), WEIR_OK);
    cr_assert_eq(weir__codec_run(c, r, n, WEIR_CODEC_FLUSH, &o), WEIR_OK);
    size_t big = weir__codec_mem(c);
    cr_assert_gt(big, before + (2u << 20), "random input needs a big buffer");
    cr_assert_eq(weir__codec_run(c, "x", 1, WEIR_CODEC_RUN, &o), WEIR_OK);
    cr_assert_lt(weir__codec_mem(c), before + (128u << 10));
    weir__codec_free(c);
    free(r);
}

/* ---- codings and Accept-Encoding ---- */

Test(enc, names_and_tokens)
{
    cr_assert_eq(weir__enc_of("gzip", 4), WEIR_ENC_GZIP);
    cr_assert_eq(weir__enc_of("GZip", 4), WEIR_ENC_GZIP);
    cr_assert_eq(weir__enc_of("X-GZIP", 6), WEIR_ENC_GZIP);
    cr_assert_eq(weir__enc_of("br", 2), WEIR_ENC_BR);
    cr_assert_eq(weir__enc_of("ZSTD", 4), WEIR_ENC_ZSTD);
    cr_assert_eq(weir__enc_of("deflate", 7), WEIR_ENC_DEFLATE);
    cr_assert_eq(weir__enc_of("Identity", 8), WEIR_ENC_IDENTITY);
    cr_assert_eq(weir__enc_of("gzipx", 4), WEIR_ENC_GZIP, "length-delimited");
    cr_assert_eq(weir__enc_of("gzip", 3), -1);
    cr_assert_eq(weir__enc_of("compress", 8), -1);
    cr_assert_eq(weir__enc_of("", 0), -1);
    cr_assert_eq(weir__enc_of(NULL, 0), -1);
    cr_assert_eq(weir__enc_of("*", 1), -1);
    for (int e = 0; e < WEIR_ENC_COUNT; e++) {
        const char *n = weir__enc_name((weir_enc)e);
        cr_assert(n);
        cr_assert_eq(weir__enc_of(n, strlen(n)), e);
    }
    cr_assert_str_eq(weir__enc_name(WEIR_ENC_GZIP), "gzip");
    cr_assert_str_eq(weir__enc_name(WEIR_ENC_BR), "br");
    cr_assert_null(weir__enc_name(WEIR_ENC_COUNT));
    cr_assert_null(weir__enc_name((weir_enc)-1));
}

#define G WEIR_ENC_GZIP
#define B WEIR_ENC_BR
#define Z WEIR_ENC_ZSTD
#define D WEIR_ENC_DEFLATE
#define I WEIR_ENC_IDENTITY

typedef struct ae_case {
    const char *ae; /* NULL: the field is absent */
    weir_enc prefs[5];
    size_t n;
    weir_enc want;
} ae_case;

static const ae_case ae_cases[] = {
    {NULL, {G, B, Z}, 3, I},
    {"", {G, B, Z}, 3, I},
    {"gzip", {Z, B, G}, 3, G},
    {"GZIP", {Z, B, G}, 3, G},
    {"x-gzip", {Z, B, G}, 3, G},
    {"X-Gzip", {B, G}, 2, G},
    {"gzip", {Z, B}, 2, I},
    {"br;q=0.5, gzip;q=0.8", {B, G}, 2, G},
    {"br;q=0.5, gzip;q=0.8", {G, B}, 2, G},
    {"br;q=0.5, gzip;q=0.8", {B, Z}, 2, B},
    {"gzip;q=0", {G, B}, 2, I},
    {"*", {Z, B, G}, 3, Z},
    {"*", {B, Z, G}, 3, B},
    {"*;q=0", {G, B, Z}, 3, I},
    {"*;q=0", {G, I}, 2, I},
    {"identity;q=0", {G, B}, 2, I},
    {"identity;q=0", {I}, 1, I},
    {"identity;q=0, gzip", {I, G}, 2, G},
    {"*, gzip;q=0", {G, B}, 2, B},
    {"*, gzip;q=0", {G}, 1, I},
    {"gzip;q=0, *", {G, Z}, 2, Z},
    {"br;q=1.0, zstd;q=1", {Z, B}, 2, Z},
    {"br;q=1.0, zstd;q=1", {B, Z}, 2, B},
    {"br;q=1.000, zstd;q=0.999", {Z, B}, 2, B},
    {" \tgzip \t; \tq=0.5 \t,\tbr ; q=0.4 ", {B, G}, 2, G},
    {"gzip\t;q=0, *", {G, B}, 2, B},
    {",,gzip,", {B, G}, 2, G},
    {" , ,", {G}, 1, I},
    {"gzip;q=1.0001", {G}, 1, I},
    {"gzip;q=1.0001, br", {G, B}, 2, B},
    {"gzip;q=abc", {G}, 1, I},
    {"gzip;q=2", {G}, 1, I},
    {"gzip;q=1.5", {G}, 1, I},
    {"gzip;q=.5", {G}, 1, I},
    {"gzip;q=", {G}, 1, I},
    {"gzip;q", {G}, 1, I},
    {"gzip;q=0.5;q=1", {G}, 1, I},
    {"gzip;q=0., br;q=1.", {G, B}, 2, B},
    {"gzip;Q=0.001, br;q=0", {B, G}, 2, G},
    {"gzip;q=0.0001", {G}, 1, I},
    {"gzip;q=abc, *;q=0.5", {G, B}, 2, G}, /* the broken element is ignored: "*" applies */
    {"gzip;level=1", {B, G}, 2, G},
    {"gzip;level=\"a,b;q=0\";q=0.7, br;q=0.6", {B, G}, 2, G},
    {"gzip;level=\"a,b;q=0\", br;q=0.6", {B, G}, 2, G},
    {"gz ip, br", {G, B}, 2, B},
    {"compress, gzip;q=0.2", {G}, 1, G},
    {"deflate", {G, D}, 2, D},
    {"gzip, x-gzip;q=0", {G}, 1, I},
    {"x-gzip;q=0.3, gzip", {B, G}, 2, G},
    {"identity, gzip;q=0.5", {G, I}, 2, I},
    {"gzip;q=0.5", {G, I}, 2, G},
    {"br", {I, B}, 2, B},
    {"zstd, br, gzip", {(weir_enc)99, G}, 2, G},
    {"zstd", {G}, 0, I},
};

Test(enc, choose_table)
{
    for (size_t i = 0; i < sizeof(ae_cases) / sizeof(ae_cases[0]); i++) {
        const ae_case *t = &ae_cases[i];
        weir_str ae = t->ae ? (weir_str){t->ae, strlen(t->ae)} : WEIR_STR_NULL;
        weir_enc got = weir__enc_choose(ae, t->prefs, t->n);
        cr_expect_eq(got, t->want, "\"%s\" with %zu prefs (first %s): %s, want %s",
                     t->ae ? t->ae : "(absent)", t->n, weir__enc_name(t->prefs[0]),
                     weir__enc_name(got), weir__enc_name(t->want));
    }
}

Test(enc, choose_never_reads_past_the_length)
{
    /* "gzip;q=0" cut to "gzip": the q is not seen */
    static const weir_enc prefs[] = {G, B};
    cr_assert_eq(weir__enc_choose((weir_str){"gzip;q=0", 4}, prefs, 2), G);
    cr_assert_eq(weir__enc_choose((weir_str){"br;q=0.5\"", 8}, prefs, 2), B);
    cr_assert_eq(weir__enc_choose((weir_str){"gzip;a=\"", 8}, prefs, 2), G);
    /* the whole of every prefix of a messy value, under ASan */
    const char *v = "br;q=0.5, gzip ; level=\"x,\\\"y\" ;q=0.8,*;q=0,,zstd";
    size_t l = strlen(v);
    for (size_t n = 0; n <= l; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, v, n);
        (void)weir__enc_choose((weir_str){copy, n}, prefs, 2);
        (void)weir__enc_q((weir_str){copy, n}, WEIR_ENC_ZSTD);
        free(copy);
    }
}

Test(enc, q_values)
{
    weir_str ae = WEIR_STR("gzip;q=0.8, br;q=0, *;q=0.25, identity;q=0.5");
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_GZIP), 800);
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_BR), 0);
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_ZSTD), 250, "from *");
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_IDENTITY), 500);
    ae = WEIR_STR("gzip, br;q=0.05");
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_GZIP), 1000);
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_BR), 50);
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_ZSTD), -1, "not named, no *");
    cr_assert_eq(weir__enc_q(ae, WEIR_ENC_IDENTITY), -1);
    cr_assert_eq(weir__enc_q(WEIR_STR_NULL, WEIR_ENC_GZIP), -1);
    cr_assert_eq(weir__enc_q(WEIR_STR(""), WEIR_ENC_GZIP), -1);
    cr_assert_eq(weir__enc_q(WEIR_STR("x-gzip;q=0.3"), WEIR_ENC_GZIP), 300);
    cr_assert_eq(weir__enc_q(WEIR_STR("gzip;q=0.300"), WEIR_ENC_GZIP), 300);
    cr_assert_eq(weir__enc_q(WEIR_STR("gzip;q=1.0001"), WEIR_ENC_GZIP), -1);
    cr_assert_eq(weir__enc_q(WEIR_STR("gzip;q=1.0001, *;q=0.1"), WEIR_ENC_GZIP), 100);
    cr_assert_eq(weir__enc_q(WEIR_STR("gzip"), WEIR_ENC_COUNT), -1);
}
