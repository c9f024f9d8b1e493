#pragma once
// Metrics: counters, gauges and histograms that worker threads update on the hot path and the
// admin thread renders for /metrics (Prometheus text format 0.0.4) and /stats (JSON).
//
// How to use it:
//
//   metrics::Registry registry;                        // one per process, made at startup
//   auto& requests = registry.counter("coilgun_requests_total", "Requests served.", {"code"});
//   metrics::Counter& ok = requests.with({"2xx"});     // resolve once, keep the reference
//   metrics::Histogram& latency = registry.histogram(
//       "coilgun_request_duration_seconds", "Time to serve a request.",
//       metrics::kLatencySecondsBuckets);
//   ...
//   ok.inc();                                          // hot path: one relaxed atomic add
//   latency.observe(0.0042);                           // hot path: two atomic operations
//   ...
//   std::string text = registry.render_prometheus();   // admin thread
//
// Rules:
//  * Updates (Counter::inc, Gauge::set/add, Histogram::observe) are lock-free, allocation-free
//    relaxed atomic operations that any thread may call at any time. Values are exact (every
//    increment lands) but a render running concurrently with updates may see some of them and
//    not others; a histogram's +Inf bucket always equals its count in a rendering.
//  * Registration (Registry::counter() etc.) and resolving a child (Family::with()) take a
//    mutex and may allocate: do them at setup and keep the returned reference. Both are safe
//    from any thread, concurrently with updates and renders.
//  * A metric or child, once created, never moves and is never freed while its Registry lives:
//    references stay valid for the Registry's whole life.
//  * Names come from our own code. A name that breaks the rules below, or a second
//    registration that conflicts with the first, is a programming error: the try_ variants
//    return an error, the plain variants print the reason and abort at startup.
//
// Naming rules (enforced): a metric name matches [a-zA-Z_:][a-zA-Z0-9_:]* and starts with
// "coilgun_" (or "process_", the names every Prometheus client gives a process's own figures);
// a counter's name ends in "_total" and no other kind's name does. Label names
// match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__", are unique within a family, and a
// histogram may not use "le". By convention (not enforced) sizes end in "_bytes" and
// durations in "_seconds" (https://prometheus.io/docs/practices/naming/).

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/status.h"

namespace coilgun::metrics {

// Label names given at registration, or label values given to Family::with(), in order.
using Labels = std::initializer_list<std::string_view>;

// Histogram bounds (upper bounds, seconds) for request and link latencies: 0.5 ms to 10 s.
inline constexpr std::array<double, 14> kLatencySecondsBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// Histogram bounds (upper bounds, bytes) for body and frame sizes: 256 B to 16 MiB, by 4.
inline constexpr std::array<double, 9> kSizeBytesBuckets = {
    256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216};

// A monotonically increasing 64-bit count (Prometheus "counter"). It wraps at 2^64, which at
// 10^9 increments per second takes 584 years. Thread-safe: every method may be called from
// any thread at any time; inc() is one relaxed atomic add.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds |n| (default 1).
  void inc(uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }

