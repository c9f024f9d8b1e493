// coilgun-bench-delta: the delta engine on real successive versions of pages.
//
// Sends every version of every series of a corpus (layout: ../shared/corpus/README.md) against
// its predecessor through the real codec, checks every round trip byte for byte, and prints
// per series and in total what each alternative would send and how fast ours runs next to
// plain zstd -3 on the same bytes. Exits 1 on any mismatch, 2 on bad usage or input.
//
//   coilgun-bench-delta [CORPUS_DIR] [--level N] [--repeat R] [--json] [--no-peers]
//
// "delta" is the engine's zstd frame for each body, the same kind of object as the level-19
// limit (`zstd -19 --no-check --patch-from=BASE BODY`, no frame checksum in either: the body
// id checks the result); "payload" adds the 33-byte header the tunnel carries with it (kind,
// base id, body id).
//
// Timing: each pair is coded --repeat times (default 3) by us and by plain zstd -3, interleaved,
// and the fastest run of each counts, which keeps a noisy machine from favouring either side.

#define ZSTD_STATIC_LINKING_ONLY
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "proto/delta.h"

namespace fs = std::filesystem;
using coilgun::proto::DeltaDecoder;
using coilgun::proto::DeltaEncoder;
using coilgun::proto::PreparedBase;
using coilgun::proto::VersionId;
using Bytes = std::vector<uint8_t>;

namespace {

struct Options {
  std::string corpus;
  int level = coilgun::proto::EncodeOptions{}.effort;
  int repeat = 3;
  bool json = false;
  bool peers = true;  // Measure gzip, xdelta3 and the level-19 limit too.
  std::optional<coilgun::proto::MatcherParams> matcher;
};

struct Series {
  std::string name;
  std::vector<fs::path> files;
};

struct Totals {
  size_t pairs = 0, original = 0, gzip6 = 0, zstd3 = 0, xdelta3 = 0, limit = 0;
  size_t delta = 0;    // The engine's zstd frames: what compares with the level-19 limit.
  size_t payload = 0;  // delta plus the payload header (kind, base id, body id).
  double enc_s = 0, dec_s = 0, z3c_s = 0, z3d_s = 0;

  void add(const Totals& o) {
    pairs += o.pairs;
    original += o.original;
    gzip6 += o.gzip6;
    zstd3 += o.zstd3;
    xdelta3 += o.xdelta3;
    limit += o.limit;
    delta += o.delta;
    payload += o.payload;
    enc_s += o.enc_s;
    dec_s += o.dec_s;
    z3c_s += o.z3c_s;
    z3d_s += o.z3d_s;
  }
  double mbps(double seconds) const { return seconds > 0 ? original / seconds / 1e6 : 0; }
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "coilgun-bench-delta: %s\n", msg.c_str());
  std::exit(2);
}

Bytes read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) die("cannot read " + p.string());
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Series in manifest order when there is a manifest, else every directory, files sorted.
std::vector<Series> load_corpus(const fs::path& dir) {
  std::vector<Series> out;
  const fs::path manifest = dir / "manifest.json";
  if (fs::exists(manifest)) {
    std::ifstream f(manifest);
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(f);
      for (const auto& s : m.at("series")) {
        Series series{s.at("name").get<std::string>(), {}};
        for (const auto& v : s.at("versions")) {
          series.files.push_back(dir / series.name / v.at("file").get<std::string>());
        }
        out.push_back(std::move(series));
      }
    } catch (const std::exception& e) {
      die("bad manifest " + manifest.string() + ": " + e.what());
    }
    return out;
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_directory()) continue;
    Series series{entry.path().filename().string(), {}};
    for (const auto& f : fs::directory_iterator(entry.path())) {
      if (f.is_regular_file()) series.files.push_back(f.path());
    }
    std::sort(series.files.begin(), series.files.end());
    out.push_back(std::move(series));
  }
  std::sort(out.begin(), out.end(),
            [](const Series& a, const Series& b) { return a.name < b.name; });
  return out;
}

