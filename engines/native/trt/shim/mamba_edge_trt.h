// The C surface of libmamba_edge_trt.so, the shim of backend trt over the TensorRT 10 runtime and
// builder. TensorRT's libraries are opened at run time (dlopen), so the shim loads on machines
// without them and says so. Every call returns an error code or NULL and leaves a one-line message
// in me_trt_last_error(); nothing aborts.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/** The last error of this thread (one line), "" when none. */
const char* me_trt_last_error(void);

/** TensorRT's library version (10.3.0 reads 100300), or 0 when libnvinfer.so.10 cannot be loaded. */
int me_trt_version(void);

/** The GPU (device 0): its name into name[cap] and its compute capability as 10*major+minor. */
int me_trt_gpu(char* name, int cap, int* sm);

/**
 * Builds a plan from an ONNX graph with TensorRT's ONNX parser (libnvonnxparser.so.10), strongly
 * typed (the graph's own types, Q/DQ included, decide the precision). One optimization profile per
 * size: step (prefill == 0) fixes the batch dimension (dimension 0 of every input) at sizes[i];
 * prefill (prefill == 1) runs batch 1 and lets the token count range over (sizes[i-1], sizes[i]].
 * timing_cache is read when it exists and written back; workspace_mb caps TensorRT's scratch.
 */
int me_trt_build(const char* onnx, const char* plugins, const char* plan_out, const char* timing_cache, int prefill, const int* sizes,
                 int n_sizes, int workspace_mb);

/**
 * Opens a step plan (and a prefill plan, or NULL: prefill then runs token by token through the
 * step plan), registering the plugin library (or NULL) first. states lists the state tensors, one
 * pair "input output" a line, in the order of a state slot's layout; slots is how many sequence
 * states stay on the GPU. One execution context per batch bucket (an optimization profile of the
 * step plan), all sharing one scratch allocation.
 */
void* me_trt_open(const char* step_plan, const char* prefill_plan, const char* plugins, const char* states, int slots);
void me_trt_close(void* h);

/** JSON: {"tensorrt","device","buckets":[…],"graphs":bool,"step":[tensors],"prefill":[tensors]} */
const char* me_trt_describe(void* h);
int me_trt_vocab(void* h);
int me_trt_max_batch(void* h);
/** floats of one slot: the state tensors' rows, in the order given to me_trt_open */
int64_t me_trt_state_floats(void* h);

int me_trt_state_zero(void* h, int slot);
int me_trt_state_save(void* h, int slot, float* out);
int me_trt_state_load(void* h, int slot, const float* data);

/** Runs n tokens through slot; logits of the last position (vocab floats), or of all (n × vocab). */
int me_trt_prefill(void* h, int slot, const int32_t* tokens, int n, int all, float* logits);
/** One token for each of b slots; logits b × vocab. Runs the smallest bucket ≥ b (CUDA graph). */
int me_trt_step(void* h, const int32_t* slots, const int32_t* tokens, int b, float* logits);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
