// CachingAllocator: keeps freed blocks of a raw allocator (cudaMalloc/cudaFree on CUDA) and hands
// them out again, so that a training step's steady state makes no raw allocation (the design of
// PyTorch's CUDACachingAllocator, reduced to one stream):
// - sizes round up to 512 bytes; requests up to 1 MiB come from 2 MiB segments (the small pool),
//   larger ones from segments rounded up to 2 MiB (the large pool);
// - a request takes the smallest free block of its pool that fits (best fit), split when the rest
//   is worth keeping (at least 512 bytes small, more than 1 MiB large);
// - a freed block merges with its free neighbours in the same segment;
// - when the raw allocator fails, every cached segment with nothing in use goes back to it and the
//   request is tried once more; a second failure throws Error with the sizes involved.
// Stream semantics: one stream. A freed block may be handed out at once, because later work on
// the same stream runs after whatever used it; memory that work on another stream still reads
// must be kept alive until that work is done (Communicator handles keep their tensors' storage).
// Thread-safe (one mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "core/allocator.h"

namespace tessera {

struct CachingAllocatorStats {
  uint64_t allocated_bytes = 0;       // in blocks handed out now (rounded, with unsplit rests)
  uint64_t reserved_bytes = 0;        // in segments taken from the raw allocator
  uint64_t peak_allocated_bytes = 0;  // most allocated_bytes at any time
  uint64_t raw_allocations = 0;       // raw allocate() calls that succeeded
  uint64_t raw_frees = 0;             // segments given back to the raw allocator
  uint64_t requests = 0;              // allocate() calls with nbytes > 0
};

class CachingAllocator final : public Allocator {
 public:
  static constexpr size_t kRound = 512;                 // every block size is a multiple of this
  static constexpr size_t kSmallRequest = 1 << 20;      // up to this: the small pool
  static constexpr size_t kSmallSegment = 2 << 20;      // a small-pool segment
  static constexpr size_t kLargeGranularity = 2 << 20;  // large segments round up to this

  // Takes its segments from `raw` (owned). Blocks start at multiples of kRound into a segment, so
  // they keep raw's alignment up to kRound (cudaMalloc: 256 bytes).
  explicit CachingAllocator(std::unique_ptr<Allocator> raw);
  // Gives every segment back; blocks still handed out are leaked rather than freed under a user.
  ~CachingAllocator() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return raw_->device(); }

  // Gives every segment with nothing in use back to the raw allocator.
  void empty_cache();
  CachingAllocatorStats stats() const;

 private:
  struct Block {
    char* ptr;
    size_t size;
    bool small;  // which pool
    bool in_use = false;
    Block* prev = nullptr;  // address neighbours in the same segment
    Block* next = nullptr;
  };
  struct BySizeThenAddress {
    bool operator()(const Block* a, const Block* b) const {
      return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
    }
  };
  using Pool = std::set<Block*, BySizeThenAddress>;

  Pool& pool(bool small) { return small ? small_ : large_; }
  // A new segment for a block of `size` in the given pool, or null when raw allocation fails
  // (its error in *why).
  Block* new_segment(size_t size, bool small, std::string* why);
  // Gives back every free whole segment; returns whether any was.
  bool release_free_segments();

  std::unique_ptr<Allocator> raw_;
  mutable std::mutex mu_;
  Pool small_, large_;                        // free blocks
  std::unordered_map<void*, Block*> in_use_;  // handed-out blocks by address
  CachingAllocatorStats stats_;
};

}  // namespace tessera
