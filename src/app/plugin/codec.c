/*
 * codec.c - streaming gzip/br/zstd/deflate codecs over zlib, brotli and
 * zstd, and Accept-Encoding negotiation (see codec.h).
 *
 * One driver, weir__codec_run(), owns the output buffer and the caps; each
 * library has a step function that runs it on the pending input into the
 * free part of the buffer and says why it stopped:
 *
 *     WEIR_OK     nothing more to do for this call (input consumed, the
 *                 flush or finish complete as far as this mode asks);
 *     WEIR_AGAIN  the buffer is full and more output may follow: the
 *                 driver grows it (up to the call's cap + 1, so that going
 *                 over the cap is seen) and steps again with the same mode,
 *                 which is what zlib, brotli and zstd all require of a
 *                 flush or finish in progress;
 *     WEIR_DONE   the stream ended (an encoder's trailer is out, a decoder
 *                 saw the end of its stream);
 *     < 0         an error.
 *
 * Stream states:
 *
 *     OPEN --(decoder sees the end)--> DRAINED --(END)--> CLOSED
 *       |                                                  ^
 *       +--------------------------(END)-------------------+
 *     any --(error)--> FAILED
 */
#include "app/plugin/codec.h"

#include <assert.h>
#include <brotli/decode.h>
#include <brotli/encode.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
/* ZSTD_getCParams() (below) is in zstd's "static linking only" section,
 * though libzstd.so has exported it since 1.0 and its result struct has
 * not changed since; there is no stable way to learn a level's tables. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#define BR_LGWIN 19
#define ZSTD_WLOG 20
#define ZSTD_DWLOG_MAX 23
#define CALL_CAP_MIN ((size_t)1 << 20)
#define CALL_CAP_FACTOR 64
#define BUF_MIN ((size_t)4096)
#define BUF_KEEP ((size_t)64 << 10)

/* ---- codings ---- */

static const char *const enc_names[WEIR_ENC_COUNT] = {
    [WEIR_ENC_IDENTITY] = "identity", [WEIR_ENC_GZIP] = "gzip",       [WEIR_ENC_BR] = "br",
    [WEIR_ENC_ZSTD] = "zstd",         [WEIR_ENC_DEFLATE] = "deflate",
};

int weir__enc_of(const char *name, size_t len)
{
    if (!name)
        return -1;
    if (len == 6 && strncasecmp(name, "x-gzip", 6) == 0)
        return WEIR_ENC_GZIP;
    for (int e = 0; e < WEIR_ENC_COUNT; e++)
        if (strlen(enc_names[e]) == len && strncasecmp(name, enc_names[e], len) == 0)
            return e;
    return -1;
}

const char *weir__enc_name(weir_enc e)
{
    return (unsigned)e < WEIR_ENC_COUNT ? enc_names[e] : NULL;
}

/* ---- the codec ---- */

typedef enum codec_state {
    CODEC_OPEN,    /* takes input */
    CODEC_DRAINED, /* decoder: its stream ended; only empty calls now */
    CODEC_CLOSED,  /* END done; every call is refused */
    CODEC_FAILED,  /* an error happened; every call is refused */
} codec_state;

typedef enum codec_kind {
    K_ZLIB_ENC,
    K_ZLIB_DEC,
    K_BR_ENC,
    K_BR_DEC,
    K_ZSTD_ENC,
    K_ZSTD_DEC,
} codec_kind;

struct weir_codec {
    codec_kind kind;
    codec_state state;
    weir_enc enc;
    union {
        z_stream z;
        BrotliEncoderState *be;
        BrotliDecoderState *bd;
        ZSTD_CCtx *zc;
        ZSTD_DCtx *zd;
    } u;
    bool z_ready;        /* u.z was initialised (deflateInit2/inflateInit2) */
    bool probing;        /* deflate decoder: zlib or raw not decided yet */
    uint8_t head[2];     /* ... the first bytes, kept until it is */
    size_t n_head;       /* ... how many */
    uint64_t max_output; /* decoder: total allowed, 0 = unlimited */
    uint64_t total_out;  /* output of all calls so far */
    size_t lib_mem;      /* zlib/brotli: bytes they hold through lib_alloc */

    /* The pending input of the current call. */
    const uint8_t *in;
    size_t in_left;
    /* The output buffer: buf[0..out_len) is this call's output. */
    uint8_t *buf;
    size_t cap, out_len;
};

