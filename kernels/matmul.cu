// GEMMs on CUDA through cuBLASLt (kernels/matmul.h) with fp32 accumulation: f32 operands in exact
// fp32 (not TF32: the CPU reference agrees to 1e-5), bf16/f16 operands on the tensor cores; the
// bias rides on cuBLASLt's BIAS epilogue.
// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B's buffer is cuBLASLt's first
// operand and A's the second, each with its transpose flag as given.
#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/cuda_util.cuh"
#include "kernels/matmul.h"

#define TS_CUBLAS_CHECK(call)                                                                      \
  do {                                                                                             \
    const cublasStatus_t ts_status_ = (call);                                                      \
    if (ts_status_ != CUBLAS_STATUS_SUCCESS)                                                       \
      throw ::tessera::Error(__FILE__, __LINE__, #call,                                            \
                             ::tessera::detail::cat("cuBLAS error ", static_cast<int>(ts_status_), \
                                                    ": ", cublasLtGetStatusString(ts_status_)));   \
  } while (0)

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLAS's recommendation for Hopper

// A cuBLASLt handle and its workspace for one device, made on first use and kept for the
// process's lifetime (like PyTorch's handle pool): resources, not state that changes results.
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

LtContext& context() {
  constexpr int kMaxDevices = 16;
  static std::mutex mu;
  static std::unique_ptr<LtContext> contexts[kMaxDevices];
  int device = 0;
  TS_CUDA_CHECK(cudaGetDevice(&device));
  TS_CHECK(device >= 0 && device < kMaxDevices, "CUDA device ", device, " out of range");
  std::lock_guard<std::mutex> lock(mu);
  if (!contexts[device]) {
    auto c = std::make_unique<LtContext>();
    TS_CUBLAS_CHECK(cublasLtCreate(&c->handle));
    TS_CUDA_CHECK(cudaMalloc(&c->workspace, kWorkspaceBytes));
    contexts[device] = std::move(c);
  }
  return *contexts[device];
}

// Owns the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    for (cublasLtMatrixLayout_t l : {a, b, c})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// (bias (N) rows of D in column-major terms.) Column sums of dout for the bias gradient: a thread
// per column walks the rows in order (deterministic). dbias (n) += Σ_rows dout (rows, n).
__global__ void column_sum_kernel(float* dbias, const float* dout, int64_t rows, int64_t n) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= n) return;
  float acc = 0.0f;
  for (int64_t i = 0; i < rows; ++i) acc += dout[i * n + j];
  dbias[j] += acc;
}

// The largest power of two up to 256 that divides p's address: what cuBLASLt may assume of it
// (parameter views are 64-byte aligned, row chunks less).
uint32_t alignment(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      TS_THROW("GEMM operands must be f32, bf16 or f16, got ", dtype_name(t));
  }
}

}  // namespace

void gemm(void* c, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, float beta, CudaStream stream, GemmTypes types) {
  if (m == 0 || n == 0) return;
  const cudaDataType_t ab = cuda_type(types.ab), ct = cuda_type(types.c);
  LtContext& ctx = context();
  Descriptors d;
  TS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLASLt's first operand is B's buffer: (n × k) column-major when not transposed.
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                 sizeof(op_first)));
  TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                 sizeof(op_second)));
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                   sizeof(epilogue)));
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                   sizeof(bias)));
  }
  // Stored shapes (column-major rows × cols, leading dimension = rows).
  if (trans_b) {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab, k, n, k));
  } else {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab, n, k, n));
  }
  if (trans_a) {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab, m, k, m));
  } else {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab, k, m, k));
  }
  TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, ct, n, m, n));
  TS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
  const size_t workspace = kWorkspaceBytes;
  TS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  // cuBLASLt's operand A is b's buffer and its B is a's; without these it assumes 256 bytes.
  const uint32_t align_first = alignment(b), align_second = alignment(a), align_c = alignment(c);
  for (const auto& [attr, value] :
       {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_first},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_second},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}})
    TS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, attr, &value, sizeof(value)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  TS_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1,
                                                 &heuristic, &found));
  TS_CHECK(found > 0, "cuBLASLt has no algorithm for a (", m, " x ", k, ") by (", k, " x ", n,
           ") product of ", dtype_name(types.ab), " into ", dtype_name(types.c),
           bias ? " with a bias" : "");
  const float alpha = 1.0f;
  TS_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, &alpha, b, d.a, a, d.b, &beta, c, d.c, c, d.c,
                                 &heuristic.algo, ctx.workspace, kWorkspaceBytes, stream));
}

void column_sum(float* dbias, const float* dout, int64_t rows, int64_t n, CudaStream stream) {
  if (n == 0) return;
  column_sum_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      dbias, dout, rows, n);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
