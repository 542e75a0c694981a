/*
 * test_client_hello.c - the SNI of a TLS ClientHello (src/net/
 * client_hello.c): names found (lowered, trailing dot dropped), none,
 * every prefix asking for more, a handshake fragmented over records, and
 * what is refused: other protocols, malformed lengths, bad names, two
 * server_name extensions, an oversized message.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "net/client_hello.h"

typedef struct buf {
    uint8_t b[40000];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void put16(buf *b, size_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 2);
}

/* A ClientHello body with the given extensions block content. */
static void hello_body(buf *b, const buf *ext)
{
    static const uint8_t random[32];
    put16(b, 0x0303);
    put(b, random, 32);
    put(b, "\x00", 1); /* session id */
    put16(b, 2);       /* cipher suites */
    put(b, "\x13\x01", 2);
    put(b, "\x01\x00", 2); /* compression: null */
    if (ext) {
        put16(b, ext->n);
        put(b, ext->b, ext->n);
    }
}

static void sni_ext(buf *e, const char *name)
{
    size_t n = strlen(name);
    put16(e, 0); /* server_name */
    put16(e, n + 5);
    put16(e, n + 3);   /* list */
    put(e, "\x00", 1); /* host_name */
    put16(e, n);
    put(e, name, n);
}

/* A handshake message in records of at most `frag` bytes each. */
static void records(buf *out, const buf *body, size_t frag)
{
    buf m = {.n = 0};
    uint8_t h[4] = {1, (uint8_t)(body->n >> 16), (uint8_t)(body->n >> 8), (uint8_t)body->n};
    put(&m, h, 4);
    put(&m, body->b, body->n);
    for (size_t off = 0; off < m.n; off += frag) {
        size_t k = m.n - off < frag ? m.n - off : frag;
        put(out, "\x16\x03\x01", 3);
        put16(out, k);
        put(out, m.b + off, k);
    }
}

static buf *hello(const char *name, size_t frag)
{
    static buf out;
    buf ext = {.n = 0}, body = {.n = 0};
    out.n = 0;
    if (name)
        sni_ext(&ext, name);
    put16(&ext, 16); /* an ALPN extension after it */
    put16(&ext, 5);
    put16(&ext, 3);
    put(&ext, "\x02h2", 3);
    hello_body(&body, &ext);
    records(&out, &body, frag);
    return &out;
}

static int sni_of(const buf *b, char *sni)
{
    return weir__client_hello_sni(b->b, b->n, sni, 256);
}

Test(client_hello, finds_the_name_lowered_without_its_dot)
{
    char sni[256];
    cr_assert_eq(sni_of(hello("Api.Example.COM.", 16384), sni), WEIR_CH_FOUND);
    cr_expect_str_eq(sni, "api.example.com");
    cr_assert_eq(sni_of(hello("a_b-c.d", 16384), sni), WEIR_CH_FOUND);
    cr_expect_str_eq(sni, "a_b-c.d");
}

Test(client_hello, none_is_an_empty_name)
{
    char sni[256] = "x";
    cr_assert_eq(sni_of(hello(NULL, 16384), sni), WEIR_CH_FOUND);
    cr_expect_str_eq(sni, "");
    buf body = {.n = 0}, out = {.n = 0};
    hello_body(&body, NULL); /* no extensions block at all */
    records(&out, &body, 16384);
    cr_assert_eq(sni_of(&out, sni), WEIR_CH_FOUND);
    cr_expect_str_eq(sni, "");
}

Test(client_hello, every_prefix_asks_for_more)
{
    char sni[256];
    buf *b = hello("example.org", 50);
    for (size_t n = 0; n < b->n; n++)
        cr_assert_eq(weir__client_hello_sni(b->b, n, sni, sizeof(sni)), WEIR_CH_MORE, "prefix %zu",
                     n);
    cr_assert_eq(sni_of(b, sni), WEIR_CH_FOUND); /* fragmented over records of 50 */
    cr_expect_str_eq(sni, "example.org");
}

Test(client_hello, refuses_what_is_not_a_client_hello)
{
    char sni[256];
    const char *http = "GET / HTTP/1.1\r\n";
    cr_expect_eq(weir__client_hello_sni((const uint8_t *)http, 1, sni, 256), WEIR_CH_INVALID);
    cr_expect_eq(weir__client_hello_sni((const uint8_t *)"\x16\x04", 2, sni, 256), WEIR_CH_INVALID);
    buf *b = hello("a.test", 16384);
    b->b[5] = 2; /* a ServerHello */
    cr_expect_eq(sni_of(b, sni), WEIR_CH_INVALID);
    b = hello("a.test", 16384);
    b->b[0] = 0x17; /* application data */
    cr_expect_eq(sni_of(b, sni), WEIR_CH_INVALID);
    b = hello("a.test", 16384);
    b->b[3] = 0x50; /* a record over 16 KB */
    cr_expect_eq(sni_of(b, sni), WEIR_CH_INVALID);
}

Test(client_hello, refuses_bad_names_and_lengths)
{
    char sni[256];
    static const char *const bad[] = {"a b", "a..b", ".a", "a\x01", "", "\xc3\xa9.test"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(sni_of(hello(bad[i], 16384), sni), WEIR_CH_INVALID, "%s", bad[i]);
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ".test");
    cr_expect_eq(sni_of(hello(label, 16384), sni), WEIR_CH_INVALID);
    /* Two server_name extensions. */
    buf ext = {.n = 0}, body = {.n = 0}, out = {.n = 0};
    sni_ext(&ext, "a.test");
    sni_ext(&ext, "b.test");
    hello_body(&body, &ext);
    records(&out, &body, 16384);
    cr_expect_eq(sni_of(&out, sni), WEIR_CH_INVALID);
    /* An extension longer than its block. */
    buf *b = hello("a.test", 16384);
    size_t ext_len_at = 5 + 4 + 2 + 32 + 1 + 2 + 2 + 2;
    b->b[ext_len_at + 4] = 0xff;
    cr_expect_eq(sni_of(b, sni), WEIR_CH_INVALID);
}

Test(client_hello, refuses_a_message_over_the_limit)
{
    char sni[256];
    buf ext = {.n = 0}, body = {.n = 0};
    static buf out;
    out.n = 0;
    sni_ext(&ext, "big.test");
    put16(&ext, 21); /* padding */
    put16(&ext, 17000);
    static const uint8_t zeros[17000];
    put(&ext, zeros, 17000);
    hello_body(&body, &ext);
    records(&out, &body, 16384);
    cr_expect_eq(sni_of(&out, sni), WEIR_CH_INVALID);
}
