/* engine/vk/vk.h — the Vulkan core: device, capabilities, memory, pipelines, commands, op recorders.
 *
 * Owns: the VkInstance/VkDevice/queue (ms_vk), every memory block and VkBuffer it sub-allocates
 * (freed by ms_vk_buf_free or at ms_vk_close), the pipelines it builds (cached, freed at close),
 * and command contexts (ms_vk_cmd, freed by ms_vk_cmd_free).
 * Errors: every function returns 0 or a negative status (common/status.h); a failing Vulkan call
 * is logged with its name and VkResult and mapped to -MS_E_VULKAN / -MS_E_DEVICE_OOM /
 * -MS_E_DEVICE_LOST. After device loss every call returns -MS_E_DEVICE_LOST. Nothing aborts.
 * Threads: one ms_vk and everything made from it is used by one thread at a time (the caller
 * serialises); ms_vk_enumerate may be called from any thread.
 *
 * Environment: MOESTREAM_DEVICE=N picks physical device N (ms_vk_enumerate order);
 * MOESTREAM_VALIDATION=1 enables the Khronos validation layer; MOESTREAM_CACHE_DIR overrides the
 * pipeline-cache directory (default $XDG_CACHE_HOME/moestream or ~/.cache/moestream);
 * MOESTREAM_DISABLE_PUSH_DESCRIPTOR=1 forces descriptor pools;
 * MOESTREAM_DISABLE_TIMELINE_SEMAPHORE=1 forces per-command fences; MOESTREAM_NO_PIPELINE_CACHE=1
 * skips the on-disk pipeline cache; MOESTREAM_VALIDATION_REQUIRED=1 makes a missing validation
 * layer an error.
 */
#ifndef MS_ENGINE_VK_H
#define MS_ENGINE_VK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "engine/model/weights.h" /* ms_wenc, ms_weight_view: the checkpoint encodings */
#include "engine/vk/vk_opts.h"

/* ---------------------------------------------------------------- capabilities */

#define MS_VK_MAX_HEAPS 16
#define MS_VK_MAX_TYPES 32

typedef struct ms_vk_caps {
    uint32_t index; /* position in enumeration order (MOESTREAM_DEVICE value) */
    char device_name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    char driver_name[VK_MAX_DRIVER_NAME_SIZE];
    char driver_info[VK_MAX_DRIVER_INFO_SIZE];
    uint32_t vendor_id, device_id, driver_id;
    VkPhysicalDeviceType type;
    uint32_t api_version, driver_version;
    uint8_t device_uuid[VK_UUID_SIZE];
    uint8_t pipeline_cache_uuid[VK_UUID_SIZE];

    uint32_t subgroup_size;     /* default size in compute shaders */
    uint32_t subgroup_size_min; /* with size control; = subgroup_size without */
    uint32_t subgroup_size_max;
    bool subgroup_size_control; /* VK_EXT_subgroup_size_control or 1.3 core, compute stage */
    bool subgroup_arithmetic;   /* subgroupAdd etc. and subgroupShuffle in compute shaders */

    bool storage_8bit, storage_16bit;  /* 8/16-bit storage buffer access */
    bool float16_arith, int8_arith;    /* shaderFloat16 / shaderInt8 */
    bool int64_arith;                  /* shaderInt64 */
    bool int_dot_product;              /* VK_KHR_shader_integer_dot_product (or 1.3) */
    bool int_dot_4x8_accelerated;      /* packed signed 4x8 dot is accelerated */
    bool cooperative_matrix;           /* VK_KHR_cooperative_matrix or VK_NV_cooperative_matrix */
    bool push_descriptor;              /* VK_KHR_push_descriptor */
    bool timeline_semaphore;
    bool external_memory_host;         /* VK_EXT_external_memory_host */
    uint64_t min_imported_host_align;  /* minImportedHostPointerAlignment (0 if no extension) */

    uint64_t max_storage_buffer_range;
    uint64_t max_memory_allocation_size;
    uint64_t max_buffer_size;           /* maintenance4 maxBufferSize, else max_memory_allocation_size */
    uint64_t min_storage_offset_align;  /* minStorageBufferOffsetAlignment */
    uint32_t max_shared_memory;         /* maxComputeSharedMemorySize, bytes */
    uint32_t max_workgroup_invocations;
    uint32_t max_workgroup_count[3];
    uint32_t max_push_constants;
    float timestamp_period_ns;          /* 0 if the queue has no timestamps */
    uint32_t timestamp_valid_bits;

    uint32_t n_heaps;
    struct {
        uint64_t size;
        bool device_local;
    } heaps[MS_VK_MAX_HEAPS];
    uint32_t n_types;
    struct {
        VkMemoryPropertyFlags flags;
        uint32_t heap;
    } types[MS_VK_MAX_TYPES];
    uint64_t device_local_bytes; /* sum of device-local heaps */
    bool rebar;                  /* a device-local + host-visible type on a heap > 256 MiB */
    bool usable;                 /* meets moestream's minimum (Vulkan 1.2, compute queue, subgroup arithmetic) */
    char unusable_reason[160];   /* why not, when !usable */
} ms_vk_caps;

/* Probe every physical device. *out is an array of *n entries (free with ms_free); *n may be 0.
 * Returns -MS_E_NO_DEVICE (with err filled) when no Vulkan loader or instance is available. */
