/* Text generation three ways on one engine: kiln_run_stream (a callback per chunk, then one
 * with usage), kiln_run (the Workers AI result JSON) and kiln_generate (just the text).
 *
 * usage: generate_stream MODELS [MODEL] [PROMPT]
 *   MODELS  a models.toml or a directory laid out like $KILN_HOME
 *   MODEL   a catalog name (default: @hf/huggingfacetb/smollm2-135m-instruct)
 */
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                       \
    do {                                                                                  \
        kiln_status st_ = (call);                                                         \
        if (st_ != KILN_OK) {                                                             \
            fprintf(stderr, "%s failed: status %d: %s\n", #call, (int)st_,                \
                    kiln_last_error_message());                                           \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

struct streamed {
    char text[8192];
    size_t len;
    int chunks;
    int finals;
};

static int on_event(void *user_data, const char *text, const char *event_json) {
    struct streamed *s = user_data;
    if (text != NULL) {
        size_t n = strlen(text);
        if (s->len + n < sizeof s->text) {
            memcpy(s->text + s->len, text, n + 1);
            s->len += n;
        }
        s->chunks++;
        printf("chunk: %s\n", event_json);
    } else {
        s->finals++;
        printf("final: %s\n", event_json);
    }
    return 0; /* go on */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS [MODEL] [PROMPT]\n", argv[0]);
        return 2;
    }
    const char *model = argc > 2 ? argv[2] : "@hf/huggingfacetb/smollm2-135m-instruct";
    const char *prompt = argc > 3 ? argv[3] : "Hello";
    if (kiln_abi_version() != KILN_ABI_VERSION) {
        fprintf(stderr, "libkiln ABI %u, header %d\n", kiln_abi_version(), KILN_ABI_VERSION);
        return 1;
    }
    printf("kiln %s (ABI %u)\n", kiln_version(), kiln_abi_version());

    kiln_options options;
    CHECK(kiln_options_init(&options));
    options.models = argv[1];
    options.kv_cache_memory = 64u << 20;
    kiln_engine *engine = NULL;
    CHECK(kiln_engine_open(&options, &engine));

    /* The input is the Workers AI run JSON; escape the prompt for it. */
    char input[1024];
    char escaped[512];
    size_t j = 0;
    for (const char *p = prompt; *p != '\0' && j + 2 < sizeof escaped; p++) {
        if (*p == '"' || *p == '\\') {
            escaped[j++] = '\\';
        }
        escaped[j++] = *p;
    }
    escaped[j] = '\0';
    snprintf(input, sizeof input, "{\"prompt\": \"%s\", \"max_tokens\": 12, \"temperature\": 0}",
             escaped);

    struct streamed s;
    memset(&s, 0, sizeof s);
    CHECK(kiln_run_stream(engine, model, input, on_event, &s, NULL));
    printf("streamed chunks: %d, final events: %d\n", s.chunks, s.finals);

    char *output = NULL;
    CHECK(kiln_run(engine, model, input, &output));
    printf("run: %s\n", output);
    kiln_string_free(output);

    char *text = NULL;
    CHECK(kiln_generate(engine, model, prompt, "{\"max_tokens\": 12, \"temperature\": 0}", &text));
    printf("generate equals stream: %s\n", strcmp(text, s.text) == 0 ? "yes" : "no");
    kiln_string_free(text);

    CHECK(kiln_engine_close(engine));
    return 0;
}
