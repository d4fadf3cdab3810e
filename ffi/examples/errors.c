/* Error handling: every misuse of the API returns its documented kiln_status with a message
 * (and the Workers AI code where the HTTP API has one); none crashes. Prints one line per
 * case ("ok NAME: ..." or "FAIL NAME: ...") and exits with the number of failures.
 *
 * usage: errors MODELS [TEXT_MODEL] [EMBED_MODEL]
 */
#include "kiln.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

/* Checks a call's status, its error code (0: not checked) and that failures carry a
 * message and successes none. */
static void expect(const char *name, kiln_status got, kiln_status want, uint32_t want_code) {
    const char *message = kiln_last_error_message();
    uint32_t code = kiln_last_error_code();
    int has_message = message[0] != '\0';
    int ok = got == want && (want_code == 0 || code == want_code) &&
             (want == KILN_OK ? !has_message : has_message);
    printf("%s %s: status %d code %u: %s\n", ok ? "ok" : "FAIL", name, (int)got, code, message);
    if (!ok) {
        printf("    wanted status %d code %u\n", (int)want, want_code);
        failures++;
    }
}

/* An output pointer must be NULL after a failed call. */
static void expect_cleared(const char *name, const void *p) {
    if (p != NULL) {
        printf("FAIL %s: output not cleared\n", name);
        failures++;
    }
}

static int stop_at_first_chunk(void *user_data, const char *text, const char *event_json) {
    (void)text;
    (void)event_json;
    ++*(int *)user_data;
    return 1; /* stop */
}