int ms_vk_enumerate(ms_vk_caps **out, uint32_t *n, char *err, size_t err_len);

/* "discrete", "integrated", "virtual", "cpu" or "other". */
const char *ms_vk_type_name(VkPhysicalDeviceType type);

/* The device rule ms_vk_open applies to the n devices of ms_vk_enumerate: requested >= 0 picks
 * that index; -1 picks the best usable device by type (discrete > integrated > virtual > cpu, the
 * lowest index among equals). Returns the index, or -MS_E_RANGE (requested out of range),
 * -MS_E_UNSUPPORTED (requested device unusable), -MS_E_NO_DEVICE (none usable). Logs nothing. */
int ms_vk_choose_device(const ms_vk_caps *caps, uint32_t n, int32_t requested);

/* Human-readable vendor name from a PCI vendor id ("NVIDIA", "AMD", "Intel", "Mesa/CPU", ...). */
const char *ms_vk_vendor_name(uint32_t vendor_id);

/* ---------------------------------------------------------------- device */

typedef struct ms_vk ms_vk;

int ms_vk_open(ms_vk **out, const ms_vk_opts *opts);
void ms_vk_close(ms_vk *vk); /* saves the pipeline cache; frees everything; NULL ok */
const ms_vk_caps *ms_vk_get_caps(const ms_vk *vk);
const ms_vk_opts *ms_vk_get_opts(const ms_vk *vk); /* as opened (cache_dir: the owned copy) */
VkDevice ms_vk_device(const ms_vk *vk);

/* Validation messages (warning or error severity) seen since open; each was also logged. */
uint32_t ms_vk_validation_count(const ms_vk *vk);
bool ms_vk_validation_enabled(const ms_vk *vk);

/* ---------------------------------------------------------------- memory */

typedef enum ms_vk_mem {
    MS_VK_MEM_DEVICE = 0,   /* DEVICE_LOCAL; not mapped */
    MS_VK_MEM_STAGING = 1,  /* HOST_VISIBLE|HOST_COHERENT, mapped, for uploads */
    MS_VK_MEM_READBACK = 2, /* HOST_VISIBLE|HOST_CACHED (coherent if possible), mapped */
} ms_vk_mem;

/* A sub-allocation: a range of a VkBuffer. Plain value; free exactly once with ms_vk_buf_free. */
typedef struct ms_vk_buf {
    VkBuffer buffer;
    uint64_t offset; /* within buffer; multiple of min_storage_offset_align */
    uint64_t size;
    void *map;       /* host pointer to byte 0 of this range (STAGING/READBACK), else NULL */
    uint32_t kind;   /* ms_vk_mem */
    uint32_t block;  /* internal */
} ms_vk_buf;

/* A binding: buffer + offset + size (size <= max_storage_buffer_range). */
typedef struct ms_vk_range {
    VkBuffer buffer;
    uint64_t offset;
    uint64_t size;
} ms_vk_range;

int ms_vk_buf_alloc(ms_vk *vk, ms_vk_mem kind, uint64_t size, ms_vk_buf *out);
void ms_vk_buf_free(ms_vk *vk, ms_vk_buf *b); /* zeroes *b; a zeroed buf is a no-op */
ms_vk_range ms_vk_buf_range(const ms_vk_buf *b, uint64_t offset, uint64_t size);

/* Blocking copies between host memory and any buffer (through a staging ring for DEVICE). */
int ms_vk_upload(ms_vk *vk, const ms_vk_buf *dst, uint64_t dst_offset, const void *src, uint64_t size);
int ms_vk_download(ms_vk *vk, const ms_vk_buf *src, uint64_t src_offset, void *dst, uint64_t size);

/* Make device writes to a mapped READBACK buffer visible to b->map (a no-op on HOST_COHERENT
 * memory). Needed only when reading b->map directly after the GPU wrote it; ms_vk_download does
 * it itself. */
int ms_vk_buf_invalidate(ms_vk *vk, const ms_vk_buf *b);

typedef struct ms_vk_mem_stats {
    uint64_t bytes_reserved[3]; /* per ms_vk_mem: device memory held in blocks */
    uint64_t bytes_used[3];     /* per ms_vk_mem: live sub-allocations */
    uint32_t n_blocks[3];
} ms_vk_mem_stats;
void ms_vk_get_mem_stats(const ms_vk *vk, ms_vk_mem_stats *out);

/* ---------------------------------------------------------------- pipelines */

typedef struct ms_vk_pipeline ms_vk_pipeline; /* owned and cached by ms_vk */

/* Pipeline for an embedded shader variant (shaders/variants.txt) with specialization constants
 * spec[i] bound to constant_id i (each a 32-bit value). required_subgroup_size != 0 requests that
 * size (needs subgroup_size_control and a supported size, else -MS_E_UNSUPPORTED). Repeated calls
 * with equal arguments return the same pipeline. */
int ms_vk_pipeline_get(ms_vk *vk, const char *variant, const uint32_t *spec, uint32_t n_spec,
                       uint32_t required_subgroup_size, ms_vk_pipeline **out);

/* ---------------------------------------------------------------- commands */

typedef struct ms_vk_cmd ms_vk_cmd;

#define MS_VK_MAX_BINDINGS 8

