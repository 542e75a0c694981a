/*
 * proxy_proto.c - PROXY protocol v1 and v2 (see proxy_proto.h).
 *
 * Strict where the specification is: v1 is one line of single-space
 * separated fields ending in CRLF, within 107 bytes, with addresses of
 * the family it names and decimal ports without leading zeros; v2 has
 * the 12-byte signature, version 2, a known command, family and
 * transport, an address block of its family's size and TLVs that fit.
 */
#include "net/proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

uint32_t weir__crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- v1 ---- */

static bool v1_char(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'f') || c == '.' ||
           c == ':' || c == ' ';
}

/* A port: 1-5 digits, no leading zero unless it is "0", at most 65535. */
static bool v1_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

static bool v1_addr(const char *s, size_t n, int family, uint16_t port, struct sockaddr_storage *ss,
                    socklen_t *sl)
{
    char ip[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(ip))
        return false;
    memcpy(ip, s, n);
    ip[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
            return false;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        *sl = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
            return false;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        *sl = sizeof(*a);
    }
    return true;
}

static ssize_t parse_v1(const uint8_t *buf, size_t len, weir_pp_header *out)
{
    size_t lim = len < WEIR_PP_V1_MAX ? len : WEIR_PP_V1_MAX;
    size_t eol = 0;
    for (size_t i = sizeof(v1_prefix) - 1; i < lim; i++) {
        if (buf[i] == '\r') {
            if (i + 2 > WEIR_PP_V1_MAX)
                return -1; /* the LF would be past the limit */
            if (i + 1 >= len)
                return 0; /* the LF may come */
            if (buf[i + 1] != '\n')
                return -1;
            eol = i;
            break;
        }
        if (!v1_char(buf[i]))
            return -1;
    }
    if (!eol)
        return len >= WEIR_PP_V1_MAX ? -1 : 0;
    /* Fields after "PROXY ": split at single spaces. */
    const char *f[6];
    size_t fl[6], nf = 0;
    const char *p = (const char *)buf + sizeof(v1_prefix) - 1, *end = (const char *)buf + eol;
    while (p <= end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        if (nf == 6)
            return -1;
        f[nf] = p;
        fl[nf++] = (size_t)(stop - p);
        if (!sp)
            break;
        p = sp + 1;
    }
    memset(out, 0, sizeof(*out));
    out->version = 1;
    out->transport = SOCK_STREAM;
    if (fl[0] == 7 && memcmp(f[0], "UNKNOWN", 7) == 0)
        return (ssize_t)(eol + 2); /* the rest of the line is ignored */
    int family;
    if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return -1;
    uint16_t sport, dport;
    if (nf != 5 || !v1_port(f[3], fl[3], &sport) || !v1_port(f[4], fl[4], &dport) ||
        !v1_addr(f[1], fl[1], family, sport, &out->src, &out->src_len) ||
        !v1_addr(f[2], fl[2], family, dport, &out->dst, &out->dst_len))
        return -1;
    out->has_addrs = true;
    return (ssize_t)(eol + 2);
}

/* ---- v2 ---- */

static bool tlvs_valid(const uint8_t *hdr, size_t total, size_t off)
{
    while (off < total) {
        if (total - off < 3)
            return false;
        size_t n = (size_t)hdr[off + 1] << 8 | hdr[off + 2];
        if (total - off - 3 < n)
            return false;
        if (hdr[off] == WEIR_PP2_TYPE_CRC32C) {
            if (n != 4)
                return false;
            uint32_t want = (uint32_t)hdr[off + 3] << 24 | (uint32_t)hdr[off + 4] << 16 |
                            (uint32_t)hdr[off + 5] << 8 | hdr[off + 6];
            static const uint8_t zero[4];
            uint32_t crc = weir__crc32c(0, hdr, off + 3);
            crc = weir__crc32c(crc, zero, 4);
            crc = weir__crc32c(crc, hdr + off + 7, total - off - 7);
            if (crc != want)
                return false;
        }
        off += 3 + n;
    }
    return true;
}

static ssize_t parse_v2(const uint8_t *buf, size_t len, weir_pp_header *out)
{
    if (len < 16)
        return 0;
    uint8_t ver = buf[12] >> 4, cmd = buf[12] & 0xF, fam = buf[13] >> 4, tr = buf[13] & 0xF;
    /* Only the defined family/transport bytes: 0x00 (UNSPEC), then INET,
     * INET6 and UNIX over STREAM or DGRAM; others must be rejected. */
    if (ver != 2 || cmd > 1 || fam > 3 || tr > 2 || (fam == 0) != (tr == 0))
        return -1;
    size_t total = 16 + ((size_t)buf[14] << 8 | buf[15]);
    if (total > WEIR_PP_MAX)
        return -1;
    if (len < total)
        return 0;
    static const size_t addr_len[4] = {0, 12, 36, 216};
    if (total - 16 < addr_len[fam] || !tlvs_valid(buf, total, 16 + addr_len[fam]))
        return -1;
    memset(out, 0, sizeof(*out));
    out->version = 2;
    out->local = cmd == 0;
    out->transport = tr == 1 ? SOCK_STREAM : tr == 2 ? SOCK_DGRAM : 0;
    out->tlvs = total > 16 + addr_len[fam] ? buf + 16 + addr_len[fam] : NULL;
    out->tlvs_len = total - 16 - addr_len[fam];
    const uint8_t *a = buf + 16;
    if (cmd == 1 && fam == 1) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in);
        out->has_addrs = true;
    } else if (cmd == 1 && fam == 2) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
        out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
        out->has_addrs = true;
    }
    return (ssize_t)total;
}

