/*
 * codec_fuzz.c - libFuzzer target for what the compression plugin reads
 * from peers (src/app/plugin/codec.c): a backend's compressed body, fed to
 * each decoder in two pieces, and a client's Accept-Encoding value.
 *
 * Input: one byte that picks the decoder (low 2 bits) and where the body
 * is split (the rest), then the bytes. Each piece is copied to a buffer of
 * its exact size, so a read past its length is ASan's to see.
 *
 * Invariants:
 *   - a decoder answers OK, INVAL or TOO_LARGE, never more than its caps
 *     of output, and once it failed it keeps failing;
 *   - the same bytes through the gzip and zstd encoders decode back to
 *     themselves, with a flush in the middle;
 *   - negotiation picks one of the offered codings or identity, and never
 *     one the field gives q=0.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "app/plugin/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const weir_enc decoders[4] = {WEIR_ENC_GZIP, WEIR_ENC_BR, WEIR_ENC_ZSTD, WEIR_ENC_DEFLATE};

static int feed(weir_codec *c, const uint8_t *p, size_t len, int mode, uint64_t *total)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy);
    if (len)
        memcpy(copy, p, len);
    weir_str out = {0};
    int rc = weir__codec_run(c, copy, len, mode, &out);
    free(copy);
    CHECK(rc == WEIR_OK || rc == WEIR_ERR_INVAL || rc == WEIR_CODEC_E_TOO_LARGE ||
          rc == WEIR_ERR_NOMEM);
    if (rc == WEIR_OK) {
        CHECK(out.len <= (len * 64 > (1u << 20) ? len * 64 : (1u << 20)));
        *total += out.len;
    }
    return rc;
}

static void round_trip(weir_enc e, int level, const uint8_t *p, size_t len)
{
    weir_codec *enc = weir__codec_encoder(e, level);
    weir_codec *dec = weir__codec_decoder(e, 0);
    CHECK(enc && dec);
    uint8_t *got = malloc(len + 1);
    CHECK(got);
    size_t n = 0, half = len / 2;
    const uint8_t *pieces[2] = {p, p + half};
    size_t lens[2] = {half, len - half};
    for (int k = 0; k < 2; k++) {
        weir_str z, plain;
        CHECK(weir__codec_run(enc, pieces[k], lens[k], k ? WEIR_CODEC_END : WEIR_CODEC_FLUSH, &z) ==
              WEIR_OK);
        CHECK(weir__codec_run(dec, z.ptr, z.len, k ? WEIR_CODEC_END : WEIR_CODEC_RUN, &plain) ==
              WEIR_OK);
        CHECK(n + plain.len <= len);
        memcpy(got + n, plain.ptr, plain.len);
        n += plain.len;
        if (!k) /* after a flush, everything so far decodes */
            CHECK(n == half && memcmp(got, p, half) == 0);
    }
    CHECK(n == len && memcmp(got, p, len) == 0);
    free(got);
    weir__codec_free(enc);
    weir__codec_free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    weir_enc e = decoders[data[0] & 3];
    const uint8_t *body = data + 1;
    size_t len = size - 1, split = len ? (size_t)(data[0] >> 2) * len / 63 : 0;
    if (split > len)
        split = len;
    weir_codec *c = weir__codec_decoder(e, 1u << 22);
    CHECK(c);
    uint64_t total = 0;
    int rc = feed(c, body, split, WEIR_CODEC_RUN, &total);
    int rc2 = feed(c, body + split, len - split, WEIR_CODEC_END, &total);
    if (rc != WEIR_OK)
        CHECK(rc2 != WEIR_OK);
    CHECK(total <= (1u << 22));
    weir__codec_free(c);

    if (len <= 4096) {
        round_trip(WEIR_ENC_GZIP, 1 + data[0] % 9, body, len);
        round_trip(WEIR_ENC_ZSTD, 1 + data[0] % 5, body, len);
    }

    /* The bytes as an Accept-Encoding value. */
    char *ae = malloc(len ? len : 1);
    CHECK(ae);
    memcpy(ae, body, len);
    weir_str v = {ae, len};
    const weir_enc prefs[3] = {WEIR_ENC_ZSTD, WEIR_ENC_BR, WEIR_ENC_GZIP};
    weir_enc got = weir__enc_choose(v, prefs, 3);
    CHECK(got == WEIR_ENC_IDENTITY || got == WEIR_ENC_ZSTD || got == WEIR_ENC_BR ||
          got == WEIR_ENC_GZIP);
    if (got != WEIR_ENC_IDENTITY)
        CHECK(weir__enc_q(v, got) > 0);
    free(ae);
    return 0;
}
