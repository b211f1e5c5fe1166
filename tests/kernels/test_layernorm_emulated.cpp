// The layernorm kernels (kernels/layernorm.cuh) run on the CPU through the SIMT emulation
// (tests/support/simt.h), in CI, without a GPU, against the CPU ops (kernels/layernorm.h): the
// forward that holds the row in registers (C % 4 == 0, C ≤ 2048) and the one that reads it as it
// goes, with and without the fused residual add, f32 and bf16 outputs; both one-pass backwards
// (16-byte accesses, C % 4 == 0, C ≤ 2048, and 4-byte ones) with their chunk sums.
#include "tests/support/simt.h"  // first: the built-ins the kernels use

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernels/convert.h"
#include "kernels/layernorm.cuh"
#include "tests/support/numeric.h"
#include "tests/support/widened.h"

namespace tessera {
namespace {

using testing::widened;

class LayerNormEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};

  Tensor random(const Shape& shape, float stddev = 1.0f) {
    return testing::randn(shape, rng_, stddev);
  }
};

// out, mean, rstd (and res with add) of one kernel (Y: out's CUDA type) against the CPU's.
template <class Y>
void check(bool in_registers, const Tensor& x, const Tensor& add, const Tensor& w, const Tensor& b,
           DType out_type) {
  const int64_t n = x.size(0), c = x.size(1);
  Tensor want = Tensor::empty({n, c}, out_type), mean = Tensor::empty({n}, DType::f32),
         rstd = Tensor::empty({n}, DType::f32), res = Tensor::empty({n, c}, DType::f32);
  if (add.defined())
    residual_layernorm_forward(res, want, mean, rstd, x, add, w, b);
  else
    layernorm_forward(want, mean, rstd, x, w, b);

  Tensor got = Tensor::empty({n, c}, out_type), got_mean = Tensor::empty({n}, DType::f32),
         got_rstd = Tensor::empty({n}, DType::f32), got_res = Tensor::empty({n, c}, DType::f32);
  for (Tensor* t : {&got_mean, &got_rstd, &got_res}) testing::poison(*t);
  Y* out = reinterpret_cast<Y*>(got.raw());
  const float* a = add.defined() ? add.data<float>() : nullptr;
  simt::launch({static_cast<unsigned>((n + cuda::kRowsPerBlock - 1) / cuda::kRowsPerBlock), 1, 1},
               cuda_detail::kThreads, 0, [&] {
                 auto* kernel = in_registers ? cuda::layernorm_forward_row_kernel<Y>
                                             : cuda::layernorm_forward_kernel<Y>;
                 kernel(out, got_mean.data<float>(), got_rstd.data<float>(), got_res.data<float>(),
                        x.data<float>(), a, w.data<float>(), b.data<float>(), n,
                        static_cast<int>(c));
               });
  const double tol = out_type == DType::f32 ? 1e-5 : 1e-2;
  EXPECT_LT(testing::rel_error(widened(got), testing::to_f64(widened(want))), tol) << "out";
  EXPECT_LT(testing::rel_error(got_mean, testing::to_f64(mean)), 1e-5) << "mean";
  EXPECT_LT(testing::rel_error(got_rstd, testing::to_f64(rstd)), 1e-5) << "rstd";
  if (add.defined()) {
    EXPECT_EQ(testing::to_f64(got_res), testing::to_f64(res)) << "residual";
  }
}

TEST_F(LayerNormEmulated, ForwardKernelsMatchTheCpu) {
  // Rows of 768 (6 vectors a lane), 100 (part of the lanes) and 2048 (every vector) in
  // registers; 770 and 2 read as they go; with the residual add and without; f32 and bf16 out.
  for (const auto& [n, c, in_registers] : {std::tuple<int64_t, int64_t, bool>{37, 768, true},
                                           {20, 100, true},
                                           {9, 2048, true},
                                           {11, 770, false},
                                           {5, 2, false}})
    for (const bool with_add : {false, true})
      for (const DType out_type : {DType::f32, DType::bf16}) {
        SCOPED_TRACE("C " + std::to_string(c) + (with_add ? ", residual add, " : ", ") +
                     dtype_name(out_type) + " out");
        const Tensor x = random({n, c}, 3.0f), w = random({c}), b = random({c});
        const Tensor add = with_add ? random({n, c}) : Tensor();
        if (out_type == DType::f32)
          check<float>(in_registers, x, add, w, b, out_type);
        else
          check<__nv_bfloat16>(in_registers, x, add, w, b, out_type);
      }
}