static int count_events(void *user_data, const char *text, const char *event_json) {
    (void)text;
    (void)event_json;
    ++*(int *)user_data;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS [TEXT_MODEL] [EMBED_MODEL]\n", argv[0]);
        return 2;
    }
    const char *text_model = argc > 2 ? argv[2] : "@hf/huggingfacetb/smollm2-135m-instruct";
    const char *embed_model = argc > 3 ? argv[3] : "@hf/sentence-transformers/all-minilm-l6-v2";
    const char *good = "{\"prompt\": \"hi\", \"max_tokens\": 2, \"temperature\": 0}";
    static char sentinel;

    /* Options and opening. */
    kiln_options o;
    expect("options_init_null", kiln_options_init(NULL), KILN_ERR_NULL_ARGUMENT, 0);
    expect("options_init", kiln_options_init(&o), KILN_OK, 0);
    o.models = argv[1];
    expect("open_null_out", kiln_engine_open(&o, NULL), KILN_ERR_NULL_ARGUMENT, 0);
    kiln_engine *engine = (kiln_engine *)&sentinel;
    kiln_options small = o;
    small.struct_size = 8;
    expect("open_struct_size", kiln_engine_open(&small, &engine), KILN_ERR_INVALID_OPTIONS, 0);
    expect_cleared("open_struct_size", engine);
    kiln_options bad = o;
    bad.device = "tpu";
    expect("open_bad_device", kiln_engine_open(&bad, &engine), KILN_ERR_INVALID_OPTIONS, 0);
    bad = o;
    bad.dtype = "f64";
    expect("open_bad_dtype", kiln_engine_open(&bad, &engine), KILN_ERR_INVALID_OPTIONS, 0);
    bad = o;
    bad.models = "/nonexistent/kiln/models.toml";
    expect("open_missing_models", kiln_engine_open(&bad, &engine), KILN_ERR_INVALID_OPTIONS, 0);
    bad = o;
    bad.device = "cpu\xff";
    expect("open_device_utf8", kiln_engine_open(&bad, &engine), KILN_ERR_INVALID_UTF8, 0);
    expect("open", kiln_engine_open(&o, &engine), KILN_OK, 0);

    /* kiln_run. */
    char *out = &sentinel;
    expect("run_null_engine", kiln_run(NULL, text_model, good, &out), KILN_ERR_NULL_ARGUMENT, 0);
    expect_cleared("run_null_engine", out);
    expect("run_null_model", kiln_run(engine, NULL, good, &out), KILN_ERR_NULL_ARGUMENT, 0);
    expect("run_null_input", kiln_run(engine, text_model, NULL, &out), KILN_ERR_NULL_ARGUMENT, 0);
    expect("run_null_output", kiln_run(engine, text_model, good, NULL), KILN_ERR_NULL_ARGUMENT, 0);
    expect("run_model_utf8", kiln_run(engine, "@cf/\xc3\x28", good, &out), KILN_ERR_INVALID_UTF8, 0);
    expect("run_input_utf8", kiln_run(engine, text_model, "{\"prompt\": \"\xff\"}", &out),
           KILN_ERR_INVALID_UTF8, 0);
    expect("run_invalid_json", kiln_run(engine, text_model, "{\"prompt\": ", &out),
           KILN_ERR_INVALID_JSON, 5006);
    expect("run_empty_json", kiln_run(engine, text_model, "", &out), KILN_ERR_INVALID_JSON, 5006);
    expect("run_unknown_model", kiln_run(engine, "@cf/nobody/no-such-model", good, &out),
           KILN_ERR_UNKNOWN_MODEL, 5007);
    expect("run_unknown_field", kiln_run(engine, text_model, "{\"promt\": \"hi\"}", &out),
           KILN_ERR_BAD_INPUT, 5006);
    expect("run_bad_type",
           kiln_run(engine, text_model, "{\"prompt\": \"hi\", \"max_tokens\": \"many\"}", &out),
           KILN_ERR_BAD_INPUT, 5006);
    expect("run_out_of_range",
           kiln_run(engine, text_model, "{\"prompt\": \"hi\", \"temperature\": 9}", &out),
           KILN_ERR_BAD_INPUT, 5006);
    expect("run_not_an_object", kiln_run(engine, text_model, "[1, 2]", &out), KILN_ERR_BAD_INPUT,
           5006);
    expect_cleared("run_not_an_object", out);
    expect("run_ok", kiln_run(engine, text_model, good, &out), KILN_OK, 0);
    expect("string_free", kiln_string_free(out), KILN_OK, 0);

    /* kiln_run_stream and cancellation. */
    int events = 0;
    expect("stream_null_callback", kiln_run_stream(engine, text_model, good, NULL, NULL, NULL),
           KILN_ERR_NULL_ARGUMENT, 0);
    expect("stream_embeddings_model",
           kiln_run_stream(engine, embed_model, "{\"text\": \"x\"}", count_events, &events, NULL),
           KILN_ERR_BAD_INPUT, 5006);
    expect("stream_invalid_json",
           kiln_run_stream(engine, text_model, "{", count_events, &events, NULL),
           KILN_ERR_INVALID_JSON, 5006);
    expect("stream_unknown_model",
           kiln_run_stream(engine, "@cf/nobody/no-such-model", good, count_events, &events, NULL),
           KILN_ERR_UNKNOWN_MODEL, 5007);
    int chunks = 0;
    expect("stream_callback_stops",
           kiln_run_stream(engine, text_model,
                           "{\"prompt\": \"hi\", \"max_tokens\": 50, \"temperature\": 0}",
                           stop_at_first_chunk, &chunks, NULL),
           KILN_ERR_CANCELLED, 0);
    if (chunks != 1) {
        printf("FAIL stream_callback_stops: %d calls after returning nonzero\n", chunks);
        failures++;
    }
    kiln_cancel_token *token = NULL;
    expect("cancel_token_new_null", kiln_cancel_token_new(NULL), KILN_ERR_NULL_ARGUMENT, 0);
    expect("cancel_token_new", kiln_cancel_token_new(&token), KILN_OK, 0);
    expect("cancel_null", kiln_cancel(NULL), KILN_ERR_NULL_ARGUMENT, 0);
    expect("cancel", kiln_cancel(token), KILN_OK, 0);
    events = 0;
    expect("stream_cancelled_token",
           kiln_run_stream(engine, text_model, good, count_events, &events, token),
           KILN_ERR_CANCELLED, 0);
    if (events != 0) {
        printf("FAIL stream_cancelled_token: %d callbacks\n", events);
        failures++;
    }
    expect("cancel_token_free", kiln_cancel_token_free(token), KILN_OK, 0);
    events = 0;
    expect("stream_ok", kiln_run_stream(engine, text_model, good, count_events, &events, NULL),
           KILN_OK, 0);

    /* Typed helpers. */
    char *text = &sentinel;
    expect("generate_null_prompt", kiln_generate(engine, text_model, NULL, NULL, &text),
           KILN_ERR_NULL_ARGUMENT, 0);
    expect_cleared("generate_null_prompt", text);
    expect("generate_params_not_object",
           kiln_generate(engine, text_model, "hi", "[1]", &text), KILN_ERR_BAD_INPUT, 5006);
    expect("generate_params_invalid_json",
           kiln_generate(engine, text_model, "hi", "max_tokens=2", &text), KILN_ERR_INVALID_JSON,
           5006);
    expect("generate_embeddings_model", kiln_generate(engine, embed_model, "hi", NULL, &text),
           KILN_ERR_BAD_INPUT, 5006);
    expect("generate_ok",
           kiln_generate(engine, text_model, "hi", "{\"max_tokens\": 2, \"temperature\": 0}",
                         &text),
           KILN_OK, 0);
    kiln_string_free(text);

    const char *texts[] = {"one", NULL};
    float *vectors = (float *)&sentinel;
    size_t rows = 7;
    size_t dims = 7;
    expect("embed_null_texts", kiln_embed(engine, embed_model, NULL, 1, &vectors, &rows, &dims),
           KILN_ERR_NULL_ARGUMENT, 0);
    expect_cleared("embed_null_texts", vectors);
    if (rows != 0 || dims != 0) {
        printf("FAIL embed_null_texts: rows/dims not cleared\n");
        failures++;
    }
    expect("embed_null_text", kiln_embed(engine, embed_model, texts, 2, &vectors, &rows, &dims),
           KILN_ERR_NULL_ARGUMENT, 0);
    expect("embed_null_dims", kiln_embed(engine, embed_model, texts, 1, &vectors, &rows, NULL),
           KILN_ERR_NULL_ARGUMENT, 0);
    expect("embed_no_texts", kiln_embed(engine, embed_model, texts, 0, &vectors, &rows, &dims),
           KILN_ERR_BAD_INPUT, 5006);
    expect("embed_text_model", kiln_embed(engine, text_model, texts, 1, &vectors, &rows, &dims),
           KILN_ERR_BAD_INPUT, 5006);
    expect("embed_unknown_model",
           kiln_embed(engine, "@cf/nobody/no-such-model", texts, 1, &vectors, &rows, &dims),
           KILN_ERR_UNKNOWN_MODEL, 5007);
    expect("embed_ok", kiln_embed(engine, embed_model, texts, 1, &vectors, &rows, &dims), KILN_OK,
           0);
    expect("embeddings_free", kiln_embeddings_free(vectors), KILN_OK, 0);

    /* NULL is fine for the frees and close. */
    expect("string_free_null", kiln_string_free(NULL), KILN_OK, 0);
    expect("embeddings_free_null", kiln_embeddings_free(NULL), KILN_OK, 0);
    expect("cancel_token_free_null", kiln_cancel_token_free(NULL), KILN_OK, 0);
    expect("close_null", kiln_engine_close(NULL), KILN_OK, 0);
    expect("close", kiln_engine_close(engine), KILN_OK, 0);

    /* strict: a catalog name whose weights are not installed is unknown, not stood in for. */
    kiln_options strict = o;
    strict.strict = 1;
    expect("open_strict", kiln_engine_open(&strict, &engine), KILN_OK, 0);
    expect("run_strict_not_installed",
           kiln_run(engine, "@cf/meta/llama-3.1-8b-instruct", good, &out), KILN_ERR_UNKNOWN_MODEL,
           5007);
    expect("close_strict", kiln_engine_close(engine), KILN_OK, 0);

    printf("failures: %d\n", failures);
    return failures;
}
