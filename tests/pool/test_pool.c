/*
 * The pool with its free lists on. The test build turns pools off
 * (WEIR_DEBUG_NOPOOL) so that the sanitizers see every object; this binary
 * compiles core/pool.c alone without that, so that the lists themselves,
 * and the trim that empties them after a burst, are tested under ASan.
 */
#include <criterion/criterion.h>
#include <stdbool.h>

#include "core/pool.h"

#ifdef WEIR_DEBUG_NOPOOL
#error "pool_tests must be built with the pools on"
#endif

static int hook_calls;

static void count_hook(void *arg)
{
    cr_assert_eq(arg, &hook_calls);
    hook_calls++;
}

/* Gets n objects, then puts them all back (the list ends up holding n). */
static void burst(weir_pool_class cls, void **objs, int n)
{
    for (int i = 0; i < n; i++) {
        objs[i] = weir__pool_get(cls);
        cr_assert_not_null(objs[i]);
    }
    for (int i = 0; i < n; i++)
        weir__pool_put(cls, objs[i]);
}

Test(pool_trim, frees_what_stayed_unused_for_a_whole_interval)
{
    weir_pool_class cls = weir__pool_register("trim", 1000, 64);
    void *objs[40];
    weir__pool_set_trim_hook(count_hook, &hook_calls);
    burst(cls, objs, 40);
    cr_assert_eq(hook_calls, 1, "one call when the list passes the reserve, not one per put");
    cr_assert_eq(weir__pool_cached_bytes(), 40 * 1000);

    /* The burst itself took every object: none was unused all along. */
    cr_assert(weir__pool_trim(), "more to trim");
    cr_assert_eq(weir__pool_cached_bytes(), 40 * 1000);

    /* A quiet interval: everything beyond the reserve goes. */
    cr_assert_not(weir__pool_trim(), "down to the reserve");
    cr_assert_eq(weir__pool_cached_bytes(), WEIR_POOL_RESERVE * 1000);

    /* What is kept is the most recently used end of the list. */
    void *hot = weir__pool_get(cls);
    cr_assert_eq(hot, objs[39]);
    weir__pool_put(cls, hot);
    weir__pool_set_trim_hook(NULL, NULL);
    weir__pool_thread_release();
    cr_assert_eq(weir__pool_cached_bytes(), 0);
}

Test(pool_trim, a_steady_load_keeps_what_it_uses)
{
    weir_pool_class cls = weir__pool_register("steady", 64, 256);
    void *objs[100];
    burst(cls, objs, 100);
    cr_assert(weir__pool_trim());
    for (int round = 0; round < 5; round++) {
        /* Each interval needs 30 objects at its peak: 70 stay unused. */
        burst(cls, objs, 30);
        weir__pool_trim();
        size_t left = weir__pool_cached_bytes() / 64;
        if (round == 0)
            cr_assert_eq(left, 30 + WEIR_POOL_RESERVE, "round 0 kept %zu", left);
        else
            cr_assert_geq(left, 30, "the load's 30 objects stay (round %d kept %zu)", round, left);
    }
    weir__pool_thread_release();
}

Test(pool_trim, hook_comes_again_after_a_trim_that_emptied_the_excess)
{
    weir_pool_class cls = weir__pool_register("again", 32, 64);
    void *objs[20];
    weir__pool_set_trim_hook(count_hook, &hook_calls);
    burst(cls, objs, 20);
    cr_assert_eq(hook_calls, 1);
    weir__pool_trim();
    cr_assert_not(weir__pool_trim());
    /* Nothing is due now; the next burst asks again. */
    burst(cls, objs, 20);
    cr_assert_eq(hook_calls, 2);
    weir__pool_set_trim_hook(NULL, NULL);
    weir__pool_thread_release();
}

Test(pool_trim, within_the_reserve_nothing_is_due)
{
    weir_pool_class cls = weir__pool_register("small", 32, 64);
    void *objs[WEIR_POOL_RESERVE];
    weir__pool_set_trim_hook(count_hook, &hook_calls);
    burst(cls, objs, WEIR_POOL_RESERVE);
    cr_assert_eq(hook_calls, 0);
    cr_assert_not(weir__pool_trim());
    cr_assert_eq(weir__pool_cached_bytes(), WEIR_POOL_RESERVE * 32);
    weir__pool_set_trim_hook(NULL, NULL);
    weir__pool_thread_release();
}

Test(pool_trim, raw_objects_keep_their_bytes)
{
    weir_pool_class cls = weir__pool_register_raw("raw", 64, 4);
    unsigned char *a = weir__pool_get(cls);
    memset(a, 0x5a, 64);
    weir__pool_put(cls, a);
    unsigned char *b = weir__pool_get(cls);
    cr_assert_eq(b, a);
    cr_assert_eq(b[63], 0x5a, "a raw class is not zeroed");
    weir__pool_put(cls, b);
    weir__pool_thread_release();
}
