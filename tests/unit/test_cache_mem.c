/*
 * The cache's memory tier (cache/mem.c): the byte bound, replacement
 * under readers, removal, S3-FIFO keeping a hot set through a scan of
 * one-time keys, and four threads at once (ASan counts the references).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cache/mem.h"

static weir_cobj *obj(const char *key, const char *body, size_t len)
{
    weir_cobj *o = weir__cobj_new(key, strlen(key), NULL, NULL, 0, body, len);
    cr_assert_not_null(o);
    return o;
}

static bool has(weir_cmem *m, const char *key)
{
    weir_cobj *o = weir__cmem_get(m, key, strlen(key));
    weir__cobj_unref(o);
    return o != NULL;
}

Test(cache_mem, put_get_replace)
{
    weir_cmem *m = weir__cmem_new(1 << 20);
    cr_assert(weir__cmem_put(m, obj("k", "one", 3)));
    weir_cobj *r = weir__cmem_get(m, "k", 1);
    cr_assert_not_null(r);
    cr_assert(weir__cmem_put(m, obj("k", "two!", 4)));
    /* the reader keeps the old version whole */
    cr_assert_eq(r->body_len, 3);
    cr_assert_eq(memcmp(r->body, "one", 3), 0);
    weir__cobj_unref(r);
    r = weir__cmem_get(m, "k", 1);
    cr_assert_eq(r->body_len, 4);
    weir__cobj_unref(r);
    cr_assert_null(weir__cmem_get(m, "other", 5));
    weir_cmem_stats st;
    weir__cmem_stats(m, &st);
    cr_assert_eq(st.objects, 1);
    cr_assert_eq(st.hits, 2);
    cr_assert_eq(st.misses, 1);
    weir__cmem_free(m);
}

Test(cache_mem, bytes_are_bounded_and_big_objects_refused)
{
    size_t max = 256 * 1024;
    weir_cmem *m = weir__cmem_new(max);
    char body[2000];
    memset(body, 'x', sizeof(body));
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "/obj/%d", i);
        weir__cmem_put(m, obj(key, body, sizeof(body)));
        weir_cmem_stats st;
        weir__cmem_stats(m, &st);
        cr_assert_leq(st.bytes, max, "after %d: %llu", i, (unsigned long long)st.bytes);
    }
    static char big[64 * 1024];
    cr_assert_not(weir__cmem_put(m, obj("/big", big, sizeof(big))), "over an eighth");
    weir_cmem_stats st;
    weir__cmem_stats(m, &st);
    cr_assert_gt(st.evictions, 0);
    cr_assert_eq(st.refused, 1);
    weir__cmem_free(m);
}

Test(cache_mem, remove_and_prefix)
{
    weir_cmem *m = weir__cmem_new(1 << 20);
    const char *keys[] = {"a.test/x", "a.test/y", "b.test/x", "a.test/z/1"};
    for (int i = 0; i < 4; i++)
        weir__cmem_put(m, obj(keys[i], "b", 1));
    cr_assert(weir__cmem_remove(m, "b.test/x", 8));
    cr_assert_not(weir__cmem_remove(m, "b.test/x", 8));
    cr_assert_eq(weir__cmem_remove_prefix(m, "a.test/", 7), 3);
    weir_cmem_stats st;
    weir__cmem_stats(m, &st);
    cr_assert_eq(st.objects, 0);
    cr_assert_eq(st.bytes, 0);
    weir__cmem_free(m);
}

Test(cache_mem, a_scan_does_not_flush_the_hot_set)
{
    /* Room for about 100 objects; 20 hot ones read between every scan
     * put; 5,000 keys read once. Plain LRU would keep only what the
     * last hundred puts touched. */
    weir_cmem *m = weir__cmem_new(100 * 2300);
    char body[2000];
    memset(body, 'h', sizeof(body));
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "/hot/%d", i);
        weir__cmem_put(m, obj(key, body, sizeof(body)));
        has(m, key);
    }
    int hot_misses = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "/scan/%d", i);
        weir__cmem_put(m, obj(key, body, sizeof(body)));
        snprintf(key, sizeof(key), "/hot/%d", i % 20);
        if (!has(m, key)) {         /* a miss refills it, as a cache would */
            hot_misses += i >= 200; /* after the warm-up */
            weir__cmem_put(m, obj(key, body, sizeof(body)));
        }
    }
    /* A FIFO would miss each hot object once per hundred puts: 48 times */
    cr_assert_leq(hot_misses, 5, "%d misses of the hot set during the scan", hot_misses);
    int kept = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "/hot/%d", i);
        kept += has(m, key);
    }
    cr_assert_geq(kept, 18, "only %d of 20 hot objects survived the scan", kept);
    weir__cmem_free(m);
}

Test(cache_mem, a_key_back_from_the_ghost_goes_to_main)
{
    weir_cmem *m = weir__cmem_new(50 * 2300);
    char body[2000];
    memset(body, 'g', sizeof(body));
    char key[32];
    weir__cmem_put(m, obj("/again", body, sizeof(body)));
    for (int i = 0; i < 200; i++) { /* pushes /again out of the small FIFO, unread */
        snprintf(key, sizeof(key), "/fill/%d", i);
        weir__cmem_put(m, obj(key, body, sizeof(body)));
    }
    cr_assert_not(has(m, "/again"));
    weir__cmem_put(m, obj("/again", body, sizeof(body))); /* remembered: main */
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "/more/%d", i);
        weir__cmem_put(m, obj(key, body, sizeof(body)));
    }
    cr_assert(has(m, "/again"), "a key that came back outlives the one-time ones");
    weir__cmem_free(m);
}

static weir_cmem *shared;

static void *worker(void *arg)
{
    long id = (long)arg;
    char key[32], body[512];
    memset(body, (int)('a' + id), sizeof(body));
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "/k/%d", (int)((i * 7 + id) % 300));
        weir_cobj *o = weir__cmem_get(shared, key, strlen(key));
        if (o) {
            cr_assert_eq(o->body_len, sizeof(body));
            weir__cobj_unref(o);
        } else {
            weir__cmem_put(shared,
                           weir__cobj_new(key, strlen(key), NULL, NULL, 0, body, sizeof(body)));
        }
        if (i % 1000 == 0)
            weir__cmem_remove_prefix(shared, "/k/1", 4);
    }
    return NULL;
}

Test(cache_mem, threads)
{
    shared = weir__cmem_new(100 * 1024);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, (void *)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    weir_cmem_stats st;
    weir__cmem_stats(shared, &st);
    cr_assert_leq(st.bytes, st.max_bytes);
    cr_assert_gt(st.hits, 0);
    weir__cmem_free(shared);
}
