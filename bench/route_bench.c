/*
 * route_bench.c - location lookup cost for 10 and for 1,000 locations.
 *
 * Each location set mixes what real configurations have: prefixes of
 * several depths, exact paths, host-specific locations (exact and wildcard
 * hosts) and a catch-all; a few regex locations are added on top in a
 * second run, since regexes are the one part whose cost grows with their
 * count. Lookups cycle over hits spread across the whole set plus misses.
 * Prints nanoseconds per lookup for each size and their ratio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/route.h"

#define LOOKUPS 2000000
#define N_PROBES 64

typedef struct set {
    weir_route_spec *specs;
    char (*paths)[48];
    char (*hosts)[48];
    const char **host_ptrs;
    size_t n;
} set;

static set make_set(size_t n, size_t n_regex)
{
    set s = {.n = n + n_regex};
    s.specs = calloc(s.n, sizeof(*s.specs));
    s.paths = calloc(s.n, sizeof(*s.paths));
    s.hosts = calloc(s.n, sizeof(*s.hosts));
    s.host_ptrs = calloc(s.n, sizeof(*s.host_ptrs));
    for (size_t i = 0; i < n; i++) {
        switch (i % 4) {
        case 0:
            snprintf(s.paths[i], 48, "/svc%zu/", i);
            break;
        case 1:
            snprintf(s.paths[i], 48, "/svc%zu/v1/items/", i);
            break;
        case 2:
            snprintf(s.paths[i], 48, "=/svc%zu/health", i);
            break;
        default:
            snprintf(s.paths[i], 48, "/svc%zu/", i);
            snprintf(s.hosts[i], 48, i % 8 == 3 ? "*.site%zu.example.com" : "site%zu.example.com",
                     i);
            s.host_ptrs[i] = s.hosts[i];
            s.specs[i].hosts = &s.host_ptrs[i];
            s.specs[i].n_hosts = 1;
            break;
        }
        s.specs[i].path = s.paths[i];
        s.specs[i].data = s.paths[i];
    }
    s.specs[0].path = ""; /* a catch-all */
    for (size_t i = n; i < n + n_regex; i++) {
        snprintf(s.paths[i], 48, "~^/re%zu/[0-9]+$", i);
        s.specs[i].path = s.paths[i];
        s.specs[i].data = s.paths[i];
    }
    return s;
}

static void free_set(set *s)
{
    free(s->specs);
    free(s->paths);
    free(s->hosts);
    free(s->host_ptrs);
}

static double bench(size_t n, size_t n_regex)
{
    set s = make_set(n, n_regex);
    char err[256];
    weir_router *r = weir__router_new(s.specs, s.n, err, sizeof(err));
    if (!r) {
        fprintf(stderr, "route_bench: %s\n", err);
        exit(1);
    }
    char paths[N_PROBES][64], hosts[N_PROBES][64];
    weir_str p[N_PROBES], h[N_PROBES];
    for (size_t i = 0; i < N_PROBES; i++) {
        size_t k = (i * 7919) % n;
        switch (i % 4) {
        case 0:
            snprintf(paths[i], 64, "/svc%zu/v1/items/42?x=1", k);
            snprintf(hosts[i], 64, "www.example.com");
            break;
        case 1:
            snprintf(paths[i], 64, "/svc%zu/health", k);
            snprintf(hosts[i], 64, "api.example.com:8080");
            break;
        case 2:
            snprintf(paths[i], 64, "/svc%zu/static/app.js", k | 3);
            snprintf(hosts[i], 64, "a.site%zu.example.com", k | 3);
            break;
        default:
            snprintf(paths[i], 64, "/nowhere/%zu", k);
            snprintf(hosts[i], 64, "unknown.example.org");
            break;
        }
        p[i] = (weir_str){paths[i], strlen(paths[i])};
        h[i] = (weir_str){hosts[i], strlen(hosts[i])};
    }
    struct timespec t0, t1;
    size_t found = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < LOOKUPS; i++)
        found += weir__router_match(r, h[i % N_PROBES], p[i % N_PROBES]) != NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns =
        ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / LOOKUPS;
    if (found == 0)
        fprintf(stderr, "route_bench: nothing matched\n");
    weir__router_free(r);
    free_set(&s);
    return ns;
}

int main(void)
{
    double small = bench(10, 0), large = bench(1000, 0);
    double small_re = bench(10, 4), large_re = bench(1000, 4);
    printf("route lookup (ns per request, %d lookups each)\n", LOOKUPS);
    printf("  %-34s %10s %10s %8s\n", "locations", "10", "1000", "ratio");
    printf("  %-34s %10.1f %10.1f %7.2fx\n", "prefix/exact/host mix + catch-all", small, large,
           large / small);
    printf("  %-34s %10.1f %10.1f %7.2fx\n", "same + 4 regex locations", small_re, large_re,
           large_re / small_re);
    return 0;
}
