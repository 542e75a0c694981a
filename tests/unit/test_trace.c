/*
 * test_trace.c - W3C Trace Context and samplers (src/app/otel/trace.c) and
 * the OTLP JSON of a span (src/app/otel/export.c): the specification's
 * example, the invalid forms it lists, a later version, sampler settings
 * and their ratio, and texts a client controls escaped into valid JSON;
 * the protobuf of the same spans well-formed (fuzz/otlp_pb_walk.h), with
 * the texts as the JSON has them, lengths of one, two and three bytes.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/otel/export.h"
#include "app/otel/trace.h"
#include "../../fuzz/otlp_pb_walk.h"

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static int parse(const char *s, weir_trace_ctx *c)
{
    return weir__traceparent_parse(s, strlen(s), c);
}

Test(trace, traceparent_example)
{
    weir_trace_ctx c;
    cr_assert_eq(parse(TP, &c), 0);
    cr_assert_eq(c.trace_id[0], 0x0a);
    cr_assert_eq(c.trace_id[15], 0x9c);
    cr_assert_eq(c.span_id[7], 0x31);
    cr_assert_eq(c.flags, 1);
    char out[WEIR_TRACEPARENT_LEN + 1];
    weir__traceparent_format(c.trace_id, c.span_id, c.flags, out);
    cr_assert_str_eq(out, TP);
    cr_assert_eq(parse("  " TP "\t", &c), 0); /* the header's blanks */
}

Test(trace, traceparent_invalid)
{
    const char *bad[] = {
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        TP "-x",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
        "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        "",
    };
    weir_trace_ctx c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(parse(bad[i], &c), -1, "%s", bad[i]);
}

Test(trace, traceparent_later_version)
{
    weir_trace_ctx c;
    cr_assert_eq(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09", &c), 0);
    cr_assert_eq(c.flags, 9);
    cr_assert_eq(parse("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what", &c), 0);
}

Test(trace, tracestate)
{
    cr_assert(weir__tracestate_ok("congo=t61rcWkgMzE", 17));
    cr_assert(!weir__tracestate_ok("a=b\r\nx: y", 10));
    char big[600];
    memset(big, 'a', sizeof(big));
    cr_assert(!weir__tracestate_ok(big, sizeof(big)));
}

Test(trace, new_ids_differ)
{
    uint8_t a[16], b[16];
    weir__trace_new_id(a, 16);
    weir__trace_new_id(b, 16);
    cr_assert_neq(memcmp(a, b, 16), 0);
}

Test(trace, samplers)
{
    weir_sampler s;
    const char *good[] = {"always_on",
                          "always_off",
                          "ratio:0",
                          "ratio:1",
                          "ratio:0.5",
                          "parentbased_always_on",
                          "parentbased_always_off",
                          "parentbased_ratio:0.1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert_eq(weir__sampler_parse(good[i], &s), 0, "%s", good[i]);
    const char *bad[] = {"",
                         "ratio:",
                         "ratio:1.5",
                         "ratio:-0.1",
                         "ratio:0.5x",
                         "ratio:nan",
                         "parentbased_",
                         "sometimes",
                         "parentbased_parentbased_always_on"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(weir__sampler_parse(bad[i], &s), -1, "%s", bad[i]);
    /* Ratio by the trace id's last 8 bytes, the same on every instance. */
    cr_assert_eq(weir__sampler_parse("ratio:0.5", &s), 0);
    uint8_t low[16] = {0}, high[16] = {0};
    low[8] = 0x7f;
    high[8] = 0x80;
    cr_assert(weir__sampler_sample(&s, NULL, low));
    cr_assert(!weir__sampler_sample(&s, NULL, high));
    /* parentbased follows a parent's flag; alone it is its root sampler. */
    cr_assert_eq(weir__sampler_parse("parentbased_always_off", &s), 0);
    weir_trace_ctx p = {.flags = 1};
    cr_assert(weir__sampler_sample(&s, &p, low));
    p.flags = 0;
    cr_assert(!weir__sampler_sample(&s, &p, low));
    cr_assert(!weir__sampler_sample(&s, NULL, low));
    cr_assert_eq(weir__sampler_parse("always_off", &s), 0);
    p.flags = 1;
    cr_assert(!weir__sampler_sample(&s, &p, low)); /* not parent-based */
}

Test(trace, otlp_json_escapes_what_clients_send)
{
    weir_span sp;
    memset(&sp, 0, sizeof(sp));
    sp.trace_id[0] = sp.span_id[0] = 1;
    strcpy(sp.name, "GET l");
    strcpy(sp.method, "GET");
    strcpy(sp.path, "/a\"b\\c\x01\xc3\xa9\xff");
    strcpy(sp.client, "127.0.0.1");
    sp.status = 503;
    sp.n_attempts = 1;
    strcpy(sp.at[0].addr, "[::1]:8080");
    sp.at[0].connect_ns = -1;
    sp.at[0].error = "connect";
    const weir_span *one = &sp;
    char *j = weir__otlp_json(&one, 1, "svc\"x");
    cr_assert_not_null(j);
    json_error_t e;
    json_t *doc = json_loads(j, 0, &e);
    cr_assert_not_null(doc, "%s: %s", e.text, j);
    json_t *spans = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0),
        "spans");
    cr_assert_eq(json_array_size(spans), 2);
    json_t *server = json_array_get(spans, 0), *client = json_array_get(spans, 1);
    cr_assert_eq(json_integer_value(json_object_get(server, "kind")), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(server, "status"), "code")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(client, "parentSpanId")),
                     json_string_value(json_object_get(server, "spanId")));
    const char *path = NULL, *addr = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(server, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), "url.path") == 0)
            path = json_string_value(json_object_get(json_object_get(a, "value"), "stringValue"));
    }
    json_array_foreach(json_object_get(client, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), "server.address") == 0)
            addr = json_string_value(json_object_get(json_object_get(a, "value"), "stringValue"));
    }
    cr_assert_str_eq(path, "/a\"b\\c\x01\xc3\xa9\xef\xbf\xbd"); /* a bad byte: U+FFFD */
    cr_assert_str_eq(addr, "::1");
    json_decref(doc);
    free(j);
}

