/*
 * test_proxy_proto.c - the PROXY protocol parser and writers
 * (src/net/proxy_proto.c): the examples of HAProxy's proxy-protocol.txt,
 * every way a header can be cut short or malformed, early refusal of what
 * is not a header, TLVs and their CRC32C, and write -> parse round trips.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "net/proxy_proto.h"

static ssize_t parse_str(const char *s, weir_pp_header *h)
{
    return weir__pp_parse((const uint8_t *)s, strlen(s), h);
}

static void expect_v4(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    char buf[INET_ADDRSTRLEN];
    cr_assert_eq(a->sin_family, AF_INET);
    cr_expect_str_eq(inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf)), ip);
    cr_expect_eq(ntohs(a->sin_port), port);
}

static void expect_v6(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    char buf[INET6_ADDRSTRLEN];
    cr_assert_eq(a->sin6_family, AF_INET6);
    cr_expect_str_eq(inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf)), ip);
    cr_expect_eq(ntohs(a->sin6_port), port);
}

Test(proxy_proto, v1_tcp4_tcp6_unknown)
{
    weir_pp_header h;
    const char *s = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    cr_assert_eq(parse_str(s, &h), 47);
    cr_expect_eq(h.version, 1);
    cr_expect(h.has_addrs);
    expect_v4(&h.src, "192.168.0.1", 56324);
    expect_v4(&h.dst, "192.168.0.11", 443);
    s = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    cr_assert_eq(parse_str(s, &h), (ssize_t)strlen(s));
    expect_v6(&h.src, "2001:db8::1", 65535);
    expect_v6(&h.dst, "::1", 0);
    cr_assert_eq(parse_str("PROXY UNKNOWN\r\n", &h), 15);
    cr_expect_not(h.has_addrs);
    s = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    cr_assert_eq(parse_str(s, &h), (ssize_t)strlen(s), "UNKNOWN ignores the rest of its line");
}

Test(proxy_proto, v1_longest_is_107_bytes)
{
    char s[200];
    const char *ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    snprintf(s, sizeof(s), "PROXY TCP6 %s %s 65535 65535\r\n", ip, ip);
    cr_assert_eq(strlen(s), 104);
    weir_pp_header h;
    cr_expect_eq(parse_str(s, &h), 104);
    /* UNKNOWN padded to exactly 107 is fine, one byte more is not. */
    memset(s, 'A', sizeof(s));
    memcpy(s, "PROXY UNKNOWN ", 14);
    memcpy(s + 105, "\r\n", 3);
    cr_expect_eq(parse_str(s, &h), 107);
    memcpy(s + 105, "A\r\n", 4);
    cr_expect_eq(parse_str(s, &h), -1);
    memset(s + 14, 'A', 150);
    cr_expect_eq(weir__pp_parse((const uint8_t *)s, 150, &h), -1, "no CRLF within 107");
}

Test(proxy_proto, v1_incomplete_then_complete)
{
    const char *s = "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n";
    weir_pp_header h;
    for (size_t n = 0; n < strlen(s); n++)
        cr_expect_eq(weir__pp_parse((const uint8_t *)s, n, &h), 0, "%zu bytes", n);
    cr_expect_eq(weir__pp_parse((const uint8_t *)s, strlen(s), &h), (ssize_t)strlen(s));
}