int ms_vk_cmd_create(ms_vk *vk, uint32_t max_timestamps, ms_vk_cmd **out);
void ms_vk_cmd_free(ms_vk_cmd *c); /* waits for completion first; NULL ok */
ms_vk *ms_vk_cmd_vk(const ms_vk_cmd *c);

/* Recording. begin resets the command buffer, descriptor state and timestamp count. */
int ms_vk_cmd_begin(ms_vk_cmd *c);
int ms_vk_cmd_dispatch(ms_vk_cmd *c, ms_vk_pipeline *p, const ms_vk_range *bindings,
                       uint32_t n_bindings, const void *push, uint32_t push_size, uint32_t gx,
                       uint32_t gy, uint32_t gz);
/* Shader/transfer writes visible to later shader/transfer access. Host visibility of everything a
 * recording wrote is added by ms_vk_cmd_end (once: a HOST-stage barrier costs ~10 us on NVIDIA). */
void ms_vk_cmd_barrier(ms_vk_cmd *c);
void ms_vk_cmd_copy(ms_vk_cmd *c, ms_vk_range src, ms_vk_range dst); /* size = min of both */
void ms_vk_cmd_fill(ms_vk_cmd *c, ms_vk_range dst, uint32_t value);
int ms_vk_cmd_timestamp(ms_vk_cmd *c, uint32_t *index_out); /* after all prior work */
int ms_vk_cmd_end(ms_vk_cmd *c);

/* Execution. A recorded buffer may be submitted any number of times (record once, replay). */
int ms_vk_cmd_submit(ms_vk_cmd *c);                    /* signals the next timeline value */
int ms_vk_cmd_wait(ms_vk_cmd *c, uint64_t timeout_ns); /* -MS_E_TIMEOUT on timeout */
int ms_vk_cmd_run(ms_vk_cmd *c);                       /* submit + wait (no timeout) */
/* What the current (or last) recording holds; a barrier with nothing recorded since the previous
 * one is dropped and not counted. */
typedef struct ms_vk_cmd_counts {
    uint32_t dispatches, barriers, transfers;
} ms_vk_cmd_counts;
void ms_vk_cmd_get_counts(const ms_vk_cmd *c, ms_vk_cmd_counts *out);
/* Timestamps written in the last completed run, in ns relative to the first one. */
int ms_vk_cmd_timestamps(ms_vk_cmd *c, double *ns, uint32_t n);

/* Device-local copy bandwidth: bytes read + written per second (GB/s) of a bytes-sized buffer
 * copy, median of reps timed runs after a 300 ms warm-up; the practical ceiling of a kernel that
 * streams memory. Takes 2 x bytes of device memory while it runs. */
int ms_vk_measure_copy(ms_vk *vk, uint64_t bytes, int reps, double *gbs);

/* ---------------------------------------------------------------- weights and op recorders */

#define MS_VK_MAX_PARTS 64

/* A weight matrix resident in device memory, in its checkpoint encoding (decoded in the shader).
 * Rows are split into parts so that each part's data and scales fit max_storage_buffer_range and
 * max_memory_allocation_size; part boundaries are multiples of 128 rows. */
typedef struct ms_vk_weight {
    ms_wenc enc;
    uint32_t m, k;
    uint32_t n_parts;
    struct {
        uint32_t row0, rows;
        ms_vk_buf data;
        ms_vk_buf scale; /* FP8/FP4 only */
    } part[MS_VK_MAX_PARTS];
} ms_vk_weight;

/* Shape rules (else -MS_E_UNSUPPORTED with a logged reason): F32 k%4==0, BF16 k%8==0,
 * FP8 k%16==0, FP4 k%32==0; m >= 1. max_part_bytes 0 = device limits (tests pass smaller
 * values to force splitting). */
int ms_vk_weight_upload(ms_vk *vk, const ms_weight_view *w, uint64_t max_part_bytes, ms_vk_weight *out);
void ms_vk_weight_free(ms_vk *vk, ms_vk_weight *w);

/* Which GEMV kernel: gemv_<enc> (each workgroup walks its rows, x read from memory) or
 * gemv_tiled_<enc> (x staged in shared memory per K-tile, each subgroup owns rows). Both compute
 * ms_ref_gemv_<enc>. AUTO picks tiled for FP4 and for n > 1, classic otherwise, and never tiled
 * when MOESTREAM_DISABLE_TILED_GEMV=1 (kill switch). */
typedef enum ms_vk_gemv_kernel {
    MS_VK_GEMV_AUTO = 0,
    MS_VK_GEMV_CLASSIC = 1,
    MS_VK_GEMV_TILED = 2,
} ms_vk_gemv_kernel;

/* GEMV tunables, passed as specialization constants. Zero fields = the per-device default. */
typedef struct ms_vk_gemv_tune {
    uint32_t wg_size;        /* invocations per workgroup */
    uint32_t rows_per_wg;    /* output rows per workgroup */
    uint32_t unroll;         /* 16-byte loads in flight per invocation per row */
    uint32_t subgroup_size;  /* required subgroup size, 0 = driver default */
    uint32_t kernel;         /* ms_vk_gemv_kernel */
} ms_vk_gemv_tune;

void ms_vk_gemv_tune_default(const ms_vk *vk, ms_wenc enc, ms_vk_gemv_tune *out);