static bool is_encoder(const weir_codec *c)
{
    return c->kind == K_ZLIB_ENC || c->kind == K_BR_ENC || c->kind == K_ZSTD_ENC;
}

/* The transitions of the diagram in the file comment. */
static void set_state(weir_codec *c, codec_state to)
{
    assert(to == CODEC_FAILED ||
           (to == CODEC_DRAINED && c->state == CODEC_OPEN && !is_encoder(c)) ||
           (to == CODEC_CLOSED && (c->state == CODEC_OPEN || c->state == CODEC_DRAINED)));
    c->state = to;
}

/* zlib and brotli take an allocator without the size on free: a header in
 * front of each block carries it, so that lib_mem is exact. */
typedef union mem_hdr {
    size_t len;
    max_align_t align;
} mem_hdr;

static void *lib_alloc(void *opaque, size_t n)
{
    weir_codec *c = opaque;
    if (n > SIZE_MAX - sizeof(mem_hdr))
        return NULL;
    mem_hdr *h = malloc(sizeof(*h) + n);
    if (!h)
        return NULL;
    h->len = n;
    c->lib_mem += n;
    return h + 1;
}

static void lib_free(void *opaque, void *p)
{
    weir_codec *c = opaque;
    if (!p)
        return;
    mem_hdr *h = (mem_hdr *)p - 1;
    c->lib_mem -= h->len;
    free(h);
}

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    if (size && items > SIZE_MAX / size)
        return Z_NULL;
    return lib_alloc(opaque, (size_t)items * size);
}

static void z_free(voidpf opaque, voidpf p)
{
    lib_free(opaque, p);
}

static weir_codec *codec_new(codec_kind kind, weir_enc e)
{
    weir_codec *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = kind;
    c->enc = e;
    c->state = CODEC_OPEN;
    if (kind == K_ZLIB_ENC || kind == K_ZLIB_DEC) {
        c->u.z.zalloc = z_alloc;
        c->u.z.zfree = z_free;
        c->u.z.opaque = c;
    }
    return c;
}

/* zstd's own rule for a stream it knows fits the window (zstd_compress.c,
 * ZSTD_adjustCParams_internal), which it applies only when the size is
 * pledged: tables larger than the window only cost memory. Without it,
 * level 19 would take 80 MiB of tables for a 1 MiB window. */
static bool zstd_bound_tables(ZSTD_CCtx *zc, int level)
{
    ZSTD_compressionParameters cp = ZSTD_getCParams(level, 0, 0);
    unsigned hlog = cp.hashLog, clog = cp.chainLog;
    unsigned btree = cp.strategy >= ZSTD_btlazy2; /* a binary tree's cycle is half its chain */
    if (hlog > ZSTD_WLOG + 1)
        hlog = ZSTD_WLOG + 1;
    if (clog - btree > ZSTD_WLOG)
        clog = ZSTD_WLOG + btree;
    return !ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_hashLog, (int)hlog)) &&
           !ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_chainLog, (int)clog));
}

weir_codec *weir__codec_encoder(weir_enc e, int level)
{
    weir_codec *c = NULL;
    switch (e) {
    case WEIR_ENC_GZIP:
        if (level < 1 || level > 9 || !(c = codec_new(K_ZLIB_ENC, e)))
            return NULL;
        if (deflateInit2(&c->u.z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            goto fail;
        c->z_ready = true;
        return c;
    case WEIR_ENC_BR:
        if (level < BROTLI_MIN_QUALITY || level > BROTLI_MAX_QUALITY ||
            !(c = codec_new(K_BR_ENC, e)))
            return NULL;
        c->u.be = BrotliEncoderCreateInstance(lib_alloc, lib_free, c);
        if (!c->u.be ||
            !BrotliEncoderSetParameter(c->u.be, BROTLI_PARAM_QUALITY, (uint32_t)level) ||
            !BrotliEncoderSetParameter(c->u.be, BROTLI_PARAM_LGWIN, BR_LGWIN))
            goto fail;
        return c;
    case WEIR_ENC_ZSTD:
        if (level < 1 || level > 19 || !(c = codec_new(K_ZSTD_ENC, e)))
            return NULL;
        c->u.zc = ZSTD_createCCtx();
        if (!c->u.zc ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zc, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zc, ZSTD_c_windowLog, ZSTD_WLOG)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zc, ZSTD_c_checksumFlag, 1)) ||
            !zstd_bound_tables(c->u.zc, level))
            goto fail;
        return c;
    default:
        return NULL;
    }
