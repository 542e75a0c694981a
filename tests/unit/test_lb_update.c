/*
 * test_lb_update.c - change sets (weir_upstream_update) and the lookup
 * service's bookkeeping (weir/lb.h): what a set adds, removes, re-weights
 * and keeps; that kept members keep their state and removed ones stay
 * valid for the requests that hold them; that a bad set changes nothing;
 * and the rules of weir_upstream_set_lookup / note_lookup / discovery_info.
 * The rounds themselves run against real DNS servers in
 * tests/integration/test_discovery.py.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "weir/lb.h"

static weir_upstream *mk(void)
{
    weir_upstream_options o = {.algo = WEIR_LB_ROUND_ROBIN, .max_fails = 3};
    weir_upstream *u = weir_upstream_new("update", &o);
    cr_assert_not_null(u);
    return u;
}

static weir_lb_target tgt(const char *addr, uint32_t weight)
{
    weir_lb_target t = {.weight = weight};
    snprintf(t.addr, sizeof(t.addr), "%s", addr);
    return t;
}

/* The member with addr into *out; false if there is none. */
static bool member(weir_upstream *u, const char *addr, weir_backend_info *out)
{
    weir_backend_info v[16];
    size_t n = weir_upstream_info(u, v, 16);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].addr, addr) == 0) {
            *out = v[i];
            return true;
        }
    }
    return false;
}

Test(lb_update, one_change_set)
{
    weir_upstream *u = mk();
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:1", 1), WEIR_OK);
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:2", 1), WEIR_OK);
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:3", 1), WEIR_OK);
    weir_lb_target v[] = {tgt("127.0.0.1:2", 3), tgt("127.0.0.1:3", 1), tgt("127.0.0.1:4", 1)};
    weir_lb_changes ch;
    cr_assert_eq(weir_upstream_update(u, v, 3, &ch), WEIR_OK);
    cr_expect_eq(ch.added, 1);
    cr_expect_eq(ch.removed, 1);
    cr_expect_eq(ch.reweighted, 1);
    cr_expect_eq(ch.unchanged, 1);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 3);
    weir_backend_info b;
    cr_expect_not(member(u, "127.0.0.1:1", &b));
    cr_assert(member(u, "127.0.0.1:2", &b));
    cr_expect_eq(b.weight, 3);
    cr_assert(member(u, "127.0.0.1:4", &b));
    cr_expect(b.healthy, "no health checks: a newcomer serves at once");
    /* The same set again changes nothing. */
    cr_assert_eq(weir_upstream_update(u, v, 3, &ch), WEIR_OK);
    cr_expect_eq(ch.added + ch.removed + ch.reweighted, 0);
    cr_expect_eq(ch.unchanged, 3);
    weir_upstream_free(u);
}

Test(lb_update, kept_members_keep_state_removed_ones_stay_valid)
{
    weir_upstream *u = mk();
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:1", 1), WEIR_OK);
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:2", 1), WEIR_OK);
    weir_backend *held[4];
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(held[i] = weir_upstream_select(u, 0, NULL, 0));
    weir_lb_target v[] = {tgt("127.0.0.1:2", 1)};
    cr_assert_eq(weir_upstream_update(u, v, 1, NULL), WEIR_OK);
    weir_backend_info b;
    cr_assert(member(u, "127.0.0.1:2", &b));
    cr_expect_eq(b.in_flight, 2, "in flight kept: %llu", (unsigned long long)b.in_flight);
    cr_expect_eq(b.requests, 2);
    /* Every pick now goes to the one left; the removed one's holders
     * finish with it (ASan: still valid). */
    for (int i = 0; i < 10; i++) {
        weir_backend *p = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(p);
        cr_expect_str_eq(weir_backend_addr(p), "127.0.0.1:2");
        weir_backend_done(p, WEIR_BACKEND_OK);
    }
    for (int i = 0; i < 4; i++)
        weir_backend_done(held[i], WEIR_BACKEND_FAILED);
    cr_assert(member(u, "127.0.0.1:2", &b));
    cr_expect_eq(b.in_flight, 0);
    weir_upstream_free(u);
}

Test(lb_update, repeats_and_the_empty_set)
{
    weir_upstream *u = mk();
    weir_lb_target v[] = {tgt("127.0.0.1:1", 2), tgt("127.0.0.1:1", 5), tgt("[::1]:1", 1)};
    weir_lb_changes ch;
    cr_assert_eq(weir_upstream_update(u, v, 3, &ch), WEIR_OK);
    cr_expect_eq(ch.added, 2);
    weir_backend_info b;
    cr_assert(member(u, "127.0.0.1:1", &b));
    cr_expect_eq(b.weight, 2, "the first of a repeated address wins");
    cr_expect(member(u, "[::1]:1", &b));
    cr_assert_eq(weir_upstream_update(u, NULL, 0, &ch), WEIR_OK);
    cr_expect_eq(ch.removed, 2);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 0);
    cr_expect_null(weir_upstream_select(u, 0, NULL, 0));
    weir_upstream_free(u);
}

