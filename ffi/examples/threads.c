/* One engine, many threads: 8 pthreads submit generations at once (the engine thread
 * batches them) and each output must equal the one generated alone; then a stream is
 * cancelled from another thread with kiln_cancel.
 *
 * usage: threads MODELS [MODEL]
 */
#include "kiln.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8

static kiln_engine *engine;
static const char *model;

struct job {
    char prompt[64];
    char *text;
    kiln_status status;
};

static const char *params = "{\"max_tokens\": 16, \"temperature\": 0}";

static void *generate(void *arg) {
    struct job *j = arg;
    j->status = kiln_generate(engine, model, j->prompt, params, &j->text);
    if (j->status != KILN_OK) {
        fprintf(stderr, "%s: status %d: %s\n", j->prompt, (int)j->status,
                kiln_last_error_message());
    }
    return NULL;
}

/* The cancel test: the streaming thread signals its first chunk, then waits for the
 * main thread's kiln_cancel. */
struct cancel_test {
    pthread_mutex_t lock;
    pthread_cond_t first_chunk;
    int chunks;
    int finals;
    kiln_cancel_token *token;
    kiln_status status;
};

static int on_chunk(void *user_data, const char *text, const char *event_json) {
    struct cancel_test *c = user_data;
    (void)event_json;
    pthread_mutex_lock(&c->lock);
    if (text == NULL) {
        c->finals++;
    } else if (++c->chunks == 1) {
        pthread_cond_signal(&c->first_chunk);
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void *stream(void *arg) {
    struct cancel_test *c = arg;
    c->status = kiln_run_stream(engine, model,
                                "{\"prompt\": \"x\", \"max_tokens\": 400, \"temperature\": 0}",
                                on_chunk, c, c->token);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS [MODEL]\n", argv[0]);
        return 2;
    }
    model = argc > 2 ? argv[2] : "@hf/huggingfacetb/smollm2-135m-instruct";
    kiln_options options;
    kiln_options_init(&options);
    options.models = argv[1];
    options.kv_cache_memory = 64u << 20;
    if (kiln_engine_open(&options, &engine) != KILN_OK) {
        fprintf(stderr, "open: %s\n", kiln_last_error_message());
        return 1;
    }

    struct job alone[THREADS];
    struct job together[THREADS];
    for (int i = 0; i < THREADS; i++) {
        snprintf(alone[i].prompt, sizeof alone[i].prompt, "Tell me about the number %d", i);
        memcpy(together[i].prompt, alone[i].prompt, sizeof alone[i].prompt);
        alone[i].text = together[i].text = NULL;
        generate(&alone[i]);
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        pthread_create(&threads[i], NULL, generate, &together[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        int ok = alone[i].status == KILN_OK && together[i].status == KILN_OK &&
                 strcmp(alone[i].text, together[i].text) == 0;
        printf("thread %d: %s\n", i, ok ? "equal" : "DIFFERENT");
        failures += !ok;
        kiln_string_free(alone[i].text);
        kiln_string_free(together[i].text);
    }

    struct cancel_test c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.first_chunk, NULL);
    kiln_cancel_token_new(&c.token);
    pthread_t streamer;
    pthread_create(&streamer, NULL, stream, &c);
    pthread_mutex_lock(&c.lock);
    while (c.chunks == 0 && c.finals == 0) {
        pthread_cond_wait(&c.first_chunk, &c.lock);
    }
    pthread_mutex_unlock(&c.lock);
    kiln_cancel(c.token);
    pthread_join(streamer, NULL);
    printf("cancel: status %d, chunks %d, final events %d\n", (int)c.status, c.chunks, c.finals);
    if (c.status != KILN_ERR_CANCELLED || c.finals != 0) {
        failures++;
    }
    kiln_cancel_token_free(c.token);
    pthread_cond_destroy(&c.first_chunk);
    pthread_mutex_destroy(&c.lock);

    kiln_engine_close(engine);
    printf("failures: %d\n", failures);
    return failures;
}
