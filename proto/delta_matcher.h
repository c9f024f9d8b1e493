#pragma once
// DeltaMatcher: finds the zstd sequences that code a body against a base (internal to proto).
//
// Positions live in one virtual space, as zstd's decoder sees them: the base occupies
// [0, m) and the body [m, m + n); a match at body position i copying from virtual position s
// has offset m + i - s. Work is spent only where the body differs from the base:
//
//  1. Anchors. Scan the body for long stretches it shares with the base. At each position try
//     the offsets of the last three anchors (an edit leaves the rest of a page at the same
//     distance) and one slot of the base's sparse index (PreparedBase: every 4th base
//     position, keyed by its 8 bytes); extend both ways; keep the longest if it is at least
//     min_anchor bytes and jump past it. Unchanged stretches cost one compare per 8 bytes.
//  2. Gaps. The bytes between anchors (a few % of a typical page) are parsed optimally, the way
//     zstd's optimal parser does: a forward dynamic program over positions that prices literals
//     and matches with adaptive symbol statistics and follows the repeat-offset rules of
//     RFC 8878 §3.1.1.5. Its matches come from three places: the repeat offsets; the sparse
//     index of the base, whose hits are extended back to where they start, so a copy longer
//     than kAnchorSampleStep + 7 bytes is usually found wherever it lies in the base (one
//     position per slot: a colliding gram can hide one); and a hash chain
//     over what the gap replaced (the base bytes next to the copies of the anchors that frame
//     it, as many as the gap is long) and the body before the position, for short matches.
//     (Indexing wider windows of the base bought 0.2% of ratio for 10% of speed; indexing all
//     of it, 2.5% for 40%: tests/bench/RESULTS.md.)
//  3. The caller hands the sequences to zstd (ZSTD_compressSequences) for entropy coding.
//
// The chain tables are tagged with a per-run offset instead of being cleared, so a run costs
// time in proportion to the bytes it touches, not to the size of its tables.

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cstdint>
#include <span>
#include <vector>

#include "proto/delta.h"

namespace coilgun::proto {

const MatcherParams& matcher_params_for_effort(int effort);

// Sparse index geometry shared with PreparedBase.
inline constexpr uint32_t kAnchorSampleStep = 4;

// Sets |c| up as the entropy stage for DeltaMatcher's sequences (fast strategy, smallest
// tables, minimum match 3, no block delimiters, content size in the frame, no checksum). The
// caller sets the window log for each frame.
void configure_sequence_cctx(ZSTD_CCtx* c);

// Builds the sparse anchor index of |base| into |table| (see PreparedBase).
void build_anchor_index(std::span<const uint8_t> base, std::vector<uint32_t>& table, int& bits);

class DeltaMatcher {
 public:
  DeltaMatcher();

  // Fills |seqs| with sequences that code |body| against |base| (no block delimiters; the
  // bytes after the last sequence are literals). Returns false, leaving |seqs| unspecified,
  // when anchors cover less than a tenth of the body: most of it is then new text, which stock
  // zstd codes faster (matched_bytes() says how much did match).
  // Requires base and body of at least 8 bytes each and m + n <= kMaxDeltaSpan.
  bool run(const PreparedBase& base, std::span<const uint8_t> body, const MatcherParams& params,
           std::vector<ZSTD_Sequence>& seqs);

  // Body bytes covered by anchors in the last run.
  size_t matched_bytes() const { return matched_; }

  // Symbol prices in 1/256 bit, from adaptive frequencies (as zstd's optimal parser prices).
  class Prices {
   public:
    void init(const uint32_t literal_histogram[256]);
    void add_sequence(const uint8_t* literals, uint32_t lit_len, uint32_t off_base,
                      uint32_t match_len);
    // Recomputes the price tables if enough sequences arrived since the last time.
    void refresh_if_stale();
    uint32_t literal(uint8_t c) const { return lit_price_[c]; }
    uint32_t lit_len(uint32_t ll) const;
    uint32_t match_len(uint32_t ml) const;
    uint32_t offset(uint32_t off_base) const;

