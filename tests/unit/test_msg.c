/*
 * test_msg.c - header tables and address parsing.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "http/msg.h"
#include "net/sock.h"

static weir_arena arena;
static weir_headers h;

static void setup(void)
{
    weir__arena_init(&arena, NULL, 0);
    weir__headers_init(&h, &arena);
}

static void teardown(void)
{
    weir__arena_reset(&arena);
}

static bool value_is(weir_str v, const char *s)
{
    return v.ptr && v.len == strlen(s) && memcmp(v.ptr, s, v.len) == 0;
}

TestSuite(headers, .init = setup, .fini = teardown);

Test(headers, set_add_get_remove)
{
    cr_assert_eq(weir_headers_add(&h, "Accept", "a"), WEIR_OK);
    cr_assert_eq(weir_headers_add(&h, "X-Dup", "1"), WEIR_OK);
    cr_assert_eq(weir_headers_add(&h, "x-dup", "2"), WEIR_OK);
    cr_assert(value_is(weir_headers_get(&h, "X-DUP"), "1"));
    cr_assert_eq(weir_headers_set(&h, "X-Dup", "3"), WEIR_OK);
    cr_assert_eq(weir_headers_count(&h), 2);
    cr_assert(value_is(weir_headers_get(&h, "x-dup"), "3"));
    cr_assert_eq(weir_headers_set(&h, "New", "n"), WEIR_OK);
    cr_assert_eq(weir_headers_count(&h), 3);
    cr_assert_eq(weir_headers_remove(&h, "accept"), 1);
    cr_assert_eq(weir_headers_remove(&h, "absent"), 0);
    cr_assert_null(weir_headers_get(&h, "accept").ptr);
    weir_header first = weir_headers_at(&h, 0);
    cr_assert(value_is(first.name, "X-Dup"));
    cr_assert_null(weir_headers_at(&h, 99).name.ptr);
}

Test(headers, rejects_invalid_names_and_values)
{
    cr_assert_eq(weir_headers_set(&h, "Bad Name", "v"), WEIR_ERR_INVAL);
    cr_assert_eq(weir_headers_set(&h, "", "v"), WEIR_ERR_INVAL);
    cr_assert_eq(weir_headers_set(&h, "X", "a\r\nInjected: 1"), WEIR_ERR_INVAL);
    cr_assert_eq(weir_headers_add(&h, "X", "a\nb"), WEIR_ERR_INVAL);
    cr_assert_eq(weir_headers_add(&h, "X:", "v"), WEIR_ERR_INVAL);
    cr_assert_eq(weir_headers_count(&h), 0);
    cr_assert_eq(weir_headers_add(&h, "X", "tab\tok"), WEIR_OK);
}

Test(headers, grows_past_the_inline_table)
{
    char name[16];
    for (int i = 0; i < 3 * WEIR_INLINE_HEADERS; i++) {
        snprintf(name, sizeof(name), "H%d", i);
        cr_assert_eq(weir_headers_add(&h, name, "v"), WEIR_OK);
    }
    cr_assert_eq(weir_headers_count(&h), 3 * WEIR_INLINE_HEADERS);
    cr_assert(value_is(weir_headers_get(&h, "H0"), "v"));
    cr_assert(value_is(weir_headers_at(&h, 3 * WEIR_INLINE_HEADERS - 1).name, "H95"));
}

Test(headers, reserve_keeps_fields)
{
    weir_headers_add(&h, "A", "1");
    cr_assert_eq(weir__headers_reserve(&h, 200), WEIR_OK);
    cr_assert_geq(h.cap, 200);
    cr_assert(value_is(weir_headers_get(&h, "a"), "1"));
}

Test(headers, hop_by_hop_fields)
{
    const char *hop[] = {"Connection",       "keep-alive",          "TE",
                         "Trailer",          "Transfer-Encoding",   "Upgrade",
                         "Proxy-Connection", "Proxy-Authorization", "proxy-authenticate"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        cr_assert(weir__is_hop_by_hop((weir_str){hop[i], strlen(hop[i])}), "%s", hop[i]);
    const char *e2e[] = {"Host", "Content-Length", "Tea", "Upgrades", "X-Connection"};
    for (size_t i = 0; i < sizeof(e2e) / sizeof(e2e[0]); i++)
        cr_assert(!weir__is_hop_by_hop((weir_str){e2e[i], strlen(e2e[i])}), "%s", e2e[i]);
}

Test(addr, parse_and_format)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[WEIR_ADDR_STRLEN];
    const char *ok[] = {
        "127.0.0.1:80",          "[::1]:8080",    "0.0.0.0:0",       "[2001:db8::1]:443",
        "255.255.255.255:65535", "10.20.30.40:9", "1.0.0.100:10000", "[::ffff:1.2.3.4]:1"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_eq(weir__addr_parse(ok[i], &ss, &len), 0, "%s", ok[i]);
        weir__addr_format((struct sockaddr *)&ss, buf, sizeof(buf));
        cr_assert_str_eq(buf, ok[i]);
    }
    /* The IP alone, and a buffer too small for the fast path. */
    weir__addr_parse("192.168.100.7:1", &ss, &len);
    cr_assert_eq(weir__addr_format_ip((struct sockaddr *)&ss, buf, sizeof(buf)), 13);
    cr_assert_str_eq(buf, "192.168.100.7");
    char small[12];
    weir__addr_format((struct sockaddr *)&ss, small, sizeof(small));
    cr_assert_str_eq(small, "192.168.100");
    cr_assert_eq(weir__addr_parse("*:8080", &ss, &len), 0);
    const char *bad[] = {"127.0.0.1",    "127.0.0.1:",   "127.0.0.1:65536",
                         "127.0.0.1:-1", "localhost:80", "[::1:80",
                         "::1:80",       "1.2.3.4:80x",  ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(weir__addr_parse(bad[i], &ss, &len), WEIR_ERR_INVAL, "%s", bad[i]);
}
