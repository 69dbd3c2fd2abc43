/* engine/engine_internal.h — what engine.c shares with the backends (engine/backend_*.c). */
#ifndef MS_ENGINE_ENGINE_INTERNAL_H
#define MS_ENGINE_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "storage/safetensors.h"

/* A backend: binds the checkpoint's weights and runs the forward pass. forward() writes n rows of
 * logits [n][vocab]; the common code calls it with n <= MS_ENGINE_CHUNK when it only needs the
 * last row (any split gives the same logits). */
typedef struct ms_backend_ops {
    ms_backend kind;
    int (*model_open)(ms_engine *e, char *err, size_t err_len);
    void (*model_close)(ms_engine *e);
    int (*session_create)(ms_session *s);
    void (*session_free)(ms_session *s);
    int (*forward)(ms_session *s, const uint32_t *tokens, uint32_t n, float *logits);
    void (*reset)(ms_session *s);
    int (*nonfinite)(const ms_session *s, uint32_t *pos, uint32_t *layer, const char **stage);
    /* device name, bandwidth (when measure); the common code fills the rest */
    int (*info)(ms_engine *e, bool measure, ms_engine_info *out);
    void (*stats)(const ms_session *s, ms_session_stats *out);
    int (*set_profiling)(ms_session *s, bool on);           /* NULL: not supported */
    int (*get_profile)(const ms_session *s, ms_profile *out); /* NULL: not supported */
    /* ms_session_set_tap: prepare (fn != NULL) or stop tapping; the common code keeps fn and
     * ctx in ms_session (tap, tap_ctx) after it returns 0, and the backend calls s->tap from
     * one-token forward() calls. NULL: not supported. */
    int (*set_tap)(ms_session *s, ms_tap_fn fn, void *ctx);
} ms_backend_ops;

#define MS_ENGINE_CHUNK 16u /* tokens per forward call when only the last logits are wanted */

struct ms_engine {
    ms_engine_opts opts;
    ms_v4_config cfg;
    ms_st *st;                 /* the open checkpoint */
    const ms_backend_ops *ops;
    void *backend;             /* the backend's model */
};

struct ms_session {
    ms_engine *e;
    uint32_t max_tokens;
    uint32_t *tokens;  /* [max_tokens] every token fed, for truncate */
    uint32_t pos;
    float *last;       /* [vocab] logits after token pos-1 (valid when pos > 0) */
    float *scratch;    /* [MS_ENGINE_CHUNK][vocab] */
    void *backend;     /* the backend's session */
    ms_tap_fn tap;     /* ms_session_set_tap, or NULL */
    void *tap_ctx;
};

extern const ms_backend_ops ms_backend_cpu_ops;
extern const ms_backend_ops ms_backend_vk_ops;

#endif
