/*
 * client_hello.c - the SNI of a TLS ClientHello (RFC 8446 4.1.2, RFC
 * 6066 3), see client_hello.h. Every length is checked against what
 * contains it; nothing is copied but the name.
 */
#include "net/client_hello.h"

#include <stdbool.h>
#include <string.h>

/* A bounded reader over a byte range. */
typedef struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
} rd;

static uint32_t take(rd *r, size_t k)
{
    if (r->bad || r->n < k) {
        r->bad = true;
        return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < k; i++)
        v = v << 8 | r->p[i];
    r->p += k;
    r->n -= k;
    return v;
}

/* The next `len` bytes as a reader of their own. */
static rd sub(rd *r, size_t len)
{
    rd s = {r->p, len, false};
    if (r->bad || r->n < len) {
        r->bad = true;
        s.bad = true;
        s.n = 0;
        return s;
    }
    r->p += len;
    r->n -= len;
    return s;
}

/* A DNS name of letters, digits, '-' and '_' in labels of 1..63, 253 at
 * most (without a trailing dot), lowered into out. */
static bool take_name(const uint8_t *p, size_t n, char *out, size_t cap)
{
    if (n && p[n - 1] == '.')
        n--;
    if (n == 0 || n > 253 || n >= cap)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            label++;
        } else if (c >= 'A' && c <= 'Z') {
            c = (uint8_t)(c - 'A' + 'a');
            label++;
        } else {
            return false;
        }
        if (label > 63)
            return false;
        out[i] = (char)c;
    }
    if (label == 0)
        return false;
    out[n] = '\0';
    return true;
}

/* The ClientHello body (after its 4-byte handshake header). */
static int parse_hello(rd h, char *sni, size_t cap)
{
    sni[0] = '\0';
    take(&h, 2); /* legacy_version */
    sub(&h, 32); /* random */
    uint32_t sid = take(&h, 1);
    if (sid > 32)
        return WEIR_CH_INVALID;
    sub(&h, sid);
    uint32_t cs = take(&h, 2);
    if (cs < 2 || cs % 2)
        return WEIR_CH_INVALID;
    sub(&h, cs);
    uint32_t comp = take(&h, 1);
    if (comp < 1)
        return WEIR_CH_INVALID;
    sub(&h, comp);
    if (h.bad)
        return WEIR_CH_INVALID;
    if (h.n == 0)
        return WEIR_CH_FOUND; /* no extensions at all (TLS 1.2 may do that) */
    rd ext = sub(&h, take(&h, 2));
    if (h.bad || h.n != 0)
        return WEIR_CH_INVALID;
    bool seen = false;
    while (ext.n && !ext.bad) {
        uint32_t type = take(&ext, 2);
        rd e = sub(&ext, take(&ext, 2));
        if (ext.bad)
            return WEIR_CH_INVALID;
        if (type != 0)
            continue;
        if (seen)
            return WEIR_CH_INVALID; /* RFC 8446 4.2: one of each */
        seen = true;
        rd list = sub(&e, take(&e, 2));
        if (e.bad || e.n != 0 || list.n == 0)
            return WEIR_CH_INVALID;
        while (list.n && !list.bad) {
            uint32_t kind = take(&list, 1);
            rd name = sub(&list, take(&list, 2));
            if (list.bad)
                return WEIR_CH_INVALID;
            if (kind != 0 || sni[0])
                continue; /* one host_name; other kinds are not defined */
            if (!take_name(name.p, name.n, sni, cap))
                return WEIR_CH_INVALID;
        }
        if (list.bad)
            return WEIR_CH_INVALID;
    }
    return ext.bad ? WEIR_CH_INVALID : WEIR_CH_FOUND;
}

int weir__client_hello_sni(const uint8_t *buf, size_t len, char *sni, size_t cap)
{
    /* The handshake message, gathered from the records' payloads. */
    uint8_t msg[WEIR_CH_MAX];
    size_t have = 0, need = 0;
    size_t off = 0;
    if (cap < 256)
        return WEIR_CH_INVALID;
    for (;;) {
        if (len - off < 5) {
            /* Check what is there of the record header. */
            if (len > off && buf[off] != 0x16)
                return WEIR_CH_INVALID;
            if (len - off >= 2 && buf[off + 1] != 0x03)
                return WEIR_CH_INVALID;
            return off + 5 > WEIR_CH_MAX ? WEIR_CH_INVALID : WEIR_CH_MORE;
        }
        const uint8_t *r = buf + off;
        size_t rlen = (size_t)r[3] << 8 | r[4];
        /* A handshake record of TLS 1.x (3.1 to 3.4; 3.0 has no extensions). */
        if (r[0] != 0x16 || r[1] != 0x03 || r[2] == 0 || r[2] > 4 || rlen == 0 || rlen > 16384)
            return WEIR_CH_INVALID;
        if (off + 5 + rlen > WEIR_CH_MAX)
            return WEIR_CH_INVALID;
        if (len - off - 5 < rlen)
            return WEIR_CH_MORE;
        memcpy(msg + have, r + 5, rlen);
        have += rlen;
        off += 5 + rlen;
        if (need == 0 && have >= 4) {
            if (msg[0] != 0x01) /* client_hello */
                return WEIR_CH_INVALID;
            need = 4 + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]);
            if (need > sizeof(msg) || need < 4 + 2 + 32 + 1 + 2 + 2 + 1 + 1)
                return WEIR_CH_INVALID;
        }
        if (need && have >= need) {
            if (have > need)
                return WEIR_CH_INVALID; /* another message in its last record: not a client's first
                                           flight */
            return parse_hello((rd){msg + 4, need - 4, false}, sni, cap);
        }
    }
}
