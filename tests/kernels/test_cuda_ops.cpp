// Every op with a CUDA implementation equals its CPU implementation (the reference, itself checked
// against float64 in the other kernel tests) on fresh random inputs: fp32 to 1e-5 relative. The
// CUDA outputs start as NaN so that unwritten elements show; accumulated parameter gradients start
// from the same random values on both sides. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <tuple>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/classifier.h"
#include "kernels/convert.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"
#include "tests/support/cuda_test.h"
#include "tests/support/numeric.h"
#include "tests/support/widened.h"

namespace tessera {
namespace {

using testing::widened;

constexpr double kTol = 1e-5;

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override { TS_REQUIRE_CUDA_DEVICE(); }
  Tensor random(const Shape& shape, float stddev = 1.0f) {
    return testing::randn(shape, rng_, stddev);
  }
  static Tensor on_gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
  // A CUDA output of `shape`, every element NaN.
  static Tensor poisoned_gpu(const Shape& shape) {
    Tensor t = Tensor::empty(shape, DType::f32);
    testing::poison(t);
    return on_gpu(t);
  }
  static void expect_close(const Tensor& gpu, const Tensor& cpu, const char* what) {
    EXPECT_LT(testing::rel_error(gpu.to(Device::cpu()), testing::to_f64(cpu)), kTol) << what;
  }

  std::mt19937_64 rng_{testing::test_seed()};
};

TEST_F(CudaOps, GeluForwardBackward) {
  for (int64_t n : {1, 1000, 1 << 20}) {
    const Tensor x = random({n}, 2.0f), dy = random({n});
    Tensor y = Tensor::empty({n}, DType::f32), dx = Tensor::empty({n}, DType::f32);
    gelu_forward(y, x);
    gelu_backward(dx, dy, x);
    Tensor gy = poisoned_gpu({n}), gdx = poisoned_gpu({n});
    gelu_forward(gy, on_gpu(x));
    gelu_backward(gdx, on_gpu(dy), on_gpu(x));
    expect_close(gy, y, "gelu forward");
    expect_close(gdx, dx, "gelu backward");
  }
}

TEST_F(CudaOps, ResidualAndBias) {
  const Tensor a = random({7, 33}), b = random({7, 33}), bias = random({33});
  Tensor out = Tensor::empty({7, 33}, DType::f32);
  residual_forward(out, a, b);
  Tensor gout = poisoned_gpu({7, 33});
  residual_forward(gout, on_gpu(a), on_gpu(b));
  expect_close(gout, out, "residual");
  Tensor x = a.to(Device::cpu()), gx = on_gpu(a);
  bias_add(x, bias);
  bias_add(gx, on_gpu(bias));
  expect_close(gx, x, "bias_add");
}

TEST_F(CudaOps, LayerNormForwardBackward) {
  // Rows of C % 4 == 0 up to 2048 (768, 100, 2048) go 16 bytes at a time, held in registers (the
  // backward's float4 arrays sized 8 up to C = 1024, else 16); others are read as they go (1, 2,
  // 2052).
  for (const auto& [n, c] :
       {std::pair<int64_t, int64_t>{1, 1}, {3, 2}, {37, 768}, {256, 100}, {9, 2048}, {5, 2052}}) {
    SCOPED_TRACE("C " + std::to_string(c));
    const Tensor x = random({n, c}, 3.0f), w = random({c}), b = random({c}), dy = random({n, c});
    const Tensor dw0 = random({c}), db0 = random({c});
    Tensor y = Tensor::empty({n, c}, DType::f32), mean = Tensor::empty({n}, DType::f32),
           rstd = Tensor::empty({n}, DType::f32), dx = Tensor::empty({n, c}, DType::f32);
    Tensor dw = dw0.to(Device::cpu()), db = db0.to(Device::cpu());
    layernorm_forward(y, mean, rstd, x, w, b);
    layernorm_backward(dx, dw, db, dy, x, w, mean, rstd);

    Tensor gy = poisoned_gpu({n, c}), gmean = poisoned_gpu({n}), grstd = poisoned_gpu({n}),
           gdx = poisoned_gpu({n, c}), gdw = on_gpu(dw0), gdb = on_gpu(db0);
    const Tensor gx = on_gpu(x), gw = on_gpu(w);
    layernorm_forward(gy, gmean, grstd, gx, gw, on_gpu(b));
    layernorm_backward(gdx, gdw, gdb, on_gpu(dy), gx, gw, gmean, grstd);
    expect_close(gy, y, "layernorm out");
    expect_close(gmean, mean, "layernorm mean");
    expect_close(grstd, rstd, "layernorm rstd");
    if (c >= 3) {
      expect_close(gdx, dx, "layernorm dinp");
    } else {  // 1- and 2-wide rows: dinp is 0 (c = 1) or ~eps / var (c = 2), where round-off
      // times rstd (up to ~316) dwarfs it: to 1e-3 each, a wrong formula is off by ~1 to 100
      const Tensor got = gdx.to(Device::cpu());
      for (int64_t e = 0; e < got.numel(); ++e)
        EXPECT_NEAR(got.data<float>()[e], dx.data<float>()[e], 1e-3) << "layernorm dinp " << e;
    }
    expect_close(gdw, dw, "layernorm dweight");
    expect_close(gdb, db, "layernorm dbias");
  }
}

TEST_F(CudaOps, LayerNormBackwardAddsTheResidualGradient) {
  // dinp = dresidual + the layernorm's input gradient, in place too: as on the CPU, to 1e-5.
  const int64_t n = 45, c = 768;
  const Tensor x = random({n, c}, 2.0f), w = random({c}), b = random({c}), dy = random({n, c});
  const Tensor dres = random({n, c});
  Tensor y = Tensor::empty({n, c}, DType::f32), mean = Tensor::empty({n}, DType::f32),
         rstd = Tensor::empty({n}, DType::f32), dx = Tensor::empty({n, c}, DType::f32);
  Tensor dw = Tensor::zeros({c}, DType::f32), db = Tensor::zeros({c}, DType::f32);
  layernorm_forward(y, mean, rstd, x, w, b);
  layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, dres);