/* y[c][r] = W[r,:] . x[c][:] for c < n (1..8). x: [n][x_stride] F32, y: [n][y_stride] F32.
 * Records one dispatch per weight part. */
int ms_vk_rec_gemv(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride,
                   ms_vk_range y, uint32_t y_stride, uint32_t n, const ms_vk_gemv_tune *tune);
/* A block-diagonal GEMV (V4's grouped output projection wo_a): output row r reads x at element
 * (r / group_rows) * group_x of each column, so group g's rows multiply x[c][g*group_x ..
 * g*group_x + k). group_rows: a multiple of 128 dividing m. One dispatch for all the groups. */
int ms_vk_rec_gemv_grouped(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride,
                           uint32_t group_rows, uint32_t group_x, ms_vk_range y, uint32_t y_stride, uint32_t n,
                           const ms_vk_gemv_tune *tune);

/* RMSNorm rows: x, y [n_rows][dim] F32 (may be the same range), w [dim] F32 or BF16. */
int ms_vk_rec_rmsnorm(ms_vk_cmd *c, ms_vk_range x, ms_vk_range w, ms_wenc w_enc, ms_vk_range y,
                      uint32_t dim, uint32_t n_rows, float eps);

/* mHC pre (shaders/hc.h) for n tokens after the mixing GEMV wrote mixraw [n][mix_n] (mix_n =
 * (2+hc)*hc, or hc with head): h [n][hc][dim], scale F32 [3] ([1] head), base [mix_n];
 * out x [n][dim], post [n][hc] and comb [n][hc][hc] (head: not written, any bound range).
 * norm: BF16 [dim], the RMSNorm weight applied to x afterwards (eps rms_eps, as
 * ms_ref_rmsnorm), or an empty range (size 0) for none. */
int ms_vk_rec_hc_pre(ms_vk_cmd *c, ms_vk_range mixraw, ms_vk_range h, ms_vk_range scale,
                     ms_vk_range base, ms_vk_range x, ms_vk_range post, ms_vk_range comb,
                     ms_vk_range norm, uint32_t dim, uint32_t hc, uint32_t n, uint32_t sinkhorn_iters,
                     float hc_eps, float rms_eps, bool head);
/* The same after ms_vk_rec_hc_mix: mixraw is its part range, n_parts its slice count. */
int ms_vk_rec_hc_pre_parts(ms_vk_cmd *c, ms_vk_range part, uint32_t n_parts, ms_vk_range h,
                           ms_vk_range scale, ms_vk_range base, ms_vk_range x, ms_vk_range post,
                           ms_vk_range comb, ms_vk_range norm, uint32_t dim, uint32_t hc, uint32_t n,
                           uint32_t sinkhorn_iters, float hc_eps, float rms_eps, bool head);

/* The mixing GEMV of hc_pre as split-K partials (shaders/hc.h), optionally with the previous
 * sub-layer's mHC post fused in: fn F32 [mix_n][hc*dim] (one part); with post_fused, h [n][hc][dim]
 * = hc_post(y, res, post, comb) is written first (res must not overlap h), else h is read (y, res,
 * post, comb unused: any bound range). part: F32 [n][ms_vk_hc_mix_slices()][mix_n + 1] for
 * ms_vk_rec_hc_pre_parts. mix_n <= (2 + MS_HC_MAX) * MS_HC_MAX. One dispatch. */
uint32_t ms_vk_hc_mix_slices(const ms_vk *vk, uint32_t dim, uint32_t hc);
int ms_vk_rec_hc_mix(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res,
                     ms_vk_range post, ms_vk_range comb, ms_vk_range h, ms_vk_range part, uint32_t dim,
                     uint32_t hc, uint32_t n, bool post_fused);
/* The same, watching the new streams (post_fused only): flags U32 [n] gets atomicMin(flags[t],
 * code) where a value of token t is NaN or infinite (the caller fills flags with 0xFFFFFFFF). */
int ms_vk_rec_hc_mix_watch(ms_vk_cmd *c, const ms_vk_weight *fn, ms_vk_range y, ms_vk_range res,
                           ms_vk_range post, ms_vk_range comb, ms_vk_range h, ms_vk_range part,
                           ms_vk_range flags, uint32_t code, uint32_t dim, uint32_t hc, uint32_t n);

/* Embedding into the hc streams: tokens U32 [n], embed BF16 [vocab][dim], h [n][hc][dim]. */
int ms_vk_rec_hc_embed(ms_vk_cmd *c, ms_vk_range tokens, ms_vk_range embed, ms_vk_range h,
                       uint32_t vocab, uint32_t dim, uint32_t hc, uint32_t n);

/* Rotary embedding in place (shaders/rope.h): x holds n tokens x n_heads heads at the strides
 * given (elements); cs F32 [n][rope_dim/2][2]; rms: unweighted per-head RMS over head_dim first;
 * inverse: the conjugate rotation. */
int ms_vk_rec_rope(ms_vk_cmd *c, ms_vk_range x, ms_vk_range cs, uint32_t n, uint32_t n_heads,
                   uint32_t head_dim, uint32_t head_stride, uint32_t token_stride, uint32_t off,
                   uint32_t rope_dim, bool rms, float eps, bool inverse);
/* The same with an RMSNorm weight w (BF16 [head_dim], shared by all heads; rms must be set): each
 * head becomes RMSNorm(head) * w before the rotation (the KV latent's kv_norm fused in). An empty
 * w (size 0) is ms_vk_rec_rope. */
