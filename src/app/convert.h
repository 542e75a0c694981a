/*
 * convert.h - `weir convert --from pingap PATH` (see convert.c).
 */
#ifndef WEIR_APP_CONVERT_H
#define WEIR_APP_CONVERT_H

#include <stdio.h>

/* Writes the weir configuration for the Pingap one at path (a file or a
 * directory of .toml files) to out; problems go to err. Returns the exit
 * status: 0, or 1 when a file cannot be read or parsed. */
int weir__convert_pingap(const char *path, FILE *out, FILE *err);

#endif