fail:
    weir__codec_free(c);
    return NULL;
}

weir_codec *weir__codec_decoder(weir_enc e, uint64_t max_output)
{
    weir_codec *c = NULL;
    switch (e) {
    case WEIR_ENC_GZIP:
    case WEIR_ENC_DEFLATE:
        if (!(c = codec_new(K_ZLIB_DEC, e)))
            return NULL;
        /* gzip: 15 + 32 detects the gzip or zlib wrapper. deflate: zlib's
         * wrapper, then raw (-15) if zlib refuses the first two bytes. */
        if (inflateInit2(&c->u.z, e == WEIR_ENC_GZIP ? 15 + 32 : 15) != Z_OK)
            goto fail;
        c->z_ready = true;
        c->probing = e == WEIR_ENC_DEFLATE;
        break;
    case WEIR_ENC_BR:
        if (!(c = codec_new(K_BR_DEC, e)))
            return NULL;
        if (!(c->u.bd = BrotliDecoderCreateInstance(lib_alloc, lib_free, c)))
            goto fail;
        break;
    case WEIR_ENC_ZSTD:
        if (!(c = codec_new(K_ZSTD_DEC, e)))
            return NULL;
        if (!(c->u.zd = ZSTD_createDCtx()) ||
            ZSTD_isError(ZSTD_DCtx_setParameter(c->u.zd, ZSTD_d_windowLogMax, ZSTD_DWLOG_MAX)))
            goto fail;
        break;
    default:
        return NULL;
    }
    c->max_output = max_output;
    return c;
fail:
    weir__codec_free(c);
    return NULL;
}

void weir__codec_free(weir_codec *c)
{
    if (!c)
        return;
    switch (c->kind) {
    case K_ZLIB_ENC:
        if (c->z_ready)
            deflateEnd(&c->u.z);
        break;
    case K_ZLIB_DEC:
        if (c->z_ready)
            inflateEnd(&c->u.z);
        break;
    case K_BR_ENC:
        if (c->u.be)
            BrotliEncoderDestroyInstance(c->u.be);
        break;
    case K_BR_DEC:
        if (c->u.bd)
            BrotliDecoderDestroyInstance(c->u.bd);
        break;
    case K_ZSTD_ENC:
        ZSTD_freeCCtx(c->u.zc);
        break;
    case K_ZSTD_DEC:
        ZSTD_freeDCtx(c->u.zd);
        break;
    }
    assert(c->lib_mem == 0);
    free(c->buf);
    free(c);
}

size_t weir__codec_mem(const weir_codec *c)
{
    if (!c)
        return 0;
    size_t lib = c->lib_mem;
    if (c->kind == K_ZSTD_ENC)
        lib = ZSTD_sizeof_CCtx(c->u.zc);
    else if (c->kind == K_ZSTD_DEC)
        lib = ZSTD_sizeof_DCtx(c->u.zd);
    return sizeof(*c) + c->cap + lib;
}

/* ---- steps: one per library (see the file comment) ---- */

/* The free part of the buffer, as much as a uInt holds for zlib. */
static uint8_t *room(weir_codec *c, size_t *len)
{
    *len = c->cap - c->out_len;
    return c->buf + c->out_len;
}

static uInt uint_of(size_t n)
{
    return n > UINT_MAX ? UINT_MAX : (uInt)n;
}

static int z_err(int zrc)
{
    return zrc == Z_MEM_ERROR ? WEIR_ERR_NOMEM : WEIR_ERR_INVAL;
}

/* Runs zlib (deflate or inflate) on `in_len` bytes at `in`, returns the
 * step code and leaves in the number consumed in *used. */