int ms_vk_rec_rope_norm(ms_vk_cmd *c, ms_vk_range x, ms_vk_range cs, ms_vk_range w, uint32_t n,
                        uint32_t n_heads, uint32_t head_dim, uint32_t head_stride, uint32_t token_stride,
                        uint32_t off, uint32_t rope_dim, bool rms, float eps, bool inverse);

/* Stored-value rounding in place (shaders/fq.h): rows [n_rows][row_stride] F32, elements
 * [0, len); quant 0 none, 1 e4m3 (block 64), 2 e2m1 (block 32); hadamard first (len a power of
 * two <= 4096). */
int ms_vk_rec_fq(ms_vk_cmd *c, ms_vk_range x, uint32_t n_rows, uint32_t row_stride, uint32_t len,
                 uint32_t quant, bool hadamard);

/* MoE router (shaders/router.h): logits F32 [n][E]; hash: tokens U32 [n] and tid2eid I32
 * [vocab][k] (bias unused), else bias F32 [E] (tokens, tid2eid unused: any bound range); out idx
 * U32 [n][k], w F32 [n][k]. */
int ms_vk_rec_router(ms_vk_cmd *c, ms_vk_range logits, ms_vk_range bias, ms_vk_range tokens,
                     ms_vk_range tid2eid, ms_vk_range idx, ms_vk_range w, uint32_t n,
                     uint32_t n_experts, uint32_t k, uint32_t vocab, bool hash, bool norm,
                     float scale);

/* Clamped SwiGLU times the routing weight, in place on gate (shaders/swiglu.h): gate, up F32
 * [n][stride] (inter used), w F32 [n]; limit 0 = no clamp. */
int ms_vk_rec_swiglu(ms_vk_cmd *c, ms_vk_range gate, ms_vk_range up, ms_vk_range w, uint32_t n,
                     uint32_t inter, uint32_t stride, float limit);

/* mHC post: h [n][hc][dim] = post * y + comb^T res; y [n][dim], res [n][hc][dim] (not h). */
int ms_vk_rec_hc_post(ms_vk_cmd *c, ms_vk_range y, ms_vk_range res, ms_vk_range post,
                      ms_vk_range comb, ms_vk_range h, uint32_t dim, uint32_t hc, uint32_t n);

/* Gated-pooling compressor (V4_SPEC §3.4) for n consecutive tokens at positions pos0 + t, pos0 = pos[0]
 * (U32, read on the device). a, g: F32 [n][in_stride] the tokens' wkv / wgate projections (coff*d used);
 * ape: F32 [ratio][coff*d]; norm: BF16 [d]; cs: F32 [n][rope_dim/2][2] cos/sin of position pos0+t+1-ratio
 * (read only where token t completes a block); kv, score: F32 [coff*ratio][coff*d] the running state
 * (score -inf marks an empty slot; the caller fills score with -inf at session start);
 * rows: F32 [n_rows][d], row p/ratio written when token p completes a block (skipped when >= n_rows).
 * quant: 0 none, 1 e4m3 over dims [0, d - rope_dim) in blocks of 64, 2 e2m1 over all d in blocks of 32;
 * hadamard: rotate all d dims first (d a power of two). coff: 1, or 2 = overlapping blocks (ratio 4). */
int ms_vk_rec_compress(ms_vk_cmd *c, ms_vk_range a, ms_vk_range g, uint32_t in_stride, ms_vk_range ape,
                       ms_vk_range norm, ms_vk_range cs, ms_vk_range pos, ms_vk_range kv,
                       ms_vk_range score, ms_vk_range rows, uint32_t n, uint32_t ratio, uint32_t coff,
                       uint32_t d, uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant,
                       bool hadamard);
/* The same in two steps, for callers that interleave independent work between them: phase
 * MS_VK_COMPRESS_POOL records the pooling dispatch, MS_VK_COMPRESS_EMIT the emission (the caller
 * puts a barrier between them), BOTH is ms_vk_rec_compress. Same arguments in both calls. */
enum { MS_VK_COMPRESS_POOL = 1, MS_VK_COMPRESS_EMIT = 2, MS_VK_COMPRESS_BOTH = 3 };
int ms_vk_rec_compress_phase(ms_vk_cmd *c, ms_vk_range a, ms_vk_range g, uint32_t in_stride, ms_vk_range ape,
                       ms_vk_range norm, ms_vk_range cs, ms_vk_range pos, ms_vk_range kv,
                       ms_vk_range score, ms_vk_range rows, uint32_t n, uint32_t ratio, uint32_t coff,
                       uint32_t d, uint32_t rope_dim, uint32_t n_rows, float eps, uint32_t quant,
                       bool hadamard, uint32_t phase);
