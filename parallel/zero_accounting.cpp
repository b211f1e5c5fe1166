#include "parallel/zero_accounting.h"

#include <cstdio>

namespace tessera::parallel {

double zero_state_bytes(int stage, int n, double psi, BytesPerParam b) {
  TS_CHECK(stage >= 0 && stage <= 3 && n >= 1, "zero_state_bytes: stage ", stage, ", n ", n);
  switch (stage) {
    case 0:
      return (b.params + b.grads + b.optimizer) * psi;
    case 1:
      return (b.params + b.grads) * psi + b.optimizer * psi / n;
    case 2:
      return b.params * psi + (b.grads + b.optimizer) * psi / n;
    default:
      return (b.params + b.grads + b.optimizer) * psi / n;
  }
}

double zero_wire_bytes_per_step(int stage, int n, double psi, int micro_batches,
                                double bytes_per_element) {
  TS_CHECK(stage >= 0 && stage <= 3 && n >= 1 && micro_batches >= 1,
           "zero_wire_bytes_per_step: stage ", stage, ", n ", n, ", micro-batches ", micro_batches);
  const double ring = static_cast<double>(n - 1) / n;
  const double m = micro_batches;
  const double elements = stage <= 1 ? 2.0 : (stage == 2 ? m + 1.0 : 3.0 * m);
  return elements * ring * psi * bytes_per_element;
}

std::string accounting_table(const std::vector<RankAccount>& ranks, int stage, int dp,
                             int micro_batches) {
  std::string out = ::tessera::detail::cat(
      "ZeRO stage ", stage, ", dp = ", dp, ", ", micro_batches, " micro-batches per step",
      "; formulas per rank for its Ψ (fp32 AdamW: 4 + 4 + 8 bytes per parameter)\n",
      "rank |         Ψ |     params |      grads |  optimizer |      total | vs formula | "
      "all_reduce | reduce_scatter | all_gather |  wire/step | vs formula |    tp wire |    pp "
      "wire\n");
  for (size_t r = 0; r < ranks.size(); ++r) {
    const ModelStateBytes& s = ranks[r].state;
    const CommStats& t = ranks[r].step_traffic;
    const double state_formula = zero_state_bytes(stage, dp, ranks[r].psi);
    const double wire_formula = zero_wire_bytes_per_step(stage, dp, ranks[r].psi, micro_batches);
    const double wire = t.total_wire_bytes();
    char vs[32] = "-";
    if (wire_formula > 0)
      std::snprintf(vs, sizeof(vs), "%+.2f%%", 100.0 * (wire / wire_formula - 1.0));
    char line[320];
    std::snprintf(
        line, sizeof(line),
        "%4zu | %9.0f | %10s | %10s | %10s | %10s | %+9.2f%% | %10s | %14s | %10s | %10s | "
        "%10s | %10s | %10s\n",
        r, ranks[r].psi, format_bytes(static_cast<double>(s.params)).c_str(),
        format_bytes(static_cast<double>(s.grads)).c_str(),
        format_bytes(static_cast<double>(s.optimizer)).c_str(),
        format_bytes(static_cast<double>(s.total())).c_str(),
        100.0 * (static_cast<double>(s.total()) / state_formula - 1.0),
        format_bytes(t[CommKind::all_reduce].wire_bytes).c_str(),
        format_bytes(t[CommKind::reduce_scatter].wire_bytes).c_str(),
        format_bytes(t[CommKind::all_gather].wire_bytes).c_str(), format_bytes(wire).c_str(), vs,
        format_bytes(ranks[r].tp_wire).c_str(), format_bytes(ranks[r].pp_wire).c_str());
    out += line;
  }
  return out;
}

std::vector<RankAccount> gather_accounts(Communicator& world, const RankAccount& mine) {
  // Ten doubles per rank, sent as pairs of f32 (high part and remainder) so that byte counts
  // survive exactly enough (< 1e-13 relative) without a f64 collective.
  constexpr int kFields = 10;
  const double fields[kFields] = {static_cast<double>(mine.state.params),
                                  static_cast<double>(mine.state.grads),
                                  static_cast<double>(mine.state.optimizer),
                                  mine.step_traffic[CommKind::all_reduce].wire_bytes,
                                  mine.step_traffic[CommKind::reduce_scatter].wire_bytes,
                                  mine.step_traffic[CommKind::all_gather].wire_bytes,
                                  mine.step_traffic.total_wire_bytes(),
                                  mine.psi,
                                  mine.tp_wire,
                                  mine.pp_wire};
  Tensor in = Tensor::empty({2 * kFields}, DType::f32);
  for (int i = 0; i < kFields; ++i) {
    const float hi = static_cast<float>(fields[i]);
    in.data<float>()[2 * i] = hi;
    in.data<float>()[2 * i + 1] = static_cast<float>(fields[i] - hi);
  }
  Tensor all = Tensor::empty({2 * kFields * world.size()}, DType::f32);
  world.all_gather(all, in);
  std::vector<RankAccount> out(static_cast<size_t>(world.size()));
  for (int r = 0; r < world.size(); ++r) {
    auto field = [&](int i) {
      const float* p = all.data<float>() + 2 * kFields * r + 2 * i;
      return static_cast<double>(p[0]) + static_cast<double>(p[1]);
    };
    RankAccount& a = out[static_cast<size_t>(r)];
    a.state = {static_cast<uint64_t>(field(0) + 0.5), static_cast<uint64_t>(field(1) + 0.5),
               static_cast<uint64_t>(field(2) + 0.5)};
    a.step_traffic[CommKind::all_reduce].wire_bytes = field(3);
    a.step_traffic[CommKind::reduce_scatter].wire_bytes = field(4);
    a.step_traffic[CommKind::all_gather].wire_bytes = field(5);
    // Whatever else this rank sent (broadcast, p2p) is in the total.
    a.step_traffic[CommKind::broadcast].wire_bytes = field(6) - field(3) - field(4) - field(5);
    a.psi = field(7);
    a.tp_wire = field(8);
    a.pp_wire = field(9);
  }
  return out;
}

}  // namespace tessera::parallel
