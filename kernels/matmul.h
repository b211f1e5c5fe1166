// Linear layer on OpenBLAS: Y = X·W + b with W in Hugging Face Conv1D layout (in, out).
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out (N, OC) = inp (N, IC) · weight (IC, OC) + bias (OC). bias may be undefined (no bias).
// Leading dimensions of inp/out are flattened into N.
void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor& bias);

// dinp (N, IC) = dout · weightᵀ; dweight (IC, OC) += inpᵀ · dout; dbias (OC) += Σ_n dout.
// dbias may be undefined. dinp may be undefined when the input needs no gradient.
void matmul_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight);

}  // namespace tessera
