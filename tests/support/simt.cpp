#include "tests/support/simt.h"

#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

#include "core/error.h"

namespace tessera::simt {
namespace {

constexpr size_t kStackBytes = 64 << 10;  // a fiber's stack: a kernel's locals and calls

// A cp.async copy not landed yet.
struct Copy {
  void* dst;
  const void* src;  // null: zeros
};

struct Fiber {
  ucontext_t context{};
  Dim3 thread;
  bool done = false;
  std::vector<Copy> open;                  // copies since the last commit
  std::vector<std::vector<Copy>> pending;  // committed groups not landed, oldest first
};

// A warp's collective in progress: the lanes that have arrived, their operands.
struct WarpState {
  int arrived = 0;
  uint64_t generation = 0;
  const void* ins[32] = {};
  void* outs[32] = {};
};

// The block being run: its fibers and the state of its barriers. One at a time, on the thread
// that called launch.
struct Block {
  Dim3 grid, dims, index;
  const std::function<void()>* kernel = nullptr;
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  ucontext_t scheduler{};
  int current = 0;
  int live = 0;
  int barrier_arrived = 0;
  uint64_t barrier_generation = 0;
  int idle_switches = 0;  // switches in a row with no fiber making progress
  unsigned char* shared = nullptr;
  CopyLanding landing = CopyLanding::at_issue;
  std::exception_ptr error;
};

Block* running = nullptr;

void land(const Copy& copy) {
  if (copy.src)
    std::memcpy(copy.dst, copy.src, 16);
  else
    std::memset(copy.dst, 0, 16);
}

Block& block() {
  TS_CHECK(running != nullptr, "simt: a CUDA built-in used outside simt::launch");
  return *running;
}

// The block's barrier opens: every thread still running has reached it.
void open_barrier(Block& b) {
  b.barrier_arrived = 0;
  ++b.barrier_generation;
}

// Back to the scheduler, from a fiber waiting for others (progress: false) or moving on.
void yield(bool progress) {
  Block& b = block();
  b.idle_switches = progress ? 0 : b.idle_switches + 1;
  swapcontext(&b.fibers[b.current].context, &b.scheduler);
}

void fiber_main() {
  Block& b = block();
  try {
    (*b.kernel)();
  } catch (...) {
    if (!b.error) b.error = std::current_exception();
  }
  Fiber& self = b.fibers[b.current];
  for (const auto& group : self.pending)  // a thread's copies land before it ends
    for (const Copy& copy : group) land(copy);
  for (const Copy& copy : self.open) land(copy);
  self.done = true;
  --b.live;
  // A barrier that every thread still running has reached opens now.
  if (b.barrier_arrived > 0 && b.barrier_arrived == b.live) open_barrier(b);
  b.idle_switches = 0;
  // returning resumes uc_link: the scheduler
}

// Makes f a fiber that runs fiber_main on `stack`, then returns to *scheduler. Alone in its own
// function: getcontext "returns twice" as far as the compiler knows, which would make it keep the
// caller's locals in memory and warn.
[[gnu::noinline]] void make_fiber(Fiber& f, char* stack, ucontext_t* scheduler) {
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = scheduler;
  makecontext(&f.context, fiber_main, 0);
}

// Waits until `generation` moves on, or throws when no fiber can make progress.
void wait_for(const uint64_t& generation, uint64_t seen, const char* what) {
  Block& b = block();
  while (generation == seen) {
    TS_CHECK(b.idle_switches <= 4 * static_cast<int>(b.fibers.size()), "simt: ", what,
             " never completes in block (", b.index.x, ", ", b.index.y,
             "): a barrier or warp collective some thread does not reach");
    yield(false);
  }
}

}  // namespace

void async_copy16(void* dst, const void* src, bool valid) {
  Block& b = block();
  const Copy copy{dst, valid ? src : nullptr};
  if (b.landing == CopyLanding::at_issue)
    land(copy);
  else
    b.fibers[b.current].open.push_back(copy);
}

void commit_async_copies() {
  Fiber& f = block().fibers[block().current];
  f.pending.push_back(std::move(f.open));
  f.open.clear();
}

void wait_async_copies(int pending) {
  Fiber& f = block().fibers[block().current];
  while (static_cast<int>(f.pending.size()) > pending) {
    for (const Copy& copy : f.pending.front()) land(copy);
    f.pending.erase(f.pending.begin());
  }
}

unsigned char* dynamic_shared() {
  return block().shared;
}

const Dim3& thread_idx() {
  Block& b = block();
  return b.fibers[b.current].thread;
}
const Dim3& block_idx() {
  return block().index;
}
const Dim3& grid_dim() {
  return block().grid;
}
const Dim3& block_dim() {
  return block().dims;
}

void syncthreads() {
  Block& b = block();
  const uint64_t seen = b.barrier_generation;
  if (++b.barrier_arrived == b.live) {
    open_barrier(b);
    yield(true);  // let the others run, as a GPU would
    return;
  }
  wait_for(b.barrier_generation, seen, "__syncthreads");
}

void warp_collective(const void* in, void* out, WarpOp op) {
  Block& b = block();
  const int lane = static_cast<int>(b.fibers[b.current].thread.x % 32);
  const int warp = static_cast<int>(b.fibers[b.current].thread.x / 32);
  WarpState& w = b.warps[warp];
  for (int l = 0; l < 32; ++l)
    TS_CHECK(!b.fibers[32 * warp + l].done, "simt: a warp collective in warp ", warp, " of block (",
             b.index.x, ", ", b.index.y, ") after lane ", l, " exited");
  w.ins[lane] = in;
  w.outs[lane] = out;
  const uint64_t seen = w.generation;
  if (++w.arrived == 32) {
    op(w.ins, w.outs);
    w.arrived = 0;
    ++w.generation;
    b.idle_switches = 0;
    return;
  }
  wait_for(w.generation, seen, "a warp collective");
}

void launch(Dim3 grid, unsigned block_threads, size_t shared_bytes,
            const std::function<void()>& kernel, CopyLanding landing) {
  TS_CHECK(running == nullptr, "simt::launch is not reentrant");
  TS_CHECK(block_threads % 32 == 0 && block_threads > 0,
           "simt::launch takes blocks of whole warps, got ", block_threads, " threads");
  const int threads = static_cast<int>(block_threads);
  const std::unique_ptr<char[]> stacks(new char[threads * kStackBytes]);  // reused by each block
  std::vector<float4> shared((shared_bytes + sizeof(float4) - 1) / sizeof(float4));
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::memset(shared.data(), 0xff, shared.size() * sizeof(float4));
        Block b;
        b.shared = reinterpret_cast<unsigned char*>(shared.data());
        b.landing = landing;
        b.grid = grid;
        b.dims = {block_threads, 1, 1};
        b.index = {x, y, z};
        b.kernel = &kernel;
        b.fibers.resize(threads);
        b.warps.resize(threads / 32);
        b.live = threads;
        for (int t = 0; t < threads; ++t) {
          b.fibers[t].thread = {static_cast<unsigned>(t), 0, 0};
          make_fiber(b.fibers[t], stacks.get() + t * kStackBytes, &b.scheduler);
        }
        running = &b;
        // Round robin over the fibers that have not exited until none is left.
        while (b.live > 0) {
          for (int t = 0; t < threads; ++t) {
            if (b.fibers[t].done) continue;
            b.current = t;
            swapcontext(&b.scheduler, &b.fibers[t].context);
            if (b.error) break;
          }
          if (b.error) break;
        }
        running = nullptr;
        if (b.error) std::rethrow_exception(b.error);
      }
}

}  // namespace tessera::simt