Test(lb_update, a_bad_set_changes_nothing)
{
    weir_upstream *u = mk();
    cr_assert_eq(weir_upstream_add(u, "127.0.0.1:1", 1), WEIR_OK);
    const char *bad_addr[] = {"nothing", "127.0.0.1", "example.com:80", "127.0.0.1:99999", ""};
    for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++) {
        weir_lb_target v[] = {tgt("127.0.0.1:2", 1), tgt(bad_addr[i], 1)};
        cr_expect_eq(weir_upstream_update(u, v, 2, NULL), WEIR_ERR_INVAL, "'%s'", bad_addr[i]);
    }
    uint32_t bad_weight[] = {0, 10001};
    for (size_t i = 0; i < 2; i++) {
        weir_lb_target v[] = {tgt("127.0.0.1:2", bad_weight[i])};
        cr_expect_eq(weir_upstream_update(u, v, 1, NULL), WEIR_ERR_INVAL);
    }
    weir_backend_info b;
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 1);
    cr_expect(member(u, "127.0.0.1:1", &b));
    weir_upstream_free(u);
}

static int lookups, frees;
static void lookup_cb(void *ud, weir_lookup *round)
{
    (void)ud;
    (void)round;
    lookups++;
}
static void free_cb(void *ud)
{
    (void)ud;
    frees++;
}

Test(lb_update, lookup_service_bookkeeping)
{
    weir_upstream *u = mk();
    weir_discovery_info d;
    cr_expect_not(weir_upstream_discovery_info(u, &d));
    cr_expect_not(weir_upstream_note_lookup(u, NULL));
    weir_lookup_service none = {0};
    cr_expect_eq(weir_upstream_set_lookup(u, &none), WEIR_ERR_INVAL, "a service needs lookup");
    weir_lookup_service svc = {.lookup = lookup_cb, .free = free_cb};
    cr_assert_eq(weir_upstream_set_lookup(u, &svc), WEIR_OK);
    cr_assert(weir_upstream_discovery_info(u, &d));
    cr_expect_str_eq(d.kind, "lookup", "a default kind");
    cr_expect_eq(d.rounds, 0);
    cr_expect_eq(d.last_success_ms, 0);
    cr_expect(weir_upstream_note_lookup(u, "servers down"));
    cr_expect(weir_upstream_note_lookup(u, "servers down"));
    cr_assert(weir_upstream_discovery_info(u, &d));
    cr_expect_eq(d.rounds, 2);
    cr_expect_eq(d.failures, 2);
    cr_expect_eq(d.consecutive_failures, 2);
    cr_expect_str_eq(d.last_error, "servers down");
    cr_expect_gt(d.last_failure_ms, 0);
    cr_expect(weir_upstream_note_lookup(u, NULL));
    cr_assert(weir_upstream_discovery_info(u, &d));
    cr_expect_eq(d.consecutive_failures, 0);
    cr_expect_gt(d.last_success_ms, 0);
    /* Replacing the service frees the old one's state; so does the end. */
    weir_lookup_service svc2 = {.lookup = lookup_cb, .free = free_cb, .kind = "consul"};
    cr_assert_eq(weir_upstream_set_lookup(u, &svc2), WEIR_OK);
    cr_expect_eq(frees, 1);
    cr_assert(weir_upstream_discovery_info(u, &d));
    cr_expect_str_eq(d.kind, "consul");
    cr_expect_eq(d.rounds, 0, "a new service starts its own record");
    weir_upstream_free(u);
    cr_expect_eq(frees, 2);
    cr_expect_eq(lookups, 0, "no rounds without a running server");
}

Test(lb_update, dns_service_options)
{
    weir_lookup_service svc;
    char err[200];
    weir_dns_options none = {0};
    cr_expect_eq(weir_lookup_dns_new(&none, &svc, err, sizeof(err)), WEIR_ERR_INVAL);
    weir_dns_name names[] = {{.host = "svc.test", .port = 80, .weight = 1}};
    weir_dns_options bad = {.names = names, .n_names = 1, .servers = "not-an-address"};
    cr_expect_eq(weir_lookup_dns_new(&bad, &svc, err, sizeof(err)), WEIR_ERR_INVAL);
    cr_expect_neq(err[0], '\0');
    weir_dns_options ok = {.names = names, .n_names = 1, .servers = "127.0.0.1:5353"};
    cr_assert_eq(weir_lookup_dns_new(&ok, &svc, err, sizeof(err)), WEIR_OK, "%s", err);
    cr_expect_str_eq(svc.kind, "dns");
    cr_expect_eq(svc.interval_ms, 30000);
    svc.free(svc.ud);
    ok.srv = true;
    names[0].host = "_http._tcp.svc.test";
    cr_assert_eq(weir_lookup_dns_new(&ok, &svc, err, sizeof(err)), WEIR_OK, "%s", err);
    cr_expect_str_eq(svc.kind, "srv");
    svc.free(svc.ud);
}