Test(proxy_proto, v1_malformed)
{
    const char *bad[] = {
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n",       /* LF without CR */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\rX",      /* CR without LF */
        "PROXY TCP4  10.0.0.1 10.0.0.2 1 2\r\n",    /* two spaces */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2 \r\n",    /* trailing space */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n",       /* a port missing */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2 3\r\n",   /* a field too many */
        "PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n",    /* leading zero */
        "PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n", /* port range */
        "PROXY TCP4 10.0.0.1 10.0.0.2 -1 2\r\n",    /* sign */
        "PROXY TCP4 ::1 10.0.0.2 1 2\r\n",          /* family mismatch */
        "PROXY TCP6 10.0.0.1 ::1 1 2\r\n",          /* family mismatch */
        "PROXY TCP4 10.0.0.256 10.0.0.2 1 2\r\n",   /* not an address */
        "PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n",    /* inet_pton refuses octal-looking */
        "PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",     /* not a protocol of v1 */
        "PROXY tcp4 10.0.0.1 10.0.0.2 1 2\r\n",     /* case */
        "PROXY \r\n",                               /* nothing */
        "PROXY TCP4 10.0.0.1\t10.0.0.2 1 2\r\n",    /* tab */
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\0\r\n",   /* NUL (length below) */
        "proxy TCP4 10.0.0.1 10.0.0.2 1 2\r\n",     /* the prefix is case-sensitive */
        "PROXYTCP4 10.0.0.1 10.0.0.2 1 2\r\n",      /* no space */
        "GET / HTTP/1.1\r\n\r\n",                   /* not PROXY at all */
    };
    weir_pp_header h;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = strlen(bad[i]);
        if (i == 17)
            n += 3;
        cr_expect_eq(weir__pp_parse((const uint8_t *)bad[i], n, &h), -1, "'%s'", bad[i]);
    }
}

Test(proxy_proto, early_refusal)
{
    weir_pp_header h;
    /* One wrong byte is enough: no waiting for a timeout. */
    cr_expect_eq(weir__pp_parse((const uint8_t *)"G", 1, &h), -1);
    cr_expect_eq(weir__pp_parse((const uint8_t *)"PRX", 3, &h), -1);
    cr_expect_eq(weir__pp_parse((const uint8_t *)"\x16\x03\x01", 3, &h), -1, "a ClientHello");
    cr_expect_eq(weir__pp_parse((const uint8_t *)"\r\n\r\n\x00\r\nX", 8, &h), -1);
    cr_expect_eq(weir__pp_parse((const uint8_t *)"PROXY TCP4 1.2.3.4 !", 20, &h), -1);
    cr_expect_eq(weir__pp_parse((const uint8_t *)"\r\n\r", 3, &h), 0, "a v2 beginning");
    cr_expect_eq(weir__pp_parse((const uint8_t *)"PRO", 3, &h), 0, "a v1 beginning");
    cr_expect_eq(weir__pp_parse((const uint8_t *)"", 0, &h), 0);
}

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: sig, ver_cmd, fam, then body[0..n). Returns its length. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n)
        memcpy(out + 16, body, n);
    return 16 + n;
}

Test(proxy_proto, v2_inet_inet6_local_unspec_unix)
{
    uint8_t b[600];
    weir_pp_header h;
    const uint8_t in4[] = {10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0x01, 0xBB};
    size_t n = v2(b, 0x21, 0x11, in4, sizeof(in4));
    b[n] = 'G'; /* the payload after it is not part of it */
    cr_assert_eq(weir__pp_parse(b, n + 1, &h), (ssize_t)n);
    cr_expect_eq(h.version, 2);
    cr_expect(h.has_addrs && !h.local);
    cr_expect_eq(h.transport, SOCK_STREAM);
    expect_v4(&h.src, "10.0.0.1", 8080);
    expect_v4(&h.dst, "10.0.0.2", 443);
    cr_expect_null(h.tlvs);
    uint8_t in6[36] = {0};
    in6[15] = 1;                 /* ::1 */
    in6[16] = 0x20, in6[17] = 1; /* 2001:: */
    in6[32] = 0, in6[33] = 53;   /* 53 */
    in6[34] = 0xFF, in6[35] = 0xFF;
    n = v2(b, 0x21, 0x22, in6, sizeof(in6));
    cr_assert_eq(weir__pp_parse(b, n, &h), (ssize_t)n);
    cr_expect_eq(h.transport, SOCK_DGRAM);
    expect_v6(&h.src, "::1", 53);
    expect_v6(&h.dst, "2001::", 65535);
    /* LOCAL: the sender's own connection; its addresses are ignored. */
    n = v2(b, 0x20, 0x00, NULL, 0);
    cr_assert_eq(weir__pp_parse(b, n, &h), 16);
    cr_expect(h.local && !h.has_addrs);
    n = v2(b, 0x20, 0x11, in4, sizeof(in4));
    cr_assert_eq(weir__pp_parse(b, n, &h), (ssize_t)n);
    cr_expect(h.local && !h.has_addrs);
    /* PROXY over UNSPEC or UNIX: accepted, no IP addresses. */
    n = v2(b, 0x21, 0x00, NULL, 0);
    cr_assert_eq(weir__pp_parse(b, n, &h), 16);
    cr_expect_not(h.has_addrs);
    uint8_t unix_addrs[216] = {'/', 't'};
    n = v2(b, 0x21, 0x31, unix_addrs, sizeof(unix_addrs));
    cr_assert_eq(weir__pp_parse(b, n, &h), (ssize_t)n);
    cr_expect_not(h.has_addrs);
}