ssize_t weir__pp_parse(const uint8_t *buf, size_t len, weir_pp_header *out)
{
    if (len == 0)
        return 0;
    size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v2_sig, n) == 0)
        return n < sizeof(v2_sig) ? 0 : parse_v2(buf, len, out);
    n = len < sizeof(v1_prefix) - 1 ? len : sizeof(v1_prefix) - 1;
    if (memcmp(buf, v1_prefix, n) != 0)
        return -1;
    return n < sizeof(v1_prefix) - 1 ? 0 : parse_v1(buf, len, out);
}

const uint8_t *weir__pp_tlv(const weir_pp_header *h, uint8_t type, size_t *len)
{
    for (size_t off = 0; h->tlvs && off + 3 <= h->tlvs_len;) {
        size_t n = (size_t)h->tlvs[off + 1] << 8 | h->tlvs[off + 2];
        if (off + 3 + n > h->tlvs_len)
            break;
        if (h->tlvs[off] == type) {
            *len = n;
            return h->tlvs + off + 3;
        }
        off += 3 + n;
    }
    return NULL;
}

/* ---- writing ---- */

static uint16_t port_of(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                          : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static bool same_inet_family(const struct sockaddr *a, const struct sockaddr *b)
{
    return a && b && a->sa_family == b->sa_family &&
           (a->sa_family == AF_INET || a->sa_family == AF_INET6);
}

size_t weir__pp_write_v1(char *buf, size_t cap, const struct sockaddr *src,
                         const struct sockaddr *dst)
{
    int n;
    if (!same_inet_family(src, dst)) {
        n = snprintf(buf, cap, "PROXY UNKNOWN\r\n");
    } else {
        char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
        const void *sa = src->sa_family == AF_INET
                             ? (const void *)&((const struct sockaddr_in *)src)->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)src)->sin6_addr;
        const void *da = dst->sa_family == AF_INET
                             ? (const void *)&((const struct sockaddr_in *)dst)->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)dst)->sin6_addr;
        if (!inet_ntop(src->sa_family, sa, s, sizeof(s)) ||
            !inet_ntop(dst->sa_family, da, d, sizeof(d)))
            return 0;
        n = snprintf(buf, cap, "PROXY %s %s %s %u %u\r\n",
                     src->sa_family == AF_INET ? "TCP4" : "TCP6", s, d, port_of(src), port_of(dst));
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t weir__pp_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
                         const struct sockaddr *dst, const char *authority)
{
    bool proxy = same_inet_family(src, dst);
    size_t alen = !proxy ? 0 : src->sa_family == AF_INET ? 12 : 36;
    size_t auth = authority ? strlen(authority) : 0;
    if (auth > 255)
        auth = 0; /* a DNS name is at most 255 bytes: never send a longer one */
    size_t total = 16 + alen + (auth ? 3 + auth : 0);
    if (cap < total)
        return 0;
    memcpy(buf, v2_sig, sizeof(v2_sig));
    buf[12] = proxy ? 0x21 : 0x20;
    buf[13] = !proxy ? 0x00 : src->sa_family == AF_INET ? 0x11 : 0x21;
    buf[14] = (uint8_t)((total - 16) >> 8);
    buf[15] = (uint8_t)(total - 16);
    uint8_t *a = buf + 16;
    if (proxy && src->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
        memcpy(a, &s->sin_addr, 4);
        memcpy(a + 4, &d->sin_addr, 4);
        memcpy(a + 8, &s->sin_port, 2);
        memcpy(a + 10, &d->sin_port, 2);
    } else if (proxy) {
        const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
        memcpy(a, &s->sin6_addr, 16);
        memcpy(a + 16, &d->sin6_addr, 16);
        memcpy(a + 32, &s->sin6_port, 2);
        memcpy(a + 34, &d->sin6_port, 2);
    }
    if (auth) {
        uint8_t *t = a + alen;
        t[0] = WEIR_PP2_TYPE_AUTHORITY;
        t[1] = 0;
        t[2] = (uint8_t)auth;
        memcpy(t + 3, authority, auth);
    }
    return total;
}

int weir__pp_take(int fd, weir_pp_header *out)
{
    uint8_t buf[WEIR_PP_MAX];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return WEIR_PP_MORE;
    if (n <= 0)
        return WEIR_PP_CLOSED;
    ssize_t r = weir__pp_parse(buf, (size_t)n, out);
    if (r == 0)
        return WEIR_PP_MORE;
    if (r < 0 || out->transport == SOCK_DGRAM)
        return WEIR_PP_INVALID;
    /* The TLVs point into buf: they do not outlive this call. */
    out->tlvs = NULL;
    out->tlvs_len = 0;
    if (recv(fd, buf, (size_t)r, 0) != r)
        return WEIR_PP_CLOSED;
    return WEIR_PP_TAKEN;
}
