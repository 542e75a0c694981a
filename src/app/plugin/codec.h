/*
 * codec.h - streaming content codings (gzip, br, zstd, deflate) for the
 * compression and decompression plugins, and Accept-Encoding negotiation.
 *
 * A codec turns a body into its encoded (or decoded) form one piece at a
 * time, as the pieces stream through the proxy: nothing waits for the whole
 * body. The work is done by zlib, libbrotlienc/libbrotlidec and libzstd
 * through their streaming APIs; this module only drives them, bounds their
 * memory and their output, and maps their results onto weir's return codes.
 *
 * Return codes (weir/types.h): WEIR_OK; WEIR_ERR_INVAL (corrupt or
 * truncated input, bytes after the end of a stream, a bad argument, a call
 * after END or after an error); WEIR_CODEC_E_TOO_LARGE when a call's
 * output is over its cap or a decoder goes past max_output; WEIR_ERR_NOMEM. After any error the
 * codec is unusable: every later call returns WEIR_ERR_INVAL; free it.
 *
 * Memory per stream: the library's state, measured with weir__codec_mem()
 * on 1 MiB of text (tests/unit/test_codec.c pins it). The output buffer
 * comes on top (4 KiB to 64 KiB for pieces of up to 16 KiB; see
 * weir__codec_run()).
 *   gzip encoder   261 KiB at every level (windowBits 15, memLevel 8);
 *   br encoder     lgwin 19; brotli sizes its hash tables by quality, not
 *                  by window: q0 166 KiB, q1 102 KiB, q2-3 1.8 MiB,
 *                  q4 4.6 MiB, q5 5.1 MiB, q6 6.1 MiB, q7 12 MiB,
 *                  q8 20 MiB, q9 38 MiB, q10-11 11 MiB. A plugin
 *                  compressing many streams at once wants q4-q6;
 *   zstd encoder   windowLog 20, hash and chain tables held to what zstd
 *                  picks for a 1 MiB window (zstd_bound_tables()):
 *                  level 1 1.8 MiB, 3 2.5 MiB, 5 4.7 MiB, 7 7.7 MiB,
 *                  9-12 14 MiB, 15-19 18 MiB (without the bound, 19 takes
 *                  over 80 MiB);
 *   gzip/deflate decoder  38 KiB (32 KiB window);
 *   br decoder     the sender's window (2^lgwin, up to 16 MiB for lgwin 24,
 *                  the format's largest; large windows are not enabled)
 *                  plus ~30 KiB: 537 KiB for weir's own lgwin 19, ~4.1 MiB
 *                  for brotli's default lgwin 22;
 *   zstd decoder   the frame's window plus ~0.5 MiB: 1.5 MiB for weir's
 *                  own windowLog 20, at most ~8.5 MiB (ZSTD_d_windowLogMax
 *                  23; a frame that needs more is refused with
 *                  WEIR_CODEC_E_TOO_LARGE).
 *
 * Owner: whoever created the codec frees it (weir__codec_free). A codec is
 * not shared: one thread at a time (the session's loop thread).
 */
#ifndef WEIR_APP_PLUGIN_CODEC_H
#define WEIR_APP_PLUGIN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "weir/types.h"

/* Output over a cap (a decompression bomb, or a window too large). */
#define WEIR_CODEC_E_TOO_LARGE (-3100)

/* Content codings weir knows. The order is stable (tables are indexed by
 * it); WEIR_ENC_COUNT is not a coding. */
typedef enum weir_enc {
    WEIR_ENC_IDENTITY = 0,
    WEIR_ENC_GZIP,
    WEIR_ENC_BR,
    WEIR_ENC_ZSTD,
    WEIR_ENC_DEFLATE,
    WEIR_ENC_COUNT
} weir_enc;

/* The coding named name[0..len) (not NUL-terminated): "gzip" or its alias
 * "x-gzip", "br", "zstd", "deflate", "identity", case-insensitive, no
 * surrounding whitespace. -1 if unknown (or name is NULL). Any thread. */
int weir__enc_of(const char *name, size_t len);

/* The Content-Encoding token of e ("gzip", "br", "zstd", "deflate",
 * "identity"), a static string; NULL if e is not a coding. Any thread. */
const char *weir__enc_name(weir_enc e);

typedef struct weir_codec weir_codec;

/* A new encoder for e at `level`: gzip 1..9 (zlib level; gzip wrapper,
 * windowBits 15+16, memLevel 8), br 0..11 (quality; lgwin 19), zstd 1..19
 * (level; windowLog 20, with a content checksum). identity and deflate are
 * not encoded here. NULL on a bad coding or level, or no memory. The
 * caller owns the codec. */