Test(proxy_proto, v2_malformed_and_incomplete)
{
    uint8_t b[WEIR_PP_MAX + 64];
    weir_pp_header h;
    const uint8_t in4[12] = {10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0, 80};
    size_t n = v2(b, 0x21, 0x11, in4, sizeof(in4));
    for (size_t k = 0; k < n; k++)
        cr_expect_eq(weir__pp_parse(b, k, &h), 0, "%zu bytes", k);
    const uint8_t bad_vc[] = {0x11, 0x31, 0x22, 0x2F, 0x02};
    for (size_t i = 0; i < sizeof(bad_vc); i++) {
        v2(b, bad_vc[i], 0x11, in4, sizeof(in4));
        cr_expect_eq(weir__pp_parse(b, n, &h), -1, "ver_cmd %#x", bad_vc[i]);
    }
    const uint8_t bad_fam[] = {0x01, 0x02, 0x10, 0x13, 0x41, 0x03, 0xFF};
    for (size_t i = 0; i < sizeof(bad_fam); i++) {
        v2(b, 0x21, bad_fam[i], in4, sizeof(in4));
        cr_expect_eq(weir__pp_parse(b, n, &h), -1, "fam %#x", bad_fam[i]);
    }
    /* An address block shorter than its family's. */
    n = v2(b, 0x21, 0x11, in4, 11);
    cr_expect_eq(weir__pp_parse(b, n, &h), -1);
    n = v2(b, 0x21, 0x21, in4, 12);
    cr_expect_eq(weir__pp_parse(b, n, &h), -1);
    /* Longer than weir takes: refused from the 16th byte on. */
    uint8_t big[WEIR_PP_MAX] = {0};
    v2(b, 0x21, 0x11, big, WEIR_PP_MAX - 16 + 1);
    cr_expect_eq(weir__pp_parse(b, 16, &h), -1);
    n = v2(b, 0x21, 0x11, big, WEIR_PP_MAX - 16);
    memset(b + 16 + 12, WEIR_PP2_TYPE_NOOP, 1);
    b[16 + 13] = (uint8_t)((WEIR_PP_MAX - 16 - 12 - 3) >> 8);
    b[16 + 14] = (uint8_t)(WEIR_PP_MAX - 16 - 12 - 3);
    cr_expect_eq(weir__pp_parse(b, n, &h), WEIR_PP_MAX, "exactly the limit is taken");
}

