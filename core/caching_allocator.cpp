#include "core/caching_allocator.h"

#include <vector>

#include "core/error.h"

namespace tessera {
namespace {

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

CachingAllocator::CachingAllocator(std::unique_ptr<Allocator> raw) : raw_(std::move(raw)) {
  TS_CHECK(raw_ != nullptr, "CachingAllocator needs a raw allocator");
}

CachingAllocator::~CachingAllocator() {
  release_free_segments();
  // Blocks still in use keep their segments: freeing memory someone may still write is worse
  // than leaking it at exit.
  for (Pool* p : {&small_, &large_})
    for (Block* b : *p) delete b;
}

CachingAllocator::Block* CachingAllocator::new_segment(size_t size, bool small, std::string* why) {
  const size_t bytes = small ? kSmallSegment : round_up(size, kLargeGranularity);
  void* p = nullptr;
  try {
    p = raw_->allocate(bytes);
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
  ++stats_.raw_allocations;
  stats_.reserved_bytes += bytes;
  return new Block{static_cast<char*>(p), bytes, small};
}

bool CachingAllocator::release_free_segments() {
  bool any = false;
  for (Pool* p : {&small_, &large_}) {
    for (auto it = p->begin(); it != p->end();) {
      Block* b = *it;
      if (b->prev || b->next) {  // part of a segment that is partly in use
        ++it;
        continue;
      }
      it = p->erase(it);
      raw_->deallocate(b->ptr, b->size);
      ++stats_.raw_frees;
      stats_.reserved_bytes -= b->size;
      delete b;
      any = true;
    }
  }
  return any;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests;
  const size_t size = round_up(nbytes, kRound);
  const bool small = size <= kSmallRequest;
  Pool& free = pool(small);
  Block probe{nullptr, size, small};
  Block* b = nullptr;
  if (auto it = free.lower_bound(&probe); it != free.end()) {
    b = *it;
    free.erase(it);
  } else {
    std::string why;
    b = new_segment(size, small, &why);
    if (!b && release_free_segments()) b = new_segment(size, small, &why);
    // The raw allocator's own error says whether it was memory (or, say, no device at all).
    TS_CHECK(b != nullptr, device().str(), " out of memory allocating ", nbytes,
             " bytes: ", stats_.allocated_bytes, " bytes in use, ", stats_.reserved_bytes,
             " reserved (cached segments were released and the allocation retried); use a "
             "smaller train.batch_size, train.recompute: true, or a higher parallel.zero stage. "
             "The device said: ",
             why);
  }
  // Split off the rest when it is worth keeping as a free block of its own.
  const size_t rest = b->size - size;
  if (small ? rest >= kRound : rest > kSmallRequest) {
    Block* r = new Block{b->ptr + size, rest, small};
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r;
    b->next = r;
    b->size = size;
    free.insert(r);
  }
  b->in_use = true;
  in_use_[b->ptr] = b;
  stats_.allocated_bytes += b->size;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  return b->ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_use_.find(ptr);
  if (it == in_use_.end()) return;  // not ours: nothing safe to do from a destructor path
  Block* b = it->second;
  in_use_.erase(it);
  b->in_use = false;
  stats_.allocated_bytes -= b->size;
  Pool& free = pool(b->small);
  // Merge with free neighbours: the block absorbs them.
  for (Block* n : {b->prev, b->next}) {
    if (!n || n->in_use) continue;
    free.erase(n);
    if (n == b->prev) {
      b->ptr = n->ptr;
      b->prev = n->prev;
      if (n->prev) n->prev->next = b;
    } else {
      b->next = n->next;
      if (n->next) n->next->prev = b;
    }
    b->size += n->size;
    delete n;
  }
  free.insert(b);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_free_segments();
}

CachingAllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace tessera