  const Tensor gx = on_gpu(x), gw = on_gpu(w);
  Tensor gy = poisoned_gpu({n, c}), gmean = poisoned_gpu({n}), grstd = poisoned_gpu({n});
  Tensor gdw = on_gpu(Tensor::zeros({c}, DType::f32)), gdb = on_gpu(Tensor::zeros({c}, DType::f32));
  layernorm_forward(gy, gmean, grstd, gx, gw, on_gpu(b));
  Tensor gdx = on_gpu(dres);  // in place: dinp is dresidual; with its bf16 copy
  Tensor grounded = Tensor::empty({n, c}, DType::bf16, Device::cuda(0));
  layernorm_backward(gdx, gdw, gdb, on_gpu(dy), gx, gw, gmean, grstd, gdx, &grounded);
  expect_close(gdx, dx, "layernorm dinp + dresidual");
  Tensor want = Tensor::empty({n, c}, DType::bf16);
  convert(want, gdx.to(Device::cpu()));
  EXPECT_EQ(testing::to_f64(widened(grounded)), testing::to_f64(widened(want)))
      << "the bf16 copy is dinp rounded";
  expect_close(gdw, dw, "layernorm dweight");
  expect_close(gdb, db, "layernorm dbias");
}

TEST_F(CudaOps, FusedResidualLayerNorm) {
  for (const int64_t c : {768, 770}) {  // the row in registers, and read as it goes
    SCOPED_TRACE("C " + std::to_string(c));
    const int64_t n = 45;
    const Tensor a = random({n, c}, 2.0f), b = random({n, c}), w = random({c}), bias = random({c});
    Tensor res = Tensor::empty({n, c}, DType::f32), y = Tensor::empty({n, c}, DType::f32);
    Tensor mean = Tensor::empty({n}, DType::f32), rstd = Tensor::empty({n}, DType::f32);
    residual_layernorm_forward(res, y, mean, rstd, a, b, w, bias);
    Tensor gres = poisoned_gpu({n, c}), gy = on_gpu(b);  // out aliases b, as in the block
    Tensor gmean = poisoned_gpu({n}), grstd = poisoned_gpu({n});
    residual_layernorm_forward(gres, gy, gmean, grstd, on_gpu(a), gy, on_gpu(w), on_gpu(bias));
    expect_close(gres, res, "residual");
    expect_close(gy, y, "layernorm out");
    expect_close(gmean, mean, "mean");
    expect_close(grstd, rstd, "rstd");
  }
}

TEST_F(CudaOps, EmbeddingForwardBackwardWithAVocabularyShard) {
  const int64_t b = 3, t = 17, c = 40, vocab = 50, start = 20, rows = 25, max_t = 32;
  const Tensor tokens = testing::random_tokens(b, t, vocab, rng_);
  const Tensor wte = random({rows, c}), wpe = random({max_t, c}), dy = random({b, t, c});
  const Tensor dwte0 = random({rows, c}), dwpe0 = random({max_t, c});
  Tensor y = Tensor::empty({b, t, c}, DType::f32);
  Tensor dwte = dwte0.to(Device::cpu()), dwpe = dwpe0.to(Device::cpu());
  embedding_forward(y, tokens, wte, wpe, start, vocab);
  embedding_backward(dwte, dwpe, dy, tokens, start, vocab);

  Tensor gy = poisoned_gpu({b, t, c}), gdwte = on_gpu(dwte0), gdwpe = on_gpu(dwpe0);
  const Tensor gtokens = tokens.to(Device::cuda(0));
  embedding_forward(gy, gtokens, on_gpu(wte), on_gpu(wpe), start, vocab);
  embedding_backward(gdwte, gdwpe, on_gpu(dy), gtokens, start, vocab);
  expect_close(gy, y, "embedding out");
  expect_close(gdwte, dwte, "embedding dwte");
  expect_close(gdwpe, dwpe, "embedding dwpe");

  // A token outside the vocabulary is the same clear error on the GPU.
  Tensor bad = tokens.to(Device::cpu());
  bad.data<int32_t>()[5] = static_cast<int32_t>(vocab);
  EXPECT_THROW(
      embedding_forward(gy, bad.to(Device::cuda(0)), on_gpu(wte), on_gpu(wpe), start, vocab),
      Error);
}