   private:
    void refresh();
    void rescale();
    uint64_t lit_freq_[256], lit_sum_ = 0;
    uint64_t ll_freq_[36], ll_sum_ = 0;
    uint64_t ml_freq_[53], ml_sum_ = 0;
    uint64_t of_freq_[32], of_sum_ = 0;
    uint32_t lit_price_[256];
    uint32_t ll_price_[36], ml_price_[53], of_price_[32];
    uint32_t pending_ = 0;
  };

  // Repeat offsets (RFC 8878 §3.1.1.5).
  struct Reps {
    uint32_t r[3];
  };

 private:
  struct Anchor {
    uint32_t body_pos, base_pos, len;
  };
  struct Node {
    uint32_t cost, lit_len, from, off, len;
    Reps reps;
  };
  struct Candidate {
    uint32_t off, len;
  };

  void find_anchors();
  void init_prices();
  void begin_index();
  void index_replaced(size_t k, uint32_t gap_len);
  void index_base(uint32_t from, uint32_t to);
  void index_body(uint32_t from, uint32_t to);
  void insert(uint32_t v);
  void parse_gap(uint32_t gap_begin, uint32_t gap_end);
  void parse_gap_greedy(uint32_t gap_begin, uint32_t gap_end);
  void find_candidates(uint32_t i, uint32_t limit, const Reps& reps, bool ll0, uint32_t depth);
  void find_far_candidate(uint32_t i, uint32_t limit, uint32_t max_back);
  void relax_matches(uint32_t j, uint32_t window_end);
  void relax(uint32_t j, const Candidate& c, uint32_t min_len, uint32_t window_end);
  void emit_path(uint32_t pos, uint32_t stop);
  void emit(uint32_t body_pos, uint32_t offset, uint32_t match_len);

  const uint8_t* vptr(uint32_t v) const { return v < m_ ? base_ + v : body_ - m_ + v; }
  uint32_t vend(uint32_t v) const { return v < m_ ? m_ : m_ + n_; }

  // Inputs of the current run.
  const PreparedBase* prepared_ = nullptr;
  const uint8_t* base_ = nullptr;
  const uint8_t* body_ = nullptr;
  uint32_t m_ = 0, n_ = 0;
  MatcherParams p_{};
  std::vector<ZSTD_Sequence>* seqs_ = nullptr;

  // Anchor scan.
  std::vector<Anchor> anchors_;
  size_t matched_ = 0;
  size_t short_matched_ = 0;
  uint64_t parse_budget_ = 0;  // Gap bytes the optimal parse may still cover.
  uint32_t gap_total_ = 0;

  // Chain over virtual positions: head_ and chain_ hold tag_ + 1 + position; anything else
  // is stale (written by an earlier run). Each position is inserted at most once (the bitmap
  // for the base, a high-water mark for the body), so chains never loop while base + body
  // fits the chain table (2^22 positions); beyond it positions share slots and a walk may
  // revisit one, which costs search quality, never correctness (every candidate's bytes are
  // compared, and walks are bounded by their depth).
  std::vector<uint32_t> head_, chain_;
  uint32_t head_bits_ = 0, chain_mask_ = 0;
  uint32_t tag_ = 0, span_ = 0;
  std::vector<uint64_t> base_indexed_;  // One bit per 64-byte block of the base.
  uint32_t body_indexed_to_ = 0;

  // Parse state.
  Prices prices_;
  Reps reps_{};
  uint32_t lit_start_ = 0;
  std::vector<Node> nodes_;
  std::vector<uint32_t> path_;
  Candidate reps_found_[3];
  int nreps_ = 0;
  Candidate raw_[64];
  Candidate front_[64];
  int nfront_ = 0;
  uint32_t longest_ = 0;
  Candidate longest_cand_{};
  // A match from the sparse index that also runs back before the current position.
  Candidate far_{};
  uint32_t far_back_ = 0;
};

}  // namespace coilgun::proto