static void hostile_span(weir_span *sp)
{
    memset(sp, 0, sizeof(*sp));
    sp->trace_id[0] = sp->span_id[0] = 1;
    strcpy(sp->name, "GET l");
    strcpy(sp->method, "GET");
    strcpy(sp->path, "/a\"b\\c\x01\xc3\xa9\xff");
    strcpy(sp->client, "127.0.0.1");
    sp->status = 503;
    sp->n_attempts = 1;
    strcpy(sp->at[0].addr, "[::1]:8080");
    sp->at[0].connect_ns = -1;
    sp->at[0].error = "connect";
}

Test(trace, otlp_protobuf_is_well_formed_and_says_what_the_json_says)
{
    weir_span sp;
    hostile_span(&sp);
    size_t len = 0;
    const weir_span *one = &sp;
    size_t off = 0;
    char *pb = weir__otlp_protobuf(&one, 1, "svc\"x", &off, &len);
    cr_assert_not_null(pb);
    pb_walk w = {.want_key = "url.path"};
    cr_assert(pbw_request(&w, (const uint8_t *)pb + off, len), "%s", w.err);
    cr_assert_eq(w.spans, 2);
    cr_assert(w.found);
    cr_assert_str_eq(w.value, "/a\"b\\c\x01\xc3\xa9\xef\xbf\xbd"); /* as the JSON has it */
    free(pb);
}

