// GEMMs on CUDA through cuBLASLt (kernels/matmul.h) with fp32 accumulation: f32 operands in exact
// fp32 (not TF32: the CPU reference agrees to 1e-5), bf16/f16 operands on the tensor cores; the
// bias rides on cuBLASLt's BIAS epilogue, GELU and its gradient on GELU_AUX(_BIAS) and DGELU, the
// bias gradient on BGRADA (the operand's sum over k as the weight gradient's GEMM reads it).
// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B's buffer is cuBLASLt's first
// operand and A's the second, each with its transpose flag as given.
#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/cuda_util.cuh"
#include "kernels/matmul.h"
#include "kernels/residual.h"

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

// Owns the cuBLASLt descriptors of one kind of call, and the algorithm the heuristic chose (none:
// found is false).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    for (cublasLtMatrixLayout_t l : {a, b, c})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// What a plan depends on: m, n, k, the transposes, the two element types, whether there is a
// bias, the four alignments the heuristic was told (b, a, c, aux), the GELU epilogue and whether
// the epilogue sums b over k.
using PlanKey = std::array<int64_t, 14>;

// A cuBLASLt handle, its workspace and the plans made so far for one device, made on first use
// and kept for the process's lifetime (like PyTorch's handle pool): resources and a cache of
// decisions that depend only on the key, not state that changes results. `mu` guards all of it.
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::mutex mu;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
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

// Owns a heuristic preference while a plan is made.
struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  ~Preference() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
  }
};

// partials (kRowChunks, n): each row chunk's column sums of dout (rows, n), in row order.
template <class D>
__global__ void column_partials_kernel(float* partials, const D* dout, int64_t rows, int64_t n) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= n) return;
  int64_t first, end;
  cuda_detail::chunk_rows(rows, first, end);
  float acc = 0.0f;
#pragma unroll 8  // loads of 8 rows in flight (the sum keeps its order)
  for (int64_t i = first; i < end; ++i) acc += cuda_detail::load(dout[i * n + j]);
  partials[blockIdx.y * n + j] = acc;
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

// The epilogue for a bias, a GELU mode and b's sums over k.
cublasLtEpilogue_t epilogue_for(bool with_bias, GemmGelu gelu, bool b_sums) {
  if (b_sums) return CUBLASLT_EPILOGUE_BGRADA;  // cuBLASLt's A is b's buffer
  switch (gelu) {
    case GemmGelu::forward:
      return with_bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    case GemmGelu::backward:
      return CUBLASLT_EPILOGUE_DGELU;
    default:
      return with_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  }
}

// The plan for this kind of call: descriptors and the heuristic's algorithm, made once. Throws
// Error when the heuristic has no algorithm, except for b's sums (then found is false).
std::unique_ptr<Plan> make_plan(LtContext& ctx, const PlanKey& key, int64_t m, int64_t n, int64_t k,
                                bool trans_a, bool trans_b, GemmTypes types, bool with_bias,
                                GemmGelu gelu, void* aux, bool b_sums) {
  const cudaDataType_t ab = cuda_type(types.ab), ct = cuda_type(types.c);
  auto d = std::make_unique<Plan>();
  TS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLASLt's first operand is B's buffer: (n × k) column-major when not transposed.
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                 sizeof(op_first)));
  TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                 sizeof(op_second)));
  const cublasLtEpilogue_t epilogue = epilogue_for(with_bias, gelu, b_sums);
  TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                 sizeof(epilogue)));
  if (b_sums) {  // fp32 sums whatever c's type (by default they would take it)
    const cudaDataType_t sums_type = CUDA_R_32F;
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                   &sums_type, sizeof(sums_type)));
  }
  if (gelu != GemmGelu::none) {  // aux (m, n) row-major: column-major n × m, leading dimension n
    const int64_t ld = n;
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld,
                                                   sizeof(ld)));
    // The heuristic reads the pointer's alignment (the key's): set before it runs.
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                   &aux, sizeof(aux)));
  }
  // Stored shapes (column-major rows × cols, leading dimension = rows).
  if (trans_b) {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->a, ab, k, n, k));
  } else {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->a, ab, n, k, n));
  }
  if (trans_a) {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->b, ab, m, k, m));
  } else {
    TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->b, ab, k, m, k));
  }
  TS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d->c, ct, n, m, n));
  Preference p;
  TS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p.pref));
  const size_t workspace = kWorkspaceBytes;
  TS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  // cuBLASLt's operand A is b's buffer and its B is a's; without these it assumes 256 bytes.
  for (const auto& [attr, value] :
       {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(key[8])},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(key[9])},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(key[10])},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(key[10])}})
    TS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p.pref, attr, &value, sizeof(value)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  TS_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, d->op, d->a, d->b, d->c, d->c, p.pref,
                                                 1, &heuristic, &found));
  if (found == 0 && b_sums) return d;  // the caller sums b itself
  TS_CHECK(found > 0, "cuBLASLt has no algorithm for a (", m, " x ", k, ") by (", k, " x ", n,
           ") product of ", dtype_name(types.ab), " into ", dtype_name(types.c),
           with_bias ? " with a bias" : "",
           gelu == GemmGelu::none ? ""
                                  : " with a GELU epilogue (leading dimension n must be a "
                                    "multiple of 8)");
  d->algo = heuristic.algo;
  d->found = true;
  return d;
}

}  // namespace