namespace tessera::cuda::tc {

void wait_turn(const int* turn, int expected) {
  TS_CHECK(*turn == expected, "simt: a block waits for turn ", expected, " but the turn is ", *turn,
           " and the blocks that would pass it have run: on a GPU, a deadlock");
}

float exp2_approx(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.0f;
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;
}

namespace detail {

// The two 16-bit halves of a fragment register, low first.
uint16_t half_of(uint32_t r, int h) {
  return static_cast<uint16_t>(h ? r >> 16 : r & 0xffffu);
}

// d = a · b + c for the warp's 16 × 8 block (PTX ISA, "Matrix fragments for mma.m16n8k16"):
// lane 4g + q holds A (row g | g + 8, columns 2q, 2q + 1 | + 8) in a[0..3] as (g, k), (g + 8, k),
// (g, k + 8), (g + 8, k + 8); B (rows 2q, 2q + 1 | + 8, column g) in b[0..1]; C and D (row g | g +
// 8, columns 2q, 2q + 1) in c[0..3]. Products are exact in fp32; the sum runs over k in order.
template <class T>
void mma_op(const void* const* ins, void* const* outs) {
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto& in = *static_cast<const MmaIn*>(ins[lane]);
    const int g = lane / 4, q = lane % 4;
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h)
        a[g + 8 * (r % 2)][2 * q + h + 8 * (r / 2)] =
            cuda_detail::from_bits<T>(half_of(in.a[r], h));
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h)
        b[2 * q + h + 8 * r][g] = cuda_detail::from_bits<T>(half_of(in.b[r], h));
    for (int e = 0; e < 4; ++e) c[g + 8 * (e / 2)][2 * q + e % 2] = in.c[e];
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, q = lane % 4;
    float* d = static_cast<float*>(outs[lane]);
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e / 2), col = 2 * q + e % 2;
      float sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      d[e] = sum;
    }
  }
}
template void mma_op<__nv_bfloat16>(const void* const*, void* const*);
template void mma_op<__half>(const void* const*, void* const*);

// ldmatrix.x4: lanes 8i..8i+7 give the rows of 8 × 8 matrix i (8 16-bit values each); lane 4g + q
// gets (row g, columns 2q, 2q + 1) of each matrix, or with .trans (rows 2q, 2q + 1, column g).
template <bool kTrans>
void ldmatrix_op(const void* const* ins, void* const* outs) {
  auto element = [&](int matrix, int row, int col) {
    const auto* p = *static_cast<const uint16_t* const*>(ins[8 * matrix + row]);
    return static_cast<uint32_t>(p[col]);
  };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, q = lane % 4;
    uint32_t* r = static_cast<uint32_t*>(outs[lane]);
    for (int i = 0; i < 4; ++i)
      r[i] = kTrans ? element(i, 2 * q, g) | element(i, 2 * q + 1, g) << 16
                    : element(i, g, 2 * q) | element(i, g, 2 * q + 1) << 16;
  }
}
template void ldmatrix_op<false>(const void* const*, void* const*);
template void ldmatrix_op<true>(const void* const*, void* const*);

}  // namespace detail
}  // namespace tessera::cuda::tc
