/*
 * kiln.h: the C ABI of kiln (libkiln.so / libkiln.a).
 *
 * kiln runs the Cloudflare Workers AI `run` API in process: kiln_run takes a model name and
 * the same input JSON that `POST /ai/run/{model}` takes and returns the same `result` JSON
 * that the HTTP server wraps in its envelope; errors carry the same Workers AI codes
 * (kiln_last_error_code). The HTTP server and this library call one run-API core.
 *
 * Conventions
 * - Every function that does work returns a kiln_status; KILN_OK (0) is success. On any
 *   other status, kiln_last_error_message() gives a message for this thread, and every
 *   output pointer the call was given is set to NULL / 0 (when the pointer itself is not
 *   NULL). The exceptions are the accessors kiln_version, kiln_abi_version,
 *   kiln_last_error_message and kiln_last_error_code, which cannot fail.
 * - Strings are NUL-terminated UTF-8. A string kiln returns through a `char **` is owned by
 *   the caller and must be freed with kiln_string_free (not free()); float arrays from
 *   kiln_embed are freed with kiln_embeddings_free.
 * - No Rust panic crosses this boundary: one becomes KILN_ERR_INTERNAL.
 * - A kiln_engine may be used by many threads at once; their generations are batched
 *   together by the model's engine thread. Calls block the calling thread until done.
 *
 * See ffi/README.md for compiling and linking.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this header's ABI. kiln_abi_version() returns the library's; they must match. */
#define KILN_ABI_VERSION 1

/** What a call did. Numeric values are stable within an ABI version. */
typedef enum kiln_status {
    /** Success. */
    KILN_OK = 0,
    /** A required pointer argument was NULL. */
    KILN_ERR_NULL_ARGUMENT = 1,
    /** A string argument was not valid UTF-8. */
    KILN_ERR_INVALID_UTF8 = 2,
    /** input_json (or params_json) is not well-formed JSON (Workers AI code 5006). */
    KILN_ERR_INVALID_JSON = 3,
    /** The model name is not one kiln serves, or its weights are missing (code 5007). */
    KILN_ERR_UNKNOWN_MODEL = 4,
    /** The JSON is well formed but not a valid input for the model's task; the message
     *  names the field (code 5006). */
    KILN_ERR_BAD_INPUT = 5,
    /** A kiln_options field (or its struct_size) is invalid; the message names it. */
    KILN_ERR_INVALID_OPTIONS = 6,
    /** The model's queue is full; retry later (code 3040). */
    KILN_ERR_BUSY = 7,
    /** The run was stopped by kiln_cancel or by the stream callback returning nonzero. */
    KILN_ERR_CANCELLED = 8,
    /** Something failed inside kiln, a caught panic included (code 3001). */
    KILN_ERR_INTERNAL = 9
} kiln_status;

/** A loaded service: models load on first use and stay loaded until kiln_engine_close. */
typedef struct kiln_engine kiln_engine;

/** Cancels a kiln_run_stream from another thread; see kiln_cancel. */
typedef struct kiln_cancel_token kiln_cancel_token;

/** Options for kiln_engine_open. Call kiln_options_init first, then set the fields you need;
 *  a zero / NULL field means its default. */
typedef struct kiln_options {
    /** sizeof(kiln_options) as the caller compiled it (kiln_options_init sets it). A library
     *  of a later ABI reads only the fields that fit; a size below this version's struct is
     *  KILN_ERR_INVALID_OPTIONS. */
    size_t struct_size;
    /** A models.toml (`[models."<name>"] path = "<dir or .gguf>"`), or a directory laid out
     *  like $KILN_HOME (an optional models.toml and models/<catalog name>/). NULL: the
     *  environment ($KILN_HOME, default ~/.cache/kiln, then the Hugging Face hub cache). */
    const char *models;
    /** "cpu" or "cuda", "cuda:N" (a library built with CUDA). NULL: "cpu". */
    const char *device;
    /** Weight dtype for matmuls: "f32", "bf16" or "f16". NULL: as stored. */
    const char *dtype;
    /** Bytes of KV cache per text model. 0: 512 MiB on the CPU, 85% of free GPU memory. */
    uint64_t kv_cache_memory;
    /** Generations run at once per model. 0: 64. */
    uint32_t max_seqs;
    /** Generations queued beyond those running; more get KILN_ERR_BUSY. 0: 256. */
    uint32_t max_queue;
    /** Tokens per engine step over all generations. 0: 2048. */
    uint32_t max_batched_tokens;
    /** Nonzero: a catalog name whose weights are not installed is KILN_ERR_UNKNOWN_MODEL
     *  instead of being served by the installed default model of its task. */
    int32_t strict;
    /** Nonzero: serve each task's default model at its real shape with seeded random
     *  weights (for benchmarks; no files needed). */
    int32_t random_weights;
} kiln_options;