size_t gzip6_size(const Bytes& body) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("zlib init");
  Bytes out(deflateBound(&z, body.size()) + 64);
  z.next_in = const_cast<Bytes::value_type*>(body.data());
  z.avail_in = static_cast<uInt>(body.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) die("zlib deflate");
  const size_t n = z.total_out;
  deflateEnd(&z);
  return n;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The size of `xdelta3 -e -9 -s BASE NEW`, run now.
size_t xdelta3_size(const fs::path& base, const fs::path& body) {
  const std::string cmd =
      "xdelta3 -e -9 -c -s " + shell_quote(base.string()) + " " + shell_quote(body.string());
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) die("cannot run xdelta3");
  size_t n = 0;
  char buf[65536];
  for (size_t r; (r = fread(buf, 1, sizeof buf, p)) > 0;) n += r;
  if (pclose(p) != 0) die("xdelta3 failed (is it installed? deploy/install-deps.sh)");
  return n;
}

// zstd -19 with the base as prefix and a window covering both: the practical limit.
size_t limit_size(ZSTD_CCtx* c, const Bytes& base, const Bytes& body, Bytes& scratch) {
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  int wlog = ZSTD_WINDOWLOG_MIN;
  while ((size_t{1} << wlog) < base.size() + body.size()) ++wlog;
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 19);
  ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, wlog);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_refPrefix(c, base.data(), base.size());
  scratch.resize(ZSTD_compressBound(body.size()));
  const size_t r = ZSTD_compress2(c, scratch.data(), scratch.size(), body.data(), body.size());
  if (ZSTD_isError(r)) die("zstd -19 failed");
  return r;
}

Totals run_series(const Series& s, const Options& opt, DeltaEncoder& enc, DeltaDecoder& dec,
                  ZSTD_CCtx* z3, ZSTD_DCtx* z3d, ZSTD_CCtx* z19, int& mismatches) {
  Totals t;
  Bytes base = s.files.empty() ? Bytes{} : read_file(s.files[0]);
  Bytes payload, rebuilt, plain, plain_back, scratch;
  for (size_t i = 1; i < s.files.size(); ++i) {
    Bytes body = read_file(s.files[i]);
    const VersionId base_id = VersionId::of(base);
    t.pairs++;
    t.original += body.size();
    if (opt.peers) {
      t.gzip6 += gzip6_size(body);
      t.xdelta3 += xdelta3_size(s.files[i - 1], s.files[i]);
      t.limit += limit_size(z19, base, body, scratch);
    }

    double best_enc = 1e9, best_dec = 1e9, best_z3c = 1e9, best_z3d = 1e9;
    for (int r = 0; r < opt.repeat; ++r) {
      double t0 = now();
      PreparedBase prepared(base, base_id);
      const coilgun::Status es = enc.encode(&prepared, body, VersionId::of(body), payload);
      double t1 = now();
      if (!es.ok()) die("encode failed: " + es.to_string());
      best_enc = std::min(best_enc, t1 - t0);

      t0 = now();
      auto header = coilgun::proto::parse_delta(payload);
      coilgun::Status ds =
          header.ok() ? dec.decode(*header, std::span<const uint8_t>(base), body.size(), rebuilt)
                      : header.status();
      t1 = now();
      if (!ds.ok() || rebuilt != body) {
        std::fprintf(stderr, "MISMATCH %s: %s -> %s: %s\n", s.name.c_str(),
                     s.files[i - 1].filename().c_str(), s.files[i].filename().c_str(),
                     ds.ok() ? "bytes differ" : ds.to_string().c_str());
        ++mismatches;
        break;
      }
      best_dec = std::min(best_dec, t1 - t0);

      plain.resize(ZSTD_compressBound(body.size()));
      t0 = now();
      const size_t zn =
          ZSTD_compressCCtx(z3, plain.data(), plain.size(), body.data(), body.size(), 3);
      t1 = now();
      best_z3c = std::min(best_z3c, t1 - t0);
      plain.resize(zn);
      plain_back.resize(body.size());
      t0 = now();
      const size_t zd = ZSTD_decompressDCtx(z3d, plain_back.data(), plain_back.size(), plain.data(),
                                            plain.size());
      t1 = now();
      if (zd != body.size()) die("zstd -3 round trip failed");
      best_z3d = std::min(best_z3d, t1 - t0);
    }
    t.payload += payload.size();
    t.delta +=
        payload.size() - (payload[0] == static_cast<uint8_t>(coilgun::proto::DeltaKind::kDelta)
                              ? coilgun::proto::kDeltaHeaderDelta
                              : coilgun::proto::kDeltaHeaderFull);
    t.zstd3 += plain.size();
    t.enc_s += best_enc;
    t.dec_s += best_dec;
    t.z3c_s += best_z3c;
    t.z3d_s += best_z3d;
    base = std::move(body);
  }
  return t;
}

