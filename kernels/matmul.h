// Linear layer: Y = X·W + b with W in Hugging Face Conv1D layout (in, out). OpenBLAS on the CPU,
// cuBLASLt on CUDA. `compute` is the type the product's operands are rounded to: f32 (exact), or
// bf16 or f16 (on CUDA the tensor cores, fp32 accumulation; on the CPU the same rounding then an
// fp32 product: the reference for the CUDA path). Weight gradients are f32; a weight is f32
// (rounded into a scratch copy as it enters a product, as torch.autocast does per op) or already
// of the 16-bit compute type (a model's copy rounded once per step); activations and their
// gradients may be of the 16-bit type where only 16-bit products read them.
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out (N, OC) = inp (N, IC) · weight (IC, OC) + bias (OC). bias may be undefined (no bias).
// Leading dimensions of inp/out are flattened into N. out is f32, or of the 16-bit `compute` type
// when only ops that round to it read out: then the bias is rounded to that type too (cuBLASLt
// takes a bias of the output's type; torch.autocast rounds it as well) and the fp32 result once.
// With `residual` (N, OC) given (f32 out), out = residual + that, in the same pass on CUDA (the
// GEMM's C operand), bit for bit residual_forward after it on the CPU; out must not alias it.
void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor& bias,
                    DType compute = DType::f32, const Tensor& residual = Tensor());

// out = gelu(pre), pre (N, OC) = inp · weight + bias: a linear layer and the GELU after it, in one
// pass on CUDA (cuBLASLt's GELU_AUX_BIAS epilogue). out and pre are both f32, or both of the 16-bit
// `compute` type: the bias rounded as in matmul_forward, out the GELU of the fp32 pre-activation,
// pre that rounded. On the CPU in f32, bit for bit matmul_forward then gelu_forward. (OC not a
// multiple of 8, which the epilogue does not take: on CUDA the GEMM, then the GELU of the stored
// pre — in 16 bits the GELU of the rounded pre-activation, within 1e-2 of the above.)
void matmul_gelu_forward(Tensor& out, Tensor& pre, const Tensor& inp, const Tensor& weight,
                         const Tensor& bias, DType compute = DType::f32);

// dinp (N, IC) = dout · weightᵀ; dweight (IC, OC) += inpᵀ · dout; dbias (OC) += Σ_n dout.
// dbias may be undefined. dinp may be undefined when the input needs no gradient; it is f32, or of
// the 16-bit compute type (the fp32 product rounded once). dout, like inp, may already be of the
// 16-bit compute type (a gradient only GEMMs and this bias sum read). With `gelu_pre` (N, IC)
// given, the layer's input was gelu(gelu_pre) and dinp is the gradient of gelu_pre instead:
// gelu'(gelu_pre) ∘ (dout · weightᵀ), in one pass on CUDA (cuBLASLt's DGELU epilogue, when IC is
// a multiple of 8 and gelu_pre is of dinp's type); on the CPU bit for bit gelu_backward after it.
void matmul_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight, DType compute = DType::f32,
                     const Tensor& gelu_pre = Tensor());

// Throws Error unless `compute` is a GEMM operand type: f32, bf16 or f16.
void check_gemm_compute(DType compute);

// `x` as a GEMM operand of type `compute` (checked as above): x itself when of that type, else a
// rounded copy of an f32 x on x's device.
Tensor gemm_operand(const Tensor& x, DType compute);

namespace cuda {  // launchers on device pointers (kernels/matmul.cu)
// Element types of a GEMM: a and b share one, c and the bias another (f32, bf16 or f16 each);
// products accumulate in fp32 (exact fp32 for f32 inputs, tensor cores for 16-bit ones).
struct GemmTypes {
  DType ab = DType::f32;
  DType c = DType::f32;
};
// GELU in cuBLASLt's epilogue, with `aux` (m, n) of c's type and n a multiple of 8: forward, c =
// gelu(product + bias) and aux = product + bias (the pre-activation); backward, c = gelu'(aux) ∘
// product (no bias).
enum class GemmGelu : uint8_t { none, forward, backward };
// Row-major c (m, n) = op(a) (m, k) · op(b) (k, n) + beta · c_in [+ bias (n) on every row], where
// a is stored (m, k), or (k, m) when trans_a, and b (k, n), or (n, k) when trans_b; c_in is c
// itself unless given (of c's type and shape).
void gemm(void* c, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, float beta, CudaStream stream, GemmTypes types = {},
          const void* c_in = nullptr, GemmGelu gelu = GemmGelu::none, void* aux = nullptr);
// A linear layer's weight and bias gradients in one cuBLASLt call: dweight (m, n) += a (k, m)ᵀ ·
// b (k, n) with a and b of type ab, and dbias (n) += Σ over b's k rows (the epilogue's fp32 sums
// of b as the product reads it, into `sums` (n), then added). False, having changed nothing, when
// cuBLASLt has no algorithm for the sums (or a size is 0): then gemm and column_sum do it.
bool gemm_bias_grad(float* dweight, float* dbias, float* sums, const void* a, const void* b,
                    int64_t m, int64_t n, int64_t k, CudaStream stream, DType ab);
// dbias (n) += Σ over rows of dout (rows, n) of type D (float, bf16 or f16), in a fixed order;
// partials (kColumnChunks, n) is scratch.
constexpr int kColumnChunks = 256;
template <class D>
void column_sum(float* dbias, float* partials, const D* dout, int64_t rows, int64_t n,
                CudaStream stream);
}  // namespace cuda

}  // namespace tessera