  // The current value (relaxed: it may miss increments still in flight on other threads).
  uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A signed 64-bit value that goes up and down (Prometheus "gauge"): open connections, bytes
// buffered. Thread-safe like Counter. For a value that is cheaper to compute when asked (a
// store's size, a count of tunnels) register a callback gauge instead (Registry::gauge_fn).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  // Replaces the value with |v|.
  void set(int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  // Adds |d|, which may be negative.
  void add(int64_t d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  // Subtracts |d|.
  void sub(int64_t d) noexcept { value_.fetch_sub(d, std::memory_order_relaxed); }
  // The current value (relaxed).
  int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// A point-in-time copy of a Histogram, made by Histogram::snapshot().
struct HistogramSnapshot {
  // Cumulative counts, one per bound and a last one for +Inf: cumulative[i] is the number of
  // observations <= bounds[i]; cumulative.back() (+Inf) equals count.
  std::vector<uint64_t> cumulative;
  // Number of observations.
  uint64_t count = 0;
  // Sum of all observed values.
  double sum = 0;
};

// Counts observations into fixed buckets (Prometheus "histogram"): bucket i holds values
// v <= bounds[i] (and > bounds[i-1]); a last bucket holds values above every bound (+Inf).
// The count is not stored apart: it is the sum of the buckets, so a rendering's +Inf bucket
// always equals its count even while other threads observe. The sum is an atomic double.
// Thread-safe: observe() and snapshot() may be called from any thread at any time.
class Histogram {
 public:
  // Makes an empty histogram over |bounds|, which must be finite and strictly increasing
  // (Registry checks this; direct construction trusts the caller). |bounds| is not copied: it
  // must outlive this Histogram. Allocates once, here.
  explicit Histogram(std::span<const double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Records |v|: one relaxed increment of its bucket and one atomic add to the sum. No
  // allocation, no lock. A NaN is ignored (it would poison the sum forever).
  void observe(double v) noexcept;

  // Copies the current counts. Allocates; meant for the admin thread and tests.
  HistogramSnapshot snapshot() const;

  // The upper bounds this histogram was made with (without +Inf).
  std::span<const double> bounds() const noexcept { return bounds_; }

 private:
  std::span<const double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 entries.
  std::atomic<double> sum_{0};
};

// The kind of a metric family, as named in "# TYPE" lines.
enum class Type : uint8_t { kCounter, kGauge, kHistogram };

// Returns "counter", "gauge" or "histogram".
const char* type_name(Type type);

class Registry;

// What every family has: a name, a help text, a kind and its label names. Families are made
// and owned by a Registry and live as long as it does; the accessors are safe from any thread.
class FamilyBase {
 public:
  virtual ~FamilyBase();
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  Type type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 protected:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels);

  // Appends this family's "# HELP", "# TYPE" and sample lines to |out|. Takes mutex_.
  virtual void render_prometheus(std::string& out) const = 0;
  // Returns this family's JSON value for Registry::to_json(). Takes mutex_.
  virtual nlohmann::json to_json() const = 0;
  // True if a histogram family with these bounds (ignored for other kinds) could share this
  // family's registration.
  virtual bool same_bounds(std::span<const double> bounds) const;

  // The prepared forms of one child's label values, built once when the child is made.
  struct Child {
    std::string prom_labels;  // Prometheus label pairs without braces: code="2xx",method="GET"
    std::string json_key;     // /stats key: code=2xx,method=GET ("" when unlabeled)
  };
  // Builds the prepared label forms for |values| (sanitized to valid UTF-8, escaped).
  Child prepare_child(std::span<const std::string_view> values) const;
  // Aborts with a message naming this family if |values| does not have one value per label.
  void check_arity(std::span<const std::string_view> values) const;
  // Appends the "# HELP" and "# TYPE" lines.
  void render_header(std::string& out) const;

  // Orders label-value vectors, and compares them to a span of views without allocating.
  struct ValuesLess {
    using is_transparent = void;
    bool operator()(const std::vector<std::string>& a, const std::vector<std::string>& b) const;
    bool operator()(const std::vector<std::string>& a, std::span<const std::string_view> b) const;
    bool operator()(std::span<const std::string_view> a, const std::vector<std::string>& b) const;
  };

  // Guards the children of the derived family (not the metric values, which are atomics).
  mutable std::mutex mutex_;

 private:
  friend class Registry;
  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> label_names_;
};

// A family of metrics of one kind (Counter, Gauge or Histogram) sharing a name and label
// names; each distinct tuple of label values is one child. A family without labels has
// exactly one child, with({}), made at registration.
template <typename T>
class Family final : public FamilyBase {
 public:
  // Returns the child for |values| (one per label name, in registration order), making it on
  // first use. The reference stays valid, at the same address, for the Registry's life.
  // Takes the family's mutex; a lookup of an existing child does not allocate, a new child
  // does. Call it at setup (or once per new label value) and keep the reference, not on every
  // update. Aborts if the number of values differs from the number of label names (a
  // programming error). Any thread.
  T& with(Labels values) { return with(std::span<const std::string_view>(values)); }
  T& with(std::span<const std::string_view> values);

  // For Registry only (the Passkey cannot be named elsewhere).
  struct Passkey {
   private:
    friend class Registry;
    Passkey() = default;
  };
  Family(Passkey, std::string name, std::string help, Type type, std::vector<std::string> labels,
         std::vector<double> bounds);

 private:
  struct Entry {
    template <typename... Args>
    explicit Entry(Child c, Args&&... args)
        : prepared(std::move(c)), metric(std::forward<Args>(args)...) {}
    Child prepared;
    T metric;
  };

  void render_prometheus(std::string& out) const override;
  nlohmann::json to_json() const override;
  bool same_bounds(std::span<const double> bounds) const override;

  const std::vector<double> bounds_;   // Histograms only; children point into it.
  const std::vector<std::string> le_;  // Histograms only: each bound as printed, then "+Inf".
  std::map<std::vector<std::string>, Entry, ValuesLess> children_;  // Guarded by mutex_.
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A gauge family whose values are computed when rendered, by callbacks registered at setup:
// the size of a version store, the number of tunnels up. Rendered as Prometheus "gauge", or
// "counter" for a value that only grows (Registry::counter_fn: CPU seconds).
//
// Callbacks run on the thread that renders (the admin thread), while the family's mutex is
// held: they must be thread-safe with respect to whatever they read, quick, and must not call
// back into the Registry (that would deadlock). A callback must stay callable until it is
// removed with set(values, nullptr) or the Registry is destroyed; a NaN result renders as NaN
// in Prometheus and null in JSON.
class GaugeFnFamily final : public FamilyBase {
 public:
  // Sets the callback for |values| (one per label name), replacing any earlier one; an empty
  // |fn| removes the child, so it is no longer rendered. Aborts on a wrong number of values.
  // Takes the family's mutex; any thread.
  void set(Labels values, std::function<double()> fn) {
    set(std::span<const std::string_view>(values), std::move(fn));
  }
  void set(std::span<const std::string_view> values, std::function<double()> fn);

  // For Registry only (the Passkey cannot be named elsewhere).
  struct Passkey {
   private:
    friend class Registry;
    Passkey() = default;
  };
  GaugeFnFamily(Passkey, std::string name, std::string help, Type type,
                std::vector<std::string> labels);

 private:
  struct Entry {
    Child prepared;
    std::function<double()> fn;
  };

  void render_prometheus(std::string& out) const override;
  nlohmann::json to_json() const override;

  std::map<std::vector<std::string>, Entry, ValuesLess> children_;  // Guarded by mutex_.
};

// Owns every metric family of a process and renders them.
//
// Registering a name a second time with the same kind, the same label names (and for
// histograms the same bounds) returns the existing family, so two modules may both ask for
// a metric they share; the first help text is kept. Any other second registration of a name
// is refused. Registration is safe from any thread (a mutex guards the registry), but belongs
// at setup: it allocates and compares strings.
//
// Non-copyable and non-movable: metrics point into it. Destroy it only after every thread
// that updates or renders its metrics has stopped using them. The destructor never calls a
// callback gauge, so their targets may already be gone by then (but not while rendering).
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // --- Registration that aborts on misuse (names come from our code; fail at startup). ---

  // An unlabeled counter, gauge or histogram: returns its only child.
  Counter& counter(std::string_view name, std::string_view help);
  Gauge& gauge(std::string_view name, std::string_view help);
  Histogram& histogram(std::string_view name, std::string_view help,
                       std::span<const double> bounds);
  // An unlabeled callback gauge; a second call with the same name replaces the callback.
  void gauge_fn(std::string_view name, std::string_view help, std::function<double()> fn);
  // The same for a value that only grows, rendered as a counter (its name ends in _total).
  void counter_fn(std::string_view name, std::string_view help, std::function<double()> fn);

  // A labeled family; resolve children with Family::with() (GaugeFnFamily::set()).
  CounterFamily& counter(std::string_view name, std::string_view help, Labels label_names);
  GaugeFamily& gauge(std::string_view name, std::string_view help, Labels label_names);
  HistogramFamily& histogram(std::string_view name, std::string_view help, Labels label_names,
                             std::span<const double> bounds);
  GaugeFnFamily& gauge_fn(std::string_view name, std::string_view help, Labels label_names);

  // --- Registration that reports misuse: kConfig with the reason, nothing registered. ---
  // Pass an empty |label_names| for an unlabeled family (its child is with({})).

  Result<CounterFamily*> try_counter(std::string_view name, std::string_view help,
                                     Labels label_names);
  Result<GaugeFamily*> try_gauge(std::string_view name, std::string_view help, Labels label_names);
  Result<HistogramFamily*> try_histogram(std::string_view name, std::string_view help,
                                         Labels label_names, std::span<const double> bounds);
  Result<GaugeFnFamily*> try_gauge_fn(std::string_view name, std::string_view help,
                                      Labels label_names);

  // --- Rendering: any thread, concurrently with updates and registration. ---

  // Returns every family in the Prometheus text exposition format 0.0.4
  // (https://prometheus.io/docs/instrumenting/exposition_formats/), families sorted by name,
  // children sorted by label values:
  //
  //   # HELP coilgun_request_duration_seconds Time to serve a request.
  //   # TYPE coilgun_request_duration_seconds histogram
  //   coilgun_request_duration_seconds_bucket{le="0.005"} 1
  //   coilgun_request_duration_seconds_bucket{le="+Inf"} 3
  //   coilgun_request_duration_seconds_sum 0.75
  //   coilgun_request_duration_seconds_count 3
  //   # HELP coilgun_requests_total Requests served.
  //   # TYPE coilgun_requests_total counter
  //   coilgun_requests_total{code="2xx"} 12
  //
  // Label values are escaped (\\, \", \n) and invalid UTF-8 in them is replaced by U+FFFD;
  // help text escapes \\ and \n. Counters and integer gauges print as integers; doubles
  // (sums, callback gauges, "le" bounds) as log::append_json_double() spells them ("0.0005",
  // "1", "2.5", "1e-05"), or NaN, +Inf, -Inf. A labeled family with no children yet prints
  // only its HELP and TYPE lines. Serve it with Content-Type kPrometheusContentType. Allocates
  // the returned string; callback gauges run on the calling thread.
  std::string render_prometheus() const;

  // Returns a JSON snapshot for /stats, one member per family, keyed by family name:
  //
  //   {
  //     "coilgun_uptime_seconds": 12.5,                     unlabeled counter or gauge: number
  //     "coilgun_requests_total": {"code=2xx": 12,           labeled: object keyed by
  //                                "code=5xx": 1},           "l1=v1,l2=v2", values as above
  //     "coilgun_request_duration_seconds":                  histogram: count, sum and
  //         {"count": 3, "sum": 0.75,                        cumulative buckets keyed by their
  //          "buckets": {"0.005": 1, "+Inf": 3}},            bound as printed in "le"
  //     "coilgun_link_seconds": {"peer=a": {"count": ...}}  labeled histogram: object of those
  //   }
  //
  // A labeled family with no children is {}; an unlabeled callback gauge whose callback was
  // removed is null; NaN and infinite values are null. Keys are valid UTF-8, so dump() never
  // throws on them. Label values containing ',' or '=' make keys ambiguous; ours do not.
  // Callback gauges run on the calling thread.
  nlohmann::json to_json() const;

  // The Content-Type for render_prometheus() output.
  static constexpr std::string_view kPrometheusContentType =
      "text/plain; version=0.0.4; charset=utf-8";

 private:
  // What register_family() makes.
  enum class Kind : uint8_t { kCounter, kGauge, kGaugeFn, kCounterFn, kHistogram };

  // Checks the names and bounds, then returns the compatible family already registered as
  // |name| or a new one of |kind| (an unlabeled one with its child made). Takes mutex_.
  Result<FamilyBase*> register_family(Kind kind, std::string_view name, std::string_view help,
                                      Labels label_names, std::span<const double> bounds);

  mutable std::mutex mutex_;  // Guards families_ (not the families' contents).
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_;
};

}  // namespace coilgun::metrics