namespace {

// gemm, and with b_sums (n) non-null b's sums over k into it (bias is then null and there is no
// GELU): false, having run nothing, when cuBLASLt has no algorithm for the sums.
bool run_gemm(void* c, const void* a, const void* b, const void* bias, int64_t m, int64_t n,
              int64_t k, bool trans_a, bool trans_b, float beta, CudaStream stream, GemmTypes types,
              const void* c_in, GemmGelu gelu, void* aux, float* b_sums) {
  if (!c_in) c_in = c;
  TS_CHECK((gelu == GemmGelu::none) == (aux == nullptr),
           "gemm: a GELU epilogue takes an aux matrix, and only it");
  TS_CHECK(gelu != GemmGelu::backward || bias == nullptr, "gemm: the GELU gradient takes no bias");
  LtContext& ctx = context();
  const PlanKey key{m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    static_cast<int64_t>(types.ab),
                    static_cast<int64_t>(types.c),
                    bias != nullptr,
                    alignment(b),
                    alignment(a),
                    std::min(alignment(c), alignment(c_in)),
                    aux ? alignment(aux) : 0,
                    static_cast<int64_t>(gelu),
                    b_sums != nullptr};
  std::lock_guard<std::mutex> lock(ctx.mu);
  std::unique_ptr<Plan>& plan = ctx.plans[key];
  if (!plan)
    plan = make_plan(ctx, key, m, n, k, trans_a, trans_b, types, bias != nullptr, gelu, aux,
                     b_sums != nullptr);
  if (!plan->found) return false;
  // The pointers change between calls of a plan. The bias pointer is the sums' output with BGRADA.
  if (const void* vector = b_sums ? static_cast<const void*>(b_sums) : bias)
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &vector, sizeof(vector)));
  if (aux)
    TS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
  const float alpha = 1.0f;
  const cublasStatus_t status =
      cublasLtMatmul(ctx.handle, plan->op, &alpha, b, plan->a, a, plan->b, &beta, c_in, plan->c, c,
                     plan->c, &plan->algo, ctx.workspace, kWorkspaceBytes, stream);
  if (b_sums && status == CUBLAS_STATUS_NOT_SUPPORTED) {  // refused at the call after all
    plan->found = false;  // (nothing ran): the caller sums b itself, now and from now on
    return false;
  }
  TS_CUBLAS_CHECK(status);
  return true;
}

}  // namespace

void gemm(void* c, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, float beta, CudaStream stream, GemmTypes types,
          const void* c_in, GemmGelu gelu, void* aux) {
  if (m == 0 || n == 0) return;
  run_gemm(c, a, b, bias, m, n, k, trans_a, trans_b, beta, stream, types, c_in, gelu, aux, nullptr);
}

bool gemm_bias_grad(float* dweight, float* dbias, float* sums, const void* a, const void* b,
                    int64_t m, int64_t n, int64_t k, CudaStream stream, DType ab) {
  if (m == 0 || n == 0 || k == 0) return false;  // the plain path handles empty shapes
  if (!run_gemm(dweight, a, b, nullptr, m, n, k, true, false, 1.0f, stream, {ab, DType::f32},
                nullptr, GemmGelu::none, nullptr, sums))
    return false;
  add(dbias, dbias, sums, n, stream);
  return true;
}

template <class D>
void column_sum(float* dbias, float* partials, const D* dout, int64_t rows, int64_t n,
                CudaStream stream) {
  static_assert(kColumnChunks == cuda_detail::kRowChunks);
  if (n == 0) return;
  column_partials_kernel<<<cuda_detail::partial_grid(n), kThreads, 0, stream>>>(
      partials, cuda_detail::cuda_ptr(dout), rows, n);
  TS_CUDA_CHECK_LAUNCH();
  cuda_detail::add_partials_kernel<<<cuda_detail::partial_sum_blocks(n), kThreads, 0, stream>>>(
      dbias, partials, n, cuda_detail::kRowChunks);
  TS_CUDA_CHECK_LAUNCH();
}

template void column_sum(float*, float*, const float*, int64_t, int64_t, CudaStream);
template void column_sum(float*, float*, const bf16*, int64_t, int64_t, CudaStream);
template void column_sum(float*, float*, const f16*, int64_t, int64_t, CudaStream);

}  // namespace tessera::cuda