TEST_F(CudaOps, AdamWAndGradNorm) {
  // 101 tensors in one multi-tensor step (three launches of up to 48), sizes 0 to 5000 and one of
  // 300001 (not a multiple of any block size), every third without weight decay.
  std::uniform_int_distribution<int64_t> size(0, 5000);
  std::vector<AdamWTensors> cpu, gpu;
  for (int k = 0; k <= 100; ++k) {
    const int64_t n = k == 50 ? 300001 : size(rng_);
    const Tensor p0 = random({n}), m0 = random({n}, 0.1f), g = random({n});
    Tensor v0 = Tensor::empty({n}, DType::f32);
    testing::fill_uniform(v0, rng_, 0.0f, 0.5f);
    cpu.push_back(
        {p0.to(Device::cpu()), m0.to(Device::cpu()), v0.to(Device::cpu()), g, k % 3 != 0});
    gpu.push_back({on_gpu(p0), on_gpu(m0), on_gpu(v0), on_gpu(g), k % 3 != 0});
  }
  const AdamWStep step{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.7f};
  adamw_update(cpu, step);
  adamw_update(gpu, step);
  for (size_t k = 0; k < cpu.size(); ++k) {
    SCOPED_TRACE("tensor " + std::to_string(k));
    expect_close(gpu[k].params, cpu[k].params, "adamw params");
    expect_close(gpu[k].m, cpu[k].m, "adamw m");
    expect_close(gpu[k].v, cpu[k].v, "adamw v");
  }
  std::vector<Tensor> grads_cpu, grads_gpu;
  for (size_t k = 0; k < cpu.size(); ++k) {
    grads_cpu.push_back(cpu[k].grads);
    grads_gpu.push_back(gpu[k].grads);
  }
  const double on_cpu = grad_norm_squared(grads_cpu), on_cuda = grad_norm_squared(grads_gpu);
  EXPECT_NEAR(on_cuda, on_cpu, 1e-12 * on_cpu);  // both sum in float64
}

TEST_F(CudaOps, ConvertIsBitForBitTheCpus) {
  const Tensor x = random({4097}, 300.0f);
  for (const DType half : {DType::bf16, DType::f16}) {
    Tensor h = Tensor::empty({4097}, half), back = Tensor::empty({4097}, DType::f32);
    convert(h, x);
    convert(back, h);
    Tensor gh = Tensor::empty({4097}, half, Device::cuda(0)), gback = poisoned_gpu({4097});
    convert(gh, on_gpu(x));
    convert(gback, gh);
    EXPECT_EQ(testing::rel_error(gback.to(Device::cpu()), testing::to_f64(back)), 0.0)
        << dtype_name(half);
  }
}

TEST_F(CudaOps, MatmulForwardBackward) {
  // Odd sizes (no multiple of a tile), with and without bias and input gradient.
  for (const bool with_bias : {true, false}) {
    const int64_t n = 37, ic = 64, oc = 97;
    const Tensor x = random({n, ic}), w = random({ic, oc}, 0.1f), b = random({oc}),
                 dy = random({n, oc});
    const Tensor dw0 = random({ic, oc}), db0 = random({oc});
    const Tensor none;
    Tensor y = Tensor::empty({n, oc}, DType::f32), dx = Tensor::empty({n, ic}, DType::f32);
    Tensor dw = dw0.to(Device::cpu()), db = with_bias ? db0.to(Device::cpu()) : Tensor();
    matmul_forward(y, x, w, with_bias ? b : none);
    matmul_backward(dx, dw, db, dy, x, w);

    Tensor gy = poisoned_gpu({n, oc}), gdx = poisoned_gpu({n, ic}), gdw = on_gpu(dw0);
    Tensor gdb = with_bias ? on_gpu(db0) : Tensor();
    const Tensor gx = on_gpu(x), gw = on_gpu(w);
    matmul_forward(gy, gx, gw, with_bias ? on_gpu(b) : none);
    matmul_backward(gdx, gdw, gdb, on_gpu(dy), gx, gw);
    expect_close(gy, y, "matmul out");
    expect_close(gdx, dx, "matmul dinp");
    expect_close(gdw, dw, "matmul dweight");
    if (with_bias) expect_close(gdb, db, "matmul dbias");
  }
}

TEST_F(CudaOps, MatmulForwardAddsTheResidual) {
  // out = residual + x·w + b in one cuBLASLt call (C = the residual, beta 1): as on the CPU.
  const int64_t n = 37, ic = 64, oc = 97;
  const Tensor x = random({n, ic}), w = random({ic, oc}, 0.1f), b = random({oc}),
               res = random({n, oc});
  Tensor y = Tensor::empty({n, oc}, DType::f32);
  matmul_forward(y, x, w, b, DType::f32, res);
  Tensor gy = poisoned_gpu({n, oc});
  const Tensor gres = on_gpu(res);
  matmul_forward(gy, on_gpu(x), on_gpu(w), on_gpu(b), DType::f32, gres);
  expect_close(gy, y, "matmul out + residual");
  expect_close(gres, res, "the residual, unchanged");
}

