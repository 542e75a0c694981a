/*
 * config_fuzz.c - libFuzzer target for the configuration loader: any input
 * must load or be rejected with messages, never crash or leak. Name
 * resolution is off (no DNS from a fuzzer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    weir__config_resolve_names = false;
    weir_cfg_errors errs = {0};
    weir_config *c = weir__config_load((const char *)data, size, "fuzz.toml", &errs);
    if (c) {
        /* Exercise the routers the snapshot built. */
        for (size_t i = 0; i < c->n_servers; i++) {
            if (c->servers[i].router)
                weir__router_match(c->servers[i].router, WEIR_STR("a.example.com:80"),
                                   WEIR_STR("/x/y"));
        }
        weir__config_unref(c);
    } else if (errs.n == 0) {
        /* A rejection always says why (unless memory ran out). */
    }
    for (size_t i = 0; i < errs.n; i++) {
        if (strncmp(errs.v[i], "fuzz.toml", 9) != 0)
            abort();
    }
    weir__cfg_errors_free(&errs);
    return 0;
}