/* Lightning-indexer selection (V4_SPEC §3.5) for n queries at positions pos0 + t, pos0 = pos[0] (U32,
 * read on the device). q: F32 [n][n_heads][head_dim] (rotated, quantised queries); w: F32 [n][n_heads]
 * the head weights, multiplied by w_scale (in F32) before use; keys: F32 [n_keys][head_dim].
 * Query t sees nb = min((pos0+t+1)/ratio, n_keys) blocks and selects k = min(topk, nb): all of them
 * when k == nb, else the k highest scores (sum_h max(q_h.key_j, 0) * w_h; NaN ranks lowest), ties to
 * the lower index. sel: U32 [n][topk], the k indices ascending, then 0xFFFFFFFF.
 * scratch: ms_vk_indexer_scratch_bytes(n, n_keys, topk) bytes: the scores F32 [n][n_keys] first,
 * then the selection's histograms and counts (shaders/indexer.h). Every binding, scratch included,
 * must fit max_storage_buffer_range (-MS_E_UNSUPPORTED otherwise): on lavapipe's 128 MiB that is
 * n * n_keys <= ~33.5 M (n <= 127 at 262,144 keys), so prefill is cut into chunks of queries.
 * Records six dispatches with barriers between them; as for every recorder, the caller orders it
 * against earlier and later work with barriers. */
int ms_vk_rec_indexer(ms_vk_cmd *c, ms_vk_range q, ms_vk_range w, ms_vk_range keys, ms_vk_range pos,
                      ms_vk_range scratch, ms_vk_range sel, uint32_t n, uint32_t n_heads,
                      uint32_t head_dim, uint32_t ratio, uint32_t topk, uint32_t n_keys, float w_scale);
uint64_t ms_vk_indexer_scratch_bytes(uint32_t n, uint32_t n_keys, uint32_t topk);
/* ---------------------------------------------------------------- attention (shaders/attention.h) */

/* Sparse attention with a per-head sink (V4_SPEC §3.3) for n queries at positions p = pos0 + t,
 * pos0 = pos[0] (U32, read on the device). q: F32 [n][n_heads][head_dim]; ring: F32 [ring_len][head_dim],
 * the latent of position x at row x % ring_len; the window of query p is x in [max(0, p+1-window), p]
 * (the caller keeps ring_len >= window + n - 1, or ring_len >= every position, so a chunk's own rows do not
 * overwrite rows its earlier queries see). rows: F32 [n_rows][head_dim] compressed entries; with ratio 0
 * none are seen; else nb = min((p+1)/ratio, n_rows) complete blocks: ratio 4 sees those listed in
 * sel: U32 [n][topk] (ascending, 0xFFFFFFFF = unused, indices >= nb ignored), other ratios all of
 * 0..nb-1. sink: F32 [n_heads]. o: F32 [n][n_heads][head_dim]. Entries are visited window first
 * (oldest first), then compressed rows in index order.
 * Ascending sel is required: only its first min(topk, nb) slots are read (they hold every index < nb).
 * scratch: F32 split records, ms_vk_attention_scratch_bytes (same sizes, NULL tune) bytes; when that
 * is 0 (one split: CPU devices, prefill, short lists) any bound range. q, o, ring, rows and scratch
 * start 16-byte aligned; sel and rows may be any bound range when unused (ratio 0; rows also with
 * n_rows 0). head_dim: a multiple of 4 whose quarter divides, or is a multiple of, the workgroup
 * (64 on CPU devices, else 256): 64..1024 powers of two. Positions < 2^32.
 * F32 products and accumulation, an online softmax per split and an F32 merge of the splits; a NaN
 * in q_h, in a visible row or in sink[h] makes all of head h's outputs NaN (as the reference). Records
 * one dispatch (one split) or two with a barrier between them (splits, then their reduce). */
int ms_vk_rec_attention(ms_vk_cmd *c, ms_vk_range q, ms_vk_range ring, ms_vk_range rows, ms_vk_range sel,
                        ms_vk_range sink, ms_vk_range pos, ms_vk_range o, ms_vk_range scratch, uint32_t n,
                        uint32_t n_heads, uint32_t head_dim, uint32_t window, uint32_t ring_len, uint32_t ratio,
                        uint32_t topk, uint32_t n_rows, float scale);

/* Attention tunables (tests, benchmarks); zero fields = the per-device plan. heads_per_wg is rounded
 * up to what the value pass needs; an entries_per_tile / q_chunk that does not fit is
 * -MS_E_UNSUPPORTED; n_split 1 = no split records. */
typedef struct ms_vk_attention_tune {
    uint32_t heads_per_wg;     /* HT */
    uint32_t entries_per_tile; /* ET: 2, 4, 8 or 16 */
    uint32_t q_chunk;          /* QC: head_dim elements of q staged at a time */
    uint32_t n_split;          /* workgroups along each query's entry list */
} ms_vk_attention_tune;

/* Bytes of scratch ms_vk_rec_attention(_tuned) needs for these sizes on this device (0: none). */
uint64_t ms_vk_attention_scratch_bytes(const ms_vk *vk, uint32_t n, uint32_t n_heads, uint32_t head_dim,
                                       uint32_t window, uint32_t ratio, uint32_t topk, uint32_t n_rows,
                                       const ms_vk_attention_tune *tune);
int ms_vk_rec_attention_tuned(ms_vk_cmd *c, ms_vk_range q, ms_vk_range ring, ms_vk_range rows, ms_vk_range sel,
                              ms_vk_range sink, ms_vk_range pos, ms_vk_range o, ms_vk_range scratch,
                              uint32_t n, uint32_t n_heads, uint32_t head_dim, uint32_t window,
                              uint32_t ring_len, uint32_t ratio, uint32_t topk, uint32_t n_rows, float scale,
                              const ms_vk_attention_tune *tune);