TEST_F(CudaOps, GeluInTheGemmsMatchesTheCpu) {
  // mlp.c_fc with its GELU (cuBLASLt's GELU_AUX_BIAS epilogue) and mlp.c_proj's backward with
  // GELU's gradient (DGELU) against the CPU's separate ops: fp32 to 1e-5 (so the epilogue's GELU
  // must be GPT-2's tanh form; the erf form is 1e-4 away), bf16 and fp16 against the CPU's
  // emulation to 1e-2. 128 hidden columns take the epilogues; 100 (not a multiple of 8) the GEMM,
  // then the GELU kernels. Also a plain 16-bit output (qkv's) with its bias rounded.
  const int64_t n = 37, c = 64;
  for (const int64_t h : {128, 100})
    for (const DType type : {DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + ", " + std::to_string(h) + " columns");
      const double tol = type == DType::f32 ? kTol : 1e-2;
      const Tensor x = random({n, c}), w1 = random({c, h}, 0.2f), b1 = random({h}),
                   w2 = random({h, c}, 0.1f), dy = random({n, c}), dw0 = random({h, c}, 0.01f),
                   db0 = random({c});
      Tensor pre = Tensor::empty({n, h}, type), out = Tensor::empty({n, h}, type),
             dpre = Tensor::empty({n, h}, type), plain = Tensor::empty({n, h}, type);
      Tensor dw = dw0.to(Device::cpu()), db = db0.to(Device::cpu());
      matmul_gelu_forward(out, pre, x, w1, b1, type);
      matmul_backward(dpre, dw, db, dy, out, w2, type, pre);
      matmul_forward(plain, x, w1, b1, type);

      auto gpu = [](const Shape& s, DType t) {  // NaN in any type
        Tensor p = Tensor::empty(s, DType::f32);
        testing::poison(p);
        if (t == DType::f32) return p.to(Device::cuda(0));
        Tensor r = Tensor::empty(s, t);
        convert(r, p);
        return r.to(Device::cuda(0));
      };
      Tensor gpre = gpu({n, h}, type), gout = gpu({n, h}, type), gdpre = gpu({n, h}, type),
             gplain = gpu({n, h}, type), gdw = on_gpu(dw0), gdb = on_gpu(db0);
      const Tensor gx = on_gpu(x), gw1 = on_gpu(w1), gb1 = on_gpu(b1), gw2 = on_gpu(w2);
      matmul_gelu_forward(gout, gpre, gx, gw1, gb1, type);
      matmul_backward(gdpre, gdw, gdb, on_gpu(dy), gout, gw2, type, gpre);
      matmul_forward(gplain, gx, gw1, gb1, type);
      for (const auto& [got, want, what] :
           {std::tuple<const Tensor&, const Tensor&, const char*>{gpre, pre, "pre-activation"},
            {gout, out, "gelu output"},
            {gdpre, dpre, "pre-activation gradient"},
            {gdw, dw, "c_proj dweight"},
            {gdb, db, "c_proj dbias"},
            {gplain, plain, "16-bit linear output"}})
        EXPECT_LT(testing::rel_error(widened(got), testing::to_f64(widened(want))), tol) << what;
    }
}

TEST_F(CudaOps, Bf16GemmsAgreeWithFp32To1e2) {
  // train.precision: bf16 rounds the GEMM operands (8 bits of mantissa) and accumulates in fp32.
  const int64_t n = 64, ic = 256, oc = 192, v = 500;
  const Tensor x = random({n, ic}), w = random({ic, oc}, 0.1f), b = random({oc}),
               dy = random({n, oc});
  const Tensor dw0 = random({ic, oc}, 0.01f);
  Tensor y = Tensor::empty({n, oc}, DType::f32), dx = Tensor::empty({n, ic}, DType::f32);
  Tensor dw = dw0.to(Device::cpu()), db;
  matmul_forward(y, x, w, b);
  matmul_backward(dx, dw, db, dy, x, w);
  Tensor gy = poisoned_gpu({n, oc}), gdx = poisoned_gpu({n, ic}), gdw = on_gpu(dw0), gdb;
  matmul_forward(gy, on_gpu(x), on_gpu(w), on_gpu(b), DType::bf16);
  matmul_backward(gdx, gdw, gdb, on_gpu(dy), on_gpu(x), on_gpu(w), DType::bf16);
  for (const auto& [gpu, cpu, what] :
       {std::tuple{gy, y, "matmul out"}, {gdx, dx, "matmul dinp"}, {gdw, dw, "matmul dweight"}}) {
    const double err = testing::rel_error(gpu.to(Device::cpu()), testing::to_f64(cpu));
    EXPECT_LT(err, 1e-2) << what;
    EXPECT_GT(err, 1e-6) << what << ": no rounding at all (did the bf16 path run?)";
  }
  // The LM head with bf16 operands; the softmax stays fp32.
  const Tensor h = random({n, ic}), wte = random({v, ic}, 0.2f), dwte0 = random({v, ic}, 0.01f);
  const Tensor targets = testing::random_tokens(1, n, v, rng_).view({n});
  Tensor losses = Tensor::empty({n}, DType::f32), dh = Tensor::empty({n, ic}, DType::f32);
  Tensor dwte = dwte0.to(Device::cpu());
  classifier_forward_backward(losses, dh, dwte, h, wte, targets, 1.0f / n);
  Tensor glosses = poisoned_gpu({n}), gdh = poisoned_gpu({n, ic}), gdwte = on_gpu(dwte0);
  classifier_forward_backward(glosses, gdh, gdwte, on_gpu(h), on_gpu(wte),
                              targets.to(Device::cuda(0)), 1.0f / n, {}, DType::bf16);
  EXPECT_LT(testing::rel_error(glosses.to(Device::cpu()), testing::to_f64(losses)), 1e-2);
  EXPECT_LT(testing::rel_error(gdh.to(Device::cpu()), testing::to_f64(dh)), 1e-2);
  EXPECT_LT(testing::rel_error(gdwte.to(Device::cpu()), testing::to_f64(dwte)), 1e-2);
}

