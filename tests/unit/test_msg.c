/*
 * test_msg.c - header tables and address parsing.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "core/ascii.h"
#include "http/h2_common.h"
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

/* The word-at-a-time comparison agrees with the byte-by-byte definition
 * for every length up to 40 and every byte value, at every offset (the
 * loads are unaligned), on equal, case-flipped and one-byte-off inputs. */
static bool ieq_ref(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x |= 0x20;
        if (y >= 'A' && y <= 'Z')
            y |= 0x20;
        if (x != y)
            return false;
    }
    return true;
}

Test(ascii, ieq_matches_the_definition)
{
    char a[64], b[64];
    unsigned seed = 12345;
    long checked = 0;
    for (size_t len = 0; len <= 40; len++) {
        for (int round = 0; round < 2000; round++) {
            size_t off = (size_t)round % 8;
            for (size_t i = 0; i < len; i++) {
                seed = seed * 1103515245u + 12345u;
                a[off + i] = (char)(seed >> 16);
                b[off + i] = a[off + i];
            }
            /* flip case, or change a byte to its case-folding impostor
             * ('^' / '~', '@' / '`', CR / '-', controls / digits) */
            for (size_t i = 0; i < len; i++) {
                seed = seed * 1103515245u + 12345u;
                unsigned r = seed >> 16;
                if (r % 3 == 0)
                    b[off + i] = (char)((unsigned char)b[off + i] ^ 0x20);
                else if (r % 17 == 1)
                    b[off + i] = (char)(r >> 8);
            }
            bool want = ieq_ref(a + off, b + off, len);
            cr_assert_eq(weir__ascii_ieq(a + off, b + off, len), want, "len %zu round %d", len,
                         round);
            cr_assert(weir__ascii_ieq(a + off, a + off, len));
            checked++;
        }
    }
    /* every pair of single bytes */
    for (int x = 0; x < 256; x++) {
        for (int y = 0; y < 256; y++) {
            char p = (char)x, q = (char)y;
            cr_assert_eq(weir__ascii_ieq(&p, &q, 1), ieq_ref(&p, &q, 1), "%02x %02x", x, y);
        }
    }
    cr_assert_gt(checked, 80000);
    cr_assert(!weir__ascii_ieq("content-length", "content_length", 14));
    cr_assert(!weir__ascii_ieq("x-p^", "x-p~", 4));
    cr_assert(weir__ascii_ieq("Transfer-Encoding", "transfer-encoding", 17));
}

/* Setting a field finds an existing one whatever was dropped, moved or
 * added before: the name filter against a model table, over random
 * sequences of set, add, remove and direct compaction. */
Test(headers, set_ref_agrees_with_a_model)
{
    static const char *names[] = {"X-P0", "X-P1", "Date", "date", "X-P2",        "Server",
                                  "A",    "a",    "Via",  "VIA",  "X-Request-Id"};
    enum { NN = sizeof(names) / sizeof(names[0]) };
    unsigned seed = 7;
    for (int round = 0; round < 300; round++) {
        weir__headers_init(&h, &arena);
        for (int step = 0; step < 60; step++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = seed >> 16;
            const char *name = names[r % NN];
            weir_str n = {name, strlen(name)}, v = {"v", 1};
            switch ((r >> 8) % 5) {
            case 0:
            case 1:
                cr_assert_eq(weir_headers_set_ref(&h, n, v), WEIR_OK);
                break;
            case 2:
                cr_assert_eq(weir_headers_add_ref(&h, n, v), WEIR_OK);
                break;
            case 3:
                weir_headers_remove(&h, name);
                break;
            case 4: /* drop the first field by hand, as the gate does */
                if (h.n) {
                    memmove(h.v, h.v + 1, (h.n - 1) * sizeof(*h.v));
                    h.n--;
                    weir__headers_changed(&h);
                }
                break;
            }
            if ((r >> 8) % 5 < 2) {
                size_t same = 0;
                for (uint32_t i = 0; i < h.n; i++)
                    same +=
                        h.v[i].name.len == n.len && strncasecmp(h.v[i].name.ptr, name, n.len) == 0;
                cr_assert_eq(same, 1, "round %d step %d: %zu fields named %s after set", round,
                             step, same, name);
            }
        }
        weir__arena_reset(&arena);
    }
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

/* weir__h2_lower: words at a time, with overlapping tails; every length,
 * every offset, into another buffer and in place; never past len. */
Test(msg, h2_lower_every_length)
{
    const char *src = "Content-TYPE-X_Forwarded-For-@[`{Z";
    for (size_t off = 0; off < 3; off++) {
        for (size_t len = 0; len + off <= strlen(src); len++) {
            char want[64], out[64], inplace[64];
            for (size_t i = 0; i < len; i++) {
                char c = src[off + i];
                want[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
            }
            memset(out, '#', sizeof(out));
            cr_assert_eq(weir__h2_lower(out, (weir_str){src + off, len}), len);
            cr_assert(memcmp(out, want, len) == 0, "len %zu off %zu", len, off);
            cr_assert_eq(out[len], '#', "wrote past len %zu", len);
            memcpy(inplace, src + off, len);
            inplace[len] = '#';
            weir__h2_lower(inplace, (weir_str){inplace, len});
            cr_assert(memcmp(inplace, want, len) == 0 && inplace[len] == '#');
        }
    }
}

/* nghttp2's allocator (h2_mem.c): every size class and past it, realloc
 * keeping the bytes across classes and into malloc, calloc zeroing and
 * refusing an overflow. */
Test(msg, h2_mem_classes_and_realloc)
{
    nghttp2_mem *m = weir__h2_mem();
    static const size_t sizes[] = {0, 1, 63, 64, 65, 500, 2048, 2049, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = m->malloc(sizes[i], m->mem_user_data);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % 16, 0);
        memset(p, 0xab, sizes[i]);
        unsigned char *q = m->calloc(1, sizes[i] + 7, m->mem_user_data);
        cr_assert_not_null(q);
        for (size_t k = 0; k < sizes[i] + 7; k++)
            cr_assert_eq(q[k], 0);
        size_t n = sizes[i];
        for (size_t grow = n + 1; grow < 200000; grow = grow * 3 + 1) {
            p = m->realloc(p, grow, m->mem_user_data);
            cr_assert_not_null(p);
            for (size_t k = 0; k < n; k++)
                cr_assert_eq(p[k], 0xab, "size %zu grown to %zu: byte %zu", sizes[i], grow, k);
            memset(p + n, 0xab, grow - n);
            n = grow;
        }
        m->free(p, m->mem_user_data);
        m->free(q, m->mem_user_data);
    }
    m->free(NULL, m->mem_user_data);
    cr_assert_null(m->calloc(SIZE_MAX / 2, 4, m->mem_user_data));
    cr_assert_null(m->malloc(SIZE_MAX - 4, m->mem_user_data));
}