Test(trace, otlp_protobuf_lengths_of_every_size)
{
    /* Paths long enough for a two-byte length (and attempts, events and
     * statuses in every span), and a batch whose length takes three. */
    enum { N = 300 };
    weir_span *v = calloc(N, sizeof(*v));
    cr_assert_not_null(v);
    for (size_t i = 0; i < N; i++) {
        weir_span *sp = &v[i];
        sp->trace_id[0] = sp->span_id[0] = 1;
        strcpy(sp->method, "POST");
        strcpy(sp->name, "POST l");
        size_t n = i % (sizeof(sp->path) - 1);
        for (size_t k = 0; k < n; k++)
            sp->path[k] = (char)(k % 3 == 0 ? 0xe2 : k % 3 == 1 ? 0x82 : 0xac); /* U+20AC */
        strcpy(sp->error, i % 2 ? "upstream timed out" : "");
        sp->status = i % 2 ? 504 : 200;
        sp->retries = (uint16_t)(i % 5);
        sp->n_attempts = (uint8_t)(1 + i % WEIR_SPAN_ATTEMPTS);
        for (int k = 0; k < sp->n_attempts; k++) {
            sp->at[k].span_id[0] = (uint8_t)(k + 2);
            snprintf(sp->at[k].addr, sizeof(sp->at[k].addr), "10.0.0.%d:%d", k, 8000 + k);
            sp->at[k].connect_ns = k % 2 ? -1 : 1234567;
            sp->at[k].start_ns = 1700000000000000000 + k;
            sp->at[k].status = k + 1 < sp->n_attempts ? 502 : 200;
            sp->at[k].error = k + 1 < sp->n_attempts ? "status" : NULL;
        }
        sp->start_ns = 1700000000000000000;
        sp->end_ns = sp->start_ns + 1000;
        if (i % 3 == 0) { /* the connection's first request: its handshake */
            sp->tls_start_ns = sp->start_ns - 5000;
            sp->tls_end_ns = sp->start_ns - 10;
            sp->tls_span_id[0] = 7;
            strcpy(sp->tls, "1.3");
            strcpy(sp->tls_cipher, "TLS_AES_256_GCM_SHA384");
        }
        sp->n_waits = (uint8_t)(i % (WEIR_SPAN_WAITS + 1));
        for (int k = 0; k < sp->n_waits; k++) {
            sp->waits[k].span_id[0] = (uint8_t)(k + 9);
            snprintf(sp->waits[k].plugin, sizeof(sp->waits[k].plugin), "auth-%zu", i);
            sp->waits[k].category = "forward_auth";
            sp->waits[k].result = k ? "error" : "continue";
            sp->waits[k].start_ns = sp->start_ns + 10;
            sp->waits[k].end_ns = sp->start_ns + 20;
        }
    }
    size_t len = 0;
    const weir_span *ptrs[N];
    for (size_t i = 0; i < N; i++)
        ptrs[i] = &v[i];
    size_t off = 0;
    char *pb = weir__otlp_protobuf(ptrs, N, "weir", &off, &len);
    cr_assert_not_null(pb);
    cr_assert_gt(len, 1u << 14);
    pb_walk w = {.want_key = "url.path"};
    cr_assert(pbw_request(&w, (const uint8_t *)pb + off, len), "%s", w.err);
    size_t spans = 0;
    for (size_t i = 0; i < N; i++)
        spans += 1 + v[i].n_attempts + v[i].n_waits + (v[i].tls_start_ns != 0);
    cr_assert_eq(w.spans, spans);
    free(pb);
    free(v);
}

/* A worker's ring holds 2,048 spans the exporter has not taken: the next
 * is not recorded (the worker never waits), and it is counted. */
Test(otlp, a_full_ring_drops_and_counts)
{
    weir_otlp_counts before, after;
    weir__otlp_counts(&before);
    for (int i = 0; i < 2048; i++) {
        weir_span *s = weir__otlp_reserve();
        cr_assert_not_null(s, "slot %d", i);
        s->endpoint = NULL;
        weir__otlp_commit();
    }
    cr_assert_null(weir__otlp_reserve());
    cr_assert_null(weir__otlp_reserve());
    weir__otlp_counts(&after);
    cr_assert_eq(after.dropped_queue, before.dropped_queue + 2);
    cr_assert_eq(after.exported, before.exported);
}