TEST_F(CudaOps, GemmsOnViewsOfAnyAlignment) {
  // Views that start 4 bytes into an allocation (cuBLASLt assumes 256-byte alignment unless
  // told otherwise), in fp32 and bf16.
  const int64_t n = 33, ic = 40, oc = 24;
  const Tensor x = random({n, ic}), w = random({ic, oc}, 0.2f);
  Tensor y = Tensor::empty({n, oc}, DType::f32);
  matmul_forward(y, x, w, Tensor());
  Tensor gx_store = on_gpu(random({n * ic + 1})), gw_store = on_gpu(random({ic * oc + 1}));
  Tensor gx = gx_store.carve(1, {n, ic}), gw = gw_store.carve(1, {ic, oc});
  gx.copy_from(x);
  gw.copy_from(w);
  for (const DType compute : {DType::f32, DType::bf16}) {
    Tensor gy_store = poisoned_gpu({n * oc + 1});
    Tensor gy = gy_store.carve(1, {n, oc});
    matmul_forward(gy, gx, gw, Tensor(), compute);
    EXPECT_LT(testing::rel_error(gy.to(Device::cpu()), testing::to_f64(y)),
              compute == DType::f32 ? kTol : 1e-2)
        << dtype_name(compute);
  }
}

TEST_F(CudaOps, ClassifierLossAndGradients) {
  // Vocabularies of 301 and 70001 (rows read one value at a time) and of 512 and 70000 (16 bytes
  // at a time); the backward stages rows of 301 and 512 in shared memory, not the 280 KB ones.
  for (const int64_t v : {301, 512, 70001, 70000}) {
    SCOPED_TRACE("V " + std::to_string(v));
    const int64_t n = 70, c = 48;
    const Tensor x = random({n, c}), wte = random({v, c}, 0.5f);
    const Tensor targets = testing::random_tokens(1, n, v, rng_).view({n});
    const Tensor dwte0 = random({v, c});
    const float dloss = 1.0f / n;
    Tensor losses = Tensor::empty({n}, DType::f32), dx = Tensor::empty({n, c}, DType::f32);
    Tensor dwte = dwte0.to(Device::cpu());
    classifier_forward_backward(losses, dx, dwte, x, wte, targets, dloss);
    Tensor only = Tensor::empty({n}, DType::f32), logits = Tensor::empty({n, v}, DType::f32);
    classifier_forward(only, x, wte, targets);
    logits_forward(logits, x, wte);

    const Tensor gx = on_gpu(x), gwte = on_gpu(wte), gtargets = targets.to(Device::cuda(0));
    Tensor glosses = poisoned_gpu({n}), gdx = poisoned_gpu({n, c}), gdwte = on_gpu(dwte0);
    classifier_forward_backward(glosses, gdx, gdwte, gx, gwte, gtargets, dloss);
    Tensor gonly = poisoned_gpu({n}), glogits = poisoned_gpu({n, v});
    classifier_forward(gonly, gx, gwte, gtargets);
    logits_forward(glogits, gx, gwte);
    expect_close(glosses, losses, "classifier losses");
    expect_close(gdx, dx, "classifier dx");
    expect_close(gdwte, dwte, "classifier dwte");
    expect_close(gonly, only, "classifier forward losses");
    expect_close(glogits, logits, "logits");
  }
}

TEST_F(CudaOps, CausalAttentionForwardBackward) {
  // Head sizes 16, 64 and 128 (the largest the CUDA kernel takes); lengths off any tile size.
  for (const auto& [b, t, c, nh] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 37, 64, 4},
                                    {1, 130, 256, 4},
                                    {2, 65, 256, 2}}) {
    const Tensor qkv = random({b, t, 3 * c}), dy = random({b, t, c});
    Tensor y = Tensor::empty({b, t, c}, DType::f32), lse = Tensor::empty({b, nh, t}, DType::f32);
    Tensor dqkv = Tensor::empty({b, t, 3 * c}, DType::f32);
    attention_forward(y, lse, qkv, nh);
    attention_backward(dqkv, dy, qkv, y, lse, nh);

    const Tensor gqkv = on_gpu(qkv);
    Tensor gy = poisoned_gpu({b, t, c}), glse = poisoned_gpu({b, nh, t}),
           gdqkv = poisoned_gpu({b, t, 3 * c});
    attention_forward(gy, glse, gqkv, nh);
    attention_backward(gdqkv, on_gpu(dy), gqkv, gy, glse, nh);
    expect_close(gy, y, "attention out");
    expect_close(glse, lse, "attention lse");
    expect_close(gdqkv, dqkv, "attention dqkv");
  }
}

