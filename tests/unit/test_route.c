/*
 * test_route.c - location choice rules (table-driven).
 */
/* Tables leave the optional weight fields out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "app/route.h"

typedef struct loc {
    const char *name;
    const char *hosts[3];
    const char *path;
    bool has_weight;
    int64_t weight;
} loc;

typedef struct probe {
    const char *host;
    const char *path;
    const char *want; /* location name, or NULL for no match */
} probe;

static weir_router *build(const loc *locs, size_t n, char *err, size_t err_len)
{
    weir_route_spec specs[64];
    for (size_t i = 0; i < n; i++) {
        size_t nh = 0;
        while (nh < 3 && locs[i].hosts[nh])
            nh++;
        specs[i] = (weir_route_spec){.hosts = locs[i].hosts,
                                     .n_hosts = nh,
                                     .path = locs[i].path,
                                     .has_weight = locs[i].has_weight,
                                     .weight = locs[i].weight,
                                     .data = (void *)locs[i].name};
    }
    return weir__router_new(specs, n, err, err_len);
}

static void check(const loc *locs, size_t n, const probe *probes, size_t n_probes)
{
    char err[256] = "";
    weir_router *r = build(locs, n, err, sizeof(err));
    cr_assert_not_null(r, "build failed: %s", err);
    for (size_t i = 0; i < n_probes; i++) {
        const probe *p = &probes[i];
        const char *got = weir__router_match(r, (weir_str){p->host, strlen(p->host)},
                                             (weir_str){p->path, strlen(p->path)});
        if (p->want)
            cr_expect(got && strcmp(got, p->want) == 0, "%s%s: want %s, got %s", p->host, p->path,
                      p->want, got ? got : "(none)");
        else
            cr_expect_null(got, "%s%s: want no match, got %s", p->host, p->path, got);
    }
    weir__router_free(r);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(route, path_kinds_and_precedence)
{
    static const loc locs[] = {
        {"any", {0}, ""},
        {"static", {0}, "/static/"},
        {"static-img", {0}, "/static/img/"},
        {"api-re", {0}, "~^/api/v[0-9]+/"},
        {"login", {0}, "=/login"},
        {"slash", {0}, "/"},
        {"api-prefix", {0}, "/api/"},
    };
    static const probe probes[] = {
        {"x", "/login", "login"},  /* exact beats prefix "/" */
        {"x", "/login/", "slash"}, /* exact is exact */
        {"x", "/static/a.css", "static"},
        {"x", "/static/img/a.png", "static-img"}, /* longest prefix */
        {"x", "/api/v2/users", "api-re"},         /* regex beats prefix */
        {"x", "/api/users", "api-prefix"},
        {"x", "/other", "slash"},
        {"x", "", "any"}, /* nothing but the catch-all */
        {"x", "nopath", "any"},
    };
    check(locs, N(locs), probes, N(probes));
}

Test(route, regexes_in_config_order)
{
    static const loc locs[] = {
        {"first", {0}, "~^/a"},
        {"second", {0}, "~^/ab"},
    };
    static const probe probes[] = {{"x", "/abc", "first"}, {"x", "/b", NULL}};
    check(locs, N(locs), probes, N(probes));
}

Test(route, explicit_weight_overrides)
{
    static const loc locs[] = {
        {"exact", {0}, "=/x"},
        {"heavy-prefix", {0}, "/", true, 5000},
        {"light-regex", {0}, "~^/y", true, 10},
        {"prefix-y", {0}, "/y"},
    };
    static const probe probes[] = {
        {"h", "/x", "heavy-prefix"}, /* 5000 > exact's 3002 */
        {"h", "/y", "heavy-prefix"},
    };
    check(locs, N(locs), probes, N(probes));
    static const loc locs2[] = {
        {"light-regex", {0}, "~^/y", true, 10},
        {"prefix-y", {0}, "/y"},
        {"mid", {0}, "/yy", true, 1500},
    };
    static const probe probes2[] = {
        {"h", "/y", "prefix-y"}, /* prefix 1002 > weighted regex 10 */
        {"h", "/yy", "mid"},     /* 1500 > 1003 */
    };
    check(locs2, N(locs2), probes2, N(probes2));
}

Test(route, hosts_narrow_first)
{
    static const loc locs[] = {
        {"generic-root", {0}, "/"},
        {"generic-api", {0}, "/api/"},
        {"example", {"example.com", "www.example.com"}, "/"},
        {"wild", {"*.example.com"}, "/"},
        {"deep-wild", {"*.eu.example.com"}, "/"},
        {"re", {"~^shop[0-9]+\\.example\\.org$"}, "/"},
        {"example-only-admin", {"admin.example.net"}, "/admin/"},
    };
    static const probe probes[] = {
        {"example.com", "/api/x", "example"}, /* host-specific before generic */
        {"EXAMPLE.com:8080", "/", "example"}, /* case, port */
        {"example.com.", "/", "example"},     /* trailing dot */
        {"www.example.com", "/", "example"},  /* exact beats wildcard */
        {"a.example.com", "/", "wild"},
        {"a.b.example.com", "/", "wild"},
        {"x.eu.example.com", "/", "deep-wild"}, /* longest suffix */
        {"eu.example.com", "/", "wild"},
        {"shop12.example.org", "/", "re"},
        {"shop.example.org", "/api/1", "generic-api"},
        {"admin.example.net", "/admin/x", "example-only-admin"},
        {"admin.example.net", "/other", "generic-root"}, /* falls back to generic */
        {"", "/", "generic-root"},
        {"[::1]:80", "/api/", "generic-api"},
    };
    check(locs, N(locs), probes, N(probes));
}

Test(route, no_match_without_catch_all)
{
    static const loc locs[] = {{"a", {0}, "/a"}, {"h", {"h.com"}, "=/x"}};
    static const probe probes[] = {{"x", "/b", NULL}, {"h.com", "/y", NULL}, {"x", "/a", "a"}};
    check(locs, N(locs), probes, N(probes));
}

Test(route, invalid_specs_are_reported)
{
    char err[256];
    static const loc bad_re[] = {{"ok", {0}, "/"}, {"bad", {0}, "~^/(unclosed"}};
    cr_assert_null(build(bad_re, N(bad_re), err, sizeof(err)));
    cr_assert(strstr(err, "location 1") && strstr(err, "missing closing parenthesis"), "%s", err);
    static const loc bad_host_re[] = {{"bad", {"~[z-a]"}, "/"}};
    cr_assert_null(build(bad_host_re, N(bad_host_re), err, sizeof(err)));
    cr_assert(strstr(err, "invalid host regex"), "%s", err);
    static const loc bad_host[] = {{"bad", {"a.*.com"}, "/"}};
    cr_assert_null(build(bad_host, N(bad_host), err, sizeof(err)));
    cr_assert(strstr(err, "invalid host"), "%s", err);
    static const loc empty_exact[] = {{"bad", {0}, "="}};
    cr_assert_null(build(empty_exact, N(empty_exact), err, sizeof(err)));
}

Test(route, many_prefixes_stay_correct)
{
    /* 1,000 prefixes of many lengths: the longest matching one wins. */
    enum { N_LOCS = 1000 };
    static weir_route_spec specs[N_LOCS];
    static char paths[N_LOCS][32];
    for (int i = 0; i < N_LOCS; i++) {
        snprintf(paths[i], sizeof(paths[i]), "/svc%d/", i);
        specs[i] = (weir_route_spec){.path = paths[i], .data = paths[i]};
    }
    char err[256];
    weir_router *r = weir__router_new(specs, N_LOCS, err, sizeof(err));
    cr_assert_not_null(r, "%s", err);
    for (int i = 0; i < N_LOCS; i += 37) {
        char path[64];
        int len = snprintf(path, sizeof(path), "/svc%d/x/y", i);
        const char *got = weir__router_match(r, WEIR_STR("h"), (weir_str){path, (size_t)len});
        cr_assert_eq(got, paths[i]);
    }
    cr_assert_null(weir__router_match(r, WEIR_STR("h"), WEIR_STR("/nosvc")));
    weir__router_free(r);
}
