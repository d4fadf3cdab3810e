/* Sentence embeddings: kiln_embed (a row-major float array) and kiln_run (the Workers AI
 * result JSON) on the same texts.
 *
 * usage: embed MODELS [MODEL]
 *   MODELS  a models.toml or a directory laid out like $KILN_HOME
 *   MODEL   a catalog name (default: @hf/sentence-transformers/all-minilm-l6-v2)
 */
#include "kiln.h"

#include <math.h>
#include <stdio.h>

#define CHECK(call)                                                                       \
    do {                                                                                  \
        kiln_status st_ = (call);                                                         \
        if (st_ != KILN_OK) {                                                             \
            fprintf(stderr, "%s failed: status %d: %s\n", #call, (int)st_,                \
                    kiln_last_error_message());                                           \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS [MODEL]\n", argv[0]);
        return 2;
    }
    const char *model = argc > 2 ? argv[2] : "@hf/sentence-transformers/all-minilm-l6-v2";
    kiln_options options;
    CHECK(kiln_options_init(&options));
    options.models = argv[1];
    kiln_engine *engine = NULL;
    CHECK(kiln_engine_open(&options, &engine));

    const char *texts[] = {"The quick brown fox jumps over the lazy dog.", "kiln runs models"};
    float *vectors = NULL;
    size_t rows = 0;
    size_t dims = 0;
    CHECK(kiln_embed(engine, model, texts, 2, &vectors, &rows, &dims));
    printf("rows: %zu dims: %zu\n", rows, dims);
    for (size_t r = 0; r < rows; r++) {
        double norm = 0.0;
        printf("row %zu:", r);
        for (size_t d = 0; d < dims; d++) {
            float x = vectors[r * dims + d];
            norm += (double)x * (double)x;
            printf(" %.9g", (double)x);
        }
        printf("\nnorm %zu: %.6f\n", r, sqrt(norm));
    }
    kiln_embeddings_free(vectors);

    char *output = NULL;
    CHECK(kiln_run(engine, model,
                   "{\"text\": [\"The quick brown fox jumps over the lazy dog.\", \"kiln runs "
                   "models\"]}",
                   &output));
    printf("run: %s\n", output);
    kiln_string_free(output);

    CHECK(kiln_engine_close(engine));
    return 0;
}