static int z_run(weir_codec *c, const uint8_t *in, size_t in_len, int flush, size_t *used)
{
    z_stream *z = &c->u.z;
    size_t left = in_len;
    *used = 0;
    for (;;) {
        size_t rl;
        uint8_t *r = room(c, &rl);
        z->next_in = (Bytef *)in + (in_len - left);
        z->avail_in = uint_of(left);
        z->next_out = r;
        z->avail_out = uint_of(rl);
        uInt ai = z->avail_in, ao = z->avail_out;
        int zrc = c->kind == K_ZLIB_ENC ? deflate(z, flush) : inflate(z, Z_NO_FLUSH);
        left -= ai - z->avail_in;
        c->out_len += ao - z->avail_out;
        *used = in_len - left;
        if (zrc == Z_STREAM_END)
            return WEIR_DONE;
        /* Z_BUF_ERROR: no progress was possible (nothing to do, or a
         * repeated flush); not an error in a streaming loop. */
        if (zrc != Z_OK && zrc != Z_BUF_ERROR)
            return z_err(zrc);
        if (z->avail_out == 0)
            return WEIR_AGAIN;
        if (left == 0 && (c->kind == K_ZLIB_DEC || flush != Z_FINISH))
            return WEIR_OK;
    }
}

/*
 * Raw deflate or zlib-wrapped? zlib decides: the two first bytes go to
 * inflate with the zlib wrapper; if it refuses them (header check, method,
 * window, preset dictionary), the stream restarts as raw deflate with the
 * same bytes. As in browsers, a raw stream whose two first bytes happen to
 * form a valid zlib header is taken as zlib (and then fails).
 */
static int deflate_probe(weir_codec *c)
{
    while (c->n_head < 2 && c->in_left) {
        c->head[c->n_head++] = *c->in++;
        c->in_left--;
    }
    if (c->n_head < 2)
        return WEIR_OK;
    c->probing = false;
    size_t used;
    /* The header yields no output and two raw bytes at most a 258-byte
     * copy: the buffer (BUF_MIN at least) has room. */
    int rc = z_run(c, c->head, 2, Z_NO_FLUSH, &used);
    if (rc == WEIR_ERR_INVAL) {
        if (inflateReset2(&c->u.z, -15) != Z_OK)
            return WEIR_ERR_INVAL;
        c->out_len = 0;
        rc = z_run(c, c->head, 2, Z_NO_FLUSH, &used);
    }
    if (rc == WEIR_OK && used != 2)
        return WEIR_ERR_INVAL;
    return rc == WEIR_AGAIN ? WEIR_ERR_INVAL : rc;
}

static int step_zlib(weir_codec *c, int mode)
{
    if (c->probing) {
        int rc = deflate_probe(c);
        if (rc != WEIR_OK || c->probing)
            return rc;
    }
    int flush = mode == WEIR_CODEC_END     ? Z_FINISH
                : mode == WEIR_CODEC_FLUSH ? Z_SYNC_FLUSH
                                           : Z_NO_FLUSH;
    size_t used;
    int rc = z_run(c, c->in, c->in_left, flush, &used);
    c->in += used;
    c->in_left -= used;
    return rc;
}

static int step_br_enc(weir_codec *c, int mode)
{
    BrotliEncoderOperation op = mode == WEIR_CODEC_END     ? BROTLI_OPERATION_FINISH
                                : mode == WEIR_CODEC_FLUSH ? BROTLI_OPERATION_FLUSH
                                                           : BROTLI_OPERATION_PROCESS;
    for (;;) {
        size_t rl;
        uint8_t *r = room(c, &rl), *r0 = r;
        /* Its only failures are allocation (and misuse, which this is not). */
        if (!BrotliEncoderCompressStream(c->u.be, op, &c->in_left, &c->in, &rl, &r, NULL))
            return WEIR_ERR_NOMEM;
        c->out_len += (size_t)(r - r0);
        if (op == BROTLI_OPERATION_FINISH && BrotliEncoderIsFinished(c->u.be))
            return WEIR_DONE;
        if (rl == 0)
            return WEIR_AGAIN;
        if (op != BROTLI_OPERATION_FINISH && c->in_left == 0 &&
            !BrotliEncoderHasMoreOutput(c->u.be))
            return WEIR_OK;
    }
}

static int step_br_dec(weir_codec *c, int mode)
{
    for (;;) {
        size_t rl;
        uint8_t *r = room(c, &rl), *r0 = r;
        BrotliDecoderResult br =
            BrotliDecoderDecompressStream(c->u.bd, &c->in_left, &c->in, &rl, &r, NULL);
        c->out_len += (size_t)(r - r0);
        switch (br) {
        case BROTLI_DECODER_RESULT_SUCCESS:
            return WEIR_DONE;
        case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
            return WEIR_OK;
        case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
            if (rl == 0)
                return WEIR_AGAIN;
            continue;
        default: {
            int code = BrotliDecoderGetErrorCode(c->u.bd);
            return code <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
                           code >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES
                       ? WEIR_ERR_NOMEM
                       : WEIR_ERR_INVAL;
        }
        }
    }
}