nlohmann::json to_json(const Totals& t) {
  return {{"pairs", t.pairs},
          {"original_bytes", t.original},
          {"gzip6_bytes", t.gzip6},
          {"zstd3_bytes", t.zstd3},
          {"xdelta3_bytes", t.xdelta3},
          {"limit_bytes", t.limit},
          {"delta_bytes", t.delta},
          {"payload_bytes", t.payload},
          {"encode_mbps", t.mbps(t.enc_s)},
          {"decode_mbps", t.mbps(t.dec_s)},
          {"zstd3_compress_mbps", t.mbps(t.z3c_s)},
          {"zstd3_decompress_mbps", t.mbps(t.z3d_s)}};
}

void print_row(const std::string& name, const Totals& t) {
  auto pct = [&](size_t v) { return t.original ? 100.0 * v / t.original : 0.0; };
  std::printf(
      "%-24s %5zu %11zu %6.2f%% %6.2f%% %6.3f%% %6.3f%% %6.3f%% %5.2f %7.0f %7.0f %7.0f %7.0f\n",
      name.c_str(), t.pairs, t.original, pct(t.gzip6), pct(t.zstd3), pct(t.xdelta3), pct(t.limit),
      pct(t.delta), t.limit ? double(t.delta) / t.limit : 0.0, t.mbps(t.enc_s), t.mbps(t.dec_s),
      t.mbps(t.z3c_s), t.mbps(t.z3d_s));
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) die(a + " needs a value");
      try {
        return std::stoi(argv[++i]);
      } catch (...) {
        die(a + " needs a number");
      }
    };
    if (a == "--json") {
      o.json = true;
    } else if (a == "--no-peers") {
      o.peers = false;
    } else if (a == "--matcher") {
      // Seven numbers, the fields of MatcherParams in order (see proto/delta.h).
      if (i + 1 >= argc) die("--matcher needs a value");
      coilgun::proto::MatcherParams m{};
      if (std::sscanf(argv[++i], "%u,%u,%u,%u,%u,%u,%u", &m.min_anchor, &m.chain_depth,
                      &m.sufficient, &m.skip, &m.body_window, &m.max_parse_gap,
                      &m.parse_budget_pct) != 7) {
        die("--matcher needs seven comma-separated numbers");
      }
      o.matcher = m;
    } else if (a == "--level") {
      o.level = value();
      if (o.level < 1 || o.level > 9) die("--level must be 1..9");
    } else if (a == "--repeat") {
      o.repeat = value();
      if (o.repeat < 1 || o.repeat > 100) die("--repeat must be 1..100");
    } else if (a == "-h" || a == "--help") {
      std::fputs(
          "usage: coilgun-bench-delta [CORPUS_DIR] [--level 1..9] [--repeat R] [--json]\n"
          "         [--no-peers] [--matcher ANCHOR,DEPTH,SUFFICIENT,SKIP,WINDOW,GAP,BUDGET]\n",
          stdout);
      std::exit(0);
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option " + a);
    } else {
      o.corpus = a;
    }
  }
  if (o.corpus.empty()) {
    const char* env = std::getenv("COILGUN_CORPUS");
    o.corpus = env != nullptr ? env : "../shared/corpus";
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  if (!fs::is_directory(opt.corpus)) {
    die("no corpus at " + opt.corpus + " (pass CORPUS_DIR or set COILGUN_CORPUS)");
  }
  const std::vector<Series> corpus = load_corpus(opt.corpus);
  if (corpus.empty()) die("no series in " + opt.corpus);

  coilgun::proto::EncodeOptions eo;
  eo.effort = opt.level;
  eo.matcher = opt.matcher;
  DeltaEncoder enc(eo);
  DeltaDecoder dec;
  ZSTD_CCtx* z3 = ZSTD_createCCtx();
  ZSTD_DCtx* z3d = ZSTD_createDCtx();
  ZSTD_CCtx* z19 = ZSTD_createCCtx();

  int mismatches = 0;
  Totals total;
  nlohmann::json series_json = nlohmann::json::array();
  if (!opt.json) {
    std::printf("%-24s %5s %11s %7s %7s %7s %7s %7s %5s %7s %7s %7s %7s\n", "series", "pairs",
                "original", "gzip-6", "zstd-3", "xdelta3", "limit", "delta", "x-lim", "enc", "dec",
                "z3-enc", "z3-dec");
  }
  for (const Series& s : corpus) {
    const Totals t = run_series(s, opt, enc, dec, z3, z3d, z19, mismatches);
    total.add(t);
    if (opt.json) {
      nlohmann::json j = to_json(t);
      j["name"] = s.name;
      series_json.push_back(j);
    } else {
      print_row(s.name, t);
    }
  }
  ZSTD_freeCCtx(z3);
  ZSTD_freeDCtx(z3d);
  ZSTD_freeCCtx(z19);

  const double ratio = total.limit ? double(total.delta) / total.limit : 0;
  const double enc_x = total.enc_s > 0 ? total.z3c_s / total.enc_s : 0;
  const double dec_x = total.dec_s > 0 ? total.z3d_s / total.dec_s : 0;
  if (opt.json) {
    nlohmann::json out = {{"corpus", opt.corpus},  {"level", opt.level},
                          {"repeat", opt.repeat},  {"mismatches", mismatches},
                          {"series", series_json}, {"total", to_json(total)}};
    out["total"]["delta_over_limit"] = ratio;
    out["total"]["payload_over_limit"] = total.limit ? double(total.payload) / total.limit : 0.0;
    out["total"]["encode_over_zstd3"] = enc_x;
    out["total"]["decode_over_zstd3"] = dec_x;
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    print_row("TOTAL", total);
    std::printf(
        "\nsizes are %% of original bytes; speeds in MB/s of original bytes; "
        "level %d, best of %d runs per pair\n",
        opt.level, opt.repeat);
    if (opt.peers) {
      std::printf(
          "delta / level-19 limit   %.3f   (target <= 1.15; zstd frames, no checksum in either)\n",
          ratio);
      std::printf(
          "payload / level-19 limit %.3f   (delta plus kind and two version ids, 33 B each)\n",
          total.limit ? double(total.payload) / total.limit : 0.0);
      std::printf("delta / xdelta3 -9       %.3f   (target < 1)\n",
                  total.xdelta3 ? double(total.delta) / total.xdelta3 : 0.0);
    } else {
      std::printf("delta bytes              %zu   (no peers measured: --no-peers)\n", total.delta);
    }
    std::printf("encode / zstd -3 speed   %.2f    (target >= 1, base preparation included)\n",
                enc_x);
    std::printf("decode / zstd -3 speed   %.2f    (target >= 1)\n", dec_x);
    std::printf("round trips: %zu, mismatches: %d\n", total.pairs, mismatches);
  }
  return mismatches == 0 ? 0 : 1;
}
