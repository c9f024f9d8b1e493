#include "proto/delta_matcher.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace coilgun::proto {
namespace {

// Effort levels. Level 5 is the default; tests/bench/RESULTS.md records how each knob trades
// ratio for speed on the corpus.
constexpr MatcherParams kMatcherEfforts[] = {
    // min_anchor, chain_depth, sufficient, skip, body_window, max_parse_gap, parse_budget_pct
    {64, 2, 24, 8, 0, 512, 10},                // 1
    {96, 4, 24, 8, 0, 1024, 20},               // 2
    {128, 4, 32, 10, 0, 2048, 30},             // 3
    {128, 6, 32, 12, 0, 4096, 40},             // 4
    {128, 8, 32, 12, 0, 4096, 50},             // 5 (default)
    {128, 8, 48, 16, 1024, 8192, 60},          // 6
    {128, 16, 64, 24, 4096, 16384, 80},        // 7
    {192, 16, 96, 32, 16384, 65536, 100},      // 8
    {256, 32, 256, 64, 65536, 1u << 30, 100},  // 9
};

constexpr uint32_t kOptWindow = 2048;  // Positions in one dynamic-program window.
constexpr uint32_t kInf = UINT32_MAX;
constexpr uint32_t kMaxHeadBits = 17;
constexpr uint32_t kMaxChainBits = 22;
constexpr uint32_t kRefreshEvery = 16;  // Sequences between price-table refreshes.
constexpr uint32_t kGreedyDepth = 2;    // Chain depth of the greedy parse.
constexpr uint32_t kMaxBack = 1024;     // Longest backward extension of an anchor.

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint32_t highbit(uint32_t v) { return 31 - static_cast<uint32_t>(__builtin_clz(v)); }
// Length of the common suffix of the bytes before a and before b, reading at most |limit|.
inline uint32_t common_suffix(const uint8_t* a, const uint8_t* b, uint32_t limit) {
  uint32_t n = 0;
  while (n + 8 <= limit) {
    const uint64_t x = load64(a - n - 8) ^ load64(b - n - 8);
    if (x != 0) return n + static_cast<uint32_t>(__builtin_clzll(x) >> 3);
    n += 8;
  }
  while (n < limit && a[-1 - static_cast<int64_t>(n)] == b[-1 - static_cast<int64_t>(n)]) ++n;
  return n;
}

inline uint32_t hash8(uint64_t v, uint32_t bits) {
  return static_cast<uint32_t>((v * 0x9E3779B185EBCA87ull) >> (64 - bits));
}
inline uint32_t hash4(uint32_t v, uint32_t bits) { return (v * 2654435761u) >> (32 - bits); }
inline uint32_t ceil_log2(uint64_t v) {
  uint32_t b = 0;
  while ((uint64_t{1} << b) < v) ++b;
  return b;
}

// Length of the common prefix of a and b, reading at most |limit| bytes of each.
inline uint32_t common_prefix(const uint8_t* a, const uint8_t* b, uint32_t limit) {
  uint32_t i = 0;
  while (i + 8 <= limit) {
    uint64_t x = load64(a + i) ^ load64(b + i);
    if (x != 0) return i + static_cast<uint32_t>(__builtin_ctzll(x) >> 3);
    i += 8;
  }
  while (i < limit && a[i] == b[i]) ++i;
  return i;
}

// RFC 8878 §3.1.1.3.2.1.1: literal-length and match-length codes: baseline and extra bits.
constexpr uint32_t kLLBase[36] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,   9,   10,  11,   12,   13,   14,   15,    16,    18,
    20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
constexpr uint32_t kLLBits[36] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0,  0,  0,  0,  1,  1,
                                  1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
constexpr uint32_t kMLBase[53] = {
    3,  4,  5,  6,  7,  8,  9,  10,  11,  12,  13,   14,   15,   16,   17,    18,    19,   20,
    21, 22, 23, 24, 25, 26, 27, 28,  29,  30,  31,   32,   33,   34,   35,    37,    39,   41,
    43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771, 65539};
constexpr uint32_t kMLBits[53] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0,  0,  0,  0,  0,  0, 0,
                                  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0,  0,  0,  1,  1,  1, 1,
                                  2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

struct CodeTables {
  uint8_t ll[64];
  uint8_t ml[131];
  constexpr CodeTables() : ll(), ml() {
    for (uint32_t v = 0; v < 64; ++v) {
      uint32_t c = 0;
      while (c + 1 < 36 && kLLBase[c + 1] <= v) ++c;
      ll[v] = static_cast<uint8_t>(c);
    }
    for (uint32_t v = 3; v < 131; ++v) {
      uint32_t c = 0;
      while (c + 1 < 53 && kMLBase[c + 1] <= v) ++c;
      ml[v] = static_cast<uint8_t>(c);
    }
  }
};
constexpr CodeTables kCodes;

// Codes top out at 35 and 52 (lengths up to 128 KiB, a block). Longer runs are split at block
// boundaries by zstd; for pricing they count as the largest code.
inline uint32_t ll_code(uint32_t ll) {
  return ll < 64 ? kCodes.ll[ll] : std::min<uint32_t>(highbit(ll) + 19, 35);
}
inline uint32_t ml_code(uint32_t ml) {
  return ml < 131 ? kCodes.ml[ml] : std::min<uint32_t>(highbit(ml - 3) + 36, 52);
}

// About 256 * (log2(x + 1) + 1): integer part from the high bit, fraction linear in between.
// Prices are differences of weights, so the constant cancels.
inline uint32_t weight(uint64_t x) {
  x += 1;
  const uint32_t h = 63 - static_cast<uint32_t>(__builtin_clzll(x));
  return (h << 8) + static_cast<uint32_t>(h >= 8 ? x >> (h - 8) : x << (8 - h));
}

// RFC 8878 §3.1.1.5: the offset value a match is coded with (1..3: repeat codes; else offset
// + 3), given the repeat offsets and whether the sequence has no literals.
inline uint32_t offset_base(uint32_t off, const DeltaMatcher::Reps& reps, bool ll0) {
  if (!ll0 && off == reps.r[0]) return 1;
  if (off == reps.r[1]) return 2 - ll0;
  if (off == reps.r[2]) return 3 - ll0;
  if (ll0 && off == reps.r[0] - 1) return 3;
  return off + 3;
}

inline void update_reps(DeltaMatcher::Reps& reps, uint32_t off_base, bool ll0, uint32_t off) {
  if (off_base > 3) {
    reps.r[2] = reps.r[1];
    reps.r[1] = reps.r[0];
    reps.r[0] = off;
    return;
  }
  const uint32_t code = off_base - 1 + ll0;
  if (code == 0) return;
  const uint32_t cur = code == 3 ? reps.r[0] - 1 : reps.r[code];
  if (code >= 2) reps.r[2] = reps.r[1];
  reps.r[1] = reps.r[0];
  reps.r[0] = cur;
}

}  // namespace

