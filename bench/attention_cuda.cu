// The 16-bit causal attention alone on a GPU, each variant of kernels/attention_tc_launch.cuh
// timed against the others at one shape (default GPT-2 124M's: B 16, 12 heads of 64, T 1024,
// bf16): the forward at 16 and 32 query rows a warp, the backward (D, dq, dk/dv) with dq in its
// own kernel and in the dk/dv kernel. Each variant's outputs are compared with the first's (the
// forwards should agree bit for bit; the backwards' dq sums in another order). One JSON line a
// measurement: milliseconds a call (mean of --reps after 3 warm-up calls, CUDA events) and TFLOP/s
// by FlashAttention's count (forward 4·HS per causal (query, key) pair, backward 2.5 times that),
// the count bench/pytorch_attention.py uses for PyTorch's SDPA at the same shape.
//   bench_attention_cuda [--batch 16] [--heads 12] [--seq 1024] [--head-size 64|128] [--reps 20]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/attention_tc_launch.cuh"

namespace tessera {
namespace {

using Bf = __nv_bfloat16;

struct BenchShape {
  int64_t b = 16, nh = 12, t = 1024;
  int hs = 64;
  int reps = 20;
  int64_t c() const { return nh * hs; }
};

// A device buffer of n elements of E, freed at the end of its scope.
template <class E>
struct DeviceBuffer {
  E* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { TS_CUDA_CHECK(cudaMalloc(&p, n * sizeof(E))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<E> host() const {
    std::vector<E> h(n);
    TS_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(E), cudaMemcpyDeviceToHost));
    return h;
  }
};

// n bf16 values drawn from N(0, 1), on the device.
void fill_normal(DeviceBuffer<Bf>& x, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<bf16> h(x.n);
  for (bf16& v : h) v = to_bf16(normal(rng));
  TS_CUDA_CHECK(cudaMemcpy(x.p, h.data(), x.n * sizeof(Bf), cudaMemcpyHostToDevice));
}

// Mean milliseconds of f() over `reps` calls after 3 unmeasured ones.
double time_ms(const std::function<void()>& f, int reps) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t start, stop;
  TS_CUDA_CHECK(cudaEventCreate(&start));
  TS_CUDA_CHECK(cudaEventCreate(&stop));
  TS_CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < reps; ++i) f();
  TS_CUDA_CHECK(cudaEventRecord(stop));
  TS_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  TS_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / reps;
}

// Whether a and b hold the same bits.
template <class E>
bool same_bits(const std::vector<E>& a, const std::vector<E>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(E)) == 0;
}

// max |a − b| over max |b|; infinite where only one of them is NaN.
double max_relative_difference(const std::vector<Bf>& a, const std::vector<Bf>& b) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    if (std::isnan(x) != std::isnan(y)) return INFINITY;
    if (!std::isnan(x)) diff = std::max(diff, std::abs(x - y));
    scale = std::max(scale, std::abs(y));
  }
  return diff / std::max(scale, 1e-30);
}

// The JSON field of a difference (JSON has no NaN or Infinity: those go as strings).
std::string difference_field(double v) {
  char text[80];
  if (std::isfinite(v))
    std::snprintf(text, sizeof text, ",\"max_relative_difference\":%.3e", v);
  else
    std::snprintf(text, sizeof text, ",\"max_relative_difference\":\"%g\"", v);
  return text;
}

void report(const BenchShape& s, const char* pass, const std::string& variant, double ms,
            double flops, const std::string& agreement) {
  std::printf(
      "{\"engine\":\"tessera\",\"pass\":\"%s\",\"variant\":\"%s\",\"batch\":%lld,\"heads\":%lld,"
      "\"seq\":%lld,\"head_size\":%d,\"ms\":%.4f,\"tflops\":%.1f%s}\n",
      pass, variant.c_str(), static_cast<long long>(s.b), static_cast<long long>(s.nh),
      static_cast<long long>(s.t), s.hs, ms, flops / (ms * 1e-3) / 1e12, agreement.c_str());
  std::fflush(stdout);
}

