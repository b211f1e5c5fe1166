// The caching allocator's bookkeeping, over a host "raw" allocator that counts its calls and can
// run out at a set capacity (the CUDA build wraps cudaMalloc the same way).
#include "core/caching_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "core/error.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

class CountingRaw final : public Allocator {
 public:
  CountingRaw(size_t capacity, int* live) : capacity_(capacity), live_(live) {}
  void* allocate(size_t nbytes) override {
    TS_CHECK(used_ + nbytes <= capacity_, "raw allocator out of memory");
    used_ += nbytes;
    ++*live_;
    return std::aligned_alloc(CachingAllocator::kRound, nbytes);
  }
  void deallocate(void* ptr, size_t nbytes) override {
    used_ -= nbytes;
    --*live_;
    std::free(ptr);
  }
  Device device() const override { return Device::cuda(0); }

 private:
  size_t capacity_, used_ = 0;
  int* live_;
};

constexpr size_t kMiB = 1 << 20;

struct Fixture {
  int live = 0;  // raw segments not given back
  CachingAllocator alloc;
  explicit Fixture(size_t capacity = 1024 * kMiB)
      : alloc(std::make_unique<CountingRaw>(capacity, &live)) {}
};

TEST(CachingAllocator, FreedBlocksAreReusedWithoutRawAllocations) {
  Fixture f;
  void* a = f.alloc.allocate(1000);
  f.alloc.deallocate(a, 1000);
  EXPECT_EQ(f.alloc.allocate(1000), a);  // same size class, same block
  EXPECT_EQ(f.alloc.stats().raw_allocations, 1u);
  EXPECT_EQ(f.alloc.allocate(0), nullptr);
}

TEST(CachingAllocator, ATrainingStepsSteadyStateMakesNoRawAllocation) {
  // The same sequence of allocations and frees per "step" (activations, gradients, scratch of
  // many sizes). Best fit may carve a later step's blocks differently from the first's, so a
  // segment or two can still be added in the next steps (PyTorch's allocator behaves alike);
  // after a few steps the cache holds a layout that serves the step with no raw allocation.
  Fixture f;
  std::mt19937_64 rng(testing::test_seed());
  std::vector<size_t> sizes;
  for (int i = 0; i < 40; ++i) sizes.push_back(1 + rng() % (8 * kMiB));
  std::vector<uint64_t> raw;  // raw allocations after each step
  for (int step = 0; step < 12; ++step) {
    std::vector<std::pair<void*, size_t>> live;
    for (size_t i = 0; i < sizes.size(); ++i) {
      live.emplace_back(f.alloc.allocate(sizes[i]), sizes[i]);
      if (i % 3 == 2) {  // free some along the way, as a backward pass frees activations
        f.alloc.deallocate(live.front().first, live.front().second);
        live.erase(live.begin());
      }
    }
    for (auto& [p, n] : live) f.alloc.deallocate(p, n);
    raw.push_back(f.alloc.stats().raw_allocations);
  }
  EXPECT_GT(raw[0], 0u);
  EXPECT_EQ(raw.back(), raw[5]) << "raw allocations still growing after 6 steps";
  EXPECT_LE(raw.back(), raw[0] + 5);
  EXPECT_EQ(f.alloc.stats().allocated_bytes, 0u);
}

