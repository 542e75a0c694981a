/*
 * fuzz_check.h - CHECK(cond) for the fuzz targets: an invariant that
 * fails prints where and aborts, so libFuzzer keeps the input.
 */
#ifndef WEIR_FUZZ_CHECK_H
#define WEIR_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