/* KV ring write: row t of src F32 [n][head_dim] to ring row (pos0 + t) % ring_len, pos0 = pos[0]
 * (read on the device); 1 <= n <= ring_len (more would write one row twice). */
int ms_vk_rec_kv_store(ms_vk_cmd *c, ms_vk_range src, ms_vk_range ring, ms_vk_range pos, uint32_t n,
                       uint32_t head_dim, uint32_t ring_len);
/* ---------------------------------------------------------------- MoE experts (engine/vk/ops_moe.c) */

/* One expert record in a pool buffer (shaders/moe.h): w1, w3 [inter][dim] and w2 [dim][inter] in the
 * checkpoint's encoding, each part at a 256-byte-aligned offset within the record. */
typedef struct ms_vk_expert_layout {
    ms_wenc enc;                 /* MS_WENC_FP4 or MS_WENC_FP8 */
    uint32_t dim, inter;
    uint64_t w1_data, w1_scale, w3_data, w3_scale, w2_data, w2_scale; /* byte offsets in the record */
    uint64_t record_bytes;       /* a multiple of 256 */
} ms_vk_expert_layout;
/* The layout for enc/dim/inter (-MS_E_UNSUPPORTED for other encodings or shapes the shaders cannot
 * run: FP4 needs dim and inter multiples of 32, FP8 of 16; a record must stay under 4 GiB). */
int ms_vk_expert_layout_make(ms_wenc enc, uint32_t dim, uint32_t inter, ms_vk_expert_layout *out);
/* Writes one expert's three checkpoint views into rec[L->record_bytes] (host memory; zero padding).
 * -MS_E_INVALID_ARG when a view's encoding or shape does not match the layout. */
int ms_vk_expert_pack(const ms_vk_expert_layout *L, const ms_weight_view *w1, const ms_weight_view *w3,
                      const ms_weight_view *w2, void *rec);
/* Gate/up + SwiGLU: act F32 [n][k][inter] for tokens t < n, active a < k: expert idx[t][a] at record
 * slots[idx] of pool (U32 [n_experts]; 0xFFFFFFFF or an id >= n_experts: act rows = 0).
 * x: F32 [n][dim]; rw: F32 [n][k]; limit 0 = no clamp.
 * pool: whole records (pool.size / record_bytes of them; a slot past the last reads nothing and
 * counts as not resident), offset a multiple of 16, size <= maxStorageBufferRange (else
 * -MS_E_INVALID_ARG: split the pool). One dispatch. */
int ms_vk_rec_moe_up(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                     uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x, ms_vk_range act,
                     uint32_t n, uint32_t k, float limit);
/* Down and sum: y[t] = base[t] + sum_{a<k} w2_{idx[t][a]} act[t][a] (in order of a); base, y F32 [n][dim]
 * (y may be the same range as base). An expert out of range (as in up) adds nothing. One dispatch. */
int ms_vk_rec_moe_down(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                       uint32_t n_experts, ms_vk_range idx, ms_vk_range act, ms_vk_range base,
                       ms_vk_range y, uint32_t n, uint32_t k);
/* Shape of the moe dispatches, passed as specialization constants. Zero fields = the per-device
 * default. */
typedef struct ms_vk_moe_tune {
    uint32_t wg_size;     /* invocations per workgroup, a multiple of the subgroup size */
    uint32_t rows_per_sg; /* output rows per subgroup: a power of two <= 64 */
    uint32_t unroll;      /* 16-byte chunks per row per lane per K-tile (1..8) */
} ms_vk_moe_tune;
/* ms_vk_rec_moe_up / ms_vk_rec_moe_down with explicit tunables (NULL: the defaults; test_ops
 * --perf sweeps them); an invalid tune is -MS_E_INVALID_ARG with a logged reason. */
int ms_vk_rec_moe_up_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                           uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x,
                           ms_vk_range act, uint32_t n, uint32_t k, float limit, const ms_vk_moe_tune *tune);
int ms_vk_rec_moe_down_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool,
                             ms_vk_range slots, uint32_t n_experts, ms_vk_range idx, ms_vk_range act,
                             ms_vk_range base, ms_vk_range y, uint32_t n, uint32_t k,
                             const ms_vk_moe_tune *tune);

/* ---------------------------------------------------------------- GEMM (engine/vk/ops_gemm.c) */

/* GEMM tunables: the specialization constants of shaders/gemm.comp (shaders/gemm.h). Zero fields =
 * the per-device default for the shape (ms_vk_gemm_tune_default). All powers of two. */
typedef struct ms_vk_gemm_tune {
    uint32_t tile_rows;      /* BM: output rows per workgroup, >= rows_per_inv */
    uint32_t tile_tokens;    /* BN: tokens per workgroup, >= tokens_per_inv */
    uint32_t tile_k;         /* BK: k elements per shared-memory tile, >= the elements in 16 bytes */
    uint32_t wg_size;        /* invocations: (BM / TM) * (BN / TN) * KS, KS (<= BK) K slices summed at the end */
    uint32_t rows_per_inv;   /* TM: 4 or 8 */
    uint32_t tokens_per_inv; /* TN: 4 or 8 */
    uint32_t k_unroll;       /* k steps of the inner loop unrolled (capped at BK / KS); default all on GPUs, 2 on CPUs */
} ms_vk_gemm_tune;