TEST_F(CudaOps, SixteenBitAttentionMatchesTheCpusEmulation) {
  // train.precision: bf16 / fp16 runs attention's products on the tensor cores (q, k, v, dout, P
  // and dS rounded to 16 bits, fp32 softmax and accumulation) and writes 16-bit out and dqkv:
  // against the CPU rounding the same values, to 1e-2 (sums in other orders may round a value the
  // other way); not equal to fp32; bit for bit the same when repeated. Head sizes 16, 32, 64, 128,
  // one tile and several.
  for (const DType half : {DType::bf16, DType::f16})
    for (const auto& [b, t, c, nh] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 37, 64, 4},
                                      {1, 130, 256, 4},
                                      {2, 65, 256, 2},
                                      {1, 200, 192, 3},
                                      {1, 200, 64, 4},
                                      {2, 70, 96, 3},
                                      {1, 130, 512, 4},
                                      {1, 1, 64, 1},
                                      {2, 128, 128, 2}}) {
      SCOPED_TRACE(std::string(dtype_name(half)) + ", T " + std::to_string(t) + ", hs " +
                   std::to_string(c / nh));
      const Tensor qkv = random({b, t, 3 * c}), dy = random({b, t, c});
      Tensor y = Tensor::empty({b, t, c}, half), lse = Tensor::empty({b, nh, t}, DType::f32);
      Tensor dqkv = Tensor::empty({b, t, 3 * c}, half);
      attention_forward(y, lse, qkv, nh, half);
      attention_backward(dqkv, dy, qkv, y, lse, nh, half);
      Tensor y32 = Tensor::empty({b, t, c}, DType::f32),
             lse32 = Tensor::empty({b, nh, t}, DType::f32);
      attention_forward(y32, lse32, qkv, nh);

      const Tensor gqkv = on_gpu(qkv), gdy = on_gpu(dy);
      auto run_gpu = [&](Tensor& gy, Tensor& glse, Tensor& gdqkv) {
        gy = Tensor::empty({b, t, c}, half, Device::cuda(0));
        glse = poisoned_gpu({b, nh, t});
        gdqkv = Tensor::empty({b, t, 3 * c}, half, Device::cuda(0));
        attention_forward(gy, glse, gqkv, nh, half);
        attention_backward(gdqkv, gdy, gqkv, gy, glse, nh, half);
      };
      Tensor gy, glse, gdqkv;
      run_gpu(gy, glse, gdqkv);
      EXPECT_LT(testing::rel_error(widened(gy), testing::to_f64(widened(y))), 1e-2) << "out";
      EXPECT_LT(testing::rel_error(glse.to(Device::cpu()), testing::to_f64(lse)), 1e-2) << "lse";
      EXPECT_LT(testing::rel_error(widened(gdqkv), testing::to_f64(widened(dqkv))), 1e-2) << "dqkv";
      EXPECT_GT(testing::rel_error(widened(gy), testing::to_f64(y32)), 1e-6)
          << "no rounding at all (did the 16-bit path run?)";
      Tensor gy2, glse2, gdqkv2;  // deterministic: the same inputs give the same bits
      run_gpu(gy2, glse2, gdqkv2);
      EXPECT_EQ(testing::to_f64(widened(gy2)), testing::to_f64(widened(gy)));
      EXPECT_EQ(testing::to_f64(widened(gdqkv2)), testing::to_f64(widened(gdqkv)));
    }
}

