/*
 * lb_scale.c - how upstreams scale with their number of backends: for each
 * algorithm and member count, the time to add N backends one by one (as a
 * config load or an admin PUT does), the first selection after them (which
 * builds the tables), one more add and the selection after it (a rebuild),
 * the cost of a selection, and the process's peak RSS. Each case runs in
 * its own process so that peak RSS is its own. Prints a table; asserts
 * nothing.
 *
 *   build/bin/lb_scale                           # N = 500 2000 4096 10000
 *   build/bin/lb_scale 1000 50000                # other sizes
 *   ALGOS="maglev" WEIGHTS=mixed build/bin/lb_scale
 *
 * WEIGHTS: "equal" (all 1, the default), "mixed" (1..10 in turn: a
 * round-robin period of 5.5 N picks) or "random" (1..10000 scattered: a
 * period cut at 16 N picks). Used by bench/lb_scale.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weir/lb.h"

#define SELECTS 1000000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void addr_of(size_t i, char *buf, size_t len)
{
    snprintf(buf, len, "127.%zu.%zu.%zu:%zu", (i >> 16) & 255, (i >> 8) & 255, i & 255,
             1000 + (i >> 24));
}

static int run_case(weir_lb_algo algo, size_t n, int mixed)
{
    weir_upstream_options o = {.algo = algo, .max_fails = 3, .fail_timeout_ms = 10000};
    weir_upstream *u = weir_upstream_new("bench", &o);
    if (!u)
        return 1;
    char addr[64];
    double t0 = now_ms();
    for (size_t i = 0; i < n; i++) {
        addr_of(i, addr, sizeof(addr));
        /* mixed: 1..10 in turn; random: 1..10000, scattered */
        uint32_t w = mixed == 1   ? 1 + (uint32_t)(i % 10)
                     : mixed == 2 ? 1 + (uint32_t)((i * 2654435761u) % 10000)
                                  : 1;
        if (weir_upstream_add(u, addr, w) != WEIR_OK) {
            fprintf(stderr, "add %s failed\n", addr);
            return 1;
        }
    }
    double t1 = now_ms();
    weir_backend *b = weir_upstream_select(u, 42, NULL, 0);
    double t2 = now_ms();
    if (!b)
        return 1;
    weir_backend_done(b, WEIR_BACKEND_OK);
    /* one more change and the selection after it (which rebuilds) */
    addr_of(n, addr, sizeof(addr));
    double t3 = now_ms();
    weir_upstream_add(u, addr, 1);
    b = weir_upstream_select(u, 43, NULL, 0);
    double t4 = now_ms();
    if (!b)
        return 1;
    weir_backend_done(b, WEIR_BACKEND_OK);
    uint64_t key = 0x9e3779b97f4a7c15ull;
    double t5 = now_ms();
    for (long i = 0; i < SELECTS; i++) {
        key = key * 6364136223846793005ull + 1442695040888963407ull;
        b = weir_upstream_select(u, key, NULL, 0);
        if (b)
            weir_backend_done(b, WEIR_BACKEND_OK);
    }
    double t6 = now_ms();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%-12s %7zu %10.1f %14.1f %14.1f %10.0f %10.1f\n", weir_lb_algo_name(algo), n, t1 - t0,
           t2 - t1, t4 - t3, (t6 - t5) * 1e6 / SELECTS, (double)ru.ru_maxrss / 1024);
    fflush(stdout);
    weir_upstream_free(u);
    return 0;
}

int main(int argc, char **argv)
{
    size_t sizes[32] = {500, 2000, 4096, 10000};
    size_t n_sizes = 4;
    if (argc > 1) {
        n_sizes = 0;
        for (int i = 1; i < argc && n_sizes < 32; i++)
            sizes[n_sizes++] = (size_t)strtoul(argv[i], NULL, 10);
    }
    const char *algos = getenv("ALGOS") ? getenv("ALGOS") : "round_robin ketama maglev";
    const char *w = getenv("WEIGHTS");
    int mixed = !w ? 0 : strcmp(w, "mixed") == 0 ? 1 : strcmp(w, "random") == 0 ? 2 : 0;
    const char *wname[] = {"all 1", "1..10 in turn", "1..10000 scattered"};
    printf("weights %s; %d selections per case\n", wname[mixed], SELECTS);
    printf("%-12s %7s %10s %14s %14s %10s %10s\n", "algo", "N", "add N ms", "1st select ms",
           "+1 & select ms", "select ns", "peak MiB");
    int failed = 0;
    char list[256];
    snprintf(list, sizeof(list), "%s", algos);
    for (char *save = NULL, *name = strtok_r(list, " ,", &save); name;
         name = strtok_r(NULL, " ,", &save)) {
        weir_lb_algo algo;
        if (weir_lb_algo_parse(name, &algo) != WEIR_OK) {
            fprintf(stderr, "unknown algorithm %s\n", name);
            return 2;
        }
        for (size_t i = 0; i < n_sizes; i++) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0)
                _exit(run_case(algo, sizes[i], mixed));
            int st = 0;
            if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                printf("%-12s %7zu failed\n", name, sizes[i]);
                failed = 1;
            }
        }
    }
    return failed;
}
