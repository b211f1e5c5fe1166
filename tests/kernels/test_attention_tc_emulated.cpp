// The tensor-core attention kernels (kernels/attention_tc.cuh) run on the CPU through the SIMT
// emulation (tests/support/simt.h), in CI, without a GPU: their fragment layouts, tile loads,
// masks, tile skips and rounding against the CPU's emulation of the same rounding
// (kernels/attention.h with 16-bit compute). The same comparison runs on a GPU in
// test_cuda_ops.cpp; this one checks each kernel alone, element by element, on every build.
#include "tests/support/simt.h"  // first: the built-ins and primitives the kernels use

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "kernels/attention.h"
#include "kernels/attention_tc.cuh"
#include "kernels/convert.h"
#include "tests/support/numeric.h"
#include "tests/support/widened.h"

namespace tessera {
namespace {

using cuda::kBackwardRows;
using cuda::kBackwardWarps;
using cuda::kForwardRows;
using cuda::kForwardWarps;

// Tessera's element type for a CUDA 16-bit type.
template <class T>
using HostType = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, bf16, f16>;

// The kernels' pointer to a tensor's elements, of CUDA type E (float, __nv_bfloat16, __half).
template <class E>
E* elements(const Tensor& x) {
  if constexpr (std::is_same_v<E, float>)
    return x.data<float>();
  else
    return cuda_detail::cuda_ptr(x.data<HostType<E>>());
}

using testing::widened;

// max |got − want| over max |want|: a single wrong element shows.
double max_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = testing::to_f64(widened(got)), w = testing::to_f64(widened(want));
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(g[i])) return INFINITY;
    diff = std::max(diff, std::abs(g[i] - w[i]));
    scale = std::max(scale, std::abs(w[i]));
  }
  return diff / std::max(scale, 1e-30);
}

// Runs kernel on the emulated GPU with the most shared memory the kernels take, cp.async copies
// landing as `landing` says.
void launch(simt::Dim3 grid, unsigned threads, simt::CopyLanding landing,
            const std::function<void()>& kernel) {
  simt::launch(grid, threads, 128 << 10, kernel, landing);
}

class AttentionTcEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};

  Tensor random16(const Shape& shape, DType half) {
    const Tensor x = testing::randn(shape, rng_);
    Tensor y = Tensor::empty(shape, half);
    convert(y, x);
    return y;
  }
};

// The CPU's attention with `half` products and outputs of out_type (f32 or half): the reference.
struct Reference {
  Tensor y, lse, dqkv;
};
Reference reference(const Tensor& qkv, const Tensor& dy, int64_t nh, DType half, DType out_type) {
  const int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
  Reference r{Tensor::empty({b, t, c}, out_type), Tensor::empty({b, nh, t}, DType::f32),
              Tensor::empty({b, t, 3 * c}, out_type)};
  attention_forward(r.y, r.lse, qkv, nh, half);
  attention_backward(r.dqkv, dy, qkv, r.y, r.lse, nh, half);
  return r;
}

// Forward, then D, dq and dk/dv, each against the CPU's (want): out, lse and dqkv. M: the
// forward's m-tiles a warp; kDq: dq made by the dk/dv kernel (else by its own); T: the products'
// type (qkv's and dout's); O: out's and dqkv's, T or float.
template <int HS, int M, bool kDq, class T, class O>
void check(int64_t b, int64_t t, int64_t nh, const Tensor& qkv, const Tensor& dy,
           const Reference& want, simt::CopyLanding landing) {
  const int64_t c = nh * HS;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const DType out_type = want.y.dtype();
  const Tensor &y = want.y, &lse = want.lse, &dqkv = want.dqkv;

  // The emulated kernels' outputs; lse and D poisoned (NaN) so that unwritten rows show.
  Tensor got_y = Tensor::empty({b, t, c}, out_type);
  Tensor got_lse = Tensor::empty({b, nh, t}, DType::f32);
  Tensor got_dqkv = Tensor::empty({b, t, 3 * c}, out_type);
  Tensor delta = Tensor::empty({b, nh, t}, DType::f32);
  testing::poison(got_lse);
  testing::poison(delta);
  const T* q = elements<T>(qkv);
  const T* dout = elements<T>(dy);
  O* out = elements<O>(got_y);
  O* dq = elements<O>(got_dqkv);
  float* lse_out = got_lse.data<float>();
  const unsigned heads = static_cast<unsigned>(b * nh);
  launch({static_cast<unsigned>((t + kForwardRows - 1) / kForwardRows), heads, 1},
         32 * kForwardWarps<M>, landing,
         [&] { cuda::forward_tc_kernel<HS, M, T, O>(out, lse_out, q, t, c, nh, scale); });
  EXPECT_LT(max_error(got_y, y), 1e-2) << "out";
  EXPECT_LT(max_error(got_lse, lse), 1e-4) << "lse";

  const int64_t rows = b * t * nh;
  launch({static_cast<unsigned>((rows * HS / 8 + cuda::kDeltaThreads - 1) / cuda::kDeltaThreads), 1,
          1},
         cuda::kDeltaThreads, landing,
         [&] { cuda::delta_tc_kernel<HS, T, O>(delta.data<float>(), dout, out, rows, t, nh); });
  const simt::Dim3 backward_grid{static_cast<unsigned>((t + kBackwardRows - 1) / kBackwardRows),
                                 heads, 1};
  const float* d = delta.data<float>();
  Tensor dq_accum = Tensor::empty({b, t, c}, DType::f32);
  Tensor turns = Tensor::zeros({cuda::attention_dq_turns(b, t, nh)}, DType::i32);
  testing::poison(dq_accum);
  if constexpr (!kDq)
    launch(backward_grid, 32 * kBackwardWarps, landing,
           [&] { cuda::dq_tc_kernel<HS, T, O>(dq, dout, q, lse_out, d, t, c, nh, scale); });
  launch(backward_grid, 32 * kBackwardWarps, landing, [&] {
    cuda::dkv_tc_kernel<HS, T, O, kDq>(dq, dq_accum.data<float>(), turns.data<int32_t>(), dout, q,
                                       lse_out, d, t, c, nh, scale);
  });
  EXPECT_LT(max_error(got_dqkv, dqkv), 1e-2) << "dqkv";
}