/* The tunables ms_vk_rec_gemm uses for this encoding and shape with a NULL (or all-zero) tune. */
void ms_vk_gemm_tune_default(const ms_vk *vk, ms_wenc enc, uint32_t m, uint32_t k, uint32_t n,
                             ms_vk_gemm_tune *out);

/* y[t][r] = W[r,:] . x[t][:] for t < n (n >= 1, no upper bound but the ranges and 2^32-element
 * indexing): the same operation as ms_vk_rec_gemv (reference ms_ref_gemv), for prefill, where each
 * workgroup decodes a weight tile once and reuses it across its tile of tokens. x: [n][x_stride] F32,
 * y: [n][y_stride] F32 (padding between tokens is not written). F32 products and sums. Records one
 * dispatch per weight part. -MS_E_INVALID_ARG for bad arguments (ranges too small, strides, a
 * malformed tune), -MS_E_UNSUPPORTED (with a logged reason) for what this device cannot run (a
 * tune over its shared memory or workgroup limits, ranges over maxStorageBufferRange, indices past
 * 2^32, a grid too large). */
int ms_vk_rec_gemm(ms_vk_cmd *c, const ms_vk_weight *w, ms_vk_range x, uint32_t x_stride, ms_vk_range y,
                   uint32_t y_stride, uint32_t n, const ms_vk_gemm_tune *tune);
/* ---------------------------------------------------------------- MoE grouped by expert (engine/vk/ops_moe_grouped.c) */

/* The parts of ms_vk_rec_moe_grouped's scratch (shaders/moe_grouped.h), as byte offsets from the
 * range's start, each a multiple of 256: act F32 [n][k][inter] (the up output), out F32 [n][k][dim]
 * (the down output per pair), offsets U32 [n_experts+1], list U32 [n*k] and pos U32 [n*k] (the
 * pairs grouped by expert, as ms_ref_moe_group), experts U32 [n_experts+1] (how many experts have
 * pairs, then those experts in ascending id); bytes: the size of the whole. */
typedef struct ms_vk_moe_grouped_scratch {
    uint64_t act, out, offsets, experts, list, pos;
    uint64_t bytes;
} ms_vk_moe_grouped_scratch;
void ms_vk_moe_grouped_scratch_layout(uint32_t n, uint32_t k, uint32_t n_experts, uint32_t dim, uint32_t inter,
                                      ms_vk_moe_grouped_scratch *out);
uint64_t ms_vk_moe_grouped_scratch_bytes(uint32_t n, uint32_t k, uint32_t n_experts, uint32_t dim, uint32_t inter);

/* ms_vk_rec_moe_up followed by ms_vk_rec_moe_down (the same arguments and rules; act in scratch) for
 * prefill: y[t] = base[t] + sum over a < k in order of a of w2_e SwiGLU(w1_e x[t], w3_e x[t]) rw[t][a],
 * e = idx[t][a]; an id >= n_experts or a slot past the pool (0xFFFFFFFF) adds nothing. The pairs are
 * grouped by expert first, so each expert's rows are read once per tile of its pairs instead of
 * once per pair. Records four dispatches (group, up, down, sum) with barriers between them; the
 * grids are fixed by n, k, n_experts, the layout and the device (up and down walk the work of the
 * experts that have pairs, read on the device), so one recording serves any routing. Results: act
 * and out as the per-pair kernels up to F32 summation order; the sum over a is in F32 (the
 * reference's in double). Deterministic (no order-dependent atomics).
 * scratch: ms_vk_moe_grouped_scratch_bytes bytes at an offset bindable as a storage buffer; no
 * other range may overlap it; act and out rows of invalid pairs are left unwritten. y: base's range
 * or apart from it, overlapping no input. n_experts <= 2048; each binding (the pool, act, out, x,
 * y) within maxStorageBufferRange, else -MS_E_UNSUPPORTED or -MS_E_INVALID_ARG (pool): split the
 * tokens or the pool. */
int ms_vk_rec_moe_grouped(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                          uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x, ms_vk_range base,
                          ms_vk_range y, ms_vk_range scratch, uint32_t n, uint32_t k, float limit);

/* Tunables of the up and down stages (tests, benchmarks); zero fields = the per-device default. A
 * shape the device cannot run is -MS_E_UNSUPPORTED. */
typedef struct ms_vk_moe_grouped_tune {
    uint32_t wg;        /* invocations per workgroup, a power of two and a multiple of the subgroup */
    uint32_t rows_up;   /* rows of w1 and w3 per subgroup (a power of two <= 64) */
    uint32_t rows_down; /* rows of w2 per subgroup */
    uint32_t unroll;    /* 16-byte chunks per row per lane per K-tile (1..8) */
    uint32_t tok;       /* pairs per tile (1..32; fewer where shared memory is short) */
} ms_vk_moe_grouped_tune;
int ms_vk_rec_moe_grouped_tuned(ms_vk_cmd *c, const ms_vk_expert_layout *L, ms_vk_range pool, ms_vk_range slots,
                                uint32_t n_experts, ms_vk_range idx, ms_vk_range rw, ms_vk_range x,
                                ms_vk_range base, ms_vk_range y, ms_vk_range scratch, uint32_t n, uint32_t k,
                                float limit, const ms_vk_moe_grouped_tune *tune);

#endif