TEST(CachingAllocator, SplitsAndMergesWithinASegment) {
  Fixture f;
  // Three small blocks carved from one 2 MiB segment.
  void* a = f.alloc.allocate(100 * 1024);
  void* b = f.alloc.allocate(100 * 1024);
  void* c = f.alloc.allocate(100 * 1024);
  EXPECT_EQ(f.alloc.stats().raw_allocations, 1u);
  EXPECT_EQ(static_cast<char*>(b) - static_cast<char*>(a), 100 * 1024);
  EXPECT_EQ(static_cast<char*>(c) - static_cast<char*>(b), 100 * 1024);
  // Free the middle, then its neighbours: the segment is whole again and serves a 1 MiB request
  // from its start.
  f.alloc.deallocate(b, 100 * 1024);
  f.alloc.deallocate(a, 100 * 1024);
  f.alloc.deallocate(c, 100 * 1024);
  EXPECT_EQ(f.alloc.allocate(kMiB), a);
  EXPECT_EQ(f.alloc.stats().raw_allocations, 1u);
  // Large requests round up to 2 MiB segments and split only when more than 1 MiB is left.
  void* big = f.alloc.allocate(5 * kMiB + 1);
  EXPECT_EQ(f.alloc.stats().reserved_bytes, 2 * kMiB + 6 * kMiB);
  f.alloc.deallocate(big, 5 * kMiB + 1);
  EXPECT_EQ(f.alloc.allocate(3 * kMiB), big);  // best fit, split: 3 MiB left free
  EXPECT_NE(f.alloc.allocate(2 * kMiB), nullptr);
  EXPECT_EQ(f.alloc.stats().raw_allocations, 2u);
}

TEST(CachingAllocator, BlocksNeverOverlapUnderRandomUse) {
  // Random sizes, random frees: every live block keeps the bytes written into it.
  Fixture f;
  std::mt19937_64 rng(testing::test_seed());
  std::map<char*, std::pair<size_t, unsigned char>> live;  // ptr -> (size, fill byte)
  for (int i = 0; i < 3000; ++i) {
    if (live.empty() || rng() % 5 < 3) {
      const size_t n = rng() % 4 == 0 ? 1 + rng() % (6 * kMiB) : 1 + rng() % 20000;
      char* p = static_cast<char*>(f.alloc.allocate(n));
      ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % CachingAllocator::kRound, 0u);
      const unsigned char fill = static_cast<unsigned char>(rng());
      std::memset(p, fill, n);
      live[p] = {n, fill};
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      const auto [p, info] = *it;
      for (size_t k = 0; k < info.first; k += 997)
        ASSERT_EQ(static_cast<unsigned char>(p[k]), info.second) << "block overwritten";
      ASSERT_EQ(static_cast<unsigned char>(p[info.first - 1]), info.second);
      f.alloc.deallocate(p, info.first);
      live.erase(it);
    }
  }
  // Blocks are the rounded requests, plus at most 1 MiB a large block was not worth splitting.
  uint64_t rounded = 0, large = 0;
  for (const auto& [p, info] : live) {
    rounded += (info.first + 511) / 512 * 512;
    large += info.first > kMiB;
  }
  EXPECT_GE(f.alloc.stats().allocated_bytes, rounded);
  EXPECT_LE(f.alloc.stats().allocated_bytes, rounded + large * kMiB);
  for (const auto& [p, info] : live) f.alloc.deallocate(p, info.first);
  f.alloc.empty_cache();
  EXPECT_EQ(f.live, 0);  // every segment went back
  EXPECT_EQ(f.alloc.stats().reserved_bytes, 0u);
}

TEST(CachingAllocator, OutOfMemoryReleasesTheCacheRetriesThenSaysWhatToChange) {
  Fixture f(8 * kMiB);
  void* a = f.alloc.allocate(3 * kMiB);
  f.alloc.deallocate(a, 3 * kMiB);  // cached: a 4 MiB segment, nothing in use
  // 6 MiB neither fits the cached block nor beside it: the cache goes back and the retry works.
  void* b = f.alloc.allocate(6 * kMiB);
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(f.alloc.stats().raw_frees, 1u);
  EXPECT_EQ(f.alloc.stats().reserved_bytes, 6 * kMiB);
  try {
    f.alloc.allocate(4 * kMiB);
    FAIL() << "allocated beyond the capacity";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("out of memory allocating 4194304 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("6291456 bytes in use"), std::string::npos) << m;
    EXPECT_NE(m.find("train.batch_size"), std::string::npos) << m;
  }
  f.alloc.deallocate(b, 6 * kMiB);  // still usable after the failure
  EXPECT_EQ(f.alloc.allocate(6 * kMiB), b);
}

}  // namespace
}  // namespace tessera