TEST_F(CudaOps, SixteenBitAttentionTakesSixteenBitInputs) {
  // q, k, v and dout stored in the products' type (as GPT-2 stores them in bf16 / fp16): the same
  // bits as from their f32 values (which the launcher rounds first), and the CPU's emulation from
  // the same 16-bit inputs to 1e-2. Several tiles each way (two copy stages), head sizes 16, 64
  // and 128.
  for (const DType half : {DType::bf16, DType::f16})
    for (const auto& [b, t, c, nh] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 300, 64, 4},
                                      {2, 130, 128, 2},
                                      {1, 200, 256, 2}}) {
      SCOPED_TRACE(std::string(dtype_name(half)) + ", T " + std::to_string(t) + ", hs " +
                   std::to_string(c / nh));
      Tensor qkv = Tensor::empty({b, t, 3 * c}, half), dy = Tensor::empty({b, t, c}, half);
      convert(qkv, random({b, t, 3 * c}));
      convert(dy, random({b, t, c}));
      Tensor y = Tensor::empty({b, t, c}, half), lse = Tensor::empty({b, nh, t}, DType::f32);
      Tensor dqkv = Tensor::empty({b, t, 3 * c}, half);
      attention_forward(y, lse, qkv, nh, half);
      attention_backward(dqkv, dy, qkv, y, lse, nh, half);
      auto run_gpu = [&](const Tensor& gqkv, const Tensor& gdy, Tensor& gy, Tensor& gdqkv) {
        gy = Tensor::empty({b, t, c}, half, Device::cuda(0));
        Tensor glse = poisoned_gpu({b, nh, t});
        gdqkv = Tensor::empty({b, t, 3 * c}, half, Device::cuda(0));
        attention_forward(gy, glse, gqkv, nh, half);
        attention_backward(gdqkv, gdy, gqkv, gy, glse, nh, half);
      };
      Tensor gy, gdqkv, gy32, gdqkv32;
      run_gpu(on_gpu(qkv), on_gpu(dy), gy, gdqkv);
      run_gpu(on_gpu(widened(qkv)), on_gpu(widened(dy)), gy32, gdqkv32);
      EXPECT_LT(testing::rel_error(widened(gy), testing::to_f64(widened(y))), 1e-2) << "out";
      EXPECT_LT(testing::rel_error(widened(gdqkv), testing::to_f64(widened(dqkv))), 1e-2) << "dqkv";
      EXPECT_EQ(testing::to_f64(widened(gy32)), testing::to_f64(widened(gy)));
      EXPECT_EQ(testing::to_f64(widened(gdqkv32)), testing::to_f64(widened(gdqkv)));
    }
}

TEST_F(CudaOps, SixteenBitAttentionBackwardRepeatsItselfAtScale) {
  // GPT-2's attention shape with 4 sequences: 768 dk/dv blocks, several waves of them, whose key
  // tiles add their dq shares in turn. Against the CPU's emulation to 1e-2, and bit for bit the
  // same when repeated (the turns fix the order of the additions).
  const int64_t b = 4, t = 1024, c = 768, nh = 12;
  Tensor qkv = Tensor::empty({b, t, 3 * c}, DType::bf16),
         dy = Tensor::empty({b, t, c}, DType::bf16);
  convert(qkv, random({b, t, 3 * c}));
  convert(dy, random({b, t, c}));
  Tensor y = Tensor::empty({b, t, c}, DType::bf16), lse = Tensor::empty({b, nh, t}, DType::f32);
  Tensor dqkv = Tensor::empty({b, t, 3 * c}, DType::bf16);
  attention_forward(y, lse, qkv, nh, DType::bf16);
  attention_backward(dqkv, dy, qkv, y, lse, nh, DType::bf16);
  const Tensor gqkv = on_gpu(qkv), gdy = on_gpu(dy);
  Tensor gy = Tensor::empty({b, t, c}, DType::bf16, Device::cuda(0)),
         glse = poisoned_gpu({b, nh, t});
  attention_forward(gy, glse, gqkv, nh, DType::bf16);
  Tensor first, again;
  for (Tensor* gdqkv : {&first, &again}) {
    *gdqkv = Tensor::empty({b, t, 3 * c}, DType::bf16, Device::cuda(0));
    attention_backward(*gdqkv, gdy, gqkv, gy, glse, nh, DType::bf16);
  }
  EXPECT_LT(testing::rel_error(widened(first), testing::to_f64(widened(dqkv))), 1e-2);
  EXPECT_EQ(testing::to_f64(widened(again)), testing::to_f64(widened(first)));
}

TEST_F(CudaOps, SixteenBitAttentionRefusesOtherHeadSizes) {
  // The tensor-core kernels are compiled for head sizes 16, 32, 64 and 128: 48 is a clear error.
  const Tensor qkv = on_gpu(random({1, 8, 3 * 96}));
  Tensor y = Tensor::empty({1, 8, 96}, DType::bf16, Device::cuda(0));
  Tensor lse = Tensor::empty({1, 2, 8}, DType::f32, Device::cuda(0));
  try {
    attention_forward(y, lse, qkv, 2, DType::bf16);
    FAIL() << "head size 48 ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head sizes 16, 32, 64 and 128"), std::string::npos)
        << e.what();
  }
}

TEST_F(CudaOps, SixteenBitAttentionWritesFp32OutputsToo) {
  // 16-bit products with fp32 out and dqkv (sequence parallel keeps activations in fp32): against
  // the CPU's emulation of the same, to 1e-2. Head sizes 64 (two m-tiles a warp in the forward)
  // and 128 (one), one block of rows and several.
  for (const auto& [b, t, c, nh] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 77, 128, 2},
                                    {1, 300, 128, 2},
                                    {1, 150, 256, 2}}) {
    SCOPED_TRACE("T " + std::to_string(t) + ", hs " + std::to_string(c / nh));
    const Tensor qkv = random({b, t, 3 * c}), dy = random({b, t, c});
    Tensor y = Tensor::empty({b, t, c}, DType::f32), lse = Tensor::empty({b, nh, t}, DType::f32);
    Tensor dqkv = Tensor::empty({b, t, 3 * c}, DType::f32);
    attention_forward(y, lse, qkv, nh, DType::bf16);
    attention_backward(dqkv, dy, qkv, y, lse, nh, DType::bf16);
    Tensor gy = poisoned_gpu({b, t, c}), glse = poisoned_gpu({b, nh, t});
    Tensor gdqkv = poisoned_gpu({b, t, 3 * c});
    attention_forward(gy, glse, on_gpu(qkv), nh, DType::bf16);
    attention_backward(gdqkv, on_gpu(dy), on_gpu(qkv), gy, glse, nh, DType::bf16);
    EXPECT_LT(testing::rel_error(gy.to(Device::cpu()), testing::to_f64(y)), 1e-2) << "out";
    EXPECT_LT(testing::rel_error(gdqkv.to(Device::cpu()), testing::to_f64(dqkv)), 1e-2) << "dqkv";
  }
}