const MatcherParams& matcher_params_for_effort(int effort) {
  effort = std::clamp(effort, 1, 9);
  return kMatcherEfforts[effort - 1];
}

void configure_sequence_cctx(ZSTD_CCtx* c) {
  // The entropy stage only: our sequences replace zstd's match finder. The smallest tables
  // keep the context small; nothing is ever searched.
  ZSTD_CCtx_setParameter(c, ZSTD_c_strategy, ZSTD_fast);
  ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, ZSTD_HASHLOG_MIN);
  ZSTD_CCtx_setParameter(c, ZSTD_c_chainLog, ZSTD_CHAINLOG_MIN);
  // Matches may be 3 bytes; it also sizes zstd's per-block sequence store for them.
  ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, 3);
  ZSTD_CCtx_setParameter(c, ZSTD_c_blockDelimiters, ZSTD_sf_noBlockDelimiters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);  // The body id checks the result (delta.h).
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
}

void build_anchor_index(std::span<const uint8_t> base, std::vector<uint32_t>& table, int& bits) {
  const size_t samples = base.size() < 8 ? 1 : (base.size() - 8) / kAnchorSampleStep + 1;
  bits = static_cast<int>(std::max<uint32_t>(6, ceil_log2(samples * 2)));
  table.assign(size_t{1} << bits, 0);
  if (base.size() < 8) return;
  for (size_t p = 0; p + 8 <= base.size(); p += kAnchorSampleStep) {
    table[hash8(load64(base.data() + p), static_cast<uint32_t>(bits))] =
        static_cast<uint32_t>(p + 1);
  }
}