weir_codec *weir__codec_encoder(weir_enc e, int level);

/* A new decoder for e: gzip (the gzip wrapper, and the zlib one too),
 * deflate (zlib-wrapped, or raw deflate as browsers accept it: the zlib
 * wrapper is tried on the first two bytes, raw deflate if zlib refuses
 * them), br, zstd (ZSTD_d_windowLogMax 23). max_output: total decoded bytes
 * allowed over the whole stream (the decompression-bomb guard); 0 =
 * unlimited. One stream only: a second gzip member or zstd frame is
 * "data after the end". NULL on a bad coding or no memory. The caller owns
 * the codec. */
weir_codec *weir__codec_decoder(weir_enc e, uint64_t max_output);

/* The `mode` of weir__codec_run(). */
enum {
    WEIR_CODEC_RUN,   /* go on; the codec may keep bytes back */
    WEIR_CODEC_FLUSH, /* the receiver can decode everything fed so far */
    WEIR_CODEC_END,   /* the stream ends with this call */
};

/*
 * Feeds in[0..in_len) (in_len may be 0; in may then be NULL) and sets *out
 * to the bytes this call produced, in the codec's own buffer: valid until
 * the next call on c or weir__codec_free(c); *out is {ptr, 0} or {NULL, 0}
 * when there are none (and on error).
 *
 * RUN: an encoder may keep bytes back to compress better; a decoder
 * outputs all it can. FLUSH: everything fed so far is decodable by the
 * receiver from the output so far (Z_SYNC_FLUSH, BROTLI_OPERATION_FLUSH,
 * ZSTD_e_flush): what keeps server-sent events live. It costs a few bytes
 * each time; a decoder treats it as RUN. END: an encoder writes the rest
 * and the trailer; a decoder checks that the input was one complete stream
 * (WEIR_ERR_INVAL if it was truncated). A decoder that reaches the end of
 * its stream before END takes further calls with no input.
 *
 * The output of one call is capped at max(1 MiB, 64 * in_len) bytes, and a
 * decoder's total at max_output: past either the call returns
 * WEIR_CODEC_E_TOO_LARGE. The buffer grows to the call's output; one that
 * grew past 64 KiB is cut back (to 64 KiB or the expected output) at the
 * start of a call whose expected output is under a quarter of it.
 *
 * Returns WEIR_OK, or the errors in the file comment. Same thread as the
 * codec's owner.
 */
int weir__codec_run(weir_codec *c, const void *in, size_t in_len, int mode, weir_str *out);

/* Bytes the codec holds now: the library's state (counted through its
 * allocator for zlib and brotli, ZSTD_sizeof_*() for zstd), the output
 * buffer and the codec itself. For metrics and tests. */
size_t weir__codec_mem(const weir_codec *c);

/* Frees c and everything it holds, including the buffer *out pointed
 * into. NULL is fine. */
void weir__codec_free(weir_codec *c);

/*
 * Accept-Encoding negotiation (RFC 9110 12.5.3). The coding to use among
 * prefs[0..n) (the server's preference order) given the client's
 * Accept-Encoding value `ae` (ae.ptr NULL: the field is absent, identity
 * only; an empty value also leaves identity only).
 *
 * The highest q wins; equal q, the earlier in prefs. q=0 means never; "*"
 * gives its q to every coding not named; unknown codings are ignored; an
 * element with a malformed q (q=2, q=abc, q=1.0001: more than three
 * decimals, two q's) is ignored whole; parameters other than q are
 * ignored; whitespace and empty list elements are tolerated; names are
 * case-insensitive and "x-gzip" is gzip. A coding named twice (gzip and
 * x-gzip count as one) gets the lower q: a refusal is not overridden by
 * order. WEIR_ENC_IDENTITY in prefs competes like the others; when the
 * client does not name it (nor "*") it is acceptable with the lowest q,
 * 0.001. Returns WEIR_ENC_IDENTITY if no coding in prefs is acceptable.
 * Any thread.
 */
weir_enc weir__enc_choose(weir_str ae, const weir_enc *prefs, size_t n);

/* The q-value (0..1000) the client gives coding e in Accept-Encoding `ae`,
 * honouring "*" (same rules as weir__enc_choose); -1 if e is not named
 * and there is no "*" (always -1 for an absent field: identity is not
 * given an implicit q here). Any thread. */
int weir__enc_q(weir_str ae, weir_enc e);

#endif