TEST_F(CudaOps, SixteenBitGemmsAndOutputsMatchTheCpusEmulation) {
  // The GEMMs of train.precision bf16 / fp16 against the CPU's product of the same rounded
  // operands (both accumulate exact products in fp32, in different orders): 1e-4, from f32 inp
  // and dout and from ones stored in the 16-bit type (whose bias gradient the weight gradient's
  // GEMM sums, added to a gradient already there). The 16-bit outputs of layernorm and GELU: the
  // same rounding of fp32 values that agree to 1e-5, so 1e-2 at worst.
  const int64_t n = 300, ic = 96, oc = 136;
  const Tensor x = random({n, ic}), w = random({ic, oc}, 0.1f), bias = random({oc}),
               dy = random({n, oc}), db0 = random({oc});
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    Tensor x16 = Tensor::empty({n, ic}, half), dy16 = Tensor::empty({n, oc}, half);
    convert(x16, x);
    convert(dy16, dy);
    for (const bool stored : {false, true}) {  // inp and dout f32, or stored in the 16-bit type
      SCOPED_TRACE(stored ? "16-bit inp and dout" : "f32 inp and dout");
      const Tensor* inp = stored ? &x16 : &x;
      const Tensor& dout = stored ? dy16 : dy;
      Tensor y = Tensor::empty({n, oc}, DType::f32), dx = Tensor::empty({n, ic}, DType::f32);
      Tensor dw = Tensor::zeros({ic, oc}, DType::f32), db = db0.to(Device::cpu());
      matmul_forward(y, *inp, w, bias, half);
      matmul_backward(dx, dw, db, dout, *inp, w, half);
      Tensor gy = poisoned_gpu({n, oc}), gdx = poisoned_gpu({n, ic});
      Tensor gdw = on_gpu(Tensor::zeros({ic, oc}, DType::f32)), gdb = on_gpu(db0);
      const Tensor ginp = inp->to(Device::cuda(0));
      matmul_forward(gy, ginp, on_gpu(w), on_gpu(bias), half);
      matmul_backward(gdx, gdw, gdb, dout.to(Device::cuda(0)), ginp, on_gpu(w), half);
      for (const auto& [got, want, what] :
           {std::tuple<const Tensor&, const Tensor&, const char*>{gy, y, "out"},
            {gdx, dx, "dinp"},
            {gdw, dw, "dweight"},
            {gdb, db, "dbias"}})
        EXPECT_LT(testing::rel_error(got.to(Device::cpu()), testing::to_f64(want)), 1e-4) << what;
    }
    const Tensor lw = random({ic}), lb = random({ic});
    Tensor ln = Tensor::empty({n, ic}, half), mean = Tensor::empty({n}, DType::f32),
           rstd = Tensor::empty({n}, DType::f32), g = Tensor::empty({n, ic}, half);
    Tensor dg = Tensor::empty({n, ic}, half);
    const Tensor gdy_ic = random({n, ic});
    layernorm_forward(ln, mean, rstd, x, lw, lb);
    gelu_forward(g, x);
    gelu_backward(dg, gdy_ic, x);
    Tensor gln = Tensor::empty({n, ic}, half, Device::cuda(0)), gmean = poisoned_gpu({n}),
           grstd = poisoned_gpu({n}), gg = Tensor::empty({n, ic}, half, Device::cuda(0));
    Tensor gdg = Tensor::empty({n, ic}, half, Device::cuda(0));
    layernorm_forward(gln, gmean, grstd, on_gpu(x), on_gpu(lw), on_gpu(lb));
    gelu_forward(gg, on_gpu(x));
    gelu_backward(gdg, on_gpu(gdy_ic), on_gpu(x));
    for (const auto& [got, want, what] :
         {std::tuple<const Tensor&, const Tensor&, const char*>{gln, ln, "layernorm"},
          {gg, g, "gelu"},
          {gdg, dg, "gelu backward"}}) {
      Tensor a = Tensor::empty({n, ic}, DType::f32), b = Tensor::empty({n, ic}, DType::f32);
      convert(a, got.to(Device::cpu()));
      convert(b, want);
      EXPECT_LT(testing::rel_error(a, testing::to_f64(b)), 1e-2) << what;
    }
  }
}

TEST_F(CudaOps, MixedDevicesAreOneClearError) {
  const Tensor x = random({8});
  Tensor gy = poisoned_gpu({8});
  try {
    gelu_forward(gy, x);
    FAIL() << "ran with out on cuda and inp on cpu";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("move them to one device"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera
