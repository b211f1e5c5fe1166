// Accounting of ZeRO's model state and traffic against the paper's formulas (Rajbhandari et al.,
// "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", sections 3 and 7).
//
// Model state per rank, Ψ parameters, N data-parallel ranks, bytes per parameter P (parameters),
// G (gradients), K (optimizer state):
//   stage 0  (P + G + K)Ψ     stage 1  (P + G)Ψ + KΨ/N     stage 2  PΨ + (G + K)Ψ/N     stage 3  (P
//   + G + K)Ψ/N
// The paper's mixed-precision Adam has P = G = 2, K = 12 (16Ψ, 4Ψ + 12Ψ/N, 2Ψ + 14Ψ/N, 16Ψ/N);
// Tessera's fp32 AdamW on CPU has P = G = 4, K = 8 (no separate master copy).
// Traffic per step and rank in the data-parallel group, ring algorithms: 2Ψ gradient elements for
// stages 0-2 (all-reduce = reduce-scatter + all-gather), 3Ψ for stage 3 (two parameter all-gathers
// and a gradient reduce-scatter), each times (N − 1)/N and the bytes of an element. The paper
// counts one micro-batch per step; with M micro-batches (gradient accumulation, pipeline), stage 2
// reduce-scatters every micro-batch ((M + 1)Ψ) and stage 3 gathers and reduce-scatters every
// micro-batch (3MΨ), as DeepSpeed does; stages 0-1 reduce once (2Ψ).
#pragma once

#include <string>
#include <vector>

#include "parallel/comm_stats.h"
#include "parallel/zero_optimizer.h"

namespace tessera::parallel {

struct BytesPerParam {
  double params = 4, grads = 4, optimizer = 8;  // fp32 AdamW
};

// The formulas above for one rank: model-state bytes, and bytes sent per step (one micro-batch).
double zero_state_bytes(int stage, int n, double psi, BytesPerParam b = {});
double zero_wire_bytes_per_step(int stage, int n, double psi, int micro_batches = 1,
                                double bytes_per_element = 4);

// What one rank measured: model state held after a step and its data-parallel traffic in a step,
// for its psi parameters (its tensor-parallel part of its pipeline stage).
struct RankAccount {
  ModelStateBytes state;
  CommStats step_traffic;  // data-parallel group
  double psi = 0;
  double tp_wire = 0, pp_wire = 0;  // bytes sent in the tp and pp groups in the step (no formula)
};

// A table, one row per rank: Ψ, params, grads, optimizer, total vs the formula, per-kind bytes on
// the wire in the dp group in a step vs the formula (each formula for that rank's Ψ), and the
// bytes sent in the tp and pp groups.
std::string accounting_table(const std::vector<RankAccount>& ranks, int stage, int dp,
                             int micro_batches);

// Every rank's RankAccount, on every rank (collective over `world`).
std::vector<RankAccount> gather_accounts(Communicator& world, const RankAccount& mine);

}  // namespace tessera::parallel