/** Called by kiln_run_stream on the calling thread: once per text chunk with `text` set and
 *  `event_json` the server's SSE event (`{"response":"<chunk>"}`), then once with `text`
 *  NULL and `event_json` the final event (`{"response":"","usage":{...}}`). Both strings
 *  are valid only during the call. Return 0 to go on, nonzero to stop the run (it then
 *  returns KILN_ERR_CANCELLED). */
typedef int (*kiln_stream_callback)(void *user_data, const char *text, const char *event_json);

/** The library's version, e.g. "0.1.0" (a static string; never NULL). */
const char *kiln_version(void);

/** The library's ABI version; compare with KILN_ABI_VERSION. */
uint32_t kiln_abi_version(void);

/** The message of this thread's last failed call ("" after a successful one). Valid until
 *  the next kiln_* call on this thread; never NULL. */
const char *kiln_last_error_message(void);

/** The Workers AI error code of this thread's last failed call (5006 bad input, 5007 no such
 *  model, 3040 queue full, 3001 internal), 0 after a successful call or for failures the
 *  HTTP API has no code for (NULL argument, invalid options, cancelled). */
uint32_t kiln_last_error_code(void);

/** Fills *options with the defaults (all fields zero / NULL) and sets struct_size.
 *  KILN_ERR_NULL_ARGUMENT when options is NULL. */
kiln_status kiln_options_init(kiln_options *options);

/** Checks the options and creates an engine in *engine_out (NULL options: defaults). Models
 *  load on first use. KILN_ERR_INVALID_OPTIONS names a bad field (unknown device, a models
 *  path that does not exist, ...). */
kiln_status kiln_engine_open(const kiln_options *options, kiln_engine **engine_out);

/** Lets in-flight generations finish, stops the engine threads and frees the engine. Call
 *  only after every other call on this engine has returned. NULL is allowed (KILN_OK). */
kiln_status kiln_engine_close(kiln_engine *engine);

/** Runs `model` (a Workers AI catalog name, e.g. "@cf/meta/llama-3.1-8b-instruct") on
 *  `input_json` (the Workers AI run input, e.g. {"prompt":"Hi","max_tokens":16}) and writes
 *  the run's result JSON (e.g. {"response":"...","usage":{...}}, or for embeddings
 *  {"shape":[n,d],"data":[[...]],...}) to *output_json, to be freed with kiln_string_free.
 *  A text input with "stream": true is collected all the same (use kiln_run_stream). */
kiln_status kiln_run(kiln_engine *engine, const char *model, const char *input_json,
                     char **output_json);

/** As kiln_run, for text generation, calling `callback` per text chunk and once at the end
 *  with usage (see kiln_stream_callback); returns when the generation is done. `cancel`
 *  may be NULL; otherwise kiln_cancel on it (from any thread) stops the run, which then
 *  returns KILN_ERR_CANCELLED. A model of another task is KILN_ERR_BAD_INPUT. */
kiln_status kiln_run_stream(kiln_engine *engine, const char *model, const char *input_json,
                            kiln_stream_callback callback, void *user_data,
                            kiln_cancel_token *cancel);

/** Creates a cancel token in *token_out, to pass to kiln_run_stream. */
kiln_status kiln_cancel_token_new(kiln_cancel_token **token_out);

/** Cancels the run the token was passed to, from any thread: the run stops within one
 *  engine step and frees its KV-cache pages. A token stays cancelled: a run started with it
 *  later returns KILN_ERR_CANCELLED at once. */
kiln_status kiln_cancel(kiln_cancel_token *token);

/** Frees a cancel token (no run may still be using it). NULL is allowed. */
kiln_status kiln_cancel_token_free(kiln_cancel_token *token);

/** Text generation with a typed result: runs {"prompt": prompt, ...params_json} and writes
 *  the response text to *text_out (free with kiln_string_free). `params_json` may be NULL
 *  or a JSON object of further run fields, e.g. {"max_tokens":16,"temperature":0}. */
kiln_status kiln_generate(kiln_engine *engine, const char *model, const char *prompt,
                          const char *params_json, char **text_out);

/** Sentence embeddings with a typed result: embeds the `n_texts` strings of `texts` in one
 *  batch and writes a row-major float array of rows x dims to *vectors_out (free with
 *  kiln_embeddings_free), with *rows_out = n_texts and *dims_out the vector size. */
kiln_status kiln_embed(kiln_engine *engine, const char *model, const char *const *texts,
                       size_t n_texts, float **vectors_out, size_t *rows_out, size_t *dims_out);

/** Frees a string that kiln returned. NULL is allowed. */
kiln_status kiln_string_free(char *s);

/** Frees the vectors of kiln_embed. NULL is allowed. */
kiln_status kiln_embeddings_free(float *vectors);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KILN_H */