Test(proxy_proto, v2_tlvs_and_crc32c)
{
    cr_expect_eq(weir__crc32c(0, (const uint8_t *)"123456789", 9), 0xE3069283u,
                 "the CRC-32C check value");
    uint8_t body[64] = {10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0, 80};
    size_t k = 12;
    const char *host = "api.example";
    body[k++] = WEIR_PP2_TYPE_AUTHORITY, body[k++] = 0, body[k++] = (uint8_t)strlen(host);
    memcpy(body + k, host, strlen(host));
    k += strlen(host);
    size_t crc_at = k;
    body[k++] = WEIR_PP2_TYPE_CRC32C, body[k++] = 0, body[k++] = 4;
    k += 4; /* zero for now */
    uint8_t b[128];
    size_t n = v2(b, 0x21, 0x11, body, k);
    uint32_t crc = weir__crc32c(0, b, n);
    uint8_t *v = b + 16 + crc_at + 3;
    v[0] = (uint8_t)(crc >> 24), v[1] = (uint8_t)(crc >> 16), v[2] = (uint8_t)(crc >> 8),
    v[3] = (uint8_t)crc;
    weir_pp_header h;
    cr_assert_eq(weir__pp_parse(b, n, &h), (ssize_t)n);
    size_t len;
    const uint8_t *a = weir__pp_tlv(&h, WEIR_PP2_TYPE_AUTHORITY, &len);
    cr_assert_not_null(a);
    cr_expect(len == strlen(host) && memcmp(a, host, len) == 0);
    cr_expect_null(weir__pp_tlv(&h, WEIR_PP2_TYPE_ALPN, &len));
    v[3] ^= 1;
    cr_expect_eq(weir__pp_parse(b, n, &h), -1, "a wrong checksum");
    v[3] ^= 1;
    b[16 + 12 + 2] = 200; /* the AUTHORITY TLV claims more than there is */
    cr_expect_eq(weir__pp_parse(b, n, &h), -1);
    b[16 + 12 + 2] = (uint8_t)strlen(host);
    b[16 + crc_at + 2] = 3; /* a CRC32C TLV of the wrong size */
    cr_expect_eq(weir__pp_parse(b, n, &h), -1);
    /* A TLV header cut short at the end. */
    n = v2(b, 0x21, 0x11, body, 12 + 2);
    cr_expect_eq(weir__pp_parse(b, n, &h), -1);
}

Test(proxy_proto, write_then_parse)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(40000)};
    struct sockaddr_in d4 = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "203.0.113.7", &s4.sin_addr);
    inet_pton(AF_INET, "10.1.2.3", &d4.sin_addr);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
    struct sockaddr_in6 d6 = {.sin6_family = AF_INET6, .sin6_port = htons(65535)};
    inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
    inet_pton(AF_INET6, "fe80::1", &d6.sin6_addr);
    char t[WEIR_PP_V1_MAX + 1];
    weir_pp_header h;
    size_t n = weir__pp_write_v1(t, sizeof(t), (void *)&s4, (void *)&d4);
    cr_assert_str_eq(t, "PROXY TCP4 203.0.113.7 10.1.2.3 40000 80\r\n");
    cr_assert_eq(weir__pp_parse((uint8_t *)t, n, &h), (ssize_t)n);
    expect_v4(&h.src, "203.0.113.7", 40000);
    n = weir__pp_write_v1(t, sizeof(t), (void *)&s6, (void *)&d6);
    cr_assert_eq(weir__pp_parse((uint8_t *)t, n, &h), (ssize_t)n);
    expect_v6(&h.dst, "fe80::1", 65535);
    n = weir__pp_write_v1(t, sizeof(t), (void *)&s4, (void *)&d6);
    cr_assert_str_eq(t, "PROXY UNKNOWN\r\n", "mixed families");
    cr_expect_eq(weir__pp_write_v1(t, 10, (void *)&s4, (void *)&d4), 0, "too small");
    uint8_t b[512];
    n = weir__pp_write_v2(b, sizeof(b), (void *)&s6, (void *)&d6, "db.internal");
    cr_assert_eq(weir__pp_parse(b, n, &h), (ssize_t)n);
    expect_v6(&h.src, "2001:db8::7", 1);
    size_t len;
    const uint8_t *a = weir__pp_tlv(&h, WEIR_PP2_TYPE_AUTHORITY, &len);
    cr_expect(a && len == 11 && memcmp(a, "db.internal", 11) == 0);
    n = weir__pp_write_v2(b, sizeof(b), (void *)&s4, (void *)&d4, NULL);
    cr_assert_eq(n, 28);
    cr_assert_eq(weir__pp_parse(b, n, &h), 28);
    expect_v4(&h.dst, "10.1.2.3", 80);
    n = weir__pp_write_v2(b, sizeof(b), NULL, NULL, NULL);
    cr_assert_eq(weir__pp_parse(b, n, &h), 16);
    cr_expect(h.local);
    cr_expect_eq(weir__pp_write_v2(b, 20, (void *)&s4, (void *)&d4, NULL), 0, "too small");
}
