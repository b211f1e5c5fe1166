// The softmax cross-entropy kernel (kernels/classifier.cuh) run on the CPU through the SIMT
// emulation (tests/support/simt.h), in CI, without a GPU: losses and dlogits in place, rows read
// a value or four values at a time, staged in shared memory or read twice, f32 and bf16 logits,
// a vocabulary shard, against a float64 reference.
#include "tests/support/simt.h"  // first: the built-ins the kernel uses

#include <gtest/gtest.h>

#include <cfloat>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/classifier.cuh"
#include "kernels/convert.h"
#include "tests/support/numeric.h"
#include "tests/support/widened.h"

namespace tessera {
namespace {

using testing::widened;

// Losses and dlogits in float64 from the logits as stored (rows, v) for vocabulary ids [start,
// start + v): loss = log Σ exp(l) − l[target] (the target's logit 0 when another shard holds it),
// dlogits = softmax · dloss, probabilities below FLT_MIN flushed to 0 as the kernel does, less
// dloss at the target.
void reference(const std::vector<double>& l, const std::vector<int32_t>& targets, int64_t v,
               int64_t start, double dloss, std::vector<double>& losses,
               std::vector<double>& dlogits) {
  const int64_t rows = static_cast<int64_t>(targets.size());
  losses.assign(rows, 0.0);
  dlogits.assign(rows * v, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double* row = l.data() + r * v;
    double m = row[0], s = 0.0;
    for (int64_t j = 1; j < v; ++j) m = std::max(m, row[j]);
    for (int64_t j = 0; j < v; ++j) s += std::exp(row[j] - m);
    const int64_t target = targets[r] - start;
    const bool here = target >= 0 && target < v;
    losses[r] = std::log(s) + m - (here ? row[target] : 0.0);
    for (int64_t j = 0; j < v; ++j) {
      const double g = std::exp(row[j] - m) / s * dloss;
      dlogits[r * v + j] = (std::abs(g) < FLT_MIN ? 0.0 : g) - (j == target ? dloss : 0.0);
    }
  }
}

class ClassifierEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};
};

TEST_F(ClassifierEmulated, SoftmaxCrossEntropyKernelMatchesFloat64) {
  // 301 values a row (read one at a time) and 512 (four at a time); staged and read twice; f32
  // and bf16 logits; the whole vocabulary and a shard from 100 that misses some targets; the
  // forward alone too.
  const int64_t rows = 5;
  for (const auto& [v, start, logits_type] :
       {std::tuple<int64_t, int64_t, DType>{301, 0, DType::f32},
        {512, 0, DType::f32},
        {512, 0, DType::bf16},
        {301, 100, DType::bf16}})
    for (const bool staged : {true, false})
      for (const bool backward : {true, false}) {
        SCOPED_TRACE("V " + std::to_string(v) + " from " + std::to_string(start) + ", " +
                     dtype_name(logits_type) + (staged ? ", staged" : ", read twice") +
                     (backward ? "" : ", forward only"));
        Tensor x = Tensor::empty({rows, v}, DType::f32);
        testing::fill_normal(x, rng_, 3.0f);
        Tensor logits = x;
        if (logits_type != DType::f32) {
          logits = Tensor::empty({rows, v}, logits_type);
          convert(logits, x);
        }
        const std::vector<double> l = testing::to_f64(widened(logits));
        std::vector<int32_t> targets(rows);
        for (int64_t r = 0; r < rows; ++r)
          targets[r] = static_cast<int32_t>((r * 97 + 13) % (start + v));
        const float dloss = 1.0f / rows;
        std::vector<double> want_losses, want_dlogits;
        reference(l, targets, v, start, dloss, want_losses, want_dlogits);

        Tensor losses = Tensor::empty({rows}, DType::f32);
        testing::poison(losses);
        const bool vectors = v % 4 == 0;
        const size_t shared = staged ? v * dtype_size(logits_type) : 0;
        simt::launch({static_cast<unsigned>(rows), 1, 1}, cuda::kXentThreads, shared, [&] {
          if (logits_type == DType::f32)
            cuda::softmax_xent_kernel<float>(logits.data<float>(), losses.data<float>(),
                                             targets.data(), v, start, dloss, backward, vectors,
                                             staged);
          else
            cuda::softmax_xent_kernel<__nv_bfloat16>(cuda_detail::cuda_ptr(logits.data<bf16>()),
                                                     losses.data<float>(), targets.data(), v, start,
                                                     dloss, backward, vectors, staged);
        });
        EXPECT_LT(testing::rel_error(testing::to_f64(losses), want_losses), 1e-5) << "losses";
        const std::vector<double> got = testing::to_f64(widened(logits));
        if (backward)
          EXPECT_LT(testing::rel_error(got, want_dlogits), logits_type == DType::f32 ? 1e-5 : 1e-2)
              << "dlogits";
        else
          EXPECT_EQ(got, l) << "the forward alone changed the logits";
      }
}

}  // namespace
}  // namespace tessera