template <int HS>
void run(const BenchShape& s) {
  const int64_t b = s.b, t = s.t, nh = s.nh, c = s.c();
  std::mt19937_64 rng(20261126);
  DeviceBuffer<Bf> qkv(b * t * 3 * c), dout(b * t * c), out(b * t * c), dqkv(b * t * 3 * c);
  DeviceBuffer<float> lse(b * nh * t), delta(b * nh * t), dq_accum(b * t * c);
  DeviceBuffer<int32_t> turns(cuda::attention_dq_turns(b, t, nh));
  fill_normal(qkv, rng);
  fill_normal(dout, rng);
  const double pairs = static_cast<double>(t) * (t + 1) / 2 * b * nh;
  const double forward_flops = 4.0 * HS * pairs, backward_flops = 2.5 * forward_flops;

  // The forwards: the first's out and lse are the reference (and the backwards' input).
  std::vector<Bf> out_ref;
  std::vector<float> lse_ref;
  auto forward = [&]<int M>() {
    const double ms = time_ms(
        [&] { cuda::forward_tc<HS, M>(out.p, lse.p, qkv.p, b, t, c, nh, nullptr); }, s.reps);
    std::string agreement;
    if (out_ref.empty()) {
      out_ref = out.host();
      lse_ref = lse.host();
    } else {
      const bool same = same_bits(out.host(), out_ref) && same_bits(lse.host(), lse_ref);
      agreement = std::string(",\"same_as_first\":") + (same ? "true" : "false");
    }
    report(s, "forward", std::to_string(16 * M) + " rows a warp", ms, forward_flops, agreement);
  };
  if constexpr (HS <= 64) forward.template operator()<2>();
  forward.template operator()<1>();
  TS_CUDA_CHECK(cudaMemcpy(out.p, out_ref.data(), out.n * sizeof(Bf), cudaMemcpyHostToDevice));
  TS_CUDA_CHECK(cudaMemcpy(lse.p, lse_ref.data(), lse.n * sizeof(float), cudaMemcpyHostToDevice));

  std::vector<Bf> dqkv_ref;
  auto backward = [&]<bool kDq>() {
    const double ms = time_ms(
        [&] {
          cuda::backward_tc<HS, kDq>(dqkv.p, delta.p, dq_accum.p, turns.p, dout.p, qkv.p, out.p,
                                     lse.p, b, t, c, nh, nullptr);
        },
        s.reps);
    std::string agreement;
    if (dqkv_ref.empty())
      dqkv_ref = dqkv.host();
    else
      agreement = difference_field(max_relative_difference(dqkv.host(), dqkv_ref));
    report(s, "backward", kDq ? "dq in the dk/dv kernel" : "dq in its own kernel", ms,
           backward_flops, agreement);
  };
  if constexpr (HS <= 64) backward.template operator()<true>();
  backward.template operator()<false>();
}

BenchShape parse(int argc, char** argv) {
  BenchShape s;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    TS_CHECK(i + 1 < argc, "bench_attention_cuda: ", flag, " needs a value");
    const long long v = std::atoll(argv[i + 1]);
    TS_CHECK(v > 0, "bench_attention_cuda: ", flag, " must be a positive number, got ",
             argv[i + 1]);
    if (flag == "--batch")
      s.b = v;
    else if (flag == "--heads")
      s.nh = v;
    else if (flag == "--seq")
      s.t = v;
    else if (flag == "--head-size")
      s.hs = static_cast<int>(v);
    else if (flag == "--reps")
      s.reps = static_cast<int>(v);
    else
      TS_THROW("bench_attention_cuda: unknown flag ", flag,
               " (takes --batch, --heads, --seq, --head-size, --reps)");
  }
  TS_CHECK(s.hs == 64 || s.hs == 128, "bench_attention_cuda: --head-size 64 or 128, got ", s.hs);
  TS_CHECK(s.b * s.nh <= 65535, "bench_attention_cuda: at most 65535 (batch x heads), got ",
           s.b * s.nh);
  return s;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  try {
    const tessera::BenchShape s = tessera::parse(argc, argv);
    if (s.hs == 64)
      tessera::run<64>(s);
    else
      tessera::run<128>(s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