// ---- Prices -------------------------------------------------------------------------------

void DeltaMatcher::Prices::init(const uint32_t literal_histogram[256]) {
  // Literal statistics start from the bytes the parse will see; code statistics from zstd's
  // own starting shapes (short literal runs and offsets near the repeat codes are common).
  static constexpr uint32_t kBaseLL[36] = {4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                           1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  static constexpr uint32_t kBaseOF[32] = {6, 2, 1, 1, 2, 3, 4, 4, 4, 3, 2, 1, 1, 1, 1, 1,
                                           1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  lit_sum_ = 0;
  for (int c = 0; c < 256; ++c) {
    lit_freq_[c] = 1 + literal_histogram[c];
    lit_sum_ += lit_freq_[c];
  }
  ll_sum_ = ml_sum_ = of_sum_ = 0;
  for (int c = 0; c < 36; ++c) ll_sum_ += (ll_freq_[c] = kBaseLL[c]);
  for (int c = 0; c < 53; ++c) ml_sum_ += (ml_freq_[c] = 1);
  for (int c = 0; c < 32; ++c) of_sum_ += (of_freq_[c] = kBaseOF[c]);
  refresh();
}

void DeltaMatcher::Prices::add_sequence(const uint8_t* literals, uint32_t lit_len,
                                        uint32_t off_base, uint32_t match_len) {
  if (lit_sum_ > (uint64_t{1} << 40)) rescale();
  for (uint32_t k = 0; k < lit_len; ++k) lit_freq_[literals[k]] += 2;
  lit_sum_ += 2 * lit_len;
  ++ll_freq_[ll_code(lit_len)];
  ++ll_sum_;
  ++ml_freq_[ml_code(match_len)];
  ++ml_sum_;
  ++of_freq_[highbit(off_base)];
  ++of_sum_;
  ++pending_;
}

// Halves every frequency (keeping each at least 1): sums stay far from overflow on endless
// input while the shape of the statistics is kept.
void DeltaMatcher::Prices::rescale() {
  auto halve = [](uint64_t* freq, int count, uint64_t& sum) {
    sum = 0;
    for (int c = 0; c < count; ++c) sum += (freq[c] = freq[c] / 2 + 1);
  };
  halve(lit_freq_, 256, lit_sum_);
  halve(ll_freq_, 36, ll_sum_);
  halve(ml_freq_, 53, ml_sum_);
  halve(of_freq_, 32, of_sum_);
}

void DeltaMatcher::Prices::refresh_if_stale() {
  if (pending_ >= kRefreshEvery) refresh();
}

void DeltaMatcher::Prices::refresh() {
  pending_ = 0;
  const uint32_t lw = weight(lit_sum_);
  for (int c = 0; c < 256; ++c) lit_price_[c] = lw - weight(lit_freq_[c]);
  const uint32_t llw = weight(ll_sum_);
  for (int c = 0; c < 36; ++c) ll_price_[c] = llw - weight(ll_freq_[c]) + kLLBits[c] * 256;
  const uint32_t mlw = weight(ml_sum_);
  for (int c = 0; c < 53; ++c) ml_price_[c] = mlw - weight(ml_freq_[c]) + kMLBits[c] * 256;
  const uint32_t ofw = weight(of_sum_);
  for (int c = 0; c < 32; ++c) of_price_[c] = ofw - weight(of_freq_[c]) + c * 256;
}

uint32_t DeltaMatcher::Prices::lit_len(uint32_t ll) const { return ll_price_[ll_code(ll)]; }
uint32_t DeltaMatcher::Prices::match_len(uint32_t ml) const { return ml_price_[ml_code(ml)]; }
uint32_t DeltaMatcher::Prices::offset(uint32_t off_base) const {
  return of_price_[highbit(off_base)];
}

// ---- Run ----------------------------------------------------------------------------------

DeltaMatcher::DeltaMatcher() : nodes_(kOptWindow + 1) {}

bool DeltaMatcher::run(const PreparedBase& base, std::span<const uint8_t> body,
                       const MatcherParams& params, std::vector<ZSTD_Sequence>& seqs) {
  assert(base.bytes().size() >= 8 && body.size() >= 8);
  assert(base.bytes().size() + body.size() <= kMaxDeltaSpan);
  prepared_ = &base;
  base_ = base.bytes().data();
  body_ = body.data();
  m_ = static_cast<uint32_t>(base.bytes().size());
  n_ = static_cast<uint32_t>(body.size());
  p_ = params;
  // Knobs from outside are clamped to values the loops below rely on to make progress.
  p_.min_anchor = std::max(p_.min_anchor, 16u);
  p_.sufficient = std::max(p_.sufficient, 8u);
  p_.skip = std::max(p_.skip, 1u);
  seqs_ = &seqs;
  seqs.clear();

  find_anchors();
  if ((matched_ + short_matched_) * 10 < n_) return false;
  parse_budget_ = uint64_t{n_} * p_.parse_budget_pct / 100;

  init_prices();
  begin_index();
  reps_ = Reps{{1, 4, 8}};  // RFC 8878 §3.1.1.5: a frame starts with repeat offsets 1, 4, 8.
  lit_start_ = 0;
  uint32_t pos = 0;
  for (size_t k = 0; k <= anchors_.size(); ++k) {
    const uint32_t gap_end = k < anchors_.size() ? anchors_[k].body_pos : n_;
    if (gap_end > pos) {
      index_replaced(k, gap_end - pos);
      index_body(pos > p_.body_window ? pos - p_.body_window : 0, pos);
      const uint32_t len = gap_end - pos;
      if (len <= p_.max_parse_gap && len <= parse_budget_) {
        parse_budget_ -= len;
        parse_gap(pos, gap_end);
      } else {
        parse_gap_greedy(pos, gap_end);
      }
    }
    if (k < anchors_.size()) {
      const Anchor& a = anchors_[k];
      emit(a.body_pos, m_ + a.body_pos - a.base_pos, a.len);
      pos = a.body_pos + a.len;
    }
  }
  return true;
}

void DeltaMatcher::find_anchors() {
  anchors_.clear();
  matched_ = 0;
  short_matched_ = 0;
  const std::vector<uint32_t>& table = prepared_->table_;
  const uint32_t bits = static_cast<uint32_t>(prepared_->table_bits_);
  uint32_t recent[3] = {0, 0, 0};  // Offsets of the last three anchors, newest first.
  uint32_t i = 0, last_end = 0, last_hit = 0;
  while (i + 8 <= n_) {
    const uint64_t gram = load64(body_ + i);
    uint32_t best_len = 0, best_body = 0, best_base = 0, best_ahead = 0;
    // A match may start before i, but not before the last anchor, nor more than kMaxBack
    // bytes back (which bounds the work per position on bodies full of short repeats).
    const uint32_t floor = std::max(last_end, i > kMaxBack ? i - kMaxBack : 0);
    auto consider = [&](uint32_t s) {
      if (s + 8 > m_ || load64(base_ + s) != gram) return;
      const uint32_t ahead =
          8 + common_prefix(body_ + i + 8, base_ + s + 8, std::min(n_ - i, m_ - s) - 8);
      best_ahead = std::max(best_ahead, ahead);
      const uint32_t back = common_suffix(body_ + i, base_ + s, std::min(i - floor, s));
      if (ahead + back > best_len) {
        best_len = ahead + back;
        best_body = i - back;
        best_base = s - back;
      }
    };
    for (uint32_t off : recent) {
      if (off != 0 && m_ + i >= off && m_ + i - off < m_) consider(m_ + i - off);
    }
    const uint32_t slot = table[hash8(gram, bits)];
    if (slot != 0) consider(slot - 1);

    if (best_len >= p_.min_anchor) {
      anchors_.push_back({best_body, best_base, best_len});
      matched_ += best_len;
      last_end = best_body + best_len;
      const uint32_t off = m_ + best_body - best_base;
      if (off != recent[0]) {
        if (off == recent[1]) {
          std::swap(recent[0], recent[1]);
        } else {
          recent[2] = recent[1];
          recent[1] = recent[0];
          recent[0] = off;
        }
      }
      i = last_end;
      continue;
    }
    // A shorter match runs to i + best_ahead: searching again inside it would extend the same
    // copy over and over (quadratic on data where short matches abound). A long match that
    // starts inside it is still found near its end and extended back to its start.
    if (best_ahead > 16) {
      short_matched_ += best_ahead - 8;
      i += best_ahead - 8;
      last_hit = i;
      continue;
    }
    // Search less densely the longer nothing matches: a body unlike its base costs little.
    i += 1 + ((i - std::max(last_end, last_hit)) >> 8);
  }
  gap_total_ = n_ - static_cast<uint32_t>(matched_);
}

void DeltaMatcher::init_prices() {
  uint32_t hist[256] = {};
  uint32_t pos = 0;
  for (size_t k = 0; k <= anchors_.size(); ++k) {
    const uint32_t end = k < anchors_.size() ? anchors_[k].body_pos : n_;
    for (uint32_t q = pos; q < end; ++q) ++hist[body_[q]];
    if (k < anchors_.size()) pos = anchors_[k].body_pos + anchors_[k].len;
  }
  prices_.init(hist);
}

// ---- Chain index --------------------------------------------------------------------------

void DeltaMatcher::begin_index() {
  const uint32_t span = m_ + n_;
  // Size the head table for what this run will insert, so small runs stay in cache.
  const uint64_t expect = std::min<uint64_t>(span, uint64_t{gap_total_} * 2 + p_.body_window);
  head_bits_ = std::clamp<uint32_t>(ceil_log2(expect), 10, kMaxHeadBits);
  if (head_.empty()) head_.assign(size_t{1} << kMaxHeadBits, 0);
  const uint32_t chain_bits = std::min(ceil_log2(span), kMaxChainBits);
  if (chain_.size() < (size_t{1} << chain_bits)) chain_.resize(size_t{1} << chain_bits);
  chain_mask_ = (uint32_t{1} << chain_bits) - 1;
  // Move the tag past every value the previous run could have written.
  if (tag_ > UINT32_MAX - span_ - span - 2) {
    std::fill(head_.begin(), head_.end(), 0);
    tag_ = 0;
  } else {
    tag_ += span_ + 1;
  }
  span_ = span;
  base_indexed_.assign(m_ / 4096 + 1, 0);
  body_indexed_to_ = 0;
}

inline void DeltaMatcher::insert(uint32_t v) {
  const uint32_t h = hash4(load32(vptr(v)), head_bits_);
  chain_[v & chain_mask_] = head_[h];
  head_[h] = tag_ + 1 + v;
}

// Indexes the base bytes a gap most likely rewrote: as many as the gap is long, after the
// copy of the anchor before it and before the copy of the anchor after it.
void DeltaMatcher::index_replaced(size_t k, uint32_t gap_len) {
  if (k > 0) {
    const uint32_t b = anchors_[k - 1].base_pos + anchors_[k - 1].len;
    index_base(b, static_cast<uint32_t>(std::min<uint64_t>(m_, uint64_t{b} + gap_len)));
  }
  if (k < anchors_.size()) {
    const uint32_t b = anchors_[k].base_pos;
    index_base(b > gap_len ? b - gap_len : 0, b);
  }
}

void DeltaMatcher::index_base(uint32_t from, uint32_t to) {
  to = std::min(to, m_ - 3);
  if (from >= to) return;
  for (uint32_t block = from >> 6; block <= (to - 1) >> 6; ++block) {
    uint64_t& word = base_indexed_[block >> 6];
    const uint64_t bit = uint64_t{1} << (block & 63);
    if (word & bit) continue;
    word |= bit;
    const uint32_t end = std::min(m_ - 3, (block + 1) << 6);
    for (uint32_t v = block << 6; v < end; ++v) insert(v);
  }
}

// Inserts body positions [max(from, what is already in), to).
void DeltaMatcher::index_body(uint32_t from, uint32_t to) {
  from = std::max(from, body_indexed_to_);
  to = std::min(to, n_ - 3);
  for (uint32_t i = from; i < to; ++i) insert(m_ + i);
  body_indexed_to_ = std::max(body_indexed_to_, to);
}

// ---- Optimal parse of a gap ---------------------------------------------------------------

void DeltaMatcher::find_candidates(uint32_t i, uint32_t limit, const Reps& reps, bool ll0,
                                   uint32_t depth) {
  nreps_ = 0;
  nfront_ = 0;
  longest_ = 0;
  if (limit < 3) return;
  const uint32_t cur = m_ + i;
  const uint8_t* ip = body_ + i;

  // Repeat offsets: with no literals before the match the codes shift (RFC 8878 §3.1.1.5).
  const uint32_t rep_offs[3] = {ll0 ? reps.r[0] - 1 : reps.r[0], reps.r[1], reps.r[2]};
  uint32_t rep_longest = 0;
  for (uint32_t off : rep_offs) {
    if (off == 0 || off > cur) continue;
    bool dup = false;
    for (int k = 0; k < nreps_; ++k) dup |= reps_found_[k].off == off;
    if (dup) continue;
    const uint32_t s = cur - off;
    const uint32_t len = common_prefix(ip, vptr(s), std::min(limit, vend(s) - s));
    if (len >= 3) {
      reps_found_[nreps_++] = {off, len};
      if (len > longest_) {
        longest_ = len;
        longest_cand_ = {off, len};
      }
      rep_longest = std::max(rep_longest, len);
    }
  }
  if (limit < 4 || longest_ >= p_.sufficient) return;

  // Hash chain: collect matches, then keep the frontier (for each length the nearest copy).
  int nraw = 0;
  const uint32_t first = load32(ip);
  uint32_t x = head_[hash4(first, head_bits_)];
  for (; depth > 0 && x > tag_ && x - tag_ - 1 < span_; --depth) {
    const uint32_t v = x - tag_ - 1;
    x = chain_[v & chain_mask_];
    if (v >= cur) continue;
    const uint8_t* sp = vptr(v);
    const uint32_t avail = std::min(limit, vend(v) - v);
    if (avail < 4 || load32(sp) != first) continue;
    const uint32_t len = 4 + common_prefix(ip + 4, sp + 4, avail - 4);
    if (len <= rep_longest) continue;
    raw_[nraw++] = {cur - v, len};
    if (len > longest_) {
      longest_ = len;
      longest_cand_ = {cur - v, len};
    }
    if (len >= p_.sufficient || nraw == 64) break;
  }
  for (int k = 1; k < nraw; ++k) {  // Insertion sort by offset: a handful of entries.
    const Candidate c = raw_[k];
    int at = k;
    while (at > 0 && raw_[at - 1].off > c.off) {
      raw_[at] = raw_[at - 1];
      --at;
    }
    raw_[at] = c;
  }
  uint32_t best = rep_longest;
  for (int k = 0; k < nraw; ++k) {
    if (raw_[k].len > best) {
      best = raw_[k].len;
      front_[nfront_++] = raw_[k];
    }
  }
}

void DeltaMatcher::relax(uint32_t j, const Candidate& c, uint32_t min_len, uint32_t window_end) {
  const uint32_t max_len = std::min(c.len, window_end - j);
  if (max_len < min_len) return;
  const Node& from = nodes_[j];
  const bool ll0 = from.lit_len == 0;
  const uint32_t ob = offset_base(c.off, from.reps, ll0);
  Reps reps = from.reps;
  update_reps(reps, ob, ll0, c.off);
  const uint32_t base_cost = from.cost + prices_.offset(ob) + prices_.lit_len(0);
  for (uint32_t l = min_len; l <= max_len; ++l) {
    const uint32_t cost = base_cost + prices_.match_len(l);
    Node& t = nodes_[j + l];
    if (cost < t.cost) {
      t.cost = cost;
      t.lit_len = 0;
      t.from = j;
      t.off = c.off;
      t.len = l;
      t.reps = reps;
    }
  }
}

void DeltaMatcher::relax_matches(uint32_t j, uint32_t window_end) {
  uint32_t rep_longest = 0;
  for (int k = 0; k < nreps_; ++k) {
    relax(j, reps_found_[k], 3, window_end);
    rep_longest = std::max(rep_longest, reps_found_[k].len);
  }
  uint32_t prev = std::max<uint32_t>(3, rep_longest);
  for (int k = 0; k < nfront_; ++k) {
    relax(j, front_[k], prev + 1, window_end);
    prev = front_[k].len;
  }
  // Relaxing from an earlier node may only reach nodes past j: those up to j are final.
  if (far_.len != 0) {
    relax(j - far_back_, far_, std::max({4u, far_back_ + 1, far_.len / 2}), window_end);
  }
}

// The sparse index reaches the whole base: a match of at least kAnchorSampleStep + 7 bytes
// from anywhere is found at some position inside it and extended back to its start, at most
// |max_back| bytes. A hit that starts here competes through longest_cand_ and far_; one that
// starts earlier is left in far_ with far_back_ set.
void DeltaMatcher::find_far_candidate(uint32_t i, uint32_t limit, uint32_t max_back) {
  far_ = {0, 0};
  far_back_ = 0;
  if (limit < 8) return;
  const uint64_t gram = load64(body_ + i);
  const uint32_t bits = static_cast<uint32_t>(prepared_->table_bits_);
  const uint32_t slot = prepared_->table_[hash8(gram, bits)];
  if (slot == 0) return;
  const uint32_t s = slot - 1;
  if (s + 8 > m_ || load64(base_ + s) != gram) return;
  const uint32_t ahead =
      8 + common_prefix(body_ + i + 8, base_ + s + 8, std::min(limit, m_ - s) - 8);
  uint32_t back = 0;
  while (back < max_back && back < s && body_[i - back - 1] == base_[s - back - 1]) ++back;
  const uint32_t off = m_ + i - s;
  if (back != 0) {
    far_ = {off, ahead + back};
    far_back_ = back;
    return;
  }
  if (ahead <= longest_) return;  // The chain or a repeat offset found as good a copy.
  longest_ = ahead;
  longest_cand_ = {off, ahead};
  far_ = longest_cand_;
}

void DeltaMatcher::parse_gap(uint32_t gap_begin, uint32_t gap_end) {
  uint32_t pos = gap_begin;
  while (pos < gap_end) {
    prices_.refresh_if_stale();
    const uint32_t end = std::min(gap_end - pos, kOptWindow);
    for (uint32_t j = 0; j <= end; ++j) nodes_[j].cost = kInf;
    Node& start = nodes_[0];
    start.lit_len = pos - lit_start_;
    start.cost = prices_.lit_len(start.lit_len);
    start.reps = reps_;
    start.len = 0;

    uint32_t stop = end, skip_to = 0;
    Candidate take{0, 0};
    for (uint32_t j = 0; j < end; ++j) {
      const Node& nd = nodes_[j];
      {  // One more literal.
        const uint32_t cost = nd.cost + prices_.literal(body_[pos + j]) +
                              prices_.lit_len(nd.lit_len + 1) - prices_.lit_len(nd.lit_len);
        Node& t = nodes_[j + 1];
        if (cost < t.cost) {
          t.cost = cost;
          t.lit_len = nd.lit_len + 1;
          t.from = j;
          t.len = 0;
          t.reps = nd.reps;
        }
      }
      if (j < skip_to) continue;
      index_body(0, pos + j);
      find_candidates(pos + j, gap_end - pos - j, nd.reps, nd.lit_len == 0, p_.chain_depth);
      find_far_candidate(pos + j, gap_end - pos - j, j);
      if (far_back_ != 0 && far_.len >= p_.sufficient) {  // Long, and it began earlier.
        stop = j - far_back_;
        take = far_;
        break;
      }
      if (longest_ >= p_.sufficient) {  // Long enough: take it, and parse on after it.
        stop = j;
        take = longest_cand_;
        break;
      }
      relax_matches(j, end);
      if (longest_ >= p_.skip) skip_to = j + longest_ - 1;
    }
    emit_path(pos, stop);
    pos += stop;
    if (take.len != 0) {
      emit(pos, take.off, take.len);
      pos += take.len;
    }
  }
}

// New content: take the longest match found at each position, and search less densely the
// longer nothing matches, so a gap of incompressible bytes costs little.
void DeltaMatcher::parse_gap_greedy(uint32_t gap_begin, uint32_t gap_end) {
  constexpr uint32_t kBackfill = 64;  // Body positions skipped over that are still indexed.
  uint32_t i = gap_begin, misses = 0;
  while (i + 4 <= gap_end) {
    if (i > body_indexed_to_ + kBackfill) body_indexed_to_ = i - kBackfill;
    index_body(0, i);
    const uint32_t limit = gap_end - i;
    find_candidates(i, limit, reps_, i == lit_start_, kGreedyDepth);
    find_far_candidate(i, limit, i - lit_start_);
    if (far_back_ != 0 && far_.len > longest_) {
      emit(i - far_back_, far_.off, far_.len);
      i += far_.len - far_back_;
      misses = 0;
      continue;
    }
    if (longest_ >= 3) {  // Only repeat offsets yield 3-byte matches (the chain needs 4).
      emit(i, longest_cand_.off, longest_cand_.len);
      i += longest_cand_.len;
      misses = 0;
      continue;
    }
    i += 1 + (++misses >> 6);
  }
}

void DeltaMatcher::emit_path(uint32_t pos, uint32_t stop) {
  path_.clear();
  for (uint32_t j = stop; j > 0; j = nodes_[j].from) {
    if (nodes_[j].len != 0) path_.push_back(j);
  }
  for (auto it = path_.rbegin(); it != path_.rend(); ++it) {
    const Node& nd = nodes_[*it];
    emit(pos + nd.from, nd.off, nd.len);
  }
}

void DeltaMatcher::emit(uint32_t body_pos, uint32_t offset, uint32_t match_len) {
  const uint32_t lit_len = body_pos - lit_start_;
  const bool ll0 = lit_len == 0;
  const uint32_t ob = offset_base(offset, reps_, ll0);
  update_reps(reps_, ob, ll0, offset);
  prices_.add_sequence(body_ + lit_start_, lit_len, ob, match_len);
  ZSTD_Sequence s{};
  s.offset = offset;
  s.litLength = lit_len;
  s.matchLength = match_len;
  seqs_->push_back(s);
  lit_start_ = body_pos + match_len;
}

}  // namespace coilgun::proto
