/*
 * trace_fuzz.c - libFuzzer target for tracing's inputs: a client's
 * traceparent and tracestate (src/app/otel/trace.c), the sampler setting,
 * and the OTLP JSON and protobuf of spans whose texts come from requests
 * (src/app/otel/export.c, protobuf.c). Invariants: a traceparent that
 * parses formats back to one that parses to the same context; the JSON of
 * spans with any bytes in their texts is valid JSON (jansson, which checks
 * UTF-8, reads it) and holds the span; the protobuf is well-formed
 * (otlp_pb_walk.h) and carries the same url.path as the JSON.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/otel/export.h"
#include "app/otel/trace.h"
#include "fuzz_check.h"
#include "otlp_pb_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    weir_trace_ctx c;
    if (weir__traceparent_parse(p, size, &c) == 0) {
        char out[WEIR_TRACEPARENT_LEN + 1];
        weir__traceparent_format(c.trace_id, c.span_id, c.flags, out);
        CHECK(strlen(out) == WEIR_TRACEPARENT_LEN);
        weir_trace_ctx again;
        CHECK(weir__traceparent_parse(out, strlen(out), &again) == 0);
        CHECK(memcmp(&c, &again, sizeof(c)) == 0);
    }
    (void)weir__tracestate_ok(p, size);

    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    weir_sampler s;
    if (weir__sampler_parse(text, &s) == 0) {
        uint8_t id[16] = {0};
        memcpy(id, data, size < 16 ? size : 16);
        (void)weir__sampler_sample(&s, NULL, id);
    }

    weir_span sp;
    memset(&sp, 0, sizeof(sp));
    size_t n = strlen(text); /* up to the first NUL: what a request's text can hold */
    size_t k = n < sizeof(sp.path) - 1 ? n : sizeof(sp.path) - 1;
    memcpy(sp.path, text, k);
    memcpy(sp.name, text, n < sizeof(sp.name) - 1 ? n : sizeof(sp.name) - 1);
    memcpy(sp.method, text, n < sizeof(sp.method) - 1 ? n : sizeof(sp.method) - 1);
    memcpy(sp.error, text, n < sizeof(sp.error) - 1 ? n : sizeof(sp.error) - 1);
    sp.trace_id[0] = sp.span_id[0] = 1;
    sp.n_attempts = 1;
    memcpy(sp.at[0].addr, text, n < sizeof(sp.at[0].addr) - 1 ? n : sizeof(sp.at[0].addr) - 1);
    sp.at[0].connect_ns = 5;
    sp.n_waits = 1;
    memcpy(sp.waits[0].plugin, text,
           n < sizeof(sp.waits[0].plugin) - 1 ? n : sizeof(sp.waits[0].plugin) - 1);
    sp.waits[0].category = "forward_auth";
    sp.waits[0].result = "continue";
    sp.status = 502;
    const weir_span *one = &sp;
    char *json = weir__otlp_json(&one, 1, text);
    CHECK(json != NULL);
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    if (!j)
        fprintf(stderr, "%s at %d: %s\n", je.text, je.position, json);
    CHECK(j != NULL);
    json_t *span0 = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    CHECK(span0 != NULL);
    const char *jpath = "";
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span0, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), "url.path") == 0)
            jpath = json_string_value(json_object_get(json_object_get(a, "value"), "stringValue"));
    }
    size_t off = 0, len = 0;
    char *pb = weir__otlp_protobuf(&one, 1, text, &off, &len);
    CHECK(pb != NULL);
    pb_walk w = {.want_key = "url.path"};
    bool ok = pbw_request(&w, (const uint8_t *)pb + off, len);
    if (!ok)
        fprintf(stderr, "protobuf: %s\n", w.err);
    CHECK(ok && w.spans == 3);
    CHECK(strcmp(w.found ? w.value : "", jpath) == 0);
    free(pb);
    json_decref(j);
    free(json);
    free(text);
    return 0;
}