static int zstd_err(size_t r)
{
    switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_memory_allocation:
        return WEIR_ERR_NOMEM;
    case ZSTD_error_frameParameter_windowTooLarge:
        return WEIR_CODEC_E_TOO_LARGE;
    default:
        return WEIR_ERR_INVAL;
    }
}

static int step_zstd_enc(weir_codec *c, int mode)
{
    ZSTD_EndDirective d = mode == WEIR_CODEC_END     ? ZSTD_e_end
                          : mode == WEIR_CODEC_FLUSH ? ZSTD_e_flush
                                                     : ZSTD_e_continue;
    for (;;) {
        size_t rl;
        uint8_t *r = room(c, &rl);
        ZSTD_inBuffer ib = {c->in, c->in_left, 0};
        ZSTD_outBuffer ob = {r, rl, 0};
        size_t zr = ZSTD_compressStream2(c->u.zc, &ob, &ib, d);
        c->in += ib.pos;
        c->in_left -= ib.pos;
        c->out_len += ob.pos;
        if (ZSTD_isError(zr))
            return zstd_err(zr);
        /* For flush and end, 0 left to flush means done (all input is
         * consumed by then). */
        if (d != ZSTD_e_continue && zr == 0 && c->in_left == 0)
            return d == ZSTD_e_end ? WEIR_DONE : WEIR_OK;
        if (ob.pos == ob.size)
            return WEIR_AGAIN;
        if (d == ZSTD_e_continue && c->in_left == 0)
            return WEIR_OK;
    }
}

static int step_zstd_dec(weir_codec *c, int mode)
{
    for (;;) {
        size_t rl;
        uint8_t *r = room(c, &rl);
        ZSTD_inBuffer ib = {c->in, c->in_left, 0};
        ZSTD_outBuffer ob = {r, rl, 0};
        size_t zr = ZSTD_decompressStream(c->u.zd, &ob, &ib);
        c->in += ib.pos;
        c->in_left -= ib.pos;
        c->out_len += ob.pos;
        if (ZSTD_isError(zr))
            return zstd_err(zr);
        if (zr == 0) /* the frame is decoded and flushed */
            return WEIR_DONE;
        if (ob.pos == ob.size)
            return WEIR_AGAIN;
        if (c->in_left == 0)
            return WEIR_OK;
    }
}

static int step(weir_codec *c, int mode)
{
    switch (c->kind) {
    case K_ZLIB_ENC:
    case K_ZLIB_DEC:
        return step_zlib(c, mode);
    case K_BR_ENC:
        return step_br_enc(c, mode);
    case K_BR_DEC:
        return step_br_dec(c, mode);
    case K_ZSTD_ENC:
        return step_zstd_enc(c, mode);
    case K_ZSTD_DEC:
        return step_zstd_dec(c, mode);
    }
    return WEIR_ERR_INVAL;
}

/* ---- the driver ---- */

/* Resizes the buffer to n bytes (n >= out_len). */
static bool buf_resize(weir_codec *c, size_t n)
{
    uint8_t *b = realloc(c->buf, n);
    if (!b)
        return false;
    c->buf = b;
    c->cap = n;
    return true;
}

/* The most this call may output: for a decoder, the per-call cap and what
 * is left of its max_output (the bomb guards). An encoder has none: what
 * it writes is what it was given, but it may hold much of that back and
 * write it in one burst (brotli, incompressible input: over 1 MiB after a
 * 1 KiB piece), which a cap on the call would take for a failure. */
static size_t call_limit(const weir_codec *c, size_t in_len)
{
    if (is_encoder(c))
        return SIZE_MAX - 1;
    size_t lim = in_len > SIZE_MAX / CALL_CAP_FACTOR ? SIZE_MAX : in_len * CALL_CAP_FACTOR;
    if (lim < CALL_CAP_MIN)
        lim = CALL_CAP_MIN;
    if (c->max_output) {
        uint64_t left = c->max_output > c->total_out ? c->max_output - c->total_out : 0;
        if (left < lim)
            lim = (size_t)left;
    }
    return lim == SIZE_MAX ? SIZE_MAX - 1 : lim;
}