TEST_F(AttentionTcEmulated, KernelsMatchTheCpusEmulation) {
  // Head sizes 16, 32, 64 (two m-tiles a warp in the forward by default) and 128 (one); lengths of
  // one tile, several, and off the 64- and 128-row tiles; bf16, and fp16 once; 16-bit outputs, and
  // fp32 ones twice.
  for (const auto& [b, t, nh, hs, half, f32_out] :
       {std::tuple<int64_t, int64_t, int64_t, int, DType, bool>{1, 130, 2, 64, DType::bf16, false},
        {2, 37, 1, 64, DType::bf16, false},
        {1, 200, 1, 16, DType::bf16, false},
        {1, 70, 2, 32, DType::bf16, false},
        {1, 77, 1, 128, DType::bf16, false},
        {1, 129, 1, 64, DType::f16, false},
        {1, 150, 1, 64, DType::bf16, true},
        {1, 66, 1, 128, DType::f16, true}}) {
    SCOPED_TRACE(std::string(dtype_name(half)) + (f32_out ? " (fp32 outputs)" : "") + ", T " +
                 std::to_string(t) + ", hs " + std::to_string(hs));
    const int64_t c = nh * hs;
    const Tensor qkv = random16({b, t, 3 * c}, half), dy = random16({b, t, c}, half);
    const Reference want = reference(qkv, dy, nh, half, f32_out ? DType::f32 : half);
    auto variant = [&]<int HS, int M, bool kDq>() {
      SCOPED_TRACE("forward " + std::to_string(16 * M) + " rows a warp, dq " +
                   (kDq ? "in the dk/dv kernel" : "in its own kernel"));
      // Copies landing as issued (a stage refilled too early shows) and as late as the PTX
      // allows (a read before its wait shows).
      for (const auto landing : {simt::CopyLanding::at_issue, simt::CopyLanding::at_wait}) {
        SCOPED_TRACE(landing == simt::CopyLanding::at_issue ? "copies land at issue"
                                                            : "copies land at the wait");
        if (half == DType::bf16 && f32_out)
          check<HS, M, kDq, __nv_bfloat16, float>(b, t, nh, qkv, dy, want, landing);
        else if (half == DType::bf16)
          check<HS, M, kDq, __nv_bfloat16, __nv_bfloat16>(b, t, nh, qkv, dy, want, landing);
        else if (f32_out)
          check<HS, M, kDq, __half, float>(b, t, nh, qkv, dy, want, landing);
        else
          check<HS, M, kDq, __half, __half>(b, t, nh, qkv, dy, want, landing);
      }
    };
    // The default variants (kernels/attention_tc.cu's), and at head size 64 the others too, which
    // bench/attention_cuda.cu times against them.
    auto run = [&]<int HS>() {
      constexpr int M = cuda::kForwardTilesM<HS>;
      constexpr bool kDq = cuda::kDqInDkv<HS>;
      variant.template operator()<HS, M, kDq>();
      if constexpr (HS == 64) variant.template operator()<HS, 3 - M, !kDq>();
    };
    switch (hs) {
      case 16:
        run.template operator()<16>();
        break;
      case 32:
        run.template operator()<32>();
        break;
      case 64:
        run.template operator()<64>();
        break;
      default:
        run.template operator()<128>();
    }
  }
}

}  // namespace
}  // namespace tessera
