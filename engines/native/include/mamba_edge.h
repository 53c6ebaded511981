/* mamba-edge native runner: runs an engine package (NAME.mamba: manifest.json + weights.safetensors)
 * on an NVIDIA GPU with the kernels of engines/native/src/kernels. Every function returns an error
 * code (0 = success) or a null pointer and leaves a message for me_last_error(); none aborts the
 * process. States: one slot per sequence in device memory, laid out like the TypeScript
 * SequenceState (all layers' conv states (channel, time), then all layers' SSM states), float32. */
#ifndef MAMBA_EDGE_H
#define MAMBA_EDGE_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct me_engine me_engine;

/* message of the last failure on this thread ("" if none) */
const char* me_last_error(void);
/* number of CUDA devices (0 when there is no GPU or no driver); never fails */
int me_device_count(void);

/* loads weights.safetensors of the package to the GPU; max_batch: largest decode batch;
 * slots: sequence states kept on the GPU */
me_engine* me_create(const char* package_dir, int max_batch, int slots);
void me_destroy(me_engine* e);

/* "GPU name, compute capability, recipe" */
const char* me_describe(me_engine* e);
int64_t me_state_floats(me_engine* e);
int me_vocab(me_engine* e);
int64_t me_weight_bytes(me_engine* e);

/* state slots: zero, or copy to / from host floats (me_state_floats of them) */
int me_state_zero(me_engine* e, int slot);
int me_state_save(me_engine* e, int slot, float* out);
int me_state_load(me_engine* e, int slot, const float* in);

/* runs n tokens through slot's state; logits (n or 1 rows × vocab) into `logits` if not null */
int me_prefill(me_engine* e, int slot, const int32_t* tokens, int n, int all_logits, float* logits);
/* one decode step for b sequences (b <= max_batch): token i continues slots[i]; logits (b × vocab).
 * Replays a CUDA graph captured once per batch-size bucket. */
int me_step(me_engine* e, const int32_t* slots, const int32_t* tokens, int b, float* logits);

/* timing on the device (CUDA events): median ms of `iters` graph replays of a greedy decode step at
 * batch b (argmax feeds the next tokens on the GPU), and of a prefill of n tokens */
int me_bench_step(me_engine* e, int b, int iters, float* ms);
int me_bench_prefill(me_engine* e, int n, int iters, float* ms);

/* The builder's calibration (runner/calibrate.cu): one block at a time over calibration windows,
 * with the statistics of its quantized inputs gathered on the GPU. config_json: a manifest's config
 * object; rotate: out_proj's input Hadamard-rotated; hessians: XᵀX of the linear layers' inputs;
 * bins: the caller's |x| histogram size (engines/builder/percentile.ts). */
typedef struct me_calib me_calib;
me_calib* me_calib_create(const char* config_json, int rotate, int hessians, int bins);
void me_calib_destroy(me_calib* k);
/* loads block `layer` from the safetensors file `path` (its tensors layers.<layer>.*, float16
 * matrices) and zeroes the statistics */
int me_calib_block(me_calib* k, const char* path, int layer);
/* one window (rows × dModel, from a zero state) through the block: the residual stream after it into
 * out; collect: adds the window to the statistics */
int me_calib_run(me_calib* k, const float* hidden, int rows, float* out, int collect);
/* the observed tensors: how many, then each one's name (without the block's prefix), width and
 * what is kept of it */
int me_calib_count(me_calib* k);
int me_calib_observed(me_calib* k, int i, char* name, int name_size, int* width, int* keeps, int* xtx);
/* tensor i's statistics since me_calib_block: absmax, per-channel maxima,
 * histogram counts, XᵀX (width × width, both triangles); null where not wanted */
int me_calib_stats(me_calib* k, int i, float* absmax, float* channel_absmax, double* hist, double* xtx);

#ifdef __cplusplus
}
#endif
#endif