// The one-pass backward kernel (vecs 0: layernorm_backward_kernel, else the 16-byte one with
// that many float4s a lane) then add_partials: dinp (the residual gradient added), its bf16 copy
// and the chunks' parameter sums added into dweight and dbias (which start from dw0, db0).
struct BackwardResult {
  Tensor dx, rounded, dw, db;
};
BackwardResult run_backward(int vecs, const Tensor& dy, const Tensor& x, const Tensor& w,
                            const Tensor& mean, const Tensor& rstd, const Tensor& dres,
                            const Tensor& dw0, const Tensor& db0) {
  const int64_t n = x.size(0), c = x.size(1);
  BackwardResult got{Tensor::empty({n, c}, DType::f32), Tensor::empty({n, c}, DType::bf16),
                     dw0.to(Device::cpu()), db0.to(Device::cpu())};
  constexpr int64_t kChunks = cuda::kLayerNormChunks;
  Tensor partials = Tensor::empty({2 * kChunks * c}, DType::f32);
  testing::poison(got.dx);
  testing::poison(partials);
  __nv_bfloat16* rounded = cuda_detail::cuda_ptr(got.rounded.data<bf16>());
  using Kernel = void (*)(float*, __nv_bfloat16*, float*, const float*, const float*, const float*,
                          const float*, const float*, const float*, int64_t, int);
  const Kernel kernel = vecs == 0   ? cuda::layernorm_backward_kernel<__nv_bfloat16>
                        : vecs == 8 ? cuda::layernorm_backward_row_kernel<8, __nv_bfloat16>
                                    : cuda::layernorm_backward_row_kernel<16, __nv_bfloat16>;
  simt::launch({static_cast<unsigned>(kChunks), 1, 1}, cuda_detail::kThreads,
               cuda::kRowsPerBlock * 2 * c * sizeof(float), [&] {
                 kernel(got.dx.data<float>(), rounded, partials.data<float>(), dy.data<float>(),
                        x.data<float>(), w.data<float>(), mean.data<float>(), rstd.data<float>(),
                        dres.data<float>(), n, static_cast<int>(c));
               });
  const unsigned blocks = cuda_detail::partial_sum_blocks(c);
  for (const auto& [sums, from] : {std::pair<Tensor*, int64_t>{&got.dw, 0}, {&got.db, kChunks * c}})
    simt::launch({blocks, 1, 1}, cuda_detail::kThreads, 0, [&] {
      cuda_detail::add_partials_kernel(sums->data<float>(), partials.data<float>() + from, c,
                                       static_cast<int>(kChunks));
    });
  return got;
}

TEST_F(LayerNormEmulated, BackwardKernelsMatchTheCpu) {
  // Both backward kernels (dinp with the residual gradient added, its bf16 copy; dweight and
  // dbias summed per row chunk in shared memory, then the chunks by add_partials) against the
  // CPU's: rows of 768 (6 float4s a lane of 8), 100 (part of the lanes), 1280 and 2048 (10 and 16
  // of 16), 770 (the scalar kernel only); fewer rows than chunks, and more than one row a chunk.
  // The two kernels' parameter sums are the same products added in the same order: equal.
  for (const auto& [n, c, vecs] : {std::tuple<int64_t, int64_t, int>{37, 768, 8},
                                   {2100, 100, 8},
                                   {9, 1280, 16},
                                   {5, 2048, 16},
                                   {23, 770, 0}}) {
    SCOPED_TRACE("N " + std::to_string(n) + ", C " + std::to_string(c) + ", " +
                 std::to_string(vecs) + " float4s a lane");
    const Tensor x = random({n, c}, 3.0f), w = random({c}), b = random({c}), dy = random({n, c});
    const Tensor dres = random({n, c}), dw0 = random({c}), db0 = random({c});
    Tensor y = Tensor::empty({n, c}, DType::f32), mean = Tensor::empty({n}, DType::f32),
           rstd = Tensor::empty({n}, DType::f32);
    layernorm_forward(y, mean, rstd, x, w, b);
    Tensor dx = Tensor::empty({n, c}, DType::f32), dw = dw0.to(Device::cpu()),
           db = db0.to(Device::cpu());
    layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, dres);

    std::vector<BackwardResult> runs;  // the scalar kernel's, then the 16-byte one's
    for (const int kernel_vecs : vecs == 0 ? std::vector<int>{0} : std::vector<int>{0, vecs}) {
      SCOPED_TRACE(kernel_vecs == 0 ? "scalar kernel" : "16-byte kernel");
      const BackwardResult& got =
          runs.emplace_back(run_backward(kernel_vecs, dy, x, w, mean, rstd, dres, dw0, db0));
      EXPECT_LT(testing::rel_error(got.dx, testing::to_f64(dx)), 1e-5) << "dinp";
      Tensor want_rounded = Tensor::empty({n, c}, DType::bf16);
      convert(want_rounded, got.dx);
      EXPECT_EQ(testing::to_f64(widened(got.rounded)), testing::to_f64(widened(want_rounded)))
          << "bf16 copy: dinp rounded";
      EXPECT_LT(testing::rel_error(got.dw, testing::to_f64(dw)), 1e-5) << "dweight";
      EXPECT_LT(testing::rel_error(got.db, testing::to_f64(db)), 1e-5) << "dbias";
    }
    if (runs.size() == 2) {
      EXPECT_EQ(testing::to_f64(runs[1].dw), testing::to_f64(runs[0].dw)) << "dweight, kernels";
      EXPECT_EQ(testing::to_f64(runs[1].db), testing::to_f64(runs[0].db)) << "dbias, kernels";
    }
  }
}

}  // namespace
}  // namespace tessera