/* Room for the first step of a call: a guess at its output, BUF_MIN at
 * least. A buffer that grew past BUF_KEEP for a big piece is cut back when
 * the guess is under a quarter of it: a stream idling between small pieces
 * (server-sent events) does not keep megabytes. */
static bool buf_prepare(weir_codec *c, size_t in_len, size_t hard)
{
    size_t want = is_encoder(c) ? in_len / 2 + 1024 : in_len * 4;
    if (in_len > SIZE_MAX / 4 || want > hard)
        want = hard;
    if (want < BUF_MIN)
        want = BUF_MIN;
    c->out_len = 0;
    if (c->cap > BUF_KEEP && want < c->cap / 4) {
        (void)buf_resize(c, want > BUF_KEEP ? want : BUF_KEEP); /* else the old one stays */
        return true;
    }
    if (c->cap >= want)
        return true;
    return buf_resize(c, want);
}

int weir__codec_run(weir_codec *c, const void *in, size_t in_len, int mode, weir_str *out)
{
    int rc;
    if (out)
        *out = (weir_str){NULL, 0};
    if (!c || !out || (!in && in_len) || mode < WEIR_CODEC_RUN || mode > WEIR_CODEC_END)
        return WEIR_ERR_INVAL;
    if (c->state == CODEC_CLOSED || c->state == CODEC_FAILED)
        return WEIR_ERR_INVAL;
    size_t limit = call_limit(c, in_len);
    /* One byte of room past the limit shows output going over it. */
    if (!buf_prepare(c, in_len, limit + 1)) {
        rc = WEIR_ERR_NOMEM;
        goto fail;
    }
    /* Never NULL: the libraries and pointer arithmetic want an object. */
    static const uint8_t none;
    c->in = in ? in : &none;
    c->in_left = in_len;
    if (c->state == CODEC_DRAINED) {
        rc = WEIR_DONE;
        if (in_len) {
            rc = WEIR_ERR_INVAL; /* data after the end */
            goto fail;
        }
    } else {
        for (;;) {
            rc = step(c, mode);
            if (c->out_len > limit) {
                rc = WEIR_CODEC_E_TOO_LARGE;
                goto fail;
            }
            if (rc != WEIR_AGAIN)
                break;
            if (c->out_len == c->cap) {
                size_t n = c->cap > (limit + 1) / 2 ? limit + 1 : c->cap * 2;
                if (!buf_resize(c, n)) {
                    rc = WEIR_ERR_NOMEM;
                    goto fail;
                }
            }
        }
        if (rc < 0)
            goto fail;
        /* Bytes after the end of the stream: a second stream, or
         * garbage, either way not this body. */
        if (rc == WEIR_DONE && c->in_left) {
            rc = WEIR_ERR_INVAL;
            goto fail;
        }
    }
    if (mode == WEIR_CODEC_END) {
        /* Only a finished stream is complete: an encoder reports DONE once
         * its trailer is out, a decoder once it saw the end. */
        if (rc != WEIR_DONE) {
            rc = WEIR_ERR_INVAL;
            goto fail;
        }
        set_state(c, CODEC_CLOSED);
    } else if (rc == WEIR_DONE && c->state == CODEC_OPEN) {
        set_state(c, CODEC_DRAINED);
    }
    c->total_out += c->out_len;
    *out = (weir_str){(const char *)c->buf, c->out_len};
    return WEIR_OK;
fail:
    set_state(c, CODEC_FAILED);
    c->out_len = 0;
    return rc;
}

/* ---- Accept-Encoding (RFC 9110 12.5.3) ---- */

/* What a field value says: the q of each coding (-1 if not named) and of
 * "*" (-1 if absent). */
typedef struct ae_table {
    int q[WEIR_ENC_COUNT];
    int star;
} ae_table;

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* tchar (RFC 9110 5.6.2). */
static bool is_tchar(char ch)
{
    unsigned char u = (unsigned char)ch;
    if ((u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z'))
        return true;
    return u && strchr("!#$%&'*+-.^_`|~", u) != NULL;
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ): the value
 * in thousandths, -1 if v[0..len) is not one. */
static int qvalue_of(const char *v, size_t len)
{
    if (len == 0 || (v[0] != '0' && v[0] != '1') || len > 5 || (len > 1 && v[1] != '.'))
        return -1;
    int frac = 0;
    for (size_t i = 2; i < 5; i++) {
        int d = 0;
        if (i < len) {
            if (v[i] < '0' || v[i] > '9' || (v[0] == '1' && v[i] != '0'))
                return -1;
            d = v[i] - '0';
        }
        frac = frac * 10 + d;
    }
    return v[0] == '1' ? 1000 : frac;
}

/* Skips a parameter value at p: a token, or a quoted-string with its
 * escapes. Returns where it stops. */
static const char *skip_value(const char *p, const char *end)
{
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++)
            if (*p == '\\' && p + 1 < end)
                p++;
        return p < end ? p + 1 : p;
    }
    while (p < end && is_tchar(*p))
        p++;
    return p;
}

