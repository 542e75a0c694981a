/*
 * export.h - OpenTelemetry spans of proxied requests, exported over
 * OTLP/HTTP (POST ENDPOINT/v1/traces).
 *
 * A worker writes a finished request's weir_span straight into its own
 * ring (one producer, one consumer: no lock, no system call). The exporter thread
 * drains the rings, batches (otlp_batch_size spans, or what is there
 * every otlp_flush_interval) and POSTs with libcurl, in the protobuf
 * encoding (protobuf.c) or the JSON one (otlp_protocol). A full ring drops
 * the span; a collector that is down or slow keeps at most four batches
 * waiting (older ones are dropped), retried with backoff (1 s doubling
 * to 30 s): memory stays bounded and no worker ever waits. Every drop is
 * counted (weir__otlp_counts, metrics).
 */
#ifndef WEIR_APP_OTEL_EXPORT_H
#define WEIR_APP_OTEL_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/strbuf.h"

#define WEIR_SPAN_ATTEMPTS 4 /* upstream attempts recorded per request (the first ones) */
#define WEIR_SPAN_WAITS 2    /* plugin waits recorded per request (the first ones) */

typedef struct weir_span_attempt {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* Unix nanoseconds; end 0: the request's end */
    int64_t connect_ns;       /* the TCP (and TLS) connect; -1: reused or none */
    char addr[48];            /* "ip:port" */
    bool reused;              /* a pooled connection */
    int status;               /* the backend's status; 0: none */
    const char *error;        /* why it failed (static text), or NULL */
} weir_span_attempt;

/* A plugin whose hook waited (PENDING: a sub-request, a cache lock) until
 * the request went on: an internal child span. */
typedef struct weir_span_wait {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* Unix nanoseconds */
    char plugin[48];          /* its [plugins.NAME], as far as it fits */
    const char *category;     /* static text */
    const char *result;       /* "continue", "answered", "error", "aborted"; for the
                               * cache's lock "filled", "timeout" (static) */
} weir_span_wait;

typedef struct weir_span {
    const char *endpoint; /* from weir__otlp_endpoint */
    uint8_t trace_id[16], span_id[8], parent_id[8];
    bool has_parent;
    uint8_t flags;
    int64_t start_ns, end_ns;
    char name[96]; /* "GET location" */
    char method[16];
    char path[256];    /* url.path */
    char route[64];    /* the location's name */
    char server[64];   /* the server's name */
    char upstream[64]; /* the upstream's name */
    char client[48];   /* client.address */
    char protocol[8];  /* network.protocol.version: "1.0", "1.1", "2" */
    char tls[16];      /* tls.protocol.version, "" for plain */
    char error[96];    /* why it failed, or "" */
    char termination[3];
    int status;
    int64_t request_bytes, response_bytes;
    uint8_t n_attempts;
    uint16_t retries; /* attempts after the first, recorded or not */
    /* The client connection's TLS handshake, on its first request: an
     * internal child span; start 0: none. */
    int64_t tls_start_ns, tls_end_ns;
    uint8_t tls_span_id[8];
    bool tls_resumed;
    char tls_cipher[48];
    uint8_t n_waits;
    weir_span_wait waits[WEIR_SPAN_WAITS];
    weir_span_attempt at[WEIR_SPAN_ATTEMPTS];
} weir_span;

/* The exporter's copy of an endpoint URL ("http://host:4318", with
 * "/v1/traces" added unless it ends so): lives until the process ends;
 * NULL when 64 distinct ones were given already. Main thread (config). */
const char *weir__otlp_endpoint(const char *url);

/* Exporter settings ([basic] otlp_*): copied. Main thread. */
typedef struct weir_otlp_settings {
    const char *service_name;   /* "weir" when NULL */
    const char *const *headers; /* "Name: value" lines */
    size_t n_headers;
    uint32_t batch_size;        /* spans per POST [512] */
    uint32_t flush_interval_ms; /* [5000] */
    bool json;                  /* http/json, not http/protobuf */
} weir_otlp_settings;
void weir__otlp_configure(const weir_otlp_settings *o);

/* Starts and stops the exporter thread (stop: sends what is queued for at
 * most ms). Main thread. */
void weir__otlp_start(void);
void weir__otlp_stop(uint32_t ms);

/* A finished span is written in place: weir__otlp_reserve gives the
 * calling thread's next free slot (NULL when its ring is full: the span
 * is dropped, and counted), weir__otlp_commit hands it to the exporter.
 * Any worker thread, one span at a time; never blocks. Attempts past
 * n_attempts are not read. */
weir_span *weir__otlp_reserve(void);
void weir__otlp_commit(void);

/* Unix time in nanoseconds (CLOCK_REALTIME). */
int64_t weir__otlp_now_ns(void);

typedef struct weir_otlp_counts {
    uint64_t exported;        /* spans the collector took */
    uint64_t dropped_queue;   /* a worker's ring was full */
    uint64_t dropped_export;  /* the collector could not take them in time */
    uint64_t export_failures; /* POSTs that failed (each retried) */
} weir_otlp_counts;
void weir__otlp_counts(weir_otlp_counts *out);

/* The encodings, a span at a time into a weir_strbuf (false: out of
 * memory). JSON (json.c): begin writes the head, each span follows (first
 * when it is the batch's first), end closes it. Protobuf (protobuf.c):
 * the buffer starts with weir__otlp_pb_room bytes kept for the head, the
 * spans follow, and finish writes the head just before them and returns
 * where the body starts (NULL when out of memory); finish may be called
 * again (a retry). */
bool weir__otlp_json_begin(weir_strbuf *out, const char *service_name);
bool weir__otlp_json_span(weir_strbuf *out, const weir_span *s, bool first);
bool weir__otlp_json_end(weir_strbuf *out);
size_t weir__otlp_pb_room(const char *service_name);
bool weir__otlp_pb_span(weir_strbuf *out, const weir_span *s);
const char *weir__otlp_pb_finish(weir_strbuf *out, size_t room, const char *service_name,
                                 size_t *len);

/* The length of the well-formed UTF-8 sequence at p (NUL-terminated), or
 * 0: no overlong forms, surrogates or code points past U+10FFFF. */
size_t weir__otlp_utf8_len(const unsigned char *p);

/* The JSON of an OTLP ExportTraceServiceRequest for the n spans *v[i]
 * (one resource, one scope), malloc'd; NULL when out of memory. */
char *weir__otlp_json(const weir_span *const *v, size_t n, const char *service_name);

/* The same in the protobuf encoding: a malloc'd buffer whose body starts
 * *off bytes in and is *len bytes long. */
char *weir__otlp_protobuf(const weir_span *const *v, size_t n, const char *service_name,
                          size_t *off, size_t *len);

/* An attempt's "ip:port" or "[ip6]:port" as server.address (host, of
 * addr's size) and server.port; false when addr has no port. */
bool weir__otlp_split_addr(const char *addr, char *host, int *port);

#endif
