/*
 * cli.h - `weir config push FILE URL` and `weir config pull URL` (cli.c).
 * TLS to etcd from WEIR_ETCD_CACERT, WEIR_ETCD_CERT and WEIR_ETCD_KEY.
 * Both return the exit status.
 */
#ifndef WEIR_APP_ETCD_CLI_H
#define WEIR_APP_ETCD_CLI_H

#include <stdio.h>

int weir__config_push(const char *file, const char *url, FILE *out, FILE *err);
int weir__config_pull(const char *url, FILE *out, FILE *err);

#endif