/*
 * One list element at *pp: codings *( OWS ";" OWS name "=" value ). Sets
 * *name and *q (1000 without a q), and returns false if the element is
 * malformed (or empty); *pp ends after the element's comma either way.
 */
static bool ae_element(const char **pp, const char *end, weir_str *name, int *q)
{
    const char *p = *pp;
    bool ok = true, have_q = false;
    *q = 1000;
    while (p < end && is_ows(*p))
        p++;
    const char *s = p;
    while (p < end && is_tchar(*p))
        p++;
    *name = (weir_str){s, (size_t)(p - s)};
    if (name->len == 0)
        ok = false;
    for (;;) {
        while (p < end && is_ows(*p))
            p++;
        if (p == end || *p == ',')
            break;
        if (*p != ';') {
            ok = false;
            break;
        }
        p++;
        while (p < end && is_ows(*p))
            p++;
        const char *ps = p;
        while (p < end && is_tchar(*p))
            p++;
        size_t pl = (size_t)(p - ps);
        bool is_q = pl == 1 && (*ps == 'q' || *ps == 'Q');
        if (p == end || *p != '=') {
            if (is_q || pl == 0)
                ok = false;
            continue;
        }
        const char *vs = ++p;
        p = skip_value(p, end);
        if (is_q) {
            int v = have_q ? -1 : qvalue_of(vs, (size_t)(p - vs));
            if (v < 0)
                ok = false;
            *q = v;
            have_q = true;
        }
    }
    /* Skip what is left of a malformed element, quoted strings whole. */
    while (p < end && *p != ',')
        p = *p == '"' ? skip_value(p, end) : p + 1;
    *pp = p < end ? p + 1 : p;
    return ok;
}

static void ae_parse(weir_str ae, ae_table *t)
{
    for (int e = 0; e < WEIR_ENC_COUNT; e++)
        t->q[e] = -1;
    t->star = -1;
    if (!ae.ptr)
        return;
    const char *p = ae.ptr, *end = ae.ptr + ae.len;
    while (p < end) {
        weir_str name;
        int q;
        if (!ae_element(&p, end, &name, &q))
            continue;
        int *slot;
        if (name.len == 1 && name.ptr[0] == '*') {
            slot = &t->star;
        } else {
            int e = weir__enc_of(name.ptr, name.len);
            if (e < 0)
                continue;
            slot = &t->q[e];
        }
        /* Named twice: the lower q (a refusal is not undone by order). */
        if (*slot < 0 || q < *slot)
            *slot = q;
    }
}

static int table_q(const ae_table *t, weir_enc e)
{
    return t->q[e] >= 0 ? t->q[e] : t->star;
}

int weir__enc_q(weir_str ae, weir_enc e)
{
    if ((unsigned)e >= WEIR_ENC_COUNT)
        return -1;
    ae_table t;
    ae_parse(ae, &t);
    return table_q(&t, e);
}

weir_enc weir__enc_choose(weir_str ae, const weir_enc *prefs, size_t n)
{
    if (!ae.ptr || !prefs)
        return WEIR_ENC_IDENTITY;
    ae_table t;
    ae_parse(ae, &t);
    weir_enc best = WEIR_ENC_IDENTITY;
    int best_q = 0;
    for (size_t i = 0; i < n; i++) {
        weir_enc e = prefs[i];
        if ((unsigned)e >= WEIR_ENC_COUNT)
            continue;
        int q = table_q(&t, e);
        /* identity is acceptable unless refused (RFC 9110 12.5.3). */
        if (e == WEIR_ENC_IDENTITY && q < 0)
            q = 1;
        if (q > best_q) {
            best = e;
            best_q = q;
        }
    }
    return best;
}
